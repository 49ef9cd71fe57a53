"""Giving memory back after a burst (issue 13: RSS returns to its baseline after an attack).

Every TLS connection asyncio accepts gets a 256 KiB read buffer (``sslproto`` max_size).
glibc's dynamic mmap threshold soon rises above that size, after which these buffers come
from the heap, which is not returned to the system when they are freed: a few hundred idle
connections then leave the node tens of megabytes larger for good. A fixed threshold below
the buffer size keeps them in their own mappings, unmapped when freed; ``malloc_trim``
returns what small allocations leave free at the top of the heap.

glibc only: elsewhere (musl, macOS) both are no-ops, and said so once at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from typing import Any

M_MMAP_THRESHOLD = -3            # mallopt parameter number (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # below asyncio's 256 KiB TLS buffers, above most else

_libc: Any = None


def _load() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = False
    return _libc


def tune_allocator() -> bool:
    """Fix the mmap threshold (unless the operator set MALLOC_MMAP_THRESHOLD_ in the
    environment: theirs wins); True when the allocator took ours."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return True
    libc = _load()
    mallopt = getattr(libc, "mallopt", None) if libc else None
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> None:
    """Collect what cycles keep alive, then return the heap's free top to the system.

    A closed TLS connection's protocol objects form reference cycles that hold its 256 KiB
    read buffer until the cyclic collector's oldest generation runs, which a quiet node may
    not do for a long time: after a connection flood a dozen such buffers stayed mapped.
    A full collection of a node's heap takes milliseconds; this runs every few seconds."""
    gc.collect()
    libc = _load()
    malloc_trim = getattr(libc, "malloc_trim", None) if libc else None
    if malloc_trim is not None:
        malloc_trim(0)
