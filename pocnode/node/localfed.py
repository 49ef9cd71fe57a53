"""A whole federation on one machine: N data directories, one genesis signed by all.

For tests, exercises, training and the demo; not for production, where each state
creates its own node and the founders meet for the genesis ceremony. Ports are chosen
at random below the kernel's ephemeral range and checked free by binding them, so that
parallel federations do not collide, and a stopped node's port is not taken meanwhile by
some outgoing connection (the kernel hands those ports out of the ephemeral range).
"""

from __future__ import annotations

import random
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocnode.core.genesis import assemble, build_payload, default_governance, sign_payload
from pocnode.core.keys import ED25519, SigningKey
from pocnode.node import datadir
from pocnode.node.config import CONFIG_FILE, DEFAULT_FANOUT

# Fictional states for small federations; larger ones get numbered ids.
NAMES = [("ATL", "Republic of Atlantis"), ("BOR", "Kingdom of Borduria"),
         ("CAL", "Federal State of Caledonia"), ("DUN", "Commonwealth of Dunmore"),
         ("ELB", "Grand Duchy of Elbonia"), ("FRE", "Free State of Freedonia"),
         ("GEN", "Republic of Genovia"), ("KRA", "Republic of Krakozhia"),
         ("LAT", "Kingdom of Latveria"), ("MOR", "Principality of Moravia"),
         ("NAR", "Realm of Narnia"), ("ORS", "Republic of Orsinia"),
         ("PAN", "Federation of Panem"), ("QUR", "Emirate of Qumar"),
         ("RUR", "Republic of Ruritania"), ("SYL", "Kingdom of Sylvania"),
         ("TOM", "Republic of Tomainia"), ("URK", "State of Urkesh"),
         ("VUL", "Vulgaria"), ("WAK", "Kingdom of Wakanda")]


@dataclass(frozen=True, slots=True)
class LocalMember:
    member: str
    name: str
    data_dir: Path
    peer_port: int
    operator_port: int


def member_ids(n: int) -> list[tuple[str, str]]:
    if n <= len(NAMES):
        return NAMES[:n]
    return [(f"S{i:03d}", f"State {i}") for i in range(1, n + 1)]


# Linux's default ip_local_port_range is 32768-60999: outgoing connections take their
# source ports there, so a listening port chosen in it may be taken while its node is down.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32768
# The lowest port handed out: above the registered services most hosts run (below 10000).
LOW_PORT = 10000
# Tries per port before giving up: a busy range is a machine problem, not bad luck.
PORT_TRIES = 200


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_ports(n: int, *, rng: random.Random | None = None) -> list[int]:
    """n distinct ports free on 127.0.0.1, below the ephemeral range."""
    rng = rng or random.SystemRandom()
    high = _ephemeral_low() - 1
    low = LOW_PORT if high - LOW_PORT > 4 * n else 1024
    chosen: list[int] = []
    for _ in range(n):
        for _ in range(PORT_TRIES):
            port = rng.randint(low, high)
            if port not in chosen and _bindable(port):
                chosen.append(port)
                break
        else:
            raise OSError(f"no free port found in {low}-{high} after {PORT_TRIES} tries")
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def create_federation(root: Path, n: int, *, alg: str = ED25519, interval_ms: int = 1000,
                      fanout: int = DEFAULT_FANOUT, name: str = "Local pocnode federation",
                      created: int = 0,
                      offline: dict[str, SigningKey] | None = None,
                      listen_host: str = "127.0.0.1", endpoint_template: str = "",
                      peer_port: int | None = None,
                      operator_port: int | None = None,
                      hpke_suite: str = "x25519",
                      passphrase_file: Path | None = None,
                      governance: dict[str, dict[str, Any]] | None = None,
                      exercise: bool = False) -> list[LocalMember]:
    """Create ``root/<member>`` for n members and install a genesis signed by all.

    ``offline`` adds members that run no node here (a benchmark writes their events with
    these keys): they are in the genesis, with no endpoints. ``passphrase_file``: every
    member's keys are encrypted with the passphrase it holds, and each config records it;
    without it each member gets a random passphrase in its own data directory.
    """
    if n < 1:
        raise ValueError("a federation needs at least one member")
    root.mkdir(parents=True, exist_ok=True)
    # With a template each member is its own host (containers, namespaces) and all use the
    # same ports; without one they share loopback and take free ports.
    ports = [] if endpoint_template else free_ports(2 * n)
    members, founders, keys = [], [], {}
    for i, (member, state) in enumerate(member_ids(n)):
        d = root / member
        if endpoint_template:
            p_port, o_port = peer_port or 7443, operator_port or 7444
            advertise = endpoint_template.format(member=member, member_lower=member.lower(),
                                                 index=i + 1)
        else:
            p_port, o_port = ports[2 * i], ports[2 * i + 1]
            advertise = f"https://127.0.0.1:{p_port}"
        datadir.init_data_dir(d, member=member, alg=alg, peer_host=listen_host,
                              peer_port=p_port, operator_port=o_port, advertise=advertise,
                              profile="local", passphrase_file=passphrase_file)
        _tune(d, interval_ms, fanout)
        keys[member] = datadir.load_identity(
            d, datadir.read_passphrase_from(datadir.PassphraseSource(
                passphrase_file or d / datadir.PASSPHRASE_FILE, "pocnode federation create"), d))
        founders.append({"id": member, "name": state, "key": keys[member].public_key,
                         "endpoints": [advertise]})
        members.append(LocalMember(member=member, name=state, data_dir=d,
                                   peer_port=p_port, operator_port=o_port))
    for member, key in (offline or {}).items():
        founders.append({"id": member, "name": f"State {member}", "key": key.public_key,
                         "endpoints": []})
        keys[member] = key
    payload = build_payload(name=name, created=created, sig_alg=alg, founders=founders,
                            governance=governance or default_governance(),
                            hpke_suite=hpke_suite, exercise=exercise)
    signed = assemble(payload, {m: sign_payload(payload, k) for m, k in keys.items()})
    for m in members:
        datadir.install_genesis(m.data_dir, signed)
    return members


def _tune(data_dir: Path, interval_ms: int, fanout: int) -> None:
    path = data_dir / CONFIG_FILE
    text = path.read_text()
    text = re.sub(r"^# interval_ms = \d+", f"interval_ms = {interval_ms}", text, count=1,
                  flags=re.MULTILINE)
    text = re.sub(r"^# fanout = \d+", f"fanout = {fanout}", text, count=1, flags=re.MULTILINE)
    path.write_text(text)
