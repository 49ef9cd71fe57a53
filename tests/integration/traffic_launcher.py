"""Runs `pocnode run` with every plaintext byte the node receives written to a file.

A test hook that lives in tests/, not in the shipped package: it wraps the two places
where a node sees decrypted peer traffic (what its peer port receives after TLS, and the
answers its client reads) before handing over to the real command line, so a test can
show that nothing confidential ever reached a node.

    python traffic_launcher.py DUMP_FILE run --data-dir DIR
"""

from __future__ import annotations

import sys


def main() -> None:
    dump_path, argv = sys.argv[1], sys.argv[2:]
    from pocnode.net import guard, peer_client

    def dump(data: bytes) -> None:
        with open(dump_path, "ab") as f:
            f.write(data)

    deliver = guard.Conn._deliver

    def deliver_and_dump(self: guard.Conn, data: bytes) -> None:
        dump(data)
        deliver(self, data)

    guard.Conn._deliver = deliver_and_dump  # type: ignore[method-assign]
    read_answer = peer_client.read_answer

    async def read_and_dump(resp, limit):  # type: ignore[no-untyped-def]
        raw = await read_answer(resp, limit)
        dump(raw)
        return raw

    peer_client.read_answer = read_and_dump  # type: ignore[assignment]
    from pocnode.cli import main as cli

    sys.argv = ["pocnode", *argv]
    cli()


if __name__ == "__main__":
    main()
