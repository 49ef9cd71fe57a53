"""What every command shares: the data directory option (checked before the command runs),
the passphrase option, --json, and reading a file a person handed us (bounded: a mistyped
path to a large file must not fill memory)."""

from __future__ import annotations

from pathlib import Path

import click

from pocnode.cli.client import CliError
from pocnode.node import datadir

# Where the systemd unit (deploy/pocnode.service) keeps the node: day-to-day commands on a
# production host need no --data-dir.
DEFAULT_DATA_DIR = Path("/var/lib/pocnode")


def _given_by(ctx: click.Context, name: str, option: str, envvar: str) -> str:
    source = ctx.get_parameter_source(name)
    if source == click.core.ParameterSource.DEFAULT:
        return f"the default; give another with {option} or {envvar}"
    return envvar if source == click.core.ParameterSource.ENVIRONMENT else option


def _existing_data_dir(ctx: click.Context, param: click.Parameter, value: Path | None
                       ) -> Path | None:
    """Before any command touches it: the directory exists, is a node's, and belongs to
    the user running the command (keys and token are private to the node's user)."""
    if value is None or ctx.resilient_parsing:
        return value
    datadir.check_exists(value, _given_by(ctx, "data_dir", "--data-dir", "POCNODE_DATA_DIR"))
    datadir.check_owner(value, f"{ctx.command_path} --data-dir {value}")
    return value


DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
    show_default=True, envvar="POCNODE_DATA_DIR", show_envvar=True,
    callback=_existing_data_dir, help="The node's data directory (created by `pocnode init`).")
NEW_DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
    envvar="POCNODE_DATA_DIR", show_envvar=True,
    help="The data directory to create (mode 0700; it may exist if empty).")
PASSPHRASE = click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the keys' passphrase (0600, owned by you). Default: the environment "
         "variable POCNODE_PASSPHRASE_FILE, else [node] passphrase_file in config.toml, "
         "else DATA_DIR/passphrase.")
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
