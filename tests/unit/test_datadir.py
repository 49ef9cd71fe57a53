"""The data directory's rules, without a node: where the passphrase comes from, the lock,
the generated config, the ports local federations take."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pocnode.node import datadir
from pocnode.node.config import PROFILES, load_config, render_config
from pocnode.node.localfed import free_ports


def _secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(datadir.PASSPHRASE_ENV, raising=False)
    return monkeypatch


def test_passphrase_precedence_option_env_config_default(tmp_path, clean_env) -> None:
    d = tmp_path / "node"
    d.mkdir()
    default = _secret(d / "passphrase", "from-the-default\n")
    configured = _secret(tmp_path / "configured", "from-the-config\n")
    env = _secret(tmp_path / "env", "from-the-environment\n")
    option = _secret(tmp_path / "option", "from-the-option\n")
    assert datadir.read_passphrase(d, "passphrase") == b"from-the-default"
    assert datadir.read_passphrase(d, str(configured)) == b"from-the-config"
    clean_env.setenv(datadir.PASSPHRASE_ENV, str(env))
    assert datadir.read_passphrase(d, str(configured)) == b"from-the-environment"
    assert datadir.read_passphrase(d, str(configured), option) == b"from-the-option"
    assert default.exists()


def test_passphrase_errors_name_the_file_how_it_was_chosen_and_the_ways(tmp_path,
                                                                         clean_env) -> None:
    d = tmp_path / "node"
    d.mkdir()
    ways = ("--passphrase-file", datadir.PASSPHRASE_ENV, "[node] passphrase_file")
    with pytest.raises(datadir.DataDirError) as missing:
        datadir.read_passphrase(d, "passphrase")
    assert str(d / "passphrase") in missing.value.message
    assert all(w in missing.value.message for w in ways)
    empty = _secret(tmp_path / "empty", "\n")
    clean_env.setenv(datadir.PASSPHRASE_ENV, str(empty))
    with pytest.raises(datadir.DataDirError) as caught:
        datadir.read_passphrase(d, "passphrase")
    assert f"{empty} (from the environment variable {datadir.PASSPHRASE_ENV}) is empty" in \
        caught.value.message
    assert "\n" not in caught.value.message


def test_a_wrong_passphrase_names_its_file(tmp_path, clean_env) -> None:
    good = _secret(tmp_path / "good", "correct horse battery\n")
    d = tmp_path / "node"
    datadir.init_data_dir(d, member="ATL", passphrase_file=good)
    assert f'passphrase_file = "{good}"' in (d / "config.toml").read_text()
    assert not (d / "passphrase").exists()
    config = load_config(d)
    key, _, source = datadir.unlock_identity(d, config.passphrase_file)
    assert source.path == good
    wrong = _secret(tmp_path / "wrong", "not the passphrase\n")
    with pytest.raises(datadir.DataDirError) as caught:
        datadir.unlock_identity(d, config.passphrase_file, wrong)
    assert f"the passphrase in {wrong} (from --passphrase-file) does not decrypt " \
           f"{d / 'identity.key'}" in caught.value.message


def test_init_records_the_absolute_path_it_was_given(tmp_path, clean_env) -> None:
    _secret(tmp_path / "pass", "correct horse battery\n")
    clean_env.chdir(tmp_path)
    result = datadir.init_data_dir(tmp_path / "node", member="ATL",
                                   passphrase_file=Path("pass"))
    assert result.passphrase_file == tmp_path / "pass" and not result.generated_passphrase
    assert load_config(tmp_path / "node").passphrase_file == str(tmp_path / "pass")


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path) -> None:
    d = tmp_path / "node"
    d.mkdir()
    assert datadir.lock_holder(d) is None
    lock = datadir.lock_data_dir(d, "pocnode run")
    try:
        assert datadir.lock_holder(d) == (os.getpid(), "pocnode run")
        with pytest.raises(datadir.DataDirLocked) as caught:
            datadir.lock_data_dir(d, "pocnode db check")
        assert caught.value.pid == os.getpid()
        assert f"pocnode run is already running (pid {os.getpid()})" in caught.value.message
    finally:
        lock.release()
    assert datadir.lock_holder(d) is None
    datadir.lock_data_dir(d, "pocnode db check").release()


def test_a_killed_holder_leaves_no_lock(tmp_path) -> None:
    d = tmp_path / "node"
    d.mkdir()
    code = ("import sys, time; from pathlib import Path; from pocnode.node import datadir; "
            "datadir.lock_data_dir(Path(sys.argv[1]), 'pocnode run'); print('locked', "
            "flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-P", "-c", code, str(d)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert datadir.lock_holder(d) == (child.pid, "pocnode run")
    finally:
        child.kill()  # SIGKILL: no clean-up code runs
        child.wait(timeout=10)
    assert datadir.lock_holder(d) is None
    datadir.lock_data_dir(d, "pocnode run").release()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_commented_config_lines_show_the_value_in_force(tmp_path, profile) -> None:
    """Uncommenting any `# key = value` line of a generated config changes nothing."""
    text = render_config(member="ATL", peer_host="127.0.0.1", peer_port=7443,
                         operator_port=7444, advertise="https://127.0.0.1:7443",
                         profile=profile)
    (tmp_path / "config.toml").write_text(text)
    base = load_config(tmp_path)
    commented = [i for i, line in enumerate(text.splitlines())
                 if re.match(r"# [a-z_]+ = \S", line)]
    assert len(commented) >= 12
    for i in commented:
        lines = text.splitlines()
        lines[i] = lines[i][2:]
        (tmp_path / "config.toml").write_text("\n".join(lines) + "\n")
        assert load_config(tmp_path) == base, lines[i]


def test_local_federation_ports_avoid_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(1024 <= p < low for p in ports)
