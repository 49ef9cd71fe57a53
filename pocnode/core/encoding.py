"""Canonical msgpack: the one byte form every signed or hashed value has (PROTOCOL.md §2).

Signatures and event ids are computed over bytes, so two encoders must never
produce two byte strings for one value, and a decoder must refuse every byte
string that is not the canonical form of what it decodes to. Otherwise a relay
could re-encode an event, keep its signature valid and change its id.

Two decoders live here and must agree on every input (a property test holds
them to it):

* :func:`_decode_reference` is the spec written as code: one left-to-right
  pass that raises, at the first violation, the exact error §2.4 names.
* :func:`decode` runs a fast path first (the C msgpack decoder, a walk that
  checks key order, types and depth, and a re-encode compared byte for byte).
  Whatever it does not accept goes to the reference decoder, which either names
  the error or, for canonical input outside the fast path's subset (non-ASCII
  map keys), decodes it. Valid protocol input never pays for the Python byte loop.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pocnode.core.errors import (
    DuplicateKey,
    ForbiddenType,
    InvalidUtf8,
    MapKeyType,
    NonMinimal,
    Oversize,
    TooDeep,
    TrailingBytes,
    Truncated,
    UnsortedKeys,
)

# A record is a few KB; this bounds what one hostile peer can make us decode or buffer.
# 64 KiB also holds a hybrid-signed event (ML-DSA-65 signatures are 3,309 bytes).
MAX_EVENT_BYTES = 64 * 1024
# The deepest structure the protocol defines is 7 containers; 16 leaves room for
# future fields while keeping recursion trivially bounded.
MAX_DEPTH = 16

Value = Any  # None | bool | int | str | bytes | list[Value] | dict[str, Value]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


# -- encoding -----------------------------------------------------------------


def encode(value: Value) -> bytes:
    """The canonical bytes of ``value``; raises TypeError/ValueError for values §2 forbids.

    Tuples encode as arrays. Map keys must be str; they are written in ascending
    order of their encoded bytes, which for str keys is shortest first, then
    bytewise (§2.3).
    """
    return msgpack.packb(_canonical(value, 1), use_bin_type=True)


def _canonical(value: Value, depth: int) -> Value:
    kind = type(value)
    if kind is dict:
        if depth > MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        for key in value:
            if type(key) is not str:
                raise TypeError(f"map key must be str, got {type(key).__name__}")
        return {k: _canonical(value[k], depth + 1) for k in sorted(value, key=key_order)}
    if kind is list or kind is tuple:
        if depth > MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        return [_canonical(item, depth + 1) for item in value]
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"integer {value} outside [-2^63, 2^64-1]")
        return value
    if kind is bytearray or kind is memoryview:
        return bytes(value)
    if value is None or kind is bool or kind is str or kind is bytes:
        return value
    raise TypeError(f"{kind.__name__} has no canonical encoding (§2.1)")


def key_order(key: str) -> tuple[int, bytes]:
    """Sort key equal to the order of encoded str keys: by UTF-8 length, then bytes."""
    raw = key.encode("utf-8")
    return (len(raw), raw)


# -- decoding: fast path ------------------------------------------------------------


class _NotCanonical(Exception):
    """Internal: the fast path gives up; the reference decoder names the error."""


def _ext_refused(code: int, data: bytes) -> None:
    raise _NotCanonical


def decode(data: bytes, *, max_size: int = MAX_EVENT_BYTES, exact: bool = True) -> Value:
    """Decode canonical bytes, or raise the EncodingError that §2.4 names.

    ``exact=False`` skips the reference decoder: input the fast path does not accept is
    refused at C speed with a generic NonMinimal, not the precise code. For framing that
    only ever holds ASCII keys (peer requests) and that a stranger can send in megabytes,
    where naming the exact fault is not worth 330 ns a byte of Python.
    """
    if len(data) > max_size:
        raise Oversize(f"{len(data)} bytes, limit {max_size}")
    data = bytes(data)
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_refused,
                                timestamp=0)
        if type(value) is dict or type(value) is list:
            _check_tree(value, 1)
        elif type(value) not in _SCALARS:
            raise _NotCanonical
        if msgpack.packb(value, use_bin_type=True) == data:
            return value
    except Exception:  # noqa: BLE001, S110 - any refusal: the reference decoder names it
        pass
    if not exact:
        raise NonMinimal("not canonical msgpack (fast check; exact cause not sought)")
    # The fast path covers the common subset (ASCII map keys, say) and is never trusted to
    # refuse: the reference decoder has the last word, and raises the exact error.
    return _decode_reference(data)


def _check_tree(value: Value, depth: int) -> None:
    """Key order, key and value types, depth: what a byte-for-byte re-encode cannot see."""
    if depth > MAX_DEPTH:
        raise _NotCanonical
    if type(value) is dict:
        prev_len = -1
        prev = ""
        for key, item in value.items():
            # ASCII keys order as their encoded bytes do: shortest first, then bytewise.
            if type(key) is not str or not key.isascii():
                raise _NotCanonical
            n = len(key)
            if n < prev_len or (n == prev_len and key <= prev):
                raise _NotCanonical
            prev_len = n
            prev = key
            kind = type(item)
            if kind is dict or kind is list:
                _check_tree(item, depth + 1)
            elif kind not in _SCALARS:
                raise _NotCanonical
    else:
        for item in value:
            kind = type(item)
            if kind is dict or kind is list:
                _check_tree(item, depth + 1)
            elif kind not in _SCALARS:
                raise _NotCanonical


_SCALARS = frozenset({type(None), bool, int, str, bytes})


# -- decoding: reference (the spec as code) -------------------------------------------


def _decode_reference(data: bytes) -> Value:
    value, pos = _read(data, 0, 1)
    if pos != len(data):
        raise TrailingBytes(f"{len(data) - pos} bytes after the value, at offset {pos}")
    return value


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise Truncated(f"{what} needs {n} bytes at offset {pos}, {len(data) - pos} remain")


def _uint(data: bytes, pos: int, n: int, what: str) -> int:
    _need(data, pos, n, what)
    return int.from_bytes(data[pos : pos + n], "big")


def _read(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    _need(data, pos, 1, "a value")
    tag = data[pos]
    start = pos
    pos += 1
    if tag <= 0x7F:
        return tag, pos
    if tag >= 0xE0:
        return tag - 0x100, pos
    if 0xA0 <= tag <= 0xBF:
        return _read_str(data, pos, tag & 0x1F, start)
    if 0x90 <= tag <= 0x9F:
        return _read_array(data, pos, tag & 0x0F, depth, start)
    if 0x80 <= tag <= 0x8F:
        return _read_map(data, pos, tag & 0x0F, depth, start)
    if tag == 0xC0:
        return None, pos
    if tag == 0xC2:
        return False, pos
    if tag == 0xC3:
        return True, pos
    if tag in _FORBIDDEN:
        raise ForbiddenType(f"{_FORBIDDEN[tag]} (0x{tag:02x}) at offset {start}")
    if tag in _UINTS:
        width, floor = _UINTS[tag]
        value = _uint(data, pos, width, f"uint{width * 8}")
        if value < floor:
            raise NonMinimal(f"{value} written as uint{width * 8} at offset {start}")
        return value, pos + width
    if tag in _INTS:
        width, ceiling = _INTS[tag]
        value = int.from_bytes(_take(data, pos, width, f"int{width * 8}"), "big", signed=True)
        if value >= ceiling:
            raise NonMinimal(f"{value} written as int{width * 8} at offset {start}")
        return value, pos + width
    width, kind, floor = _LENGTHS[tag]
    length = _uint(data, pos, width, f"{kind} length")
    pos += width
    if length < floor:
        raise NonMinimal(f"{kind} of length {length} written with a {width}-byte length "
                         f"at offset {start}")
    if kind == "str":
        return _read_str(data, pos, length, start)
    if kind == "bin":
        _need(data, pos, length, "bin payload")
        return data[pos : pos + length], pos + length
    if kind == "array":
        return _read_array(data, pos, length, depth, start)
    return _read_map(data, pos, length, depth, start)


def _take(data: bytes, pos: int, n: int, what: str) -> bytes:
    _need(data, pos, n, what)
    return data[pos : pos + n]


def _read_str(data: bytes, pos: int, length: int, start: int) -> tuple[str, int]:
    raw = _take(data, pos, length, "str payload")
    try:
        return raw.decode("utf-8"), pos + length
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"str at offset {start}: {exc.reason}") from None


def _read_array(data: bytes, pos: int, count: int, depth: int, start: int) -> tuple[list, int]:
    if depth > MAX_DEPTH:
        raise TooDeep(f"array at offset {start} is at depth {depth}, limit {MAX_DEPTH}")
    if count > len(data) - pos:
        raise Truncated(f"array of {count} items at offset {start}, {len(data) - pos} bytes remain")
    items = []
    for _ in range(count):
        item, pos = _read(data, pos, depth + 1)
        items.append(item)
    return items, pos


def _read_map(data: bytes, pos: int, count: int, depth: int, start: int) -> tuple[dict, int]:
    if depth > MAX_DEPTH:
        raise TooDeep(f"map at offset {start} is at depth {depth}, limit {MAX_DEPTH}")
    if 2 * count > len(data) - pos:
        raise Truncated(f"map of {count} entries at offset {start}, {len(data) - pos} bytes remain")
    out: dict[str, Value] = {}
    prev_key: bytes | None = None
    for _ in range(count):
        _need(data, pos, 1, "a map key")
        if not _is_str_tag(data[pos]):
            raise MapKeyType(f"map key at offset {pos} is not a str (0x{data[pos]:02x})")
        key_start = pos
        key, pos = _read(data, pos, depth + 1)
        key_bytes = data[key_start:pos]
        if prev_key is not None:
            if key_bytes == prev_key:
                raise DuplicateKey(f"key {key!r:.40} twice in the map at offset {start}")
            if key_bytes < prev_key:
                raise UnsortedKeys(f"key {key!r:.40} at offset {key_start} sorts before "
                                   f"the key preceding it")
        prev_key = key_bytes
        out[key], pos = _read(data, pos, depth + 1)
    return out, pos


def _is_str_tag(tag: int) -> bool:
    return 0xA0 <= tag <= 0xBF or 0xD9 <= tag <= 0xDB


_FORBIDDEN = {
    0xC1: "the never-used byte",
    0xC7: "ext 8", 0xC8: "ext 16", 0xC9: "ext 32",
    0xCA: "float 32", 0xCB: "float 64",
    0xD4: "fixext 1", 0xD5: "fixext 2", 0xD6: "fixext 4", 0xD7: "fixext 8", 0xD8: "fixext 16",
}
# tag: (width in bytes, smallest value that needs this width)
_UINTS = {0xCC: (1, 0x80), 0xCD: (2, 0x100), 0xCE: (4, 0x1_0000), 0xCF: (8, 0x1_0000_0000)}
# tag: (width in bytes, smallest value that is too large for this width's canonical use)
_INTS = {0xD0: (1, -32), 0xD1: (2, -128), 0xD2: (4, -32768), 0xD3: (8, -(2**31))}
# tag: (width of the length field, kind, shortest length that needs this form)
_LENGTHS = {
    0xC4: (1, "bin", 0), 0xC5: (2, "bin", 0x100), 0xC6: (4, "bin", 0x1_0000),
    0xD9: (1, "str", 32), 0xDA: (2, "str", 0x100), 0xDB: (4, "str", 0x1_0000),
    0xDC: (2, "array", 16), 0xDD: (4, "array", 0x1_0000),
    0xDE: (2, "map", 16), 0xDF: (4, "map", 0x1_0000),
}
