"""The CLI driven as a user would: subprocesses, real daemons, bad input included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import wait_until

pytestmark = pytest.mark.slow


def cli(*args: str, input: str | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "pocnode", *args], capture_output=True,
                          text=True, input=input, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _commands() -> list[list[str]]:
    from click import Group

    from pocnode.cli import main

    out, todo = [], [([], main)]
    while todo:
        path, cmd = todo.pop()
        if isinstance(cmd, Group):
            todo.extend((path + [name], sub) for name, sub in cmd.commands.items())
        else:
            out.append(path)
    return out


def _command(path: list[str]):
    from pocnode.cli import main

    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_option_of_every_command_says_what_it_is(command):
    import click

    options = [p for p in _command(command).params if isinstance(p, click.Option)]
    bare = [p.opts[0] for p in options if not (p.help or "").strip()]
    assert not bare, f"pocnode {' '.join(command)}: options without help: {bare}"


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example(command):
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout, f"{' '.join(command)} --help has no example"


def test_template_round_trips_through_validate(tmp_path):
    for fmt in ("yaml", "json"):
        out = cli("record", "template", "--format", fmt)
        assert out.returncode == 0
        path = tmp_path / f"record.{fmt}"
        path.write_text(out.stdout)
        assert {"public", "members", "bilateral"} <= set(out.stdout.split()) | {
            e["visibility"] for e in (yaml.safe_load(out.stdout)["entries"])}
        ok = cli("record", "validate", str(path))
        assert ok.returncode == 0, ok.stderr
        assert "valid, 3 entries" in ok.stdout


def test_an_invalid_record_file_names_the_field(tmp_path):
    record = yaml.safe_load(cli("record", "template").stdout)
    record["entries"][1]["email"] = "not an address"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(record))
    line = one_line_error(cli("record", "validate", str(path)))
    assert "entries[1].email" in line
    path.write_text("entries: [unclosed")
    assert "not valid YAML" in one_line_error(cli("record", "validate", str(path)))
    assert "cannot read" in one_line_error(cli("record", "validate", str(tmp_path / "none")))


def test_commands_against_a_stopped_daemon_say_so(tmp_path):
    d = tmp_path / "node"
    assert cli("init", "--data-dir", str(d), "--member", "ATL").returncode == 0
    for args in (["status"], ["peers"], ["record", "show"]):
        line = one_line_error(cli(*args, "--data-dir", str(d)))
        assert "not running" in line and "pocnode run" in line
    # The directory is read from the database while the node is stopped; with no
    # genesis yet there is none to read.
    assert "genesis" in one_line_error(cli("directory", "list", "--data-dir", str(d)))
    line = one_line_error(cli("run", "--data-dir", str(d)))
    assert "genesis" in line


def test_genesis_ceremony_between_two_real_nodes(tmp_path):
    from pocnode.node.localfed import free_ports

    ports = free_ports(4)
    dirs = {}
    for i, member in enumerate(("ATL", "BOR")):
        d = dirs[member] = tmp_path / member
        init = cli("init", "--data-dir", str(d), "--member", member, "--profile", "local",
                   "--peer-port", str(ports[2 * i]), "--operator-port", str(ports[2 * i + 1]))
        assert init.returncode == 0, init.stderr
        card = cli("genesis", "founder", "--data-dir", str(d), "--name", f"State {member}",
                   "--out", str(tmp_path / f"{member}.json"))
        assert card.returncode == 0, card.stderr
    draft = cli("genesis", "draft", "--name", "Ceremony test", "--founder",
                str(tmp_path / "ATL.json"), "--founder", str(tmp_path / "BOR.json"),
                "--out", str(tmp_path / "draft.bin"))
    assert draft.returncode == 0, draft.stderr
    for member, d in dirs.items():
        signed = cli("genesis", "sign", str(tmp_path / "draft.bin"), "--data-dir", str(d),
                     "--out", str(tmp_path / f"{member}.sig"), "--yes")
        assert signed.returncode == 0, signed.stderr
    missing = cli("genesis", "assemble", str(tmp_path / "draft.bin"), str(tmp_path / "ATL.sig"),
                  "--out", str(tmp_path / "genesis.bin"))
    assert "BOR has not signed" in one_line_error(missing)
    assembled = cli("genesis", "assemble", str(tmp_path / "draft.bin"),
                    str(tmp_path / "ATL.sig"), str(tmp_path / "BOR.sig"),
                    "--out", str(tmp_path / "genesis.bin"))
    assert assembled.returncode == 0, assembled.stderr
    shown = cli("genesis", "show", str(tmp_path / "genesis.bin"), "--json")
    assert [f["id"] for f in json.loads(shown.stdout)["founders"]] == ["ATL", "BOR"]
    for d in dirs.values():
        assert cli("genesis", "install", str(tmp_path / "genesis.bin"), "--data-dir",
                   str(d)).returncode == 0
    up = cli("federation", "up", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        record = tmp_path / "record.yaml"
        record.write_text(cli("record", "template").stdout)
        published = cli("record", "publish", str(record), "--data-dir", str(dirs["ATL"]))
        assert published.returncode == 0, published.stderr
        wait_until(lambda: cli("directory", "show", "ATL", "--data-dir",
                               str(dirs["BOR"])).returncode == 0, timeout=30,
                   what="BOR shows ATL's record")
        view = json.loads(cli("directory", "show", "ATL", "--data-dir", str(dirs["BOR"]),
                              "--json").stdout)
        assert view["member"] == "ATL" and view["record"]["entries"]
        vcf = cli("directory", "export", "--format", "vcard", "--data-dir", str(dirs["BOR"]))
        # The template's third entry is bilateral throughout: BOR can read none of it, so
        # it makes no (empty) card.
        assert vcf.stdout.count("BEGIN:VCARD") == 2 and "X-POCNODE-MEMBER:ATL" in vcf.stdout
        assert "unknown_author" in one_line_error(
            cli("directory", "show", "ZZZ", "--data-dir", str(dirs["BOR"])))
        assert "no_record" in one_line_error(
            cli("directory", "show", "BOR", "--data-dir", str(dirs["ATL"])))
        status = json.loads(cli("status", "--data-dir", str(dirs["ATL"]), "--json").stdout)
        assert status["member"] == "ATL" and status["pid"] > 0
        # a token that is not the running node's
        (dirs["BOR"] / "token").chmod(0o600)
        real = (dirs["BOR"] / "token").read_text()
        (dirs["BOR"] / "token").write_text("wrong-token\n")
        assert "refused our token" in one_line_error(cli("status", "--data-dir",
                                                         str(dirs["BOR"])))
        (dirs["BOR"] / "token").write_text(real)
    finally:
        down = cli("federation", "down", str(tmp_path))
        assert down.returncode == 0, down.stderr


def _running_under(root: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "pocnode run"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(root) in line]


def test_federation_of_10_converges_and_down_leaves_nothing(tmp_path):
    root = tmp_path / "fed"
    created = cli("federation", "create", "--members", "10", "--dir", str(root),
                  "--interval-ms", "500")
    assert created.returncode == 0, created.stderr
    assert "not empty" in one_line_error(cli("federation", "create", "--members", "2",
                                             "--dir", str(root)))
    try:
        assert cli("federation", "up", str(root)).returncode == 0
        members = sorted(p.name for p in root.iterdir())
        assert len(members) == 10
        record = tmp_path / "record.yaml"
        record.write_text(cli("record", "template").stdout)
        assert cli("record", "publish", str(record), "--data-dir",
                   str(root / members[0])).returncode == 0

        def converged() -> bool:
            rows = json.loads(cli("federation", "status", str(root), "--json").stdout)
            return (all(r["running"] and r["authors"] == 10 for r in rows)
                    and len({r["summary"] for r in rows}) == 1)

        wait_until(converged, timeout=90, every=1.0, what="10 nodes converged")
        assert len(_running_under(root)) == 10
    finally:
        down = cli("federation", "down", str(root))
    assert down.returncode == 0, down.stderr
    assert _running_under(root) == []
