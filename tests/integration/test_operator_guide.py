"""The README's operator's guide, followed as written, by real processes.

Three states on one host, each with its own data directory and a passphrase file outside
it, hold the file-based genesis ceremony, run their nodes as the systemd unit says, publish
a record each, two of them agree mutual consent (and withdraw it), each rotates its key,
and each checks its database after stopping. The commands come from README.md's blocks
(tests/integration/guide.py translates paths, names, ports and the user, and nothing
else), so the test fails as soon as the guide and the commands drift apart.

A second test is the production set-up alone (one state), with the checks that matter
there: a real unprivileged user runs init, the node and status, and root's attempt names
that user.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.integration.guide import Host, can_create_users, guide_steps, section
from tests.integration.harness import wait_until

pytestmark = pytest.mark.slow

MEMBERS = [("DEU", "Federal Republic of Germany"), ("FRA", "French Republic"),
           ("ITA", "Italian Republic")]
# The guide's profile is "wan" (5 s gossip rounds, 20 s request deadlines): convergence
# takes a few rounds, and members' values a pull after that.
CONVERGE_S = 180


@pytest.fixture
def host_factory():
    made: list[tuple[Host, Path]] = []

    def make(members: list[tuple[str, str]], *, require_user: bool = False) -> Host:
        reason = can_create_users()
        if require_user and reason:
            pytest.skip(f"needs a real unprivileged user: {reason}")
        # Not under pytest's tmp_path: that is private to root, and the service user must
        # reach its own directories.
        base = Path(tempfile.mkdtemp(prefix="pocnode-guide-", dir="/tmp"))
        host = Host(base, members, real_user=reason is None)
        made.append((host, base))
        return host

    yield make
    for host, base in made:
        host.close()
        shutil.rmtree(base, ignore_errors=True)


def _pair(host: Host):
    return lambda s: host.states[(host.states.index(s) + 1) % len(host.states)]


def _edit_record(state, path: Path) -> None:
    """What the operator does between `record template` and `record validate`: replace
    every example value with the state's own, and list the node's advertised address."""
    record = yaml.safe_load(path.read_text())
    domain = f"{state.lower}.pocnode-guide.net"
    for i, entry in enumerate(record["entries"]):
        entry["organisation"] = f"{state.name} {entry['organisation']}"
        entry["email"] = f"{entry['id']}-{state.lower}@{domain}"
        if "phone" in entry:
            entry["phone"] = f"+4930555{ord(state.member[0]):03d}{i}"
        if "person" in entry:
            entry["person"] = f"{state.member} duty officer {i}"
        for j, channel in enumerate(entry.get("secure_channels", [])):
            channel["value"] = f"{channel['type']}:{state.lower}-{i}-{j}@{domain}"
    record["node"]["endpoints"] = [f"https://127.0.0.1:{state.peer_port}"]
    path.write_text(yaml.safe_dump(record, sort_keys=False))


def _sees_everything_public_and_members(host: Host, state) -> bool:
    listing = host.api(state, "/v1/directory")
    if not listing or not all(m["record_seq"] for m in listing["members"]):
        return False
    for m in listing["members"]:
        view = host.api(state, f"/v1/directory/{m['member']}")
        for entry in view["record"]["entries"]:
            if (entry.get("withheld") or {}).get("members") or \
                    (entry.get("awaiting") or {}).get("members"):
                return False
    return True


def _bilateral_email(host: Host, viewer, author) -> str | None:
    view = host.api(viewer, f"/v1/directory/{author.member}")
    cert = next(e for e in view["record"]["entries"] if e["id"] == "cert")
    return cert["fields"].get("email")


def _rotated(host: Host, viewer, author) -> bool:
    events = host.api(viewer, f"/v1/events/{author.member}?from=1&limit=500")
    return bool(events) and any(e["kind"] == "key.rotate" for e in events["events"])


def test_the_operators_guide_as_written(host_factory):
    steps = guide_steps()
    host = host_factory(MEMBERS)
    pair = _pair(host)
    deu, fra, ita = host.states

    # Set up a node: each state, its own directories and passphrase file.
    for step in section(steps, "Set up a node"):
        for state in host.states:
            host.run(step, state, pair(state))
    for state in host.states:
        passphrase = state.path("/etc/pocnode") / "passphrase"
        assert f'passphrase_file = "{passphrase}"' in (state.data / "config.toml").read_text()
        assert not (state.data / "passphrase").exists(), "a random passphrase was written"
        assert not passphrase.is_relative_to(state.data)

    # The genesis ceremony, files exchanged between the founders after each step.
    for step in section(steps, "The genesis ceremony"):
        one = step.comment.startswith("# one founder")
        for state in host.states[:1] if one else host.states:
            host.run(step, state, pair(state), stdin="y\n")
        host.exchange_files(("*.json", "*.sig", "draft.bin", "genesis.bin"))
    for state in host.states:
        assert (state.data / "genesis.bin").read_bytes() == (deu.files / "genesis.bin"
                                                             ).read_bytes()

    # Run it under systemd: the unit's user, command and environment.
    for step in section(steps, "Run it under systemd"):
        for state in host.states:
            host.run(step, state, pair(state))
    if host.real_user:
        # Root's own attempt: refused, naming the user to run as.
        as_root = subprocess.run([str(host.bin / "pocnode"), "status", "--data-dir",
                                  str(deu.data)], capture_output=True, text=True, timeout=60)
        assert as_root.returncode == 1
        assert f"sudo -u {host.user}" in as_root.stderr, as_root.stderr

    # Day to day: each line by every state; the directory once every record has arrived.
    for step in section(steps, "Day to day"):
        for state in host.states:
            result = host.run(step, state, pair(state),
                              ok=(0, 1) if step.command.endswith(" health") else (0,))
            if "record template" in step.command:
                _edit_record(state, state.files / "record.yaml")
            if "record validate" in step.command:
                assert "valid, 3 entries" in result.stdout, result.stdout
                assert "warning" not in result.stderr, result.stderr
            if "directory show FRA" in step.command and "--domain" not in step.command:
                assert f"{pair(state).member} record #2" in result.stdout, result.stdout
                assert "withheld" in result.stdout  # the bilateral entry, before consent
        if "record publish" in step.command:
            for state in host.states:
                wait_until(lambda s=state: _sees_everything_public_and_members(host, s),
                           timeout=CONVERGE_S, every=1.0,
                           what=f"{state.member} holds every record and members' values")
    assert "BEGIN:VCARD" in (deu.files / "poc.vcf").read_text()

    # Consent between two states: offered both ways, bilateral values flow, withdrawn.
    for step in section(steps, "Who sees what"):
        if " withdraw " in step.command:
            assert _bilateral_email(host, deu, fra) and _bilateral_email(host, fra, deu)
        for state in (deu, fra):
            host.run(step, state, fra if state is deu else deu)
        if " offer " in step.command:
            for viewer, author in ((deu, fra), (fra, deu)):
                wait_until(lambda v=viewer, a=author: _bilateral_email(host, v, a),
                           timeout=CONVERGE_S, every=1.0,
                           what=f"{viewer.member} reads {author.member}'s bilateral values")
            assert _bilateral_email(host, ita, deu) is None  # the third state never does
    for viewer, author in ((deu, fra), (fra, deu)):
        wait_until(lambda v=viewer, a=author: _bilateral_email(host, v, a) is None,
                   timeout=CONVERGE_S, every=1.0,
                   what=f"{viewer.member} erased {author.member}'s bilateral values")

    # Backups: stop, check, copy, start.
    for step in section(steps, "Backups"):
        for state in host.states:
            result = host.run(step, state, pair(state))
            if "db check" in step.command:
                assert "every event and proof verifies" in result.stdout, result.stdout
    assert (deu.path("/var/backups") / "pocnode.db").stat().st_size > 0

    # Key rotation, accepted by every node.
    for step in section(steps, "Key rotation"):
        for state in host.states:
            host.run(step, state, pair(state))
    for viewer in host.states:
        for author in host.states:
            wait_until(lambda v=viewer, a=author: _rotated(host, v, a), timeout=CONVERGE_S,
                       every=1.0, what=f"{viewer.member} holds {author.member}'s rotation")

    # Finally, each node stopped and its database checked, as the Backups block says.
    stop, check = section(steps, "Backups")[:2]
    assert stop.command.startswith("systemctl stop") and "db check" in check.command
    for state in host.states:
        host.run(stop, state, pair(state))
        result = host.run(check, state, pair(state))
        assert "every event and proof verifies" in result.stdout, result.stdout
        assert (state.data / "identity.key").exists()
        assert list(state.data.glob("identity.key.old-*")), "the old key is kept"


def test_production_set_up_as_the_service_user(host_factory):
    """README "Set up a node", the ceremony for a one-founder federation, and the unit, as
    a real unprivileged user: the passphrase is readable by it, the data directory exists,
    and root's day-to-day command is refused with the user to use."""
    steps = guide_steps()
    host = host_factory(MEMBERS[:1], require_user=True)
    (state,) = host.states
    for title in ("Set up a node", "The genesis ceremony", "Run it under systemd"):
        for step in section(steps, title):
            host.run(step, state, state, stdin="y\n")
    import pwd

    owner = pwd.getpwuid((state.path("/etc/pocnode") / "passphrase").stat().st_uid).pw_name
    assert owner == host.user
    assert pwd.getpwuid(state.data.stat().st_uid).pw_name == host.user
    node_user = subprocess.run(["ps", "-o", "user=", "-p", str(_node_pid(host, state))],
                               capture_output=True, text=True).stdout.strip()
    assert node_user == host.user, node_user

    status = next(s for s in section(steps, "Day to day") if s.command.endswith(" status"))
    shown = host.run(status, state, state)
    assert state.member in shown.stdout and "pid" in shown.stdout

    as_root = subprocess.run([str(host.bin / "pocnode"), "status", "--data-dir",
                              str(state.data)], capture_output=True, text=True, timeout=60)
    lines = [line for line in as_root.stderr.splitlines() if line.strip()]
    assert as_root.returncode == 1 and len(lines) == 1, as_root.stderr
    assert f"belongs to the user {host.user}" in lines[0]
    assert f"sudo -u {host.user}" in lines[0]


def _node_pid(host: Host, state) -> int:
    return int(host.api(state, "/v1/status")["pid"])
