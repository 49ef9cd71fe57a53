"""One frozen config for a node, read from ``config.toml`` in its data directory.

Profiles set the timing for the network a federation runs on, as memberlist's
LAN/WAN/local configs do; any key in the file overrides its profile. Every
interval and limit is documented where it is defined.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocnode.core.errors import PocError
from pocnode.core.events import MEMBER_ID

CONFIG_FILE = "config.toml"


class ConfigError(PocError):
    """The configuration file is missing, unreadable or wrong."""

    code = "config"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    member: str
    data_dir: Path
    # Peer port: HTTPS, msgpack, reachable by other members' nodes.
    peer_host: str = "127.0.0.1"
    peer_port: int = 7443
    # The URL other nodes use to reach this one (published in the record's node.endpoints).
    advertise: str = ""
    # Operator API: JSON over HTTP, loopback only, bearer token.
    operator_host: str = "127.0.0.1"
    operator_port: int = 7444
    # Anti-entropy round every interval; announce fresh events to `fanout` peers.
    gossip_interval_ms: int = 1000
    fanout: int = 3
    bootstrap: tuple[str, ...] = ()
    # Where the identity key's passphrase is read from; POCNODE_PASSPHRASE_FILE overrides.
    passphrase_file: str = "passphrase"  # noqa: S105 - a file name
    log_format: str = "text"          # "text" or "json"
    log_level: str = "info"
    # Peer requests: largest body accepted, events per message, bytes of events per exchange.
    max_body_bytes: int = 2 * 1024 * 1024
    max_events_per_message: int = 1000
    exchange_budget_bytes: int = 768 * 1024
    # Every peer request, ours or theirs, has a deadline (seconds).
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    # Requests per second (and burst) we serve one peer address.
    peer_rate: float = 50.0
    peer_burst: float = 200.0
    # Open connections we accept from one address, and in all.
    max_connections_per_ip: int = 32
    max_connections: int = 512
    # Out-of-order events held while their predecessors are fetched.
    pending_max_bytes: int = 16 * 1024 * 1024

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pocnode.db"

    def path(self, name: str) -> Path:
        return self.data_dir / name


PROFILES: dict[str, dict[str, Any]] = {
    # Loopback federations for tests, demos and exercises: every peer shares 127.0.0.1, so
    # per-address limits must allow a whole federation.
    "local": {"gossip_interval_ms": 1000, "fanout": 3, "request_timeout_s": 5.0,
              "connect_timeout_s": 1.0, "peer_rate": 2000.0, "peer_burst": 8000.0,
              "max_connections_per_ip": 1024},
    # Nodes in one data centre.
    "lan": {"gossip_interval_ms": 1000, "fanout": 3, "request_timeout_s": 10.0},
    # States' nodes across the Internet: the production default.
    "wan": {"gossip_interval_ms": 5000, "fanout": 3, "request_timeout_s": 20.0,
            "connect_timeout_s": 5.0},
}

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def load_config(data_dir: Path) -> Config:
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no config.toml: run `pocnode init` first", path=str(path)) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from None
    values: dict[str, Any] = {}
    profile = raw.pop("profile", "wan")
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {sorted(PROFILES)}, got {profile!r:.40}",
                          path=f"{path}: profile")
    values.update(PROFILES[profile])
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError("top-level keys other than profile must be tables",
                              path=f"{path}: {section}")
        for key, value in table.items():
            name = key if section == "node" else f"{section}_{key}"
            name = _ALIASES.get(name, name)
            if name not in _FIELDS or name == "data_dir":
                raise ConfigError(f"unknown setting [{section}] {key}", path=f"{path}: {key}")
            values[name] = _coerce(name, value, f"{path}: [{section}] {key}")
    if "member" not in values:
        raise ConfigError("[node] member is required", path=str(path))
    if not MEMBER_ID.fullmatch(values["member"]):
        raise ConfigError("[node] member must match [A-Z][A-Z0-9-]{1,31}", path=str(path))
    config = Config(data_dir=data_dir, **values)
    if not _is_loopback(config.operator_host):
        raise ConfigError("the operator API speaks plain HTTP with a bearer token: it binds "
                          f"loopback only, got {config.operator_host!r:.60}",
                          path=f"{path}: [operator] listen_host")
    if not config.advertise:
        config = dataclasses.replace(config,
                                     advertise=f"https://{config.peer_host}:{config.peer_port}")
    return config


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ALIASES = {
    "peer_listen_host": "peer_host", "peer_listen_port": "peer_port", "peer_advertise": "advertise",
    "operator_listen_host": "operator_host", "operator_listen_port": "operator_port",
    "gossip_bootstrap": "bootstrap", "gossip_fanout": "fanout",
    "limits_max_body_bytes": "max_body_bytes",
    "limits_max_events_per_message": "max_events_per_message",
    "limits_exchange_budget_bytes": "exchange_budget_bytes",
    "limits_request_timeout_s": "request_timeout_s",
    "limits_connect_timeout_s": "connect_timeout_s",
    "limits_peer_rate": "peer_rate", "limits_peer_burst": "peer_burst",
    "limits_max_connections_per_ip": "max_connections_per_ip",
    "limits_max_connections": "max_connections",
    "limits_pending_max_bytes": "pending_max_bytes",
}


def _coerce(name: str, value: Any, where: str) -> Any:
    default = _FIELDS[name].default
    if default is dataclasses.MISSING:  # member: checked against MEMBER_ID by the caller
        if not isinstance(value, str):
            raise ConfigError("expected a string", path=where)
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("expected a list of strings", path=where)
        return tuple(value)
    if isinstance(value, bool) or (not isinstance(value, type(default)) and not (
            isinstance(default, float) and isinstance(value, int))):
        raise ConfigError(f"expected {type(default).__name__}, got {type(value).__name__}",
                          path=where)
    if isinstance(default, (int, float)) and value <= 0:
        raise ConfigError("expected a positive number", path=where)
    return float(value) if isinstance(default, float) else value


def render_config(*, member: str, peer_host: str, peer_port: int, operator_port: int,
                  advertise: str, profile: str = "wan", bootstrap: tuple[str, ...] = ()) -> str:
    """The config.toml `pocnode init` writes, every option commented."""
    boot = ", ".join(f'"{b}"' for b in bootstrap)
    return f'''# pocnode node configuration. Every key below is optional except [node] member.
# Timing comes from the profile ("local", "lan" or "wan"); keys here override it.
profile = "{profile}"

[node]
member = "{member}"                 # this node's member id, as in the genesis
# passphrase_file = "passphrase"    # file holding the identity key's passphrase (0600);
                                    # POCNODE_PASSPHRASE_FILE overrides (e.g. systemd credentials)

[peer]
listen_host = "{peer_host}"         # address the peer port (HTTPS, msgpack) binds
listen_port = {peer_port}
advertise = "{advertise}"           # URL other nodes use to reach this one

[operator]
listen_host = "127.0.0.1"           # the operator API is JSON over HTTP: keep it on loopback
listen_port = {operator_port}

[gossip]
# interval_ms = 1000                # anti-entropy round every interval (profile default)
# fanout = 3                        # peers told of each fresh event
bootstrap = [{boot}]                # extra peer URLs, beyond the genesis and records

[log]
format = "text"                     # "text" or "json" (one JSON object per line)
level = "info"                      # debug, info, warning, error

[limits]
# max_body_bytes = 2097152          # largest peer request body accepted
# max_events_per_message = 1000
# exchange_budget_bytes = 786432    # bytes of events sent in one exchange
# request_timeout_s = 10.0          # deadline of every peer request, both ways
# connect_timeout_s = 3.0
# peer_rate = 50.0                  # requests per second served to one address
# peer_burst = 200.0
# max_connections_per_ip = 32
# max_connections = 512
# pending_max_bytes = 16777216      # out-of-order events held for their predecessors
'''
