"""Where `pocnode audit` reads from: a bundle file, a node's data directory read-only,
or a node's public endpoint; and the loop that feeds an auditor (PROTOCOL.md §13.7)."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pocnode.cli.client import CliError
from pocnode.core import bundle, encoding
from pocnode.core.audit import Auditor, AuditReport
from pocnode.core.errors import PocError

# Bundles above this size get a progress bar (on a terminal): a few seconds of work.
PROGRESS_BYTES = 4 * 1024 * 1024
READ_CHUNK = 256 * 1024
# Fetching from a node's public endpoint: connect within 10 s, and each read within 60 s.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
MAX_CHECKPOINTS_ANSWER = 32 * 1024 * 1024


# -- sources ---------------------------------------------------------------------------------


def data_dir_source(data_dir: Path, author: str | None = None) -> tuple[Iterator[bytes], str]:
    from pocnode.node import datadir
    from pocnode.node.config import load_config
    from pocnode.store.bundle_source import bundle_chunks

    config = load_config(data_dir)
    genesis = datadir.load_genesis(data_dir)
    chunks = bundle_chunks(config.db_path, genesis=genesis.raw, fed=genesis.id,
                           created=int(time.time() * 1000), source=config.member,
                           author=author)
    return chunks, f"data directory {data_dir} (read-only)"


def file_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _tls() -> ssl.SSLContext:
    """No certificate check: a node's certificate is self-signed and pinned by members
    (§8.1), which an outside auditor is not. Nothing fetched is trusted on the
    connection's word: every event, proof and checkpoint proves itself against the
    genesis, whose id the auditor pins (--federation-id)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def get(url: str, path: str) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CliError(f"{url}: expected an https:// URL of a node's peer port")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    kwargs: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
    if parts.scheme == "https":
        kwargs["context"] = _tls()
    conn = conn_cls(parts.hostname, parts.port, **kwargs)
    try:
        conn.request("GET", parts.path.rstrip("/") + path)
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT_S)
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise CliError(f"{url}: {exc}") from None
    if resp.status != 200:
        body = resp.read(4096)
        conn.close()
        try:
            detail = encoding.decode(body, max_size=4096)
            detail = f"{detail.get('code')}: {detail.get('message')}"
        except (PocError, AttributeError):
            detail = body[:200].decode("utf-8", "replace")
        raise CliError(f"{url}{path}: HTTP {resp.status} ({detail})")
    return resp


def url_chunks(url: str, author: str | None = None) -> Iterator[bytes]:
    query = f"?author={urllib.parse.quote(author)}" if author else ""
    resp = get(url, f"/v1/peer/bundle{query}")
    try:
        while True:
            try:
                chunk = resp.read(READ_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise CliError(f"{url}: the bundle stopped: {exc}") from None
            if not chunk:
                return
            yield chunk
    finally:
        resp.close()


def run_audit(chunks: Iterable[bytes], *, expect: bytes | None, total: int | None,
              source: str, keep: str | None = None
              ) -> tuple[AuditReport, list[bytes], bytes | None]:
    """Feed a stream of bundle bytes to an Auditor; with ``keep``, also return that
    author's event envelopes (for building a proof), and the genesis."""
    auditor = Auditor(expect_federation=expect)
    reader = bundle.BundleReader()
    kept: list[bytes] = []
    genesis: bytes | None = None
    progress = _progress(total)
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task("verifying", total=total) if progress else None
            for chunk in chunks:
                for record in reader.feed(chunk):
                    auditor.add(record)
                    if keep and record.type == bundle.EVENT:
                        kept.append(record.data)
                    elif record.type == bundle.GENESIS:
                        genesis = record.data
                if progress is not None and task is not None:
                    progress.update(task, advance=len(chunk))
            reader.close()
    except PocError as exc:
        if exc.code in ("cli", "store"):
            raise
        auditor.fail(exc)
    return auditor.finish(source), kept, genesis


def _progress(total: int | None) -> Any:
    if total is None or total < PROGRESS_BYTES or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    DownloadColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
