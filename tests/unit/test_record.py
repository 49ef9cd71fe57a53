"""The record template: each rule on its own, both forms, and the JSON Schema kept in step.

The schema in ``protocol/record.schema.json`` is what other implementations and authors'
editors read; ``validate_plain_record`` is what nodes run. The property at the end feeds
both the same generated records, most of them broken in one place, and requires one verdict.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend

from pocnode.core import record
from pocnode.core.errors import InvalidBody, InvalidRecord
from pocnode.core.record import (
    CONTENT_FIELDS,
    DOMAINS,
    LEVELS,
    VISIBILITIES,
    example_record,
    validate_field_value,
    validate_plain_record,
    validate_signed_body,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "protocol" / "record.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

# Unicode's White_Space property (PropList.txt), written here independently of the module.
WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
# White space to some regex engine's \s (Python's, ECMA-262's), not to Unicode: no effect.
NOT_WHITESPACE = "\x1c\x1d\x1e\x1f\ufeff"


def _ecma_pattern(validator, pattern, instance, schema):
    """``pattern`` as JSON Schema specifies it (ECMA-262), not as jsonschema runs it.

    jsonschema uses ``re.search``, where ``$`` also matches before a final newline, so
    ``"cert\\n"`` would pass ``^[a-z0-9][a-z0-9-]{0,31}$``. In ECMA-262 ``$`` is the end.
    """
    if validator.is_type(instance, "string"):
        python = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
        if not re.search(python, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = extend(Draft202012Validator, {"pattern": _ecma_pattern})
VALIDATOR = EcmaValidator(SCHEMA)


def _schema_accepts(obj: object) -> bool:
    return VALIDATOR.is_valid(obj)


def _python_accepts(obj: object) -> bool:
    try:
        validate_plain_record(obj)
    except InvalidRecord:
        return False
    return True


def _beyond_schema(obj: dict) -> bool:
    """The rules JSON Schema cannot state; only called on records the schema accepts."""
    ids = [entry["id"] for entry in obj["entries"]]
    return len(set(ids)) == len(ids) and type(obj["template"]) is int


def _minimal() -> dict:
    return {
        "template": 1,
        "entries": [
            {
                "id": "cert",
                "domain": "technical",
                "visibility": "public",
                "organisation": "National CERT",
                "email": "cert@example.org",
            }
        ],
    }


def _full_entry() -> dict:
    """An entry with every field, each valid."""
    return {
        "id": "cert",
        "domain": "technical",
        "visibility": "bilateral",
        "organisation": "National CERT",
        "unit": "Incident Coordination",
        "role": "Duty Officer",
        "level": "operational",
        "person": "A. Example",
        "email": "cert@example.org",
        "phone": "+41225550123",
        "secure_channels": [
            {"type": "openpgp", "value": "openpgp4fpr:0123456789ABCDEF"},
            {"type": "signal", "value": "+41795550123"},
        ],
        "languages": ["en", "fr", "zh-Hant"],
        "hours": {"timezone": "Europe/Geneva", "availability": "24/7"},
        "notes": "Encrypt to the OpenPGP key.",
        "field_visibility": {"person": "bilateral", "organisation": "public"},
    }


def _with_entry(entry: dict) -> dict:
    obj = _minimal()
    obj["entries"] = [entry]
    return obj


def _raises_at(obj: object, path: str | None, fragment: str) -> InvalidRecord:
    with pytest.raises(InvalidRecord) as caught:
        validate_plain_record(obj)
    assert caught.value.path == path, caught.value
    assert fragment in caught.value.message, caught.value
    assert caught.value.code == "invalid_record"
    return caught.value


# -- constants and the example -------------------------------------------------------------


def test_constants_match_the_template() -> None:
    assert record.TEMPLATE_VERSION == 1
    assert DOMAINS == ("diplomatic", "policy", "technical")
    assert VISIBILITIES == ("public", "members", "bilateral")
    assert LEVELS == ("political", "senior", "working", "operational")
    assert CONTENT_FIELDS == (
        "organisation", "unit", "role", "level", "person", "email", "phone",
        "secure_channels", "languages", "hours", "notes",
    )  # fmt: skip
    assert record.MAX_ENTRIES == 32
    assert record.MAX_DIGESTS_PER_VISIBILITY == 16
    # Every content field has a check, and nothing else has one.
    for name in CONTENT_FIELDS:
        with pytest.raises(InvalidRecord):
            validate_field_value(name, object(), path="x")


def test_example_record_is_valid_and_covers_the_template() -> None:
    obj = example_record()
    validate_plain_record(obj)
    assert _schema_accepts(obj)
    entries = obj["entries"]
    assert len(entries) == 3
    assert sorted(e["domain"] for e in entries) == sorted(DOMAINS)
    assert sorted(e["visibility"] for e in entries) == sorted(VISIBILITIES)
    assert any("field_visibility" in e for e in entries)
    assert example_record() is not obj  # a fresh copy each call: callers mutate it


def test_minimal_and_full_records_pass() -> None:
    validate_plain_record(_minimal())
    validate_plain_record(_with_entry(_full_entry()))
    assert _schema_accepts(_minimal())
    assert _schema_accepts(_with_entry(_full_entry()))


@pytest.mark.parametrize("channel", ["email", "phone", "secure_channels"])
def test_any_one_contact_channel_is_enough(channel: str) -> None:
    full = _full_entry()
    entry = {k: full[k] for k in ("id", "domain", "visibility", "organisation", channel)}
    validate_plain_record(_with_entry(entry))
    assert _schema_accepts(_with_entry(entry))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("organisation", "x" * 200),
        ("organisation", "\U0001d504" * 200),  # 200 code points, 400 UTF-16 units
        ("notes", "n" * 2000),
        ("email", "a@b.c"),
        ("email", "a" * 240 + "@example.org"),  # 252 characters
        ("email", "a\x1cb@example.org"),  # U+001C is \s to Python, not White_Space
        ("email", "a\ufeffb@example.org"),  # U+FEFF is \s to ECMA-262
        ("phone", "+4122555"),  # 7 digits
        ("phone", "+412255501234567"),  # 15 digits
        ("languages", ["en", "en-GB", "zh-Hant-TW", "sr-Latn-RS-x1"]),
        ("languages", ["en-GB", "en-gb"]),  # distinct strings: no case folding
        ("hours", {"timezone": "UTC"}),
        ("hours", {"availability": "Office hours"}),
        ("hours", {"timezone": "Etc/GMT+1"}),
        ("secure_channels", [{"type": t, "value": "v"} for t in ("smime", "threema", "other")]),
        ("secure_channels", [{"type": "other", "value": "v" * 512}] * 8),
    ],
)
def test_boundary_values_pass(name: str, value: object) -> None:
    entry = _full_entry()
    entry[name] = value
    validate_plain_record(_with_entry(entry))
    assert _schema_accepts(_with_entry(entry))


def test_limits_at_their_maximum_pass() -> None:
    obj = _minimal()
    entry = obj["entries"][0]
    entry["id"] = "a" * 32
    obj["entries"] = [dict(entry, id=f"e{i}") for i in range(32)]
    obj["node"] = {"endpoints": [f"https://n{i}.example.org" for i in range(8)]}
    validate_plain_record(obj)
    obj["node"] = {"endpoints": ["https://" + "h" * 248]}  # 256 characters
    validate_plain_record(obj)
    obj["node"] = {"endpoints": []}
    validate_plain_record(obj)
    assert _schema_accepts(obj)


# -- each plaintext rule on its own ----------------------------------------------------------

Mutate = Callable[[dict], None]


def _entry_set(name: str, value: object) -> Mutate:
    def mutate(obj: dict) -> None:
        obj["entries"][0][name] = value

    return mutate


def _entry_del(*names: str) -> Mutate:
    def mutate(obj: dict) -> None:
        for name in names:
            del obj["entries"][0][name]

    return mutate


def _top_set(name: str, value: object) -> Mutate:
    def mutate(obj: dict) -> None:
        obj[name] = value

    return mutate


def _second_entry(**changes: object) -> Mutate:
    def mutate(obj: dict) -> None:
        obj["entries"].append(dict(obj["entries"][0], **changes))

    return mutate


def _hours(value: object) -> Mutate:
    return _entry_set("hours", value)


_NAME_MSG = "expected a str of 1..200 characters"

PLAIN_CASES: list[tuple[str, Mutate, str | None, str]] = [
    # the envelope
    ("template missing", lambda o: o.pop("template"), None, "missing required field 'template'"),
    ("entries missing", lambda o: o.pop("entries"), None, "missing required field 'entries'"),
    ("unknown top key", _top_set("signature", "x"), "signature", "unknown field 'signature'"),
    ("template 2", _top_set("template", 2), "template", "expected template 1, got 2"),
    ("template 0", _top_set("template", 0), "template", "got 0"),
    ("template True", _top_set("template", True), "template", "got bool"),
    ("template 1.0", _top_set("template", 1.0), "template", "got float"),
    ("template '1'", _top_set("template", "1"), "template", "got '1'"),
    ("template None", _top_set("template", None), "template", "got null"),
    ("template huge", _top_set("template", 10**5000), "template", "got int"),
    ("entries dict", _top_set("entries", {}), "entries", "expected an array of 1..32"),
    ("entries empty", _top_set("entries", []), "entries", "expected 1..32 entries, got 0"),
    ("entry not object", _top_set("entries", ["cert"]), "entries[0]", "expected an object"),
    (
        "33 entries",
        lambda o: o.update(entries=[dict(o["entries"][0], id=f"e{i}") for i in range(33)]),
        "entries",
        "got 33",
    ),
    # the entry's keys
    ("unknown entry key", _entry_set("fax", "+41225550124"), "entries[0].fax", "'fax'"),
    ("non-str entry key", _entry_set(7, "x"), "entries[0].7", "unknown field 7"),
    ("id missing", _entry_del("id"), "entries[0]", "missing required field 'id'"),
    ("domain missing", _entry_del("domain"), "entries[0]", "missing required field 'domain'"),
    ("visibility missing", _entry_del("visibility"), "entries[0]", "field 'visibility'"),
    ("organisation missing", _entry_del("organisation"), "entries[0]", "field 'organisation'"),
    # structural fields
    ("id uppercase", _entry_set("id", "Cert"), "entries[0].id", "got 'Cert'"),
    ("id leading dash", _entry_set("id", "-cert"), "entries[0].id", "expected an id"),
    ("id 33 chars", _entry_set("id", "a" * 33), "entries[0].id", "expected an id"),
    ("id empty", _entry_set("id", ""), "entries[0].id", "expected an id"),
    ("id trailing newline", _entry_set("id", "cert\n"), "entries[0].id", "expected an id"),
    ("id int", _entry_set("id", 1), "entries[0].id", "got int"),
    (
        "domain legal",
        _entry_set("domain", "legal"),
        "entries[0].domain",
        "expected one of diplomatic, policy, technical, got 'legal'",
    ),
    ("domain bytes", _entry_set("domain", b"policy"), "entries[0].domain", "got bytes"),
    ("visibility secret", _entry_set("visibility", "secret"), "entries[0].visibility", "'secret'"),
    ("duplicate id", _second_entry(), "entries[1].id", "duplicate entry id 'cert'"),
    # names
    ("organisation empty", _entry_set("organisation", ""), "entries[0].organisation", "got 0 char"),
    ("organisation 201", _entry_set("organisation", "o" * 201), "entries[0].organisation", "201"),
    ("organisation int", _entry_set("organisation", 5), "entries[0].organisation", "got int"),
    ("organisation bytes", _entry_set("organisation", b"x"), "entries[0].organisation", "bytes"),
    ("unit 201", _entry_set("unit", "u" * 201), "entries[0].unit", _NAME_MSG),
    ("role empty", _entry_set("role", ""), "entries[0].role", _NAME_MSG),
    ("person list", _entry_set("person", ["A"]), "entries[0].person", "got array"),
    ("level junior", _entry_set("level", "junior"), "entries[0].level", "got 'junior'"),
    ("notes 2001", _entry_set("notes", "n" * 2001), "entries[0].notes", "1..2000"),
    ("notes empty", _entry_set("notes", ""), "entries[0].notes", "1..2000"),
    # email
    ("email no at", _entry_set("email", "cert.example.org"), "entries[0].email", "email address"),
    ("email no dot", _entry_set("email", "cert@example"), "entries[0].email", "email address"),
    ("email two ats", _entry_set("email", "a@b@c.org"), "entries[0].email", "email address"),
    ("email space", _entry_set("email", "a b@c.org"), "entries[0].email", "email address"),
    ("email nbsp", _entry_set("email", "a\u00a0b@c.org"), "entries[0].email", "email address"),
    ("email NEL", _entry_set("email", "a\x85b@c.org"), "entries[0].email", "email address"),
    ("email newline", _entry_set("email", "a@c.org\n"), "entries[0].email", "email address"),
    ("email short", _entry_set("email", "a@"), "entries[0].email", "3..254"),
    ("email long", _entry_set("email", "a" * 243 + "@example.org"), "entries[0].email", "255"),
    ("email None", _entry_set("email", None), "entries[0].email", "got null"),
    # phone
    ("phone spaces", _entry_set("phone", "+41 22 555 01 23"), "entries[0].phone", "E.164"),
    ("phone no plus", _entry_set("phone", "41225550123"), "entries[0].phone", "E.164"),
    ("phone leading 0", _entry_set("phone", "+0225550123"), "entries[0].phone", "E.164"),
    ("phone 6 digits", _entry_set("phone", "+412255"), "entries[0].phone", "E.164"),
    ("phone 16 digits", _entry_set("phone", "+4122555012345678"), "entries[0].phone", "E.164"),
    ("phone int", _entry_set("phone", 41225550123), "entries[0].phone", "got int"),
    # contact channel
    ("no channel", _entry_del("email"), "entries[0]", "at least one contact channel"),
    # secure channels
    ("channels empty", _entry_set("secure_channels", []), "entries[0].secure_channels", "1..8"),
    (
        "channels 9",
        _entry_set("secure_channels", [{"type": "other", "value": "v"}] * 9),
        "entries[0].secure_channels",
        "got 9",
    ),
    (
        "channel not object",
        _entry_set("secure_channels", ["openpgp"]),
        "entries[0].secure_channels[0]",
        "expected an object",
    ),
    (
        "channel type",
        _entry_set(
            "secure_channels",
            [{"type": "signal", "value": "v"}, {"type": "telegram", "value": "v"}],
        ),
        "entries[0].secure_channels[1].type",
        "got 'telegram'",
    ),
    (
        "channel value missing",
        _entry_set("secure_channels", [{"type": "signal"}]),
        "entries[0].secure_channels[0]",
        "missing required field 'value'",
    ),
    (
        "channel value long",
        _entry_set("secure_channels", [{"type": "other", "value": "v" * 513}]),
        "entries[0].secure_channels[0].value",
        "1..512",
    ),
    (
        "channel unknown key",
        _entry_set("secure_channels", [{"type": "other", "value": "v", "note": "x"}]),
        "entries[0].secure_channels[0].note",
        "unknown field 'note'",
    ),
    # languages
    ("languages empty", _entry_set("languages", []), "entries[0].languages", "1..16"),
    ("languages str", _entry_set("languages", "en"), "entries[0].languages", "got 'en'"),
    (
        "languages 17",
        _entry_set("languages", [f"a{chr(97 + i)}" for i in range(17)]),
        "entries[0].languages",
        "got 17",
    ),
    ("language upper", _entry_set("languages", ["EN"]), "entries[0].languages[0]", "'EN'"),
    ("language long", _entry_set("languages", ["english"]), "entries[0].languages[0]", "BCP"),
    ("language dash", _entry_set("languages", ["en-"]), "entries[0].languages[0]", "BCP"),
    ("language int", _entry_set("languages", [1]), "entries[0].languages[0]", "got int"),
    (
        "language duplicate",
        _entry_set("languages", ["en", "fr", "en"]),
        "entries[0].languages[2]",
        "duplicate language 'en'",
    ),
    # hours
    ("hours empty", _hours({}), "entries[0].hours", "timezone, availability or both"),
    ("hours str", _hours("24/7"), "entries[0].hours", "expected an object"),
    ("hours unknown", _hours({"days": "Mon"}), "entries[0].hours.days", "unknown field 'days'"),
    ("timezone bad", _hours({"timezone": "Europe/Zürich"}), "entries[0].hours.timezone", "zone"),
    ("timezone space", _hours({"timezone": "UTC 1"}), "entries[0].hours.timezone", "zone"),
    ("timezone 65", _hours({"timezone": "U" * 65}), "entries[0].hours.timezone", "1..64"),
    ("timezone empty", _hours({"timezone": ""}), "entries[0].hours.timezone", "1..64"),
    (
        "availability 129",
        _hours({"availability": "a" * 129}),
        "entries[0].hours.availability",
        "1..128",
    ),
    # field_visibility
    (
        "overrides list",
        _entry_set("field_visibility", ["email"]),
        "entries[0].field_visibility",
        "expected an object",
    ),
    (
        "overrides empty",
        _entry_set("field_visibility", {}),
        "entries[0].field_visibility",
        "at least one",
    ),
    (
        "override unknown field",
        _entry_set("field_visibility", {"fax": "public"}),
        "entries[0].field_visibility.fax",
        "expected a content field name",
    ),
    (
        "override structural field",
        _entry_set("field_visibility", {"id": "public"}),
        "entries[0].field_visibility.id",
        "got 'id'",
    ),
    (
        "override absent field",
        _entry_set("field_visibility", {"unit": "members"}),
        "entries[0].field_visibility.unit",
        "a field this entry has",
    ),
    (
        "override bad visibility",
        _entry_set("field_visibility", {"email": "secret"}),
        "entries[0].field_visibility.email",
        "expected one of public, members, bilateral, got 'secret'",
    ),
    # node
    ("node list", _top_set("node", []), "node", "expected an object"),
    ("node empty", _top_set("node", {}), "node", "missing required field 'endpoints'"),
    ("node unknown", _top_set("node", {"endpoints": [], "x": 1}), "node.x", "unknown field 'x'"),
    ("endpoints str", _top_set("node", {"endpoints": "https://a.org"}), "node.endpoints", "0..8"),
    (
        "endpoints 9",
        _top_set("node", {"endpoints": [f"https://n{i}.example.org" for i in range(9)]}),
        "node.endpoints",
        "got 9",
    ),
    (
        "endpoint http",
        _top_set("node", {"endpoints": ["http://node.example.org"]}),
        "node.endpoints[0]",
        "https:// URL",
    ),
    (
        "endpoint bare scheme",
        _top_set("node", {"endpoints": ["https://"]}),
        "node.endpoints[0]",
        "https:// URL",
    ),
    (
        "endpoint space",
        _top_set("node", {"endpoints": ["https://a.org", "https://node example.org"]}),
        "node.endpoints[1]",
        "without whitespace",
    ),
    (
        "endpoint 257",
        _top_set("node", {"endpoints": ["https://" + "h" * 249]}),
        "node.endpoints[0]",
        "at most 256 characters, got 257",
    ),
    ("endpoint int", _top_set("node", {"endpoints": [443]}), "node.endpoints[0]", "got int"),
    (
        "endpoint duplicate",
        _top_set("node", {"endpoints": ["https://a.example.org", "https://a.example.org"]}),
        "node.endpoints[1]",
        "duplicate endpoint",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [case[1:] for case in PLAIN_CASES],
    ids=[case[0] for case in PLAIN_CASES],
)
def test_each_plain_rule_raises_at_its_path(mutate: Mutate, path: str, fragment: str) -> None:
    obj = _minimal()
    mutate(obj)
    _raises_at(obj, path, fragment)
    assert not (_schema_accepts(obj) and _beyond_schema(obj))


@pytest.mark.parametrize("name", ["unit", "role", "person"])
def test_optional_names_share_the_organisation_rule(name: str) -> None:
    for bad in ("", "x" * 201, 1, None):
        _raises_at(_with_entry(dict(_full_entry(), **{name: bad})), f"entries[0].{name}", "1..200")


def test_whitespace_list_is_unicode_white_space() -> None:
    # Python's str.isspace() is White_Space plus the four ASCII separators U+001C..U+001F.
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(WHITESPACE) == spaces - set("\x1c\x1d\x1e\x1f")
    assert len(WHITESPACE) == 25


@pytest.mark.parametrize("char", list(WHITESPACE))
def test_whitespace_breaks_email_and_endpoint(char: str) -> None:
    entry = dict(_full_entry(), email=f"a{char}b@c.org")
    _raises_at(_with_entry(entry), "entries[0].email", "email address")
    obj = _minimal()
    obj["node"] = {"endpoints": [f"https://a{char}b.org"]}
    _raises_at(obj, "node.endpoints[0]", "whitespace")


@pytest.mark.parametrize("char", list(NOT_WHITESPACE))
def test_other_engines_whitespace_is_not_whitespace(char: str) -> None:
    obj = _with_entry(dict(_full_entry(), email=f"a{char}b@c.org"))
    obj["node"] = {"endpoints": [f"https://a{char}b.org"]}
    validate_plain_record(obj)
    assert _schema_accepts(obj)


def test_first_broken_rule_in_template_order_is_reported() -> None:
    entry = dict(_full_entry(), email="bad", phone="bad", fax="x")
    _raises_at(_with_entry(entry), "entries[0].fax", "unknown field")
    del entry["fax"]
    _raises_at(_with_entry(entry), "entries[0].email", "email")


def test_messages_never_carry_a_huge_value() -> None:
    huge = "x" * 100_000
    for obj in (
        _with_entry(dict(_full_entry(), id=huge)),
        _with_entry(dict(_full_entry(), domain=huge)),
        _with_entry(dict(_full_entry(), **{huge: 1})),
        _with_entry(dict(_full_entry(), email=huge + "@")),
        _with_entry(dict(_full_entry(), languages=[huge])),
        _with_entry(dict(_full_entry(), field_visibility={huge: "public"})),
    ):
        with pytest.raises(InvalidRecord) as caught:
            validate_plain_record(obj)
        assert len(caught.value.message) < 250, caught.value.message[:300]
        assert len(caught.value.path or "") < 100


def test_error_str_and_dict_carry_code_and_path() -> None:
    error = _raises_at(_with_entry(dict(_full_entry(), email="x@y")), "entries[0].email", "email")
    assert str(error).startswith("invalid_record at entries[0].email: expected")
    assert error.to_dict()["path"] == "entries[0].email"


# -- validate_field_value ------------------------------------------------------------------


def test_field_value_uses_the_given_error_and_path() -> None:
    validate_field_value("email", "a@b.org", path="d.email")
    with pytest.raises(InvalidBody) as caught:
        validate_field_value("hours", {"timezone": ""}, path="d.hours", error=InvalidBody)
    assert caught.value.path == "d.hours.timezone"
    with pytest.raises(InvalidRecord) as unknown:
        validate_field_value("fax", "x", path="d.fax")
    assert unknown.value.message == "unknown field 'fax'"
    for structural in ("id", "domain", "visibility", "field_visibility"):
        with pytest.raises(InvalidRecord):
            validate_field_value(structural, "public", path="p")


# -- the signed body -------------------------------------------------------------------------

D1, D2, D3 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def _signed() -> dict:
    return {
        "template": 1,
        "entries": [
            {
                "id": "mfa",
                "domain": "diplomatic",
                "visibility": "public",
                "fields": {"organisation": "Ministry", "email": "poc@mfa.example.org"},
                "sd": {"members": [D1, D3]},
            },
            {
                "id": "cert",
                "domain": "technical",
                "visibility": "bilateral",
                "fields": {},
                "sd": {"members": [D1], "bilateral": [D1, D2, D3]},
            },
        ],
        "node": {"endpoints": ["https://pocnode.example.org"]},
    }


def _signed_entry(index: int, name: str, value: object) -> Callable[[dict], None]:
    def mutate(body: dict) -> None:
        body["entries"][index][name] = value

    return mutate


def _signed_field(name: str, value: object) -> Callable[[dict], None]:
    def mutate(body: dict) -> None:
        body["entries"][0]["fields"][name] = value

    return mutate


SIGNED_CASES: list[tuple[str, Callable[[dict], None], str, str]] = [
    ("entries null", lambda b: b.update(entries=None), "body.entries", "got null"),
    ("template bool", lambda b: b.update(template=True), "body.template", "got bool"),
    ("unknown top", lambda b: b.update(sig=b""), "body.sig", "unknown field 'sig'"),
    (
        "plain field at entry",
        _signed_entry(0, "email", "a@b.org"),
        "body.entries[0].email",
        "'email'",
    ),
    ("fields missing", lambda b: b["entries"][0].pop("fields"), "body.entries[0]", "'fields'"),
    ("fields list", _signed_entry(0, "fields", []), "body.entries[0].fields", "expected an object"),
    ("field unknown", _signed_field("fax", "x"), "body.entries[0].fields.fax", "unknown field"),
    (
        "field overrides",
        _signed_field("field_visibility", {}),
        "body.entries[0].fields.field_visibility",
        "unknown",
    ),
    (
        "field bad email",
        _signed_field("email", "x@y"),
        "body.entries[0].fields.email",
        "email address",
    ),
    (
        "field nested",
        _signed_field("secure_channels", [{"type": "fax", "value": "1"}]),
        "body.entries[0].fields.secure_channels[0].type",
        "got 'fax'",
    ),
    ("id bad", _signed_entry(1, "id", "CERT"), "body.entries[1].id", "expected an id"),
    ("domain bad", _signed_entry(1, "domain", "legal"), "body.entries[1].domain", "'legal'"),
    (
        "duplicate id",
        _signed_entry(1, "id", "mfa"),
        "body.entries[1].id",
        "duplicate entry id 'mfa'",
    ),
    ("sd list", _signed_entry(0, "sd", [D1]), "body.entries[0].sd", "expected an object"),
    ("sd empty", _signed_entry(0, "sd", {}), "body.entries[0].sd", "omit sd"),
    (
        "sd public",
        _signed_entry(0, "sd", {"public": [D1]}),
        "body.entries[0].sd.public",
        "members and bilateral",
    ),
    (
        "sd empty list",
        _signed_entry(0, "sd", {"members": []}),
        "body.entries[0].sd.members",
        "1..16",
    ),
    (
        "sd not list",
        _signed_entry(0, "sd", {"members": D1}),
        "body.entries[0].sd.members",
        "got bytes",
    ),
    (
        "sd 17",
        _signed_entry(0, "sd", {"members": [bytes([i]) * 32 for i in range(17)]}),
        "body.entries[0].sd.members",
        "got 17",
    ),
    (
        "digest str",
        _signed_entry(0, "sd", {"members": ["ab" * 32]}),
        "body.entries[0].sd.members[0]",
        "got '",
    ),
    (
        "digest short",
        _signed_entry(0, "sd", {"bilateral": [D1, D2[:31]]}),
        "body.entries[0].sd.bilateral[1]",
        "got 31 bytes",
    ),
    (
        "digest bytearray",
        _signed_entry(0, "sd", {"members": [bytearray(D1)]}),
        "body.entries[0].sd.members[0]",
        "32-byte",
    ),
    (
        "digests unsorted",
        _signed_entry(0, "sd", {"members": [D2, D1]}),
        "body.entries[0].sd.members[1]",
        "ascending",
    ),
    (
        "digests repeated",
        _signed_entry(0, "sd", {"members": [D1, D1]}),
        "body.entries[0].sd.members[1]",
        "ascending",
    ),
    ("empty entry", lambda b: b["entries"][1].pop("sd"), "body.entries[1]", "empty entry"),
    (
        "endpoint bad",
        lambda b: b.update(node={"endpoints": ["ftp://x"]}),
        "body.node.endpoints[0]",
        "https://",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [case[1:] for case in SIGNED_CASES],
    ids=[case[0] for case in SIGNED_CASES],
)
def test_each_signed_rule_raises_at_its_path(mutate: Callable, path: str, fragment: str) -> None:
    body = _signed()
    mutate(body)
    with pytest.raises(InvalidBody) as caught:
        validate_signed_body(body)
    assert caught.value.path == path, caught.value
    assert fragment in caught.value.message, caught.value
    assert caught.value.code == "invalid_body"


def test_signed_bodies_that_pass() -> None:
    validate_signed_body(_signed())
    # organisation withheld, one field in clear, no digests, no node
    body = _signed()
    del body["node"]
    body["entries"][0] = {
        "id": "mfa",
        "domain": "diplomatic",
        "visibility": "members",
        "fields": {"languages": ["en"]},
    }
    validate_signed_body(body)
    # digests compare as unsigned bytes: 0x7f.. < 0x80..
    body["entries"][0]["sd"] = {"bilateral": [b"\x7f" * 32, b"\x80" * 32, b"\xff" * 32]}
    validate_signed_body(body)


def test_signed_body_not_an_object() -> None:
    with pytest.raises(InvalidBody) as caught:
        validate_signed_body([])
    assert caught.value.path == "body"


def test_plain_record_is_not_a_signed_body() -> None:
    with pytest.raises(InvalidBody) as caught:
        validate_signed_body(example_record())
    assert caught.value.path == "body.entries[0].organisation"


# -- the schema ------------------------------------------------------------------------------


def _patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


def test_schema_is_draft_2020_12_and_anchored() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    patterns = _patterns(SCHEMA)
    assert len(patterns) == 6
    for pattern in patterns:
        # Anchored at both ends, "$" only as the end anchor, and no \s: its meaning
        # differs between regex engines.
        assert pattern.startswith("^") and pattern.endswith("$"), pattern
        assert "$" not in pattern[:-1] and r"\s" not in pattern, pattern


def test_schema_limits_match_the_module() -> None:
    entry = SCHEMA["$defs"]["entry"]["properties"]
    assert SCHEMA["properties"]["entries"]["maxItems"] == record.MAX_ENTRIES
    assert entry["secure_channels"]["maxItems"] == record.MAX_SECURE_CHANNELS
    assert entry["languages"]["maxItems"] == record.MAX_LANGUAGES
    assert entry["notes"]["maxLength"] == record.MAX_NOTES_CHARS
    assert entry["field_visibility"]["propertyNames"]["enum"] == list(CONTENT_FIELDS)
    assert entry["domain"]["enum"] == list(DOMAINS)
    assert entry["level"]["enum"] == list(LEVELS)
    assert SCHEMA["$defs"]["visibility"]["enum"] == list(VISIBILITIES)
    endpoints = SCHEMA["$defs"]["node"]["properties"]["endpoints"]
    assert endpoints["maxItems"] == record.MAX_ENDPOINTS


def test_stock_jsonschema_lets_a_trailing_newline_through() -> None:
    """Why the tests run the schema through _ecma_pattern."""
    obj = _minimal()
    obj["entries"][0]["id"] = "cert\n"
    assert Draft202012Validator(SCHEMA).is_valid(obj)
    assert not _schema_accepts(obj)
    assert not _python_accepts(obj)


def test_the_two_rules_beyond_the_schema() -> None:
    obj = _minimal()
    obj["entries"].append(dict(obj["entries"][0]))
    assert _schema_accepts(obj) and not _python_accepts(obj)
    obj = _minimal()
    obj["template"] = 1.0
    assert _schema_accepts(obj) and not _python_accepts(obj)


# -- generated records: the schema and the code agree ----------------------------------------

_NO_WS = st.characters(exclude_characters=WHITESPACE, exclude_categories=["Cs"])
_NO_WS_OR_AT = st.characters(exclude_characters=WHITESPACE + "@.", exclude_categories=["Cs"])


def _texts(low: int, high: int) -> st.SearchStrategy[str]:
    """Mostly short text, sometimes exactly at the upper limit."""
    return st.one_of(
        st.text(min_size=low, max_size=min(high, 12)),
        st.text(min_size=1, max_size=3).map(lambda s: (s * high)[:high]),
    )


_EMAILS = st.one_of(
    st.sampled_from(["poc@example.org", "cert+duty@sub.example.net", "a@b.c"]),
    st.builds(
        lambda a, b, c: f"{a}@{b}.{c}",
        st.text(_NO_WS_OR_AT, min_size=1, max_size=8),
        st.text(_NO_WS_OR_AT, min_size=1, max_size=8),
        st.text(_NO_WS_OR_AT, min_size=1, max_size=4),
    ),
)
_PHONES = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
_CHANNELS = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(record.CHANNEL_TYPES), "value": _texts(1, 512)}),
    min_size=1,
    max_size=3,
)
_LANGUAGES = st.lists(
    st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", fullmatch=True),
    min_size=1,
    max_size=4,
    unique=True,
)
_TIMEZONES = st.one_of(
    st.sampled_from(["UTC", "Europe/Geneva", "America/Argentina/Buenos_Aires"]),
    st.from_regex(r"[A-Za-z0-9_+/-]{1,64}", fullmatch=True),
)
_HOURS = st.one_of(
    st.builds(lambda tz: {"timezone": tz}, _TIMEZONES),
    st.builds(lambda text: {"availability": text}, _texts(1, 128)),
    st.builds(lambda tz, text: {"timezone": tz, "availability": text}, _TIMEZONES, _texts(1, 128)),
)
_OPTIONAL_FIELDS: dict[str, st.SearchStrategy] = {
    "unit": _texts(1, 200),
    "role": _texts(1, 200),
    "level": st.sampled_from(LEVELS),
    "person": _texts(1, 200),
    "email": _EMAILS,
    "phone": _PHONES,
    "secure_channels": _CHANNELS,
    "languages": _LANGUAGES,
    "hours": _HOURS,
    "notes": _texts(1, 2000),
}
_IDS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
_ENDPOINTS = st.lists(
    st.text(_NO_WS, min_size=1, max_size=30).map(lambda host: "https://" + host),
    max_size=3,
    unique=True,
)


@st.composite
def _entries(draw: st.DrawFn, entry_id: str) -> dict:
    entry = {
        "id": entry_id,
        "domain": draw(st.sampled_from(DOMAINS)),
        "visibility": draw(st.sampled_from(VISIBILITIES)),
        "organisation": draw(_texts(1, 200)),
    }
    for name, values in _OPTIONAL_FIELDS.items():
        if draw(st.integers(0, 2)) == 0:
            entry[name] = draw(values)
    if not ({"email", "phone", "secure_channels"} & entry.keys()):
        channel = draw(st.sampled_from(["email", "phone", "secure_channels"]))
        entry[channel] = draw(_OPTIONAL_FIELDS[channel])
    if draw(st.booleans()):
        present = [name for name in CONTENT_FIELDS if name in entry]
        chosen = draw(st.lists(st.sampled_from(present), min_size=1, unique=True))
        entry["field_visibility"] = {name: draw(st.sampled_from(VISIBILITIES)) for name in chosen}
    return entry


@st.composite
def _records(draw: st.DrawFn) -> dict:
    ids = draw(st.lists(_IDS, min_size=1, max_size=3, unique=True))
    obj = {"template": 1, "entries": [draw(_entries(entry_id)) for entry_id in ids]}
    if draw(st.booleans()):
        obj["node"] = {"endpoints": draw(_ENDPOINTS)}
    return obj


# Mutations: each breaks (or may break) one thing, drawing what it needs.

_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=False),
    st.just(1.0),
    st.text(max_size=4),
    st.binary(max_size=32),
    st.just([]),
    st.just({}),
    st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["public", "members", "policy", "political", "other", "en", "UTC"]),
)
_ODD_CHARS = WHITESPACE + NOT_WHITESPACE + "@.-_+/A\u00e9\U0001d504"
_BOUNDARY_LENGTHS = (0, 1, 2, 3, 32, 33, 64, 65, 128, 129, 200, 201, 254, 255, 256, 257,
                     512, 513, 2000, 2001)  # fmt: skip


def _slots(value: object) -> list[tuple[dict | list, object]]:
    """Every (container, key) pair in the record, depth first."""
    found: list[tuple[dict | list, object]] = []
    if type(value) is dict:
        for key, item in value.items():
            found.append((value, key))
            found.extend(_slots(item))
    elif type(value) is list:
        for index, item in enumerate(value):
            found.append((value, index))
            found.extend(_slots(item))
    return found


def _containers(value: object, kind: type) -> list:
    found = [value] if type(value) is kind else []
    for container, key in _slots(value):
        if type(container[key]) is kind:
            found.append(container[key])
    return found


def _drop_key(obj: dict, draw: st.DrawFn) -> None:
    target = draw(st.sampled_from(_containers(obj, dict)))
    if target:
        del target[draw(st.sampled_from(list(target)))]


def _add_key(obj: dict, draw: st.DrawFn) -> None:
    target = draw(st.sampled_from(_containers(obj, dict)))
    names = st.sampled_from(["fax", "x", "timezone", "value", "unit", "node", "sd", "fields"])
    target[draw(names)] = draw(st.one_of(_ODD_VALUES, st.just("members")))


def _replace_value(obj: dict, draw: st.DrawFn) -> None:
    container, key = draw(st.sampled_from(_slots(obj)))
    container[key] = draw(_ODD_VALUES)


def _strings(obj: dict) -> list[tuple[dict | list, object]]:
    return [(c, k) for c, k in _slots(obj) if type(c[k]) is str]


def _stretch(obj: dict, draw: st.DrawFn) -> None:
    container, key = draw(st.sampled_from(_strings(obj)))
    text, size = container[key], draw(st.sampled_from(_BOUNDARY_LENGTHS))
    # Keep the start, so a pattern still matches and the length alone decides.
    container[key] = (text + text[-1:] * size)[:size] if text else "a" * size


def _perturb(obj: dict, draw: st.DrawFn) -> None:
    container, key = draw(st.sampled_from(_strings(obj)))
    text = container[key]
    where = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["insert", "append_newline", "upper", "delete"]))
    if how == "insert":
        text = text[:where] + draw(st.sampled_from(_ODD_CHARS)) + text[where:]
    elif how == "append_newline":
        text += "\n"
    elif how == "upper":
        text = text.upper()
    else:
        text = text[:where] + text[where + 1 :]
    container[key] = text


def _duplicate_item(obj: dict, draw: st.DrawFn) -> None:
    target = draw(st.sampled_from(_containers(obj, list)))
    if target:
        target.append(copy.deepcopy(draw(st.sampled_from(target))))


def _duplicate_id(obj: dict, draw: st.DrawFn) -> None:
    entries = obj["entries"]
    entries.append(draw(_entries(entries[0]["id"])))


def _grow(obj: dict, draw: st.DrawFn) -> None:
    """A list at or just past its limit, with distinct items so uniqueness stays intact."""
    entry = draw(st.sampled_from(obj["entries"]))
    what = draw(st.sampled_from(["entries", "endpoints", "secure_channels", "languages"]))
    size = draw(st.sampled_from([0, 1, 8, 9, 16, 17, 32, 33]))
    if what == "entries":
        obj["entries"] = [dict(entry, id=f"e{i}") for i in range(size)]
    elif what == "endpoints":
        obj["node"] = {"endpoints": [f"https://n{i}.example.org" for i in range(size)]}
    elif what == "secure_channels":
        entry["secure_channels"] = [{"type": "other", "value": str(i)} for i in range(size)]
    else:
        entry["languages"] = [f"x{chr(97 + i)}" for i in range(size)]


def _override(obj: dict, draw: st.DrawFn) -> None:
    entry = draw(st.sampled_from(obj["entries"]))
    name = draw(st.sampled_from(CONTENT_FIELDS + ("id", "fax")))
    entry.setdefault("field_visibility", {})[name] = draw(st.sampled_from(VISIBILITIES))


def _drop_contacts(obj: dict, draw: st.DrawFn) -> None:
    entry = draw(st.sampled_from(obj["entries"]))
    for name in ("email", "phone", "secure_channels"):
        entry.pop(name, None)
        entry.get("field_visibility", {}).pop(name, None)


def _template(obj: dict, draw: st.DrawFn) -> None:
    obj["template"] = draw(st.sampled_from([True, False, 0, 2, "1", 1.0, None, [1]]))


def _keep(obj: dict, draw: st.DrawFn) -> None:
    pass


_MUTATIONS = [
    _drop_key, _add_key, _replace_value, _stretch, _perturb, _duplicate_item, _duplicate_id,
    _grow, _override, _drop_contacts, _template, _keep,
]  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(_records())
def test_generated_records_are_valid(obj: dict) -> None:
    validate_plain_record(obj)
    assert _schema_accepts(obj)


# One mutation per test run, so each gets its share of the ~200 examples.
@pytest.mark.parametrize("mutation", _MUTATIONS, ids=[m.__name__[1:] for m in _MUTATIONS])
@settings(max_examples=200 // len(_MUTATIONS), deadline=None)
@given(obj=_records(), data=st.data())
def test_schema_and_code_agree(mutation: Callable, obj: dict, data: st.DataObject) -> None:
    mutation(obj, data.draw)
    python = _python_accepts(obj)  # anything but InvalidRecord escaping is a failure too
    schema = _schema_accepts(obj)
    event(f"{mutation.__name__}: {'valid' if python else 'invalid'}")
    assert python == (schema and _beyond_schema(obj)), (python, schema)
