"""Run the `pocnode` command line with this process's wall clock shifted.

    python tests/integration/skewed_clock.py SECONDS pocnode-arguments...
    python tests/integration/skewed_clock.py +3600 run --data-dir DIR

A test hook that lives in tests/, so the package never reads a test variable: before
pocnode is imported, ``time.time``, ``time.time_ns`` and ``datetime.datetime.now`` /
``utcnow`` / ``today`` are replaced by versions SECONDS ahead (negative: behind). What reads
the wall clock through them sees the shifted time: event timestamps, peer-auth tokens,
received times, logs. Monotonic clocks (timeouts, rate limits) are left alone, as they are on
a host whose wall clock is wrong; so is OpenSSL's own clock, which pinned certificates do
not consult.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path


def _shift(seconds: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = round(seconds * 1e9)
    delta = datetime.timedelta(seconds=seconds)
    real_datetime = datetime.datetime

    def shifted_time() -> float:
        return real_time() + seconds

    def shifted_time_ns() -> int:
        return real_time_ns() + offset_ns

    class ShiftedDatetime(real_datetime):
        # No instance dict: the type keeps datetime's size, which C extensions check.
        __slots__ = ()

        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:
            return real_datetime.now(tz) + delta

        @classmethod
        def utcnow(cls) -> datetime.datetime:
            return real_datetime.now(datetime.UTC).replace(tzinfo=None) + delta

        @classmethod
        def today(cls) -> datetime.datetime:
            return real_datetime.now() + delta

    time.time = shifted_time
    time.time_ns = shifted_time_ns
    datetime.datetime = ShiftedDatetime  # type: ignore[misc]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: skewed_clock.py SECONDS pocnode-arguments...")
    try:
        seconds = float(sys.argv[1])
    except ValueError:
        sys.exit(f"skewed_clock.py: SECONDS must be a number, got {sys.argv[1]!r}")
    # Not this directory's modules (tests/integration) ahead of the installed packages.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    _shift(seconds)
    sys.argv = ["pocnode", *sys.argv[2:]]
    from pocnode.cli import main as pocnode_main

    pocnode_main()


if __name__ == "__main__":
    main()
