"""Directory entries as vCard 4.0 (RFC 6350), one card per Point of Contact.

Only what this node may read goes out: the views come from the operator API (or the
database, read the same way), which have already left out what is withheld. An entry of
which nothing can be read yet (every value withheld or not yet received) makes no card:
an empty card in an address book looks like a contact and is none. Member, domain and visibility
travel as X- properties so that an address book keeps the context.
"""

from __future__ import annotations

from typing import Any


def _escape(text: str) -> str:
    """RFC 6350 §3.4: backslash, comma, semicolon and newline are escaped in values."""
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def _fold(line: str) -> str:
    """RFC 6350 §3.2: lines longer than 75 octets are folded (CRLF + space)."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    parts: list[str] = []
    start = 0
    while start < len(raw):
        end = min(start + (75 if not parts else 74), len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            end -= 1
        parts.append(raw[start:end].decode("utf-8"))
        start = end
    return "\r\n ".join(parts)


def to_vcards(views: list[dict[str, Any]]) -> str:
    cards = []
    for view in views:
        for entry in view["record"]["entries"]:
            f = entry["fields"]
            if not f:
                continue
            name = f.get("person") or f.get("organisation") or entry["id"]
            lines = ["BEGIN:VCARD", "VERSION:4.0", f"FN:{_escape(name)}",
                     f"KIND:{'individual' if 'person' in f else 'org'}"]
            if "organisation" in f:
                org = _escape(f["organisation"])
                lines.append(f"ORG:{org};{_escape(f['unit'])}" if "unit" in f else f"ORG:{org}")
            if "role" in f:
                lines.append(f"TITLE:{_escape(f['role'])}")
            if "email" in f:
                lines.append(f"EMAIL;TYPE=work:{_escape(f['email'])}")
            if "phone" in f:
                lines.append(f"TEL;VALUE=uri;TYPE=work,voice:tel:{f['phone']}")
            for i, lang in enumerate(f.get("languages", []), start=1):
                lines.append(f"LANG;PREF={i}:{lang}")
            if "hours" in f and "timezone" in f["hours"]:
                lines.append(f"TZ;VALUE=text:{_escape(f['hours']['timezone'])}")
            notes = []
            if "hours" in f and "availability" in f["hours"]:
                notes.append(f"Availability: {f['hours']['availability']}")
            for ch in f.get("secure_channels", []):
                notes.append(f"{ch['type']}: {ch['value']}")
            if "notes" in f:
                notes.append(f["notes"])
            if notes:
                lines.append(f"NOTE:{_escape(' | '.join(notes))}")
            lines += [f"X-POCNODE-MEMBER:{view['member']}",
                      f"X-POCNODE-DOMAIN:{entry['domain']}",
                      f"X-POCNODE-ENTRY:{_escape(entry['id'])}",
                      f"X-POCNODE-RECORD:{view['member']} #{view['seq']} {view['event_id']}"]
            if "level" in f:
                lines.append(f"X-POCNODE-LEVEL:{f['level']}")
            lines.append("END:VCARD")
            cards.append("\r\n".join(_fold(line) for line in lines) + "\r\n")
    return "".join(cards)
