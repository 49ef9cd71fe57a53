"""The CLI's side of the operator API: one sync HTTP client on loopback, one-line errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pocnode.core.errors import PocError
from pocnode.node.config import load_config
from pocnode.node.datadir import read_token

# The operator API answers from memory; ten seconds means the node is stuck, not slow.
TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class CliError(PocError):
    """What the CLI prints as its one line before exiting non-zero."""

    code = "cli"
    remote_code: str | None = None     # the node's code, when the node refused
    remote_message: str = ""


class OperatorClient:
    def __init__(self, data_dir: Path, token: str | None = None) -> None:
        config = load_config(data_dir)
        self.data_dir = data_dir
        self.base = f"http://{config.operator_host}:{config.operator_port}"
        self.token = token if token is not None else read_token(data_dir)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http on loopback, from our config
            self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310
                raw = resp.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc.code, exc.read(64 * 1024)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"the node is not running or not answering on {self.base} "
                           f"({reason}); start it with `pocnode run --data-dir "
                           f"{self.data_dir}`") from None
        return json.loads(raw) if raw else None

    def _refusal(self, status: int, raw: bytes) -> CliError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if status == 401:
            return CliError(f"the node refused our token: {self.data_dir}/token does not match "
                            f"the running node's (was the data dir copied or re-initialised?)")
        code = body.get("code", "http")
        where = f" at {body['path']}" if body.get("path") else ""
        error = CliError(f"{code}{where}: {body.get('message', f'HTTP {status}')}")
        error.remote_code = code
        error.remote_message = str(body.get("message", ""))
        return error
