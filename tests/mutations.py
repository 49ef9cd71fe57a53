"""Mutations for fuzzing, shared by the unit and integration fuzz tests (issue 13).

Each takes hypothesis's ``draw`` so that a failure shrinks to the smallest change that
shows it, and each knows the protocol only as msgpack values: what a field means is the
tests' business, not these helpers'.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from pocnode.core import encoding
from tests.unit.test_encoding import VALUES

# Values at the edges of what the protocol's types and limits allow.
_EDGES = st.sampled_from([
    None, True, False, 0, 1, -1, 31, 32, 127, 128, 255, 256, 2**31, 2**32, 2**63 - 1, 2**63,
    2**64 - 1, -(2**63), "", "x" * 31, "x" * 32, "x" * 257, "\x00", "\u2028", "é", "ATL",
    "ZZZ", b"", b"\x00" * 16, b"\x00" * 31, b"\x00" * 32, b"\x00" * 33, [], {}, [[]],
    {"": None}, {"ed25519": b"\x00" * 32}, {"alg": "ed25519", "ed25519": b"\x00" * 64},
])
WILD = st.one_of(_EDGES, VALUES)


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) below ``value``, depth first."""
    out: list[tuple[Any, Any]] = []
    todo = [value]
    while todo:
        node = todo.pop()
        keys = list(node) if type(node) is dict else range(len(node)) if type(node) is list else ()
        for key in keys:
            out.append((node, key))
            todo.append(node[key])
    return out


def mutate_tree(value: Any, draw: st.DrawFn) -> Any:
    """One structure-aware change anywhere in a decoded value: a field dropped, added,
    retyped, replaced by an edge value, a list grown past a limit, a container nested deep."""
    root = {"root": copy.deepcopy(value)}
    container, key = draw(st.sampled_from(_slots(root)))
    target = container[key]
    how = draw(st.sampled_from(["replace", "drop", "add", "retype", "grow", "nest", "stretch"]))
    if how == "drop" and key != "root":
        del container[key]
    elif how == "add" and type(target) in (dict, list):
        item = draw(WILD)
        if type(target) is dict:
            target[draw(st.sampled_from(["x", "body", "sig", "seq", "kind", ""]) | st.text(
                max_size=6))] = item
        else:
            target.insert(draw(st.integers(0, len(target))), item)
    elif how == "retype":
        if type(target) is str:
            container[key] = target.encode()
        elif type(target) is bytes:
            container[key] = target.decode("latin-1")
        elif type(target) is int and type(target) is not bool:
            container[key] = str(target)
        else:
            container[key] = [target]
    elif how == "grow" and type(target) is list:
        size = draw(st.sampled_from([16, 17, 33, 257, 1025]))
        container[key] = (target * (size // max(len(target), 1) + 1))[:size] if target \
            else [b"\x00" * 32] * size
    elif how == "nest":
        for _ in range(draw(st.integers(1, 20))):
            target = [target]
        container[key] = target
    elif how == "stretch" and type(target) in (str, bytes):
        size = draw(st.sampled_from([0, 1, 31, 32, 33, 64, 65, 256, 2001, 70_000]))
        filler = target[-1:] or (b"a" if type(target) is bytes else "a")
        container[key] = (target + filler * size)[:size]
    else:
        container[key] = draw(WILD)
    return root.get("root")


def mutate_bytes(data: bytes, draw: st.DrawFn) -> bytes:
    """One to three byte-level changes: flips, inserts, deletes, duplicated or swapped
    ranges, truncation, a header made longer or shorter."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        n = len(out)
        how = draw(st.sampled_from(["set", "flip", "insert", "delete", "dup", "truncate",
                                    "append", "bump"]))
        i = draw(st.integers(0, max(n - 1, 0)))
        if how == "set" and n:
            out[i] = draw(st.integers(0, 255))
        elif how == "flip" and n:
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete" and n:
            del out[i:i + draw(st.integers(1, 4))]
        elif how == "dup" and n:
            out[i:i] = out[i:i + draw(st.integers(1, 16))]
        elif how == "truncate":
            del out[i:]
        elif how == "append":
            out += draw(st.binary(min_size=1, max_size=4))
        elif n:  # bump: a count or length off by a little
            out[i] = (out[i] + draw(st.sampled_from([1, -1, 16, -16]))) % 256
    return bytes(out)


# Bytes after each tag that hold a length or a value, so noise can be shaped like msgpack.
_HEADER = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xC7: 2, 0xC8: 3, 0xC9: 5, 0xCA: 4, 0xCB: 8,
           0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
           0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17, 0xD9: 1, 0xDA: 2, 0xDB: 4,
           0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}


@st.composite
def msgpack_soup(draw: st.DrawFn) -> bytes:
    out = bytearray()
    for _ in range(draw(st.integers(1, 12))):
        tag = draw(st.integers(0, 255) | st.sampled_from(sorted(_HEADER)))
        out.append(tag)
        width = _HEADER.get(tag, 0)
        if width:
            small = st.integers(0, 40) | st.sampled_from([255, 256, 65535, 65536])
            n = draw(small | st.integers(0, 2 ** (8 * width) - 1))
            out += (n % 2 ** (8 * width)).to_bytes(width, "big")
        out += draw(st.binary(max_size=6))
    return bytes(out)


def loose(value: Any, draw: st.DrawFn, faults: list[str]) -> bytes:
    """``value`` written in any valid msgpack spelling; ``faults`` gets, in byte order,
    the §9 code of every place the spelling is not the canonical one."""
    canonical = encoding.encode(value)
    if value is None or type(value) is bool:
        return canonical
    if type(value) is int:
        forms = [canonical]
        for tag, low, high in ((0xCC, 0, 2**8), (0xCD, 0, 2**16), (0xCE, 0, 2**32),
                               (0xCF, 0, 2**64)):
            if low <= value < high:
                forms.append(bytes([tag]) + value.to_bytes((high.bit_length() - 1) // 8, "big"))
        for tag, width in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if -(2 ** (8 * width - 1)) <= value < 2 ** (8 * width - 1):
                forms.append(bytes([tag]) + value.to_bytes(width, "big", signed=True))
        chosen = draw(st.sampled_from(forms))
        if chosen != canonical:
            faults.append("non_minimal")
        return chosen
    if type(value) in (str, bytes, list, dict):
        size = len(value.encode()) if type(value) is str else len(value)
        short, tags = {str: (32, (0xD9, 0xDA, 0xDB)), bytes: (0, (0xC4, 0xC5, 0xC6)),
                       list: (16, (0xDC, 0xDD)), dict: (16, (0xDE, 0xDF))}[type(value)]
        widths = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4, 0xDC: 2, 0xDD: 4,
                  0xDE: 2, 0xDF: 4}
        forms = []
        if size < short:
            forms.append(bytes([{str: 0xA0, list: 0x90, dict: 0x80}[type(value)] | size]))
        forms += [bytes([t]) + size.to_bytes(widths[t], "big") for t in tags
                  if size < 2 ** (8 * widths[t])]
        # forms[0], the shortest header that fits, is the canonical one.
        header = draw(st.sampled_from(forms))
        if header != forms[0]:
            faults.append("non_minimal")
        if type(value) is str:
            return header + value.encode()
        if type(value) is bytes:
            return header + value
        if type(value) is list:
            return header + b"".join(loose(item, draw, faults) for item in value)
        keys = sorted(value, key=encoding.key_order)
        if len(keys) > 1 and draw(st.booleans()):
            keys = draw(st.permutations(keys))
        out = bytearray(header)
        prev: bytes | None = None
        for key in keys:
            out += loose(key, draw, faults)
            if prev is not None and encoding.encode(key) < prev:
                faults.append("unsorted_keys")
            prev = encoding.encode(key)
            out += loose(value[key], draw, faults)
        return bytes(out)
    raise AssertionError(f"no loose form for {type(value).__name__}")
