"""What aiohttp's HTTP server would log, through pocnode's own log.

aiohttp logs a request it cannot parse (a bad header, a bad method, bytes that are not
HTTP) as "Error handling request" with a traceback quoting the offending bytes, through its
own logger: outside pocnode's escaped text and JSON formats and outside the rate-limited
refusal log, so one stranger could write megabytes of it. Here such a request is a refusal
like any other (counted against its address, logged as rate-limited summaries, no
traceback: the bytes are a stranger's), and anything else the server logs is an error of
this node, logged with its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("pocnode.http")

# An unparsable request names its fault in a line or two; the rest is a stranger's bytes.
REASON_CHARS = 160


class ServerLog:
    """Passed to aiohttp as the request handlers' ``logger``."""

    def __init__(self, refused: Callable[..., None],
                 charge: Callable[[str], object] | None = None) -> None:
        self._refused = refused
        self._charge = charge

    def _bad_request(self, exc: BaseException, args: tuple[Any, ...]) -> None:
        remote = str(args[0]) if args else "?"
        if self._charge is not None:
            self._charge(remote)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:REASON_CHARS]
        self._refused("malformed", "refused a request that is not valid HTTP",
                      peer=remote, reason=reason)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            self._bad_request(exc, args)
        else:
            log.error(msg, *args, exc_info=exc_info)

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        # aiohttp's debug level carries the same refusals on a connection's first request
        # (non-HTTP bytes on an HTTP port): counted the same way.
        if isinstance(exc_info, HttpProcessingError):
            self._bad_request(exc_info, args)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        log.error(msg, *args, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        log.warning(msg, *args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        log.info(msg, *args, **kw)
