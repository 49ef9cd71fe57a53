"""The contact record template (template 1): what a state may say about its PoCs.

States asked for a common template so that a "level mismatch" cannot happen: a diplomat
at one end, an incident handler at the other, neither knowing it. The template is that
contract. It fixes the names and the meaning of every field, and otherwise leaves the
choice to the state: one PoC or one per domain, which agency, whether to name a person.
Everything but the minimum is optional. The minimum is an entry id, a domain, a visibility,
an organisation and one way to reach it (email, phone or a secure channel).

A record exists in two forms, and this module checks both:

* the **plaintext record** the author writes (JSON or YAML), checked by
  :func:`validate_plain_record` and described by ``protocol/record.schema.json``, which
  states every rule but two JSON Schema cannot: entry ids are unique, and ``template`` is
  an int (JSON Schema takes ``1.0`` for ``1``);
* the **signed body** of a ``record`` event, in which public values travel in clear and
  the others only as salted digests, checked by :func:`validate_signed_body`.

This runs on every record a node receives, so it is plain loops over decoded values, with
no I/O and no clock. Values arrive from JSON or msgpack: ``bool`` is not an int here,
floats are refused where an int is expected and bytes where a str is expected. Lengths are
counted in Unicode code points, as JSON Schema counts them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pocnode.core.errors import InvalidBody, InvalidRecord, PocError

TEMPLATE_VERSION = 1

DOMAINS: tuple[str, ...] = ("diplomatic", "policy", "technical")
VISIBILITIES: tuple[str, ...] = ("public", "members", "bilateral")
LEVELS: tuple[str, ...] = ("political", "senior", "working", "operational")
CHANNEL_TYPES: tuple[str, ...] = ("openpgp", "smime", "signal", "matrix", "threema", "other")

# The fields an author may withhold (per field_visibility), in template order.
CONTENT_FIELDS: tuple[str, ...] = (
    "organisation",
    "unit",
    "role",
    "level",
    "person",
    "email",
    "phone",
    "secure_channels",
    "languages",
    "hours",
    "notes",
)
# The fields that say what an entry is and who may read it; always in clear.
STRUCTURAL_FIELDS: tuple[str, ...] = ("id", "domain", "visibility", "field_visibility")
# The visibilities whose values travel as digests in the signed body.
DIGEST_VISIBILITIES: tuple[str, ...] = ("members", "bilateral")

# -- limits ------------------------------------------------------------------------------

# A state lists a few PoCs per domain; 32 keeps one record to tens of KB at most.
MAX_ENTRIES = 32
# A node has a handful of addresses (IPv4, IPv6, a backup site); more is a flooding aid.
MAX_ENDPOINTS = 8
# Room for a long host name and path; a URL longer than this is not one a person types.
MAX_ENDPOINT_CHARS = 256
# Names of an organisation, unit, role or person fit in a line.
MAX_TEXT_CHARS = 200
# RFC 5321 limits a forward path to 256 octets, 254 of them the address itself.
MIN_EMAIL_CHARS = 3
MAX_EMAIL_CHARS = 254
# A few channels per entry (OpenPGP, S/MIME, a messenger or two); not a list of devices.
MAX_SECURE_CHANNELS = 8
# Fits an OpenPGP fingerprint URI, a Matrix id or a short armoured key reference.
MAX_CHANNEL_VALUE_CHARS = 512
# The six UN languages and a few regional ones.
MAX_LANGUAGES = 16
# The longest IANA zone name is about 30 characters.
MAX_TIMEZONE_CHARS = 64
# "Mon-Fri 08:00-18:00, 24/7 for incidents" and a little more.
MAX_AVAILABILITY_CHARS = 128
# Free text for procedure hints; a page, not a manual.
MAX_NOTES_CHARS = 2000
# One digest per withheld content field (11 in template 1) fits, with room for a later
# template's fields, and bounds what a hostile author can make every node store.
MAX_DIGESTS_PER_VISIBILITY = 16
# SHA-256.
DIGEST_BYTES = 32

# -- patterns ----------------------------------------------------------------------------

# White space as Unicode defines it (the White_Space property, PROTOCOL.md §6.1), spelled
# out: "\s" means something else in each regex engine (Python's adds U+001C..U+001F,
# ECMA-262's adds U+FEFF and drops U+0085, RE2's is ASCII only), and every node must reach
# the same verdict as the JSON Schema.
_WS = r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# All used with fullmatch: Python's "$" would also accept a trailing newline.
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_EMAIL_RE = re.compile(rf"[^@{_WS}]+@[^@{_WS}]+\.[^@{_WS}]+")
_PHONE_RE = re.compile(r"\+[1-9][0-9]{6,14}")  # E.164
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")  # BCP 47, loosely
_TIMEZONE_RE = re.compile(r"[A-Za-z0-9_+/-]+")  # IANA names ("Europe/Geneva") or "UTC+01"
# The length cap (MAX_ENDPOINT_CHARS) is checked before this; "+" here, not {1,248}, so
# engines that count UTF-16 units in a quantifier agree.
_ENDPOINT_RE = re.compile(rf"https://[^{_WS}]+")

_TOP_KEYS = frozenset(("template", "entries", "node"))
_TOP_REQUIRED = ("template", "entries")
_NODE_KEYS = frozenset(("endpoints",))
_NODE_REQUIRED = ("endpoints",)
_PLAIN_ENTRY_KEYS = frozenset(CONTENT_FIELDS + STRUCTURAL_FIELDS)
_PLAIN_ENTRY_REQUIRED = ("id", "domain", "visibility", "organisation")
_SIGNED_ENTRY_KEYS = frozenset(("id", "domain", "visibility", "fields", "sd"))
_SIGNED_ENTRY_REQUIRED = ("id", "domain", "visibility", "fields")
_CHANNEL_KEYS = frozenset(("type", "value"))
_CHANNEL_REQUIRED = ("type", "value")
_HOURS_KEYS = frozenset(("timezone", "availability"))
_SD_KEYS = frozenset(DIGEST_VISIBILITIES)
_CONTENT_SET = frozenset(CONTENT_FIELDS)
_DOMAIN_SET = frozenset(DOMAINS)
_VISIBILITY_SET = frozenset(VISIBILITIES)
_LEVEL_SET = frozenset(LEVELS)
_CHANNEL_TYPE_SET = frozenset(CHANNEL_TYPES)

# Longest value quoted in an error message.
_SHOW_CHARS = 40

_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    type(None): "null",
}

_Error = type[PocError]


# -- public API --------------------------------------------------------------------------


def validate_plain_record(obj: object) -> None:
    """Refuse, with the path of the first broken rule, a record the template does not allow.

    Checked before an author signs, so a mistake is named in their own file's terms
    (``entries[0].email``) instead of surfacing as a digest nobody can read. The first of
    :func:`plain_record_errors`, which an author's tools show all at once.
    """
    errors = plain_record_errors(obj)
    if errors:
        raise errors[0]


def validate_signed_body(body: object) -> None:
    """Refuse a ``record`` event body that no valid plaintext record could have produced.

    Only the clear part can be checked here; what hides behind a digest is checked when a
    disclosure reveals it (it must then pass :func:`validate_field_value`).
    """
    entries = _check_envelope(body, "body", InvalidBody)
    ids: set[str] = set()
    for i, entry in enumerate(entries):
        path = f"body.entries[{i}]"
        entry_id = _check_signed_entry(entry, path)
        _check_unique_id(entry_id, ids, path, InvalidBody)


def validate_field_value(
    name: str, value: object, *, path: str, error: _Error = InvalidRecord
) -> None:
    """Check one content field; shared by both forms and by disclosures of withheld fields."""
    check = _FIELD_CHECKS.get(name) if type(name) is str else None
    if check is None:
        raise error(f"unknown field {_show(name)}", path=path)
    check(value, path, error)


def example_record() -> dict:
    """A state with one PoC per domain, each at another visibility: a starting point for
    authors and a fixture for tests."""
    return {
        "template": TEMPLATE_VERSION,
        "entries": [
            {
                "id": "mfa-cyber",
                "domain": "diplomatic",
                "visibility": "public",
                "organisation": "Ministry of Foreign Affairs",
                "unit": "Division for Cyber Diplomacy",
                "role": "Head of Division",
                "level": "senior",
                "email": "cyber-poc@mfa.example.org",
                "phone": "+41225550123",
                "languages": ["en", "fr"],
                "hours": {"timezone": "Europe/Zurich", "availability": "Mon-Fri 08:00-18:00"},
                # The desk line is for members only; the rest of the entry is public.
                "field_visibility": {"phone": "members"},
            },
            {
                "id": "ncsc-policy",
                "domain": "policy",
                "visibility": "members",
                "organisation": "National Cyber Security Centre",
                "unit": "Strategy and International Affairs",
                "role": "Deputy Director",
                "level": "political",
                "email": "policy@ncsc.example.org",
                "languages": ["en", "de", "fr"],
            },
            {
                "id": "cert",
                "domain": "technical",
                "visibility": "bilateral",
                "organisation": "National CERT",
                "unit": "Incident Coordination",
                "role": "Duty Officer",
                "level": "operational",
                "email": "incident@cert.example.net",
                "phone": "+41225550199",
                "secure_channels": [
                    {
                        "type": "openpgp",
                        "value": "openpgp4fpr:0123456789ABCDEF0123456789ABCDEF01234567",
                    },
                    {"type": "matrix", "value": "@duty:cert.example.net"},
                ],
                "languages": ["en"],
                "hours": {"timezone": "UTC", "availability": "24/7"},
                "notes": "Encrypt incident reports to the OpenPGP key; state the TLP level.",
            },
        ],
        "node": {"endpoints": ["https://pocnode.example.org:8443"]},
    }


def template_record() -> dict:
    """What `pocnode record template` prints: :func:`example_record` with every optional
    field of the template present at least once (example_record is pinned by the test
    vectors, so it stays as it is)."""
    record = example_record()
    diplomatic = record["entries"][0]
    # Insert person in template order, after level.
    ordered = {}
    for key, value in diplomatic.items():
        ordered[key] = value
        if key == "level":
            ordered["person"] = "Dr. A. Example"
    ordered["field_visibility"] = {"person": "members", "phone": "members"}
    record["entries"][0] = ordered
    return record


# -- shared by both forms ----------------------------------------------------------------


def _check_envelope(obj: object, base: str, error: _Error) -> list:
    """The top level, identical in both forms; returns the entries for the caller's loop."""
    top = _expect_object(obj, base, error)
    _check_keys(top, _TOP_KEYS, _TOP_REQUIRED, base, error)
    template = top["template"]
    if type(template) is not int or template != TEMPLATE_VERSION:
        # An int is shown as itself; msgpack bounds it to 64 bits, so the repr is short.
        got = str(template) if type(template) is int and template.bit_length() <= 64 else None
        raise error(
            f"expected template {TEMPLATE_VERSION}, got {got or _got(template)}",
            path=_join(base, "template"),
        )
    entries = _expect_array(
        top["entries"], 1, MAX_ENTRIES, "entries", _join(base, "entries"), error
    )
    if "node" in top:
        _check_node(top["node"], _join(base, "node"), error)
    return entries


def _check_node(node: object, path: str, error: _Error) -> None:
    node_map = _expect_object(node, path, error)
    _check_keys(node_map, _NODE_KEYS, _NODE_REQUIRED, path, error)
    validate_endpoints(node_map["endpoints"], path=f"{path}.endpoints", error=error)


def validate_endpoints(value: object, *, path: str, error: _Error) -> None:
    """A node's endpoints: 0..8 unique https:// URLs; shared with the genesis (§5.2)."""
    endpoints = _expect_array(value, 0, MAX_ENDPOINTS, "endpoints", path, error)
    seen: set[str] = set()
    for i, url in enumerate(endpoints):
        item = f"{path}[{i}]"
        if type(url) is not str:
            raise error(f"expected an https:// URL, got {_got(url)}", path=item)
        if len(url) > MAX_ENDPOINT_CHARS:
            raise error(
                f"expected an https:// URL of at most {MAX_ENDPOINT_CHARS} characters, "
                f"got {len(url)} characters",
                path=item,
            )
        _check_unicode(url, item, error)
        if _ENDPOINT_RE.fullmatch(url) is None:
            raise error(f"expected an https:// URL without whitespace, got {_show(url)}", path=item)
        if url in seen:
            raise error(f"duplicate endpoint {_show(url)}", path=item)
        seen.add(url)


def _check_entry_head(entry: dict, path: str, error: _Error) -> str:
    """id, domain and visibility: in clear in both forms. Returns the id."""
    entry_id = entry["id"]
    if type(entry_id) is not str or _ID_RE.fullmatch(entry_id) is None:
        raise error(
            "expected an id of 1..32 characters a-z, 0-9 and '-', not starting with '-', "
            f"got {_got(entry_id)}",
            path=f"{path}.id",
        )
    # Paths only on failure: this runs for every entry of every record received.
    domain, visibility = entry["domain"], entry["visibility"]
    if type(domain) is not str or domain not in _DOMAIN_SET:
        _check_choice(domain, DOMAINS, _DOMAIN_SET, f"{path}.domain", error)
    if type(visibility) is not str or visibility not in _VISIBILITY_SET:
        _check_choice(visibility, VISIBILITIES, _VISIBILITY_SET, f"{path}.visibility", error)
    return entry_id


def _check_unique_id(entry_id: str, ids: set[str], path: str, error: _Error) -> None:
    if entry_id in ids:
        raise error(f"duplicate entry id {_show(entry_id)}", path=f"{path}.id")
    ids.add(entry_id)


# -- the plaintext form: every error at once ----------------------------------------------
#
# An author fixing a file wants every mistake in one pass, so each rule is checked on its
# own and its error collected; a value that cannot be checked further (an entry that is
# not an object) stops only its own subtree. The order is the order of the file, so the
# first error is the one validate_plain_record raises. Messages add what the signed form
# cannot know: the field name the author probably meant, and YAML's reading of phone
# numbers. Nothing here runs on received events.

# difflib's ratio above which a name is offered as "did you mean": "emial" -> "email"
# scores 0.8, "phone" -> "role" 0.44.
_SUGGEST_CUTOFF = 0.6
_UNKNOWN_RE = re.compile(r"unknown field '([^']*)'")
_CHOICE_RE = re.compile(r"expected one of ([a-z0-9_, ]+), got '([^']*)'")


def plain_record_errors(obj: object) -> list[InvalidRecord]:
    """Every rule a plaintext record breaks, in file order (empty: the record is valid)."""
    errors: list[InvalidRecord] = []
    if type(obj) is not dict:
        return [InvalidRecord(f"expected an object, got {_got(obj)}")]
    _collect_keys(obj, _TOP_KEYS, _TOP_REQUIRED, "", errors)
    if "template" in obj:
        template = obj["template"]
        if type(template) is not int or template != TEMPLATE_VERSION:
            got = str(template) if type(template) is int and template.bit_length() <= 64 \
                else None
            errors.append(InvalidRecord(
                f"expected template {TEMPLATE_VERSION}, got {got or _got(template)}",
                path="template"))
    entries: Any = []
    if "entries" in obj:
        entries = _attempt(errors, _expect_array, obj["entries"], 1, MAX_ENTRIES, "entries",
                           "entries", InvalidRecord) or []
    if "node" in obj:
        _attempt(errors, _check_node, obj["node"], "node", InvalidRecord)
    ids: set[str] = set()
    for i, entry in enumerate(entries):
        path = f"entries[{i}]"
        entry_id = _collect_plain_entry(entry, path, errors)
        if entry_id is not None:
            _attempt(errors, _check_unique_id, entry_id, ids, path, InvalidRecord)
    return [_hinted(e) for e in errors]


def _attempt(errors: list[InvalidRecord], check: Callable, *args: object) -> object:
    try:
        return check(*args)
    except InvalidRecord as exc:
        errors.append(exc)
        return None


def _collect_keys(obj: dict, allowed: frozenset[str], required: tuple[str, ...], path: str,
                  errors: list[InvalidRecord]) -> None:
    for key in obj:
        if key not in allowed:
            errors.append(InvalidRecord(f"unknown field {_show(key)}", path=_join(path, key)))
    for key in required:
        if key not in obj:
            errors.append(InvalidRecord(f"missing required field {key!r}", path=path or None))


def _collect_plain_entry(obj: object, path: str, errors: list[InvalidRecord]) -> str | None:
    """Collect one entry's errors; its id if valid (for the duplicate check)."""
    entry = _attempt(errors, _expect_object, obj, path, InvalidRecord)
    if entry is None:
        return None
    assert type(entry) is dict
    _collect_keys(entry, _PLAIN_ENTRY_KEYS, _PLAIN_ENTRY_REQUIRED, path, errors)
    entry_id = None
    if "id" in entry:
        value = entry["id"]
        if type(value) is not str or _ID_RE.fullmatch(value) is None:
            errors.append(InvalidRecord(
                "expected an id of 1..32 characters a-z, 0-9 and '-', not starting with '-', "
                f"got {_got(value)}", path=f"{path}.id"))
        else:
            entry_id = value
    if "domain" in entry:
        _attempt(errors, _check_choice, entry["domain"], DOMAINS, _DOMAIN_SET,
                 f"{path}.domain", InvalidRecord)
    if "visibility" in entry:
        _attempt(errors, _check_choice, entry["visibility"], VISIBILITIES, _VISIBILITY_SET,
                 f"{path}.visibility", InvalidRecord)
    for name in CONTENT_FIELDS:
        if name in entry:
            before = len(errors)
            _attempt(errors, _FIELD_CHECKS[name], entry[name], f"{path}.{name}", InvalidRecord)
            if name == "phone" and len(errors) > before and type(entry[name]) is int:
                errors[-1] = InvalidRecord(
                    f"{errors[-1].message}; write the number as a quoted string, e.g. "
                    f"phone: \"+{entry[name]}\" (YAML reads an unquoted +41... as a number)",
                    path=errors[-1].path)
    if "email" not in entry and "phone" not in entry and "secure_channels" not in entry:
        errors.append(InvalidRecord(
            "expected at least one contact channel (email, phone or secure_channels), got none",
            path=path))
    if "field_visibility" in entry:
        _collect_field_visibility(entry["field_visibility"], entry,
                                  f"{path}.field_visibility", errors)
    return entry_id


def _collect_field_visibility(obj: object, entry: dict, path: str,
                              errors: list[InvalidRecord]) -> None:
    overrides = _attempt(errors, _expect_object, obj, path, InvalidRecord)
    if overrides is None:
        return
    assert type(overrides) is dict
    if not overrides:
        errors.append(InvalidRecord(
            "expected at least one field name mapped to a visibility, got an empty object",
            path=path))
    for name, visibility in overrides.items():
        item = _join(path, name)
        if name not in _CONTENT_SET:
            suggestion = _suggest(name, CONTENT_FIELDS)
            errors.append(InvalidRecord(
                f"expected a content field name ({', '.join(CONTENT_FIELDS)}), got "
                f"{_show(name)}{suggestion}", path=item))
        elif name not in entry:
            errors.append(InvalidRecord(
                f"expected a visibility for a field this entry has, got one for {name!r}",
                path=item))
        else:
            _attempt(errors, _check_choice, visibility, VISIBILITIES, _VISIBILITY_SET, item,
                     InvalidRecord)


# The names allowed at each place in a plaintext record, for "did you mean".
_KEYS_BY_PARENT: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"[^.\[]+"), _TOP_KEYS),
    (re.compile(r"node\.[^.\[]+"), _NODE_KEYS),
    (re.compile(r"entries\[\d+\]\.[^.\[]+"), _PLAIN_ENTRY_KEYS),
    (re.compile(r"entries\[\d+\]\.hours\.[^.\[]+"), _HOURS_KEYS),
    (re.compile(r"entries\[\d+\]\.secure_channels\[\d+\]\.[^.\[]+"), _CHANNEL_KEYS),
)


def _suggest(name: object, choices: object) -> str:
    import difflib

    if type(name) is not str:
        return ""
    close = difflib.get_close_matches(name, sorted(choices), n=1,  # type: ignore[call-overload]
                                      cutoff=_SUGGEST_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _hinted(error: InvalidRecord) -> InvalidRecord:
    """The same error, with the name the author probably meant when there is one."""
    hint = ""
    unknown = _UNKNOWN_RE.fullmatch(error.message)
    if unknown and error.path:
        allowed = next((keys for pattern, keys in _KEYS_BY_PARENT
                        if pattern.fullmatch(error.path)), frozenset())
        hint = _suggest(unknown.group(1), allowed)
    choice = _CHOICE_RE.fullmatch(error.message)
    if choice:
        hint = _suggest(choice.group(2), choice.group(1).split(", "))
    return InvalidRecord(error.message + hint, path=error.path) if hint else error


def placeholder_warnings(plain: dict) -> list[tuple[str, str]]:
    """(path, message) for each value still as `pocnode record template` wrote it, or at
    a domain reserved for examples (RFC 2606): publishing those would send people to
    nowhere. Call on a valid record."""
    template = template_record()
    placeholders: dict[str, str] = {}
    for entry in template["entries"]:
        for name in ("email", "phone", "person"):
            if name in entry:
                placeholders[entry[name]] = name
        for channel in entry.get("secure_channels", ()):
            placeholders[channel["value"]] = "secure channel"
    for url in template.get("node", {}).get("endpoints", ()):
        placeholders[url] = "endpoint"
    out: list[tuple[str, str]] = []

    def check(value: object, path: str) -> None:
        if type(value) is not str:
            return
        if value in placeholders:
            out.append((path, f"still the template's example {placeholders[value]} "
                              f"{_show(value)}: replace it with your own"))
        elif _example_host(value):
            out.append((path, f"{_show(value)} is at a domain reserved for examples "
                              f"(RFC 2606): replace it with a real one"))

    for i, entry in enumerate(plain.get("entries", ())):
        for name in ("email", "phone", "person"):
            check(entry.get(name), f"entries[{i}].{name}")
        for j, channel in enumerate(entry.get("secure_channels", ())):
            check(channel.get("value"), f"entries[{i}].secure_channels[{j}].value")
    for j, url in enumerate(plain.get("node", {}).get("endpoints", ())):
        check(url, f"node.endpoints[{j}]")
    return out


# RFC 2606: names reserved for documentation and tests.
_EXAMPLE_DOMAINS = ("example.org", "example.net", "example.com")
_EXAMPLE_TLDS = ("example", "invalid", "test")


def _example_host(value: str) -> bool:
    """An email address's or URL's host is an RFC 2606 example name."""
    if "@" in value:
        host = value.rsplit("@", 1)[1]
        if ":" in host:  # a Matrix id, @user:server[:port]
            host = host.split(":", 1)[1].rsplit(":", 1)[0]
    elif value.startswith("https://"):
        host = value[len("https://"):].split("/", 1)[0].rsplit(":", 1)[0]
    else:
        return False
    host = host.lower().rstrip(".")
    return (any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS)
            or host.rsplit(".", 1)[-1] in _EXAMPLE_TLDS)


# -- the signed form -----------------------------------------------------------------------


def _check_signed_entry(obj: object, path: str) -> str:
    entry = _expect_object(obj, path, InvalidBody)
    _check_keys(entry, _SIGNED_ENTRY_KEYS, _SIGNED_ENTRY_REQUIRED, path, InvalidBody)
    entry_id = _check_entry_head(entry, path, InvalidBody)
    fields = entry["fields"]
    if type(fields) is not dict:
        _expect_object(fields, f"{path}.fields", InvalidBody)
    for name, value in fields.items():
        check = _FIELD_CHECKS.get(name) if type(name) is str else None
        if check is None:
            raise InvalidBody(f"unknown field {_show(name)}", path=_join(f"{path}.fields", name))
        # The path is built here, for every field, only because checks take it eagerly;
        # content field names are short, so this is one cheap f-string.
        check(value, f"{path}.fields.{name}", InvalidBody)
    if "sd" in entry:
        _check_digests(entry["sd"], f"{path}.sd")
    elif not fields:
        raise InvalidBody(
            "expected at least one field in clear or one digest, got an empty entry", path=path
        )
    return entry_id


def _check_digests(obj: object, path: str) -> None:
    sd = _expect_object(obj, path, InvalidBody)
    for name in sd:
        if name not in _SD_KEYS:
            raise InvalidBody(
                f"expected only {' and '.join(DIGEST_VISIBILITIES)}, got {_show(name)}",
                path=_join(path, name),
            )
    if not sd:
        raise InvalidBody(
            "expected digests for members or bilateral, got an empty object "
            "(omit sd when nothing is withheld)",
            path=path,
        )
    for name, obj_digests in sd.items():
        list_path = f"{path}.{name}"
        digests = _expect_array(
            obj_digests, 1, MAX_DIGESTS_PER_VISIBILITY, "digests", list_path, InvalidBody
        )
        previous = b""
        for i, digest in enumerate(digests):
            if type(digest) is not bytes or len(digest) != DIGEST_BYTES:
                got = f"{len(digest)} bytes" if type(digest) is bytes else _got(digest)
                raise InvalidBody(
                    f"expected a {DIGEST_BYTES}-byte digest, got {got}",
                    path=f"{list_path}[{i}]",
                )
            # Sorted and unique, so the list says nothing about which field is which and
            # has one encoding only.
            if i and digest <= previous:
                raise InvalidBody(
                    "expected digests in strictly ascending byte order, got one not greater "
                    "than the one before",
                    path=f"{list_path}[{i}]",
                )
            previous = digest


# -- content fields ----------------------------------------------------------------------


def _check_name_text(value: object, path: str, error: _Error) -> None:
    _expect_str(value, 1, MAX_TEXT_CHARS, path, error)


def _check_level(value: object, path: str, error: _Error) -> None:
    _check_choice(value, LEVELS, _LEVEL_SET, path, error)


def _check_email(value: object, path: str, error: _Error) -> None:
    email = _expect_str(value, MIN_EMAIL_CHARS, MAX_EMAIL_CHARS, path, error)
    if _EMAIL_RE.fullmatch(email) is None:
        raise error(
            f"expected an email address like name@example.org, got {_show(value)}", path=path
        )


def _check_phone(value: object, path: str, error: _Error) -> None:
    if type(value) is not str or _PHONE_RE.fullmatch(value) is None:
        raise error(
            "expected an E.164 number: '+', country code, 7..15 digits in all, no spaces, "
            f"got {_got(value)}",
            path=path,
        )


def _check_secure_channels(value: object, path: str, error: _Error) -> None:
    channels = _expect_array(value, 1, MAX_SECURE_CHANNELS, "secure channels", path, error)
    for i, obj in enumerate(channels):
        item = f"{path}[{i}]"
        channel = _expect_object(obj, item, error)
        _check_keys(channel, _CHANNEL_KEYS, _CHANNEL_REQUIRED, item, error)
        _check_choice(channel["type"], CHANNEL_TYPES, _CHANNEL_TYPE_SET, f"{item}.type", error)
        _expect_str(channel["value"], 1, MAX_CHANNEL_VALUE_CHARS, f"{item}.value", error)


def _check_languages(value: object, path: str, error: _Error) -> None:
    tags = _expect_array(value, 1, MAX_LANGUAGES, "language tags", path, error)
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        item = f"{path}[{i}]"
        if type(tag) is not str or _LANGUAGE_RE.fullmatch(tag) is None:
            raise error(
                f"expected a BCP 47 language tag like 'en' or 'zh-Hant', got {_got(tag)}",
                path=item,
            )
        if tag in seen:
            raise error(f"duplicate language {_show(tag)}", path=item)
        seen.add(tag)


def _check_hours(value: object, path: str, error: _Error) -> None:
    hours = _expect_object(value, path, error)
    _check_keys(hours, _HOURS_KEYS, (), path, error)
    if not hours:
        raise error("expected timezone, availability or both, got an empty object", path=path)
    if "timezone" in hours:
        item = f"{path}.timezone"
        timezone = _expect_str(hours["timezone"], 1, MAX_TIMEZONE_CHARS, item, error)
        if _TIMEZONE_RE.fullmatch(timezone) is None:
            raise error(
                f"expected a time zone like 'Europe/Geneva' or 'UTC', got {_show(timezone)}",
                path=item,
            )
    if "availability" in hours:
        _expect_str(hours["availability"], 1, MAX_AVAILABILITY_CHARS, f"{path}.availability", error)


def _check_notes(value: object, path: str, error: _Error) -> None:
    _expect_str(value, 1, MAX_NOTES_CHARS, path, error)


_FIELD_CHECKS: dict[str, Callable[[object, str, _Error], None]] = {
    "organisation": _check_name_text,
    "unit": _check_name_text,
    "role": _check_name_text,
    "level": _check_level,
    "person": _check_name_text,
    "email": _check_email,
    "phone": _check_phone,
    "secure_channels": _check_secure_channels,
    "languages": _check_languages,
    "hours": _check_hours,
    "notes": _check_notes,
}


# -- primitives --------------------------------------------------------------------------


def _expect_object(value: object, path: str, error: _Error) -> dict:
    if type(value) is not dict:
        raise error(f"expected an object, got {_got(value)}", path=path or None)
    return value


def _check_keys(
    obj: dict, allowed: frozenset[str], required: tuple[str, ...], path: str, error: _Error
) -> None:
    for key in obj:
        if key not in allowed:
            raise error(f"unknown field {_show(key)}", path=_join(path, key))
    for key in required:
        if key not in obj:
            raise error(f"missing required field {key!r}", path=path or None)


def _expect_array(value: object, low: int, high: int, what: str, path: str, error: _Error) -> list:
    if type(value) is not list:
        raise error(f"expected an array of {low}..{high} {what}, got {_got(value)}", path=path)
    if not low <= len(value) <= high:
        raise error(f"expected {low}..{high} {what}, got {len(value)}", path=path)
    return value


def _expect_str(value: object, low: int, high: int, path: str, error: _Error) -> str:
    if type(value) is not str:
        raise error(f"expected a str of {low}..{high} characters, got {_got(value)}", path=path)
    if not low <= len(value) <= high:
        raise error(
            f"expected a str of {low}..{high} characters, got {len(value)} characters",
            path=path,
        )
    _check_unicode(value, path, error)
    return value


def _check_unicode(value: str, path: str, error: _Error) -> None:
    """JSON can carry a lone surrogate (\\ud800), which has no UTF-8 form and so could never
    be signed; msgpack input is already valid UTF-8, so only plaintext pays for this."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise error("expected Unicode text, got a lone surrogate code point",
                        path=path) from None


def _check_choice(
    value: object,
    choices: tuple[str, ...],
    choice_set: frozenset[str],
    path: str,
    error: _Error,
) -> None:
    if type(value) is not str or value not in choice_set:
        raise error(f"expected one of {', '.join(choices)}, got {_got(value)}", path=path)


def _join(base: str, key: object) -> str:
    """``base.key``; a key that is not a short str is shown shortened, as in messages."""
    name = key if type(key) is str and len(key) <= _SHOW_CHARS else _show(key)
    return f"{base}.{name}" if base else name


def _got(value: object) -> str:
    """What came: a str quoted (shortened), anything else by its JSON type name."""
    if type(value) is str:
        return _show(value)
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A repr short enough for a log line, whatever size the value came in."""
    if type(value) is int and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"  # repr would refuse past 4,300 digits
    if type(value) is str and len(value) > _SHOW_CHARS:
        return repr(value[:_SHOW_CHARS]) + "..."
    text = repr(value)
    if len(text) > _SHOW_CHARS:
        return text[:_SHOW_CHARS] + "..."
    return text
