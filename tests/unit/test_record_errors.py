"""An author's view of the record rules: every error at once, with the name they meant, and
warnings for the template's example values left in; the template itself lists every field."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core.errors import InvalidRecord
from pocnode.core.record import (
    CONTENT_FIELDS,
    placeholder_warnings,
    plain_record_errors,
    template_record,
    validate_plain_record,
)
from tests.unit.test_record import _records, _schema_accepts


def _paths(errors: list[InvalidRecord]) -> list[str | None]:
    return [e.path for e in errors]


def test_every_error_is_reported_not_only_the_first() -> None:
    record = template_record()
    record["entries"][0]["email"] = "not an address"
    record["entries"][1]["level"] = "boss"
    record["entries"][2]["languages"] = ["english"]
    record["template"] = 2
    errors = plain_record_errors(record)
    assert _paths(errors) == ["template", "entries[0].email", "entries[1].level",
                              "entries[2].languages[0]"]
    # validate_plain_record raises the first of them, as before
    try:
        validate_plain_record(record)
    except InvalidRecord as exc:
        assert (exc.path, exc.message) == (errors[0].path, errors[0].message)
    else:
        raise AssertionError("accepted")


def test_every_unknown_and_missing_key_of_an_entry() -> None:
    record = template_record()
    entry = record["entries"][1]
    entry["emial"] = entry.pop("email")
    entry["orgnisation"] = entry.pop("organisation")
    entry["domian"] = entry.pop("domain")
    errors = plain_record_errors(record)
    messages = {e.path: e.message for e in errors}
    assert "did you mean 'email'?" in messages["entries[1].emial"]
    assert "did you mean 'organisation'?" in messages["entries[1].orgnisation"]
    assert "did you mean 'domain'?" in messages["entries[1].domian"]
    missing = [e.message for e in errors if e.path == "entries[1]"]
    assert {"missing required field 'domain'", "missing required field 'organisation'"} <= set(
        missing)
    # no contact channel left (email was misspelt): said too
    assert any("at least one contact channel" in m for m in missing)


def test_typos_in_choices_and_nested_keys_get_a_suggestion() -> None:
    record = template_record()
    record["entries"][0]["domain"] = "technicl"
    record["entries"][0]["visibility"] = "membres"
    record["entries"][2]["secure_channels"][0] = {"tpye": "openpgp", "value": "x"}
    record["node"] = {"endpoint": ["https://a.example.org"]}
    messages = {e.path: e.message for e in plain_record_errors(record)}
    assert "did you mean 'technical'?" in messages["entries[0].domain"]
    assert "did you mean 'members'?" in messages["entries[0].visibility"]
    assert "did you mean 'type'?" in messages["entries[2].secure_channels[0].tpye"]
    assert "did you mean 'endpoints'?" in messages["node.endpoint"]


def test_a_name_far_from_every_field_gets_no_guess() -> None:
    record = template_record()
    record["entries"][0]["zzzzzz"] = "x"
    (error,) = plain_record_errors(record)
    assert error.message == "unknown field 'zzzzzz'"


def test_a_phone_number_read_as_an_int_says_to_quote_it() -> None:
    record = template_record()
    record["entries"][0]["phone"] = 41225550123  # what YAML makes of +41225550123
    (error,) = plain_record_errors(record)
    assert error.path == "entries[0].phone"
    assert 'phone: "+41225550123"' in error.message and "quote" in error.message


def test_an_entry_that_is_not_an_object_does_not_hide_the_others() -> None:
    record = template_record()
    record["entries"].insert(1, "cert")
    record["entries"][2]["email"] = "x"
    assert _paths(plain_record_errors(record)) == ["entries[1]", "entries[2].email"]


@settings(max_examples=60, deadline=None)
@given(obj=_records(), data=st.data())
def test_each_broken_entry_is_named(obj: dict, data: st.DataObject) -> None:
    """Break the email of any subset of entries: each of them is reported."""
    broken = data.draw(st.sets(st.integers(0, len(obj["entries"]) - 1), min_size=1))
    for i in broken:
        obj["entries"][i]["email"] = "no-at-sign"
    paths = set(_paths(plain_record_errors(obj)))
    assert {f"entries[{i}].email" for i in broken} <= paths


def test_the_template_lists_every_optional_field_and_is_valid() -> None:
    record = template_record()
    validate_plain_record(record)
    assert _schema_accepts(record)
    present = {name for e in record["entries"] for name in e}
    assert set(CONTENT_FIELDS) <= present
    assert "field_visibility" in present and record["node"]["endpoints"]
    assert template_record() is not record


def test_placeholders_left_in_are_warned_about_and_own_values_are_not() -> None:
    record = template_record()
    warned = dict(placeholder_warnings(record))
    for path in ("entries[0].email", "entries[0].phone", "entries[0].person",
                 "entries[2].secure_channels[0].value", "node.endpoints[0]"):
        assert "template's example" in warned[path], path
    own = copy.deepcopy(record)
    for i, entry in enumerate(own["entries"]):
        entry["email"] = f"poc{i}@mfa.gov.xx"
        if "phone" in entry:
            entry["phone"] = f"+4930123456{i}"
        if "person" in entry:
            entry["person"] = "Dr. K. Atla"
        for j, channel in enumerate(entry.get("secure_channels", [])):
            channel["value"] = f"own-{j}"
    own["entries"][2]["secure_channels"][1]["value"] = "@poc:matrix.example.org"
    own["node"]["endpoints"] = ["https://poc.mfa.gov.xx:7443"]
    assert placeholder_warnings(own) == [
        ("entries[2].secure_channels[1].value",
         "'@poc:matrix.example.org' is at a domain reserved for examples (RFC 2606): "
         "replace it with a real one")]
