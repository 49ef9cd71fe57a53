"""The ``pocnode`` command line: a thin shell over the operator API and the core."""

from __future__ import annotations

import click

from pocnode import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pocnode")
def main() -> None:
    """pocnode: a federated directory of government Points of Contact.

    Each state runs a node holding its own signed contact record; nodes gossip
    signed updates, so the directory converges with no central server.
    The protocol is specified in protocol/PROTOCOL.md.
    """
