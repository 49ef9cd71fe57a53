"""Runs `pocnode run` so that it crashes at the k-th file operation on its identity key.

A test hook that lives in tests/, not in the shipped package (which reads no test
variable): it wraps the ``os`` functions a key rotation goes through (creating,
writing, syncing and closing a key file; renaming, replacing and removing one),
counting only operations on files named ``identity.key*``, and only once armed:
the test sends SIGUSR1 right before it asks for a rotation, so what the node does
at start (its own recovery included) is not counted. At the k-th counted
operation the process ends with ``os._exit`` as a ``kill -9`` would end it: no
cleanup, no flush. In ``torn`` mode a write is cut in half first (a crash in the
middle of writing the file).

    python crash_launcher.py K before|torn run --data-dir DIR

The launcher writes ``crash.armed`` in the data directory once armed, and before
dying one line to stderr naming the operation (the node's log shows it).
"""

from __future__ import annotations

import os
import signal
import sys

CRASH_EXIT = 86
_KEY_NAME = "identity.key"
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def main() -> None:
    at, mode, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    data_dir = argv[argv.index("--data-dir") + 1]
    state = {"armed": False, "count": 0}
    key_fds: set[int] = set()
    real = {name: getattr(os, name) for name in
            ("open", "write", "fsync", "close", "replace", "rename", "unlink")}

    def arm(signum: int, frame: object) -> None:
        state["armed"] = True
        fd = real["open"](os.path.join(data_dir, "crash.armed"),
                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        real["close"](fd)

    def step(what: str, path: object) -> bool:
        """Count one operation; True if this is the one to crash at."""
        if not state["armed"]:
            return False
        state["count"] += 1
        if state["count"] != at:
            return False
        sys.stderr.write(f"CRASH_LAUNCHER op {at} {mode} {what} {os.fspath(path)}\n")
        sys.stderr.flush()
        return True

    def is_key(path: object) -> bool:
        try:
            return _KEY_NAME in os.path.basename(os.fspath(path))  # type: ignore[arg-type]
        except TypeError:
            return False

    def crash() -> None:
        os._exit(CRASH_EXIT)

    def p_open(path, flags, mode_=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        if is_key(path) and flags & _WRITING and step("open", path):
            crash()
        fd = real["open"](path, flags, mode_, dir_fd=dir_fd)
        if is_key(path) and flags & _WRITING:
            key_fds.add(fd)
        return fd

    def p_write(fd, data):  # type: ignore[no-untyped-def]
        if fd in key_fds and step("write", f"fd {fd}"):
            if mode == "torn":
                real["write"](fd, bytes(data)[: max(1, len(data) // 2)])
            crash()
        return real["write"](fd, data)

    def p_fsync(fd):  # type: ignore[no-untyped-def]
        if fd in key_fds and step("fsync", f"fd {fd}"):
            crash()
        return real["fsync"](fd)

    def p_close(fd):  # type: ignore[no-untyped-def]
        if fd in key_fds:
            key_fds.discard(fd)
            if step("close", f"fd {fd}"):
                crash()
        return real["close"](fd)

    def two_paths(name: str):  # type: ignore[no-untyped-def]
        def op(src, dst, **kw):  # type: ignore[no-untyped-def]
            if (is_key(src) or is_key(dst)) and step(name, f"{src} -> {dst}"):
                crash()
            return real[name](src, dst, **kw)
        return op

    def p_unlink(path, **kw):  # type: ignore[no-untyped-def]
        if is_key(path) and step("unlink", path):
            crash()
        return real["unlink"](path, **kw)

    os.open = p_open  # type: ignore[assignment]
    os.write = p_write  # type: ignore[assignment]
    os.fsync = p_fsync  # type: ignore[assignment]
    os.close = p_close  # type: ignore[assignment]
    os.replace = two_paths("replace")  # type: ignore[assignment]
    os.rename = two_paths("rename")  # type: ignore[assignment]
    os.unlink = p_unlink  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, arm)

    from pocnode.cli import main as cli

    sys.argv = ["pocnode", *argv]
    cli()


if __name__ == "__main__":
    main()
