"""Selective disclosure of contact records (PROTOCOL.md §6.3), in the manner of SD-JWT.

An author's record is compiled into a signed body that carries ``public`` values
in clear and every other value only as a salted SHA-256 digest. The matching
*disclosures*, canonical ``[salt, entry id, field, value]`` arrays, travel
separately to the audience the author chose. Anyone can check every signature
and count what is withheld; only a holder of a disclosure learns its value, and
the 128-bit salt stops anyone guessing a phone number from its digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pocnode.core import encoding
from pocnode.core.errors import DisclosureMismatch, InvalidBody, InvalidRecord, Malformed
from pocnode.core.record import (
    CONTENT_FIELDS,
    TEMPLATE_VERSION,
    validate_field_value,
    validate_plain_record,
    validate_signed_body,
)

SALT_BYTES = 16
# The largest field value is notes, 2,000 characters (up to 8,000 bytes of UTF-8); eight
# secure channels of 512 characters can reach twice that. Larger values must be split.
MAX_DISCLOSURE_BYTES = 16 * 1024
# What a signed record body may take of an event (§2.5): the envelope, the payload's other
# fields and a hybrid signature (3.3 KB) need the rest.
MAX_BODY_BYTES = encoding.MAX_EVENT_BYTES - 8 * 1024
WITHHELD = ("members", "bilateral")


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One withheld value, checked against the signed digest it claims to open."""

    raw: bytes
    digest: bytes
    entry: str
    name: str
    value: Any
    visibility: str


@dataclass(frozen=True, slots=True)
class CompiledRecord:
    """What an author publishes (``body``, signed) and keeps to disclose (``disclosures``)."""

    body: dict[str, Any]
    disclosures: tuple[Disclosure, ...]


def compile_record(plain: dict[str, Any], salt: Callable[[int], bytes]) -> CompiledRecord:
    """Turn an author's plaintext record into a signed body and its disclosures.

    ``salt(n)`` returns n random bytes; the adapter passes ``os.urandom``, tests a
    seeded source. Salts must never repeat or be predictable (§6.3).
    """
    validate_plain_record(plain)
    entries = []
    disclosures = []
    salts: set[bytes] = set()
    for index, entry in enumerate(plain["entries"]):
        overrides = entry.get("field_visibility", {})
        fields: dict[str, Any] = {}
        digests: dict[str, list[bytes]] = {"members": [], "bilateral": []}
        for name in CONTENT_FIELDS:
            if name not in entry:
                continue
            visibility = overrides.get(name, entry["visibility"])
            if visibility == "public":
                fields[name] = entry[name]
                continue
            s = salt(SALT_BYTES)
            if type(s) is not bytes or len(s) != SALT_BYTES or s in salts:
                raise ValueError(f"salt source must give fresh {SALT_BYTES}-byte salts")
            salts.add(s)
            raw = encoding.encode([s, entry["id"], name, entry[name]])
            if len(raw) > MAX_DISCLOSURE_BYTES:
                raise InvalidRecord(
                    f"value too large to disclose: {len(raw)} bytes encoded, limit "
                    f"{MAX_DISCLOSURE_BYTES}; shorten it or make it public",
                    path=f"entries[{index}].{name}")
            digest = hashlib.sha256(raw).digest()
            digests[visibility].append(digest)
            disclosures.append(Disclosure(raw=raw, digest=digest, entry=entry["id"], name=name,
                                          value=entry[name], visibility=visibility))
        signed = {"id": entry["id"], "domain": entry["domain"],
                  "visibility": entry["visibility"], "fields": fields}
        sd = {vis: sorted(ds) for vis, ds in digests.items() if ds}
        if sd:
            signed["sd"] = sd
        entries.append(signed)
    body: dict[str, Any] = {"template": TEMPLATE_VERSION, "entries": entries}
    if "node" in plain:
        body["node"] = plain["node"]
    # Round-trip through the encoding, so the body is exactly what receivers will decode.
    encoded = encoding.encode(body)
    if len(encoded) > MAX_BODY_BYTES:
        raise InvalidRecord(f"record too large: {len(encoded)} bytes signed, limit "
                            f"{MAX_BODY_BYTES}; shorten notes or list fewer entries",
                            path="entries")
    body = encoding.decode(encoded)
    validate_signed_body(body)
    return CompiledRecord(body=body, disclosures=tuple(disclosures))


def check_disclosure(body: dict[str, Any], raw: bytes) -> Disclosure:
    """§6.4: a disclosure is accepted only if its digest is in the signed body, under the
    entry it names, and its value follows the template."""
    value = encoding.decode(raw, max_size=MAX_DISCLOSURE_BYTES)
    if type(value) is not list or len(value) != 4:
        raise Malformed("disclosure must be an array [salt, entry, field, value]",
                        path="disclosure")
    salt, entry_id, name, field_value = value
    if type(salt) is not bytes or len(salt) != SALT_BYTES:
        raise Malformed(f"disclosure salt must be bin of {SALT_BYTES} bytes",
                        path="disclosure[0]")
    if type(entry_id) is not str or type(name) is not str:
        raise Malformed("disclosure entry and field must be str", path="disclosure")
    digest = hashlib.sha256(raw).digest()
    entry = next((e for e in body["entries"] if e["id"] == entry_id), None)
    if entry is None:
        raise DisclosureMismatch(f"no entry {entry_id!r:.40} in the record",
                                 path="disclosure[1]")
    visibility = next((vis for vis in WITHHELD if digest in entry.get("sd", {}).get(vis, ())),
                      None)
    if visibility is None:
        raise DisclosureMismatch(f"digest {digest.hex()[:16]} is not among entry "
                                 f"{entry_id}'s digests", path="disclosure")
    path = f"disclosure.{entry_id}.{name}"
    if name not in CONTENT_FIELDS or name in entry["fields"]:
        raise InvalidBody(f"{name!r:.40} is not a withheld content field of {entry_id}",
                          path=path)
    try:
        validate_field_value(name, field_value, path=path, error=InvalidBody)
    except InvalidBody as exc:
        # Say what is wrong, never the value: it is confidential, and errors get logged.
        raise InvalidBody(f"the disclosed {name} does not follow the template",
                          path=exc.path) from None
    return Disclosure(raw=bytes(raw), digest=digest, entry=entry_id, name=name,
                      value=field_value, visibility=visibility)


def viewer_record(body: dict[str, Any], disclosures: Iterable[Disclosure],
                  may_read: Iterable[str]) -> dict[str, Any]:
    """:func:`reveal`, with each entry's unread values split in two: ``withheld`` (of a
    visibility the viewer may not read) and ``awaiting`` (the viewer may read them and
    has not received them yet), so an operator never takes one for the other."""
    may = set(may_read)
    view = reveal(body, disclosures)
    for entry in view["entries"]:
        counts = entry["withheld"]
        entry["withheld"] = {vis: n for vis, n in counts.items() if vis not in may}
        entry["awaiting"] = {vis: n for vis, n in counts.items() if vis in may}
    return view


def reveal(body: dict[str, Any], disclosures: Iterable[Disclosure]) -> dict[str, Any]:
    """The record as a viewer holding ``disclosures`` sees it: values it may read, plus,
    per entry, how many values at each visibility exist but are withheld from it."""
    opened: dict[tuple[str, bytes], Disclosure] = {(d.entry, d.digest): d for d in disclosures}
    entries = []
    for entry in body["entries"]:
        fields = dict(entry["fields"])
        visibility = {name: "public" for name in fields}
        withheld: dict[str, int] = {}
        for vis in WITHHELD:
            for digest in entry.get("sd", {}).get(vis, ()):
                d = opened.get((entry["id"], digest))
                if d is None:
                    withheld[vis] = withheld.get(vis, 0) + 1
                else:
                    fields[d.name] = d.value
                    visibility[d.name] = vis
        ordered = {name: fields[name] for name in CONTENT_FIELDS if name in fields}
        entries.append({"id": entry["id"], "domain": entry["domain"],
                        "visibility": entry["visibility"], "fields": ordered,
                        "field_visibility": {n: visibility[n] for n in ordered},
                        "withheld": withheld})
    out: dict[str, Any] = {"template": body["template"], "entries": entries}
    if "node" in body:
        out["node"] = body["node"]
    return out


@dataclass(frozen=True, slots=True)
class DisclosureRow:
    """A disclosure as a node holds it: checked against ``event_id``'s signed digests."""

    author: str
    event_id: bytes
    digest: bytes
    entry: str
    field: str
    visibility: str
    raw: bytes

    @classmethod
    def of(cls, author: str, event_id: bytes, d: Disclosure) -> DisclosureRow:
        return cls(author=author, event_id=event_id, digest=d.digest, entry=d.entry,
                   field=d.name, visibility=d.visibility, raw=d.raw)


def withheld_digests(body: dict[str, Any], visibility: str) -> set[bytes]:
    """Every digest of ``visibility`` in a signed record body."""
    return {d for e in body["entries"] for d in e.get("sd", {}).get(visibility, ())}
