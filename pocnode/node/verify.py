"""Signature checks spread over threads (the engine's :class:`VerifySignatures` effect).

The Ed25519 and ML-DSA checks of ``cryptography`` release the GIL, so a batch split over
threads uses every core while the event loop goes on serving. Each chunk is large enough
that handing it to a thread costs little beside the checks themselves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pocnode.core.engine import verify_jobs

# Threads a batch is spread over: this machine's cores, at most four.
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))

Job = tuple[Any, Any, bytes]   # (public key, signature, signed bytes)


class VerifyPool:
    def __init__(self, threads: int = VERIFY_THREADS) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="verify")

    def _chunks(self, jobs: Sequence[Job]) -> list[Sequence[Job]]:
        size = -(-len(jobs) // self.threads) or 1
        return [jobs[i:i + size] for i in range(0, len(jobs), size)]

    async def verify(self, jobs: Sequence[Job]) -> list[bool]:
        """A verdict per job, in order."""
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(*(loop.run_in_executor(self._pool, verify_jobs, chunk)
                                       for chunk in self._chunks(jobs)))
        return [ok for part in parts for ok in part]

    def verify_blocking(self, jobs: Sequence[Job]) -> list[bool]:
        """The same, from a thread that may block (benchmarks, tools)."""
        futures = [self._pool.submit(verify_jobs, chunk) for chunk in self._chunks(jobs)]
        return [ok for future in futures for ok in future.result()]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
