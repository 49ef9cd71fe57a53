"""Typed peer messages and the one parser for them (PROTOCOL.md §8).

A peer's request is read by walking its schema over the bytes with msgpack's C
unpacker: containers are entered one header at a time and each leaf's type byte is
looked at before the leaf is read, so no structure is ever built that the schema
does not allow. A hostile body of a million empty arrays costs a refusal at its
first wrong byte, not a million Python objects: what a request can make us allocate
is bounded by its schema's counts and by its size, whatever its shape (§8.5).

Message bodies are not signed, so they need not be canonical; the events, proofs
and disclosures they carry are checked canonically by the core when they are used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from pocnode.core.errors import Malformed
from pocnode.core.events import MEMBER_ID
from pocnode.core.reconcile import MAX_AUTHORS, Want

# Per message (§8.3, §8.5). A member's events per message, wants and proofs are bounded
# so that the work one request can cause is known before any of it is done.
MAX_EVENTS_PER_MESSAGE = 1000
MAX_PROOFS_PER_MESSAGE = 64
MAX_DISCLOSURE_IDS = 1024
MAX_BILATERAL_IDS = 16
MAX_DISCLOSURES_PER_ANSWER = 64 * 1024
MAX_SEALED_PER_ANSWER = 512
MAX_BIN = 16 * 1024 * 1024
_ID_BYTES = 32

# -- a small schema language ----------------------------------------------------------


class _S:
    def read(self, r: _Reader, path: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Bin(_S):
    min_len: int = 0
    max_len: int = MAX_BIN

    def read(self, r: _Reader, path: str) -> bytes:
        r.expect(_BIN_TAGS, "bin", path)
        value = r.leaf()
        if not self.min_len <= len(value) <= self.max_len:
            raise Malformed(f"must be bin of {self.min_len}..{self.max_len} bytes, got "
                            f"{len(value)}", path=path)
        return value


@dataclass(frozen=True)
class Str(_S):
    max_len: int = 256
    pattern: re.Pattern[str] | None = None

    def read(self, r: _Reader, path: str) -> str:
        r.expect(_STR_TAGS, "str", path)
        value = r.leaf()
        if len(value) > self.max_len or (self.pattern and not self.pattern.fullmatch(value)):
            raise Malformed(f"str out of range: {value[:40]!r}", path=path)
        return value


@dataclass(frozen=True)
class Int(_S):
    lo: int = 0
    hi: int = 2**63 - 1

    def read(self, r: _Reader, path: str) -> int:
        r.expect(_INT_TAGS, "int", path)
        value = r.leaf()
        if not self.lo <= value <= self.hi:
            raise Malformed(f"int must be in [{self.lo}, {self.hi}], got {value}", path=path)
        return value


class Bool(_S):
    def read(self, r: _Reader, path: str) -> bool:
        r.expect(_BOOL_TAGS, "bool", path)
        return r.leaf()


@dataclass(frozen=True)
class Optional(_S):
    """nil or the inner schema."""

    inner: _S

    def read(self, r: _Reader, path: str) -> Any:
        if r.peek() == 0xC0:
            return r.leaf()
        return self.inner.read(r, path)


@dataclass(frozen=True)
class List(_S):
    item: _S
    max_count: int

    def read(self, r: _Reader, path: str) -> list[Any]:
        r.expect(_ARRAY_TAGS, "array", path)
        count = r.array_header()
        if count > self.max_count:
            raise Malformed(f"at most {self.max_count} items, got {count}", path=path)
        return [self.item.read(r, f"{path}[{i}]") for i in range(count)]


@dataclass(frozen=True)
class Tuple(_S):
    """An array of fixed positions; the last ``len(items) - min_items`` are optional."""

    items: tuple[_S, ...]
    min_items: int

    def read(self, r: _Reader, path: str) -> tuple[Any, ...]:
        r.expect(_ARRAY_TAGS, "array", path)
        count = r.array_header()
        if not self.min_items <= count <= len(self.items):
            raise Malformed(f"must have {self.min_items}..{len(self.items)} items, got "
                            f"{count}", path=path)
        return tuple(self.items[i].read(r, f"{path}[{i}]") for i in range(count))


@dataclass(frozen=True)
class Map(_S):
    """A map with str keys; unknown keys are skipped (in C, allocating nothing), so a
    later protocol version can add fields. ``required`` keys must be present."""

    fields: dict[str, _S]
    required: frozenset[str] = frozenset()
    max_keys: int = 32

    def read(self, r: _Reader, path: str) -> dict[str, Any]:
        r.expect(_MAP_TAGS, "map", path)
        count = r.map_header()
        if count > self.max_keys:
            raise Malformed(f"at most {self.max_keys} keys, got {count}", path=path)
        out: dict[str, Any] = {}
        for _ in range(count):
            r.expect(_STR_TAGS, "str key", path)
            key = r.leaf()
            schema = self.fields.get(key)
            if schema is None or key in out:
                if key in out:
                    raise Malformed(f"key {key!r:.40} twice", path=path)
                r.skip()
                continue
            out[key] = schema.read(r, f"{path}.{key}")
        missing = self.required - out.keys()
        if missing:
            raise Malformed(f"missing {sorted(missing)}", path=path)
        return out


_BIN_TAGS = frozenset((0xC4, 0xC5, 0xC6))
_STR_TAGS = frozenset(range(0xA0, 0xC0)) | {0xD9, 0xDA, 0xDB}
_INT_TAGS = (frozenset(range(0x00, 0x80)) | frozenset(range(0xE0, 0x100))
             | frozenset(range(0xCC, 0xD4)))
_BOOL_TAGS = frozenset((0xC2, 0xC3))
_ARRAY_TAGS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}
_MAP_TAGS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class _Reader:
    __slots__ = ("data", "u")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.u = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1),
                                  max_bin_len=MAX_BIN, max_str_len=64 * 1024,
                                  max_array_len=0, max_map_len=0, max_ext_len=0)
        self.u.feed(data)

    def peek(self) -> int:
        pos = self.u.tell()
        if pos >= len(self.data):
            raise Malformed("message ends early", path="message")
        return self.data[pos]

    def expect(self, tags: frozenset[int], what: str, path: str) -> None:
        if self.peek() not in tags:
            raise Malformed(f"must be {what}", path=path)

    def leaf(self) -> Any:
        try:
            return self.u.unpack()
        except Exception as exc:  # noqa: BLE001 - msgpack's errors: all mean "not msgpack"
            raise Malformed(f"not msgpack: {type(exc).__name__}", path="message") from None

    def array_header(self) -> int:
        try:
            return self.u.read_array_header()
        except Exception as exc:  # noqa: BLE001
            raise Malformed(f"not msgpack: {type(exc).__name__}", path="message") from None

    def map_header(self) -> int:
        try:
            return self.u.read_map_header()
        except Exception as exc:  # noqa: BLE001
            raise Malformed(f"not msgpack: {type(exc).__name__}", path="message") from None

    def skip(self) -> None:
        try:
            self.u.skip()
        except Exception as exc:  # noqa: BLE001
            raise Malformed(f"not msgpack: {type(exc).__name__}", path="message") from None

    def done(self) -> None:
        if self.u.tell() != len(self.data):
            raise Malformed("bytes after the message", path="message")


def read(schema: Map, data: bytes, *, path: str = "request") -> dict[str, Any]:
    """Parse ``data`` by ``schema``; Malformed naming the place on any deviation."""
    r = _Reader(data)
    value = schema.read(r, path)
    r.done()
    return value


def encode(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -- the messages (§8) -------------------------------------------------------------------

_FED = Bin(_ID_BYTES, _ID_BYTES)
_ID = Bin(_ID_BYTES, _ID_BYTES)
_AUTHOR = Str(32, MEMBER_ID)
_SEQ = Int(1, 2**63 - 1)
_EVENT = Bin(1, 64 * 1024)
_PROOF = Bin(1, 2 * 64 * 1024 + 64)
_HEADS = List(Tuple((_AUTHOR, _SEQ, _ID), 3), MAX_AUTHORS)
_FROZEN = List(Tuple((_AUTHOR, _SEQ), 2), MAX_AUTHORS)
_WANT = List(Tuple((_AUTHOR, _SEQ, Optional(_ID)), 2), MAX_AUTHORS)

SUMMARY = Map({"fed": _FED, "summary": _ID}, frozenset({"fed", "summary"}))
SUMMARY_ANSWER = Map({"same": Bool(), "heads": _HEADS, "frozen": _FROZEN,
                      "now": Int(0, 2**63 - 1)})
EXCHANGE = Map({"fed": _FED, "events": List(_EVENT, MAX_EVENTS_PER_MESSAGE), "want": _WANT,
                "proofs": List(_PROOF, MAX_PROOFS_PER_MESSAGE),
                "want_proofs": List(_AUTHOR, MAX_AUTHORS)}, frozenset({"fed"}))
EXCHANGE_ANSWER = Map({"events": List(_EVENT, MAX_EVENTS_PER_MESSAGE),
                       "proofs": List(_PROOF, MAX_PROOFS_PER_MESSAGE),
                       "accepted": Int(), "refused": Int()})
ANNOUNCE = Map({"fed": _FED, "heads": _HEADS, "frozen": _FROZEN}, frozenset({"fed", "heads"}))
ANNOUNCE_ANSWER = Map({"want": _WANT})
DISCLOSURES = Map({"fed": _FED, "events": List(_ID, MAX_DISCLOSURE_IDS)},
                  frozenset({"fed", "events"}))
DISCLOSURES_ANSWER = Map({"disclosures": List(Bin(1, 16 * 1024), MAX_DISCLOSURES_PER_ANSWER)},
                         frozenset({"disclosures"}))
BILATERAL = Map({"fed": _FED, "events": List(_ID, MAX_BILATERAL_IDS)},
                frozenset({"fed", "events"}))
BILATERAL_ANSWER = Map({"sealed": List(Bin(1, 64 * 1024), MAX_SEALED_PER_ANSWER)},
                       frozenset({"sealed"}))
APPLY = Map({"fed": _FED, "application": Bin(1, 16 * 1024)}, frozenset({"fed", "application"}))
APPLY_ANSWER = Map({"received": Bool(), "id": _ID, "fingerprint": Str(64)})
ERROR = Map({"code": Str(64), "message": Str(4096), "path": Str(512)},
            frozenset({"code", "message"}))


def wants(items: Sequence[tuple[Any, ...]]) -> list[Want]:
    return [Want(t[0], t[1], t[2] if len(t) > 2 else None) for t in items]


def wants_to_wire(items: Sequence[Want]) -> list[list[Any]]:
    return [[w.author, w.first, w.prev] for w in items]
