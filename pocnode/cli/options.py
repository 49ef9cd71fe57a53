"""What every command shares: the data directory option, --json, and reading a file a
person handed us (bounded: a mistyped path to a large file must not fill memory)."""

from __future__ import annotations

from pathlib import Path

import click

from pocnode.cli.client import CliError

DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
    envvar="POCNODE_DATA_DIR", show_envvar=True, help="The node's data directory.")
JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def read_file(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise CliError(f"{path}: larger than {limit} bytes; not {what}")
    return data
