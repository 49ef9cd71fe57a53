"""What the CLI shows, from the values it is given: durations, records with values not yet
received, vCards, the changes between two versions of a record."""

from __future__ import annotations

from pocnode.cli.record_cmds import print_record_view, record_changes
from pocnode.cli.render import duration
from pocnode.cli.vcard import to_vcards


def _view(entries: list[dict]) -> dict:
    return {"member": "ATL", "seq": 3, "event_id": "ab" * 32, "ts": 0,
            "record": {"template": 1, "entries": entries}}


def _entry(entry_id: str, fields: dict, **extra) -> dict:
    return {"id": entry_id, "domain": "technical", "visibility": "members", "fields": fields,
            "field_visibility": {k: "members" for k in fields}, "withheld": {}, **extra}


def test_durations_are_in_human_units() -> None:
    assert duration(4 * 7 * 24 * 3600 * 1000) == "28 days"
    assert duration(3600 * 1000) == "1 hour"
    assert duration(90 * 60 * 1000) == "1 hour 30 minutes"
    assert duration(250) == "250 ms"


def test_not_yet_received_is_shown_apart_from_withheld(capsys) -> None:
    print_record_view(_view([
        _entry("cert", {}, awaiting={"members": 4}, withheld={"bilateral": 2})]))
    out = capsys.readouterr().out
    assert "(4 not yet received)" in out and "members only" not in out
    assert "(2 withheld)" in out and "ask for consent" in out


def test_a_view_without_awaiting_still_shows(capsys) -> None:
    print_record_view(_view([_entry("cert", {"email": "a@b.int"},
                                    withheld={"members": 1})]))
    out = capsys.readouterr().out
    assert "a@b.int" in out and "(1 withheld)" in out and "not yet received" not in out


def test_vcards_skip_entries_with_no_value() -> None:
    cards = to_vcards([_view([_entry("empty", {}, awaiting={"members": 3}),
                              _entry("cert", {"organisation": "CERT", "email": "a@b.int"})])])
    assert cards.count("BEGIN:VCARD") == 1 and "X-POCNODE-ENTRY:cert" in cards


def test_changes_between_versions_by_entry_and_field() -> None:
    before = [_entry("cert", {"email": "old@b.int", "role": "Duty"}, withheld={"members": 1}),
              _entry("gone", {"email": "x@b.int"})]
    after = [_entry("cert", {"email": "new@b.int", "unit": "SOC"}, withheld={"members": 2}),
             _entry("fresh", {"email": "y@b.int"})]
    changes = {(c["entry"], c["change"]) for c in record_changes(before, after)}
    assert ("cert", "email changed: old@b.int → new@b.int") in changes
    assert ("cert", "unit added: SOC") in changes
    assert ("cert", "role removed (was Duty)") in changes
    assert ("cert", "2 members values withheld (were 1); not comparable") in changes
    assert ("fresh", "entry added") in changes and ("gone", "entry removed") in changes
    first = record_changes(None, after)
    assert [c["entry"] for c in first] == ["cert", "fresh"]
    assert first[0]["change"].startswith("first version")
