"""Export bundles: everything needed to verify a directory, as a stream (PROTOCOL.md §13.6).

A bundle is a sequence of **records**, each a 4-byte big-endian length and that many
bytes of one canonical msgpack map. Records come in a fixed order: the header, the
signed genesis, the events of the chains in force (in an order a verifier can accept
them in: each author's in sequence), the evidence kept past proven forks, the
equivocation proofs, and an end record counting what came before. No disclosure is
ever in a bundle: events carry only digests of what is not public (§6.2).

:class:`BundleWriter` turns items into bytes and :class:`BundleReader` turns bytes back
into items, a chunk at a time: neither holds more than one record, so a bundle of any
size streams through bounded memory. Both are pure; files and sockets are the caller's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pocnode.core import encoding
from pocnode.core.chain import MAX_PROOF_BYTES
from pocnode.core.errors import (
    Malformed,
    Oversize,
    PocError,
    TrailingBytes,
    Truncated,
    UnsupportedVersion,
)
from pocnode.core.genesis import MAX_GENESIS_BYTES

BUNDLE_TYPE = "pocnode/bundle"
BUNDLE_VERSION = 1
FRAME_BYTES = 4
# The largest record is the genesis (2 MiB), wrapped in its map.
MAX_RECORD_BYTES = MAX_GENESIS_BYTES + 64
# What a reader accepts in all unless told otherwise: 200 members' chains of 10,000
# events of a few KB each fit many times over; a hostile source cannot make an auditor
# read forever.
DEFAULT_MAX_BUNDLE_BYTES = 16 * 1024**3
# Records in a bundle: the end record's count is an int, bounded here as a uint 32.
MAX_RECORDS = 2**32 - 1

HEADER, GENESIS, EVENT, FORKED, PROOF, END = "header", "genesis", "event", "forked", \
    "proof", "end"
# Each record type's place in the order, its payload field and the payload's limit.
_ORDER = {HEADER: 0, GENESIS: 1, EVENT: 2, FORKED: 3, PROOF: 4, END: 5}
_FIELD = {GENESIS: "genesis", EVENT: "event", FORKED: "event", PROOF: "proof"}
_LIMIT = {GENESIS: MAX_GENESIS_BYTES, EVENT: encoding.MAX_EVENT_BYTES,
          FORKED: encoding.MAX_EVENT_BYTES, PROOF: MAX_PROOF_BYTES}


@dataclass(frozen=True, slots=True)
class Header:
    fed: bytes
    created: int       # ms, the exporter's clock
    source: str        # the exporting node's member id ("" if none)


@dataclass(frozen=True, slots=True)
class Record:
    """One record read: its type, its payload (an envelope, a genesis, a proof; for the
    header, the encoded header map), its index (the header is 0) and byte offset."""

    type: str
    data: bytes
    index: int
    offset: int
    header: Header | None = None

    @property
    def where(self) -> str:
        return f"bundle record {self.index} (byte {self.offset})"


def _frame(doc: dict[str, Any]) -> bytes:
    body = encoding.encode(doc)
    return struct.pack(">I", len(body)) + body


class BundleWriter:
    """Bytes of a bundle, item by item, in the order §13.6 requires."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self._stage = -1

    def _emit(self, kind: str, doc: dict[str, Any]) -> bytes:
        stage = _ORDER[kind]
        if stage < self._stage or (stage in (0, 1, 5) and stage == self._stage):
            raise PocError(f"bundle: a {kind} record cannot follow what was written")
        if stage > 1 and self._stage < 1:
            raise PocError("bundle: the header and the genesis come first")
        self._stage = stage
        out = _frame(doc)
        self.records += 1
        self.bytes += len(out)
        return out

    def header(self, fed: bytes, created: int, source: str = "") -> bytes:
        return self._emit(HEADER, {"type": BUNDLE_TYPE, "v": BUNDLE_VERSION, "fed": fed,
                                   "created": created, "source": source})

    def genesis(self, raw: bytes) -> bytes:
        return self._emit(GENESIS, {"t": GENESIS, "genesis": raw})

    def event(self, raw: bytes) -> bytes:
        return self._emit(EVENT, {"t": EVENT, "event": raw})

    def forked(self, raw: bytes) -> bytes:
        return self._emit(FORKED, {"t": FORKED, "event": raw})

    def proof(self, raw: bytes) -> bytes:
        return self._emit(PROOF, {"t": PROOF, "proof": raw})

    def end(self) -> bytes:
        return self._emit(END, {"t": END, "records": self.records})


class BundleReader:
    """Records from bytes fed in chunks of any size. Raises the §9 code of the first
    fault, with the record and byte offset it is at."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.offset = 0            # bytes consumed into records
        self.index = 0             # records read
        self.header: Header | None = None
        self.ended = False
        self._buf = bytearray()
        self._stage = -1
        self._received = 0

    def feed(self, chunk: bytes) -> list[Record]:
        self._received += len(chunk)
        if self._received > self.max_bytes:
            raise Oversize(f"bundle longer than {self.max_bytes} bytes",
                           path=f"bundle byte {self.max_bytes}")
        self._buf += chunk
        out: list[Record] = []
        while True:
            if self.ended:
                if self._buf:
                    raise TrailingBytes("bytes after the end record",
                                        path=f"bundle byte {self.offset}")
                return out
            if len(self._buf) < FRAME_BYTES:
                return out
            (length,) = struct.unpack(">I", self._buf[:FRAME_BYTES])
            if length > MAX_RECORD_BYTES:
                raise Oversize(f"a record of {length} bytes; the limit is {MAX_RECORD_BYTES}",
                               path=self._where())
            if len(self._buf) < FRAME_BYTES + length:
                return out
            body = bytes(self._buf[FRAME_BYTES:FRAME_BYTES + length])
            del self._buf[:FRAME_BYTES + length]
            out.append(self._record(body))
            self.offset += FRAME_BYTES + length
            self.index += 1

    def close(self) -> None:
        """The stream ended: it must have ended exactly after the end record."""
        if not self.ended:
            raise Truncated(f"the bundle stops after {self.index} records without its end "
                            f"record" + (" (inside a record)" if self._buf else ""),
                            path=self._where())

    def _where(self) -> str:
        return f"bundle record {self.index} (byte {self.offset})"

    def _record(self, body: bytes) -> Record:
        where = self._where()
        try:
            doc = encoding.decode(body, max_size=MAX_RECORD_BYTES)
        except PocError as exc:
            raise type(exc)(exc.message, path=where) from None
        if type(doc) is not dict:
            raise Malformed("a record must be a map", path=where)
        if self._stage < 0:
            return self._header(doc, body, where)
        kind = doc.get("t")
        if kind not in _ORDER or kind == HEADER:
            raise Malformed(f"unknown record type {kind!r:.40}", path=where)
        stage = _ORDER[kind]
        if stage < self._stage or (stage == 1 and self._stage == 1):
            raise Malformed(f"a {kind} record after the {_name(self._stage)} records "
                            f"(order: header, genesis, events, forked, proofs, end)",
                            path=where)
        if stage > 1 and self._stage < 1:
            raise Malformed("the genesis record must follow the header", path=where)
        self._stage = stage
        if kind == END:
            if doc.keys() != {"t", "records"} or type(doc["records"]) is not int:
                raise Malformed("end record: exactly t and records (int)", path=where)
            if doc["records"] != self.index:
                raise Truncated(f"the end record counts {doc['records']} records before it, "
                                f"{self.index} came", path=where)
            self.ended = True
            return Record(END, b"", self.index, self.offset)
        name = _FIELD[kind]
        if doc.keys() != {"t", name} or type(doc[name]) is not bytes:
            raise Malformed(f"{kind} record: exactly t and {name} (bin)", path=where)
        if len(doc[name]) > _LIMIT[kind]:
            raise Oversize(f"{kind} of {len(doc[name])} bytes; the limit is {_LIMIT[kind]}",
                           path=where)
        return Record(kind, doc[name], self.index, self.offset)

    def _header(self, doc: dict[str, Any], body: bytes, where: str) -> Record:
        if doc.get("type") != BUNDLE_TYPE or type(doc.get("v")) is not int:
            raise Malformed(f"not a pocnode bundle: the first record must have type "
                            f"{BUNDLE_TYPE!r} and an int v", path=where)
        if doc["v"] != BUNDLE_VERSION:
            raise UnsupportedVersion(f"bundle version {doc['v']}; this reader knows "
                                     f"{BUNDLE_VERSION}", path=where)
        if doc.keys() != {"type", "v", "fed", "created", "source"}:
            raise Malformed("header: exactly type, v, fed, created, source", path=where)
        fed, created, source = doc["fed"], doc["created"], doc["source"]
        if type(fed) is not bytes or len(fed) != 32 or type(created) is not int \
                or not 0 <= created < 2**63 or type(source) is not str or len(source) > 32:
            raise Malformed("header: fed bin 32, created int ms, source str of at most 32",
                            path=where)
        self._stage = 0
        self.header = Header(fed, created, source)
        return Record(HEADER, body, self.index, self.offset, self.header)


def _name(stage: int) -> str:
    return next(k for k, v in _ORDER.items() if v == stage)


def read_all(data: bytes, **kw: Any) -> list[Record]:
    """A whole bundle in memory (tests, vectors): every record, then the end checked."""
    reader = BundleReader(**kw)
    records = reader.feed(data)
    reader.close()
    return records
