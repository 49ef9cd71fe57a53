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


# Peers told at once of each fresh event. Each that pulls it tells as many again, so an
# update reaches most nodes within milliseconds and the rest at the next anti-entropy
# round. With 3, an update among 20 nodes reached every node by announces alone about half
# the time (Monte Carlo of the announce rule: 0.51); with 4, 0.85, for one more announce
# (a few hundred bytes) per node and update.
DEFAULT_FANOUT = 4


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
    fanout: int = DEFAULT_FANOUT
    bootstrap: tuple[str, ...] = ()
    # The keys' passphrase file, relative to the data dir unless absolute. `--passphrase-file`
    # and POCNODE_PASSPHRASE_FILE come first (datadir.passphrase_source).
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
    # Transparency log (PROTOCOL.md §13): at most one checkpoint of our chain per interval
    # (only when it has grown), and one batch of cosignatures of others' checkpoints. Each
    # is an event every node keeps: ten minutes bounds that to a few a day for a member
    # that publishes rarely, and a witness signs within minutes of a new checkpoint.
    tlog_checkpoint_interval_s: float = 600.0
    tlog_cosign_interval_s: float = 600.0
    # -- communication requests (PROTOCOL.md §12; node/alerts.py) -------------------------
    # Alerts on a new request (and on an answer to ours): a command (argv, no shell; the
    # summary as JSON on stdin), a webhook (HTTP POST of the JSON summary), e-mail through an
    # SMTP relay. Each is bounded by alerts_timeout_s; a failure is logged, never blocking.
    alerts_command: tuple[str, ...] = ()
    alerts_webhook: str = ""
    alerts_smtp_host: str = ""
    alerts_smtp_port: int = 25
    alerts_smtp_from: str = ""
    alerts_smtp_to: tuple[str, ...] = ()
    alerts_smtp_starttls: bool = False
    alerts_smtp_user: str = ""
    alerts_smtp_password_file: str = ""
    # The summary never carries the sealed subject and text unless this is true.
    alerts_include_content: bool = False
    alerts_timeout_s: float = 10.0
    # Receipts and alerts per sending member per hour; beyond, requests are kept unalerted.
    alerts_per_member_hour: int = 60
    # Ping campaigns: "HH:MM" daily or "mon HH:MM" weekly, UTC; targets empty = every member.
    ping_schedule: tuple[str, ...] = ()
    ping_targets: tuple[str, ...] = ()
    ping_domain: str = ""

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pocnode.db"

    def path(self, name: str) -> Path:
        return self.data_dir / name


PROFILES: dict[str, dict[str, Any]] = {
    # Loopback federations for tests, demos and exercises: every peer shares 127.0.0.1, so
    # per-address limits must allow a whole federation.
    "local": {"gossip_interval_ms": 1000, "fanout": DEFAULT_FANOUT, "request_timeout_s": 5.0,
              "connect_timeout_s": 1.0, "peer_rate": 2000.0, "peer_burst": 8000.0,
              "max_connections_per_ip": 1024},
    # Nodes in one data centre.
    "lan": {"gossip_interval_ms": 1000, "fanout": DEFAULT_FANOUT, "request_timeout_s": 10.0},
    # States' nodes across the Internet: the production default.
    "wan": {"gossip_interval_ms": 5000, "fanout": DEFAULT_FANOUT, "request_timeout_s": 20.0,
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
    if isinstance(default, bool):  # before int: a bool is an int to Python, not to TOML
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {type(value).__name__}", path=where)
        return value
    if isinstance(value, bool) or (not isinstance(value, type(default)) and not (
            isinstance(default, float) and isinstance(value, int))):
        raise ConfigError(f"expected {type(default).__name__}, got {type(value).__name__}",
                          path=where)
    if isinstance(default, (int, float)) and value <= 0:
        raise ConfigError("expected a positive number", path=where)
    return float(value) if isinstance(default, float) else value


def _toml_str(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's for the characters a path holds."""
    import json

    return json.dumps(value, ensure_ascii=False)


def _shown(name: str, profile: str) -> str:
    """The value in force for ``name`` under ``profile``, in TOML, for a commented line."""
    value = PROFILES[profile].get(name, _FIELDS[name].default)
    if isinstance(value, float):
        return repr(value)
    return str(value)


# Comments in the generated file start at this column.
_COMMENT_COLUMN = 36


def _line(text: str, comment: str = "") -> str:
    return f"{text:<{_COMMENT_COLUMN - 1}} # {comment}" if comment else text


def render_config(*, member: str, peer_host: str, peer_port: int, operator_port: int,
                  advertise: str, profile: str = "wan", bootstrap: tuple[str, ...] = (),
                  passphrase_file: str | None = None) -> str:
    """The config.toml `pocnode init` writes, every option commented.

    A commented line shows the value in force: the profile's where it sets one, else the
    built-in default, so uncommenting a line never changes what the node does.
    ``passphrase_file``, when the operator gave one to `init`, is written uncommented (an
    absolute path), so every later command finds the passphrase without being told.
    """
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {sorted(PROFILES)}, got {profile!r:.40}")
    boot = ", ".join(_toml_str(b) for b in bootstrap)
    v = {name: _shown(name, profile) for name in _FIELDS if name not in ("member", "data_dir")}
    if passphrase_file:
        secret = ["# The keys' passphrase (mode 0600, owned by the node's user), as given to init:",
                  f"passphrase_file = {_toml_str(passphrase_file)}"]
    else:
        secret = [_line('# passphrase_file = "passphrase"',
                        "the keys' passphrase (0600), in the data dir")]
    lines = [
        "# pocnode node configuration. Every key below is optional except [node] member.",
        '# Timing comes from the profile ("local", "lan" or "wan"); keys here override it.',
        f'# Commented lines show the value in force under profile "{profile}".',
        f"profile = {_toml_str(profile)}",
        "",
        "[node]",
        _line(f"member = {_toml_str(member)}", "this node's member id, as in the genesis"),
        *secret,
        "# Every command finds it the same way: --passphrase-file, else the environment variable",
        '# POCNODE_PASSPHRASE_FILE, else passphrase_file here, else "passphrase" in the data dir.',
        "",
        "[peer]",
        _line(f"listen_host = {_toml_str(peer_host)}",
              "address the peer port (HTTPS, msgpack) binds"),
        f"listen_port = {peer_port}",
        _line(f"advertise = {_toml_str(advertise)}", "URL other nodes use to reach this one"),
        "",
        "[operator]",
        _line('listen_host = "127.0.0.1"', "the operator API is JSON over HTTP: keep it on "
                                           "loopback"),
        f"listen_port = {operator_port}",
        "",
        "[gossip]",
        _line(f"# interval_ms = {v['gossip_interval_ms']}", "anti-entropy round every interval"),
        _line(f"# fanout = {v['fanout']}", "peers told of each fresh event"),
        _line(f"bootstrap = [{boot}]", "extra peer URLs, beyond the genesis and records"),
        "",
        "[log]",
        _line(f"format = {_toml_str(v['log_format'])}",
              '"text" or "json" (one JSON object per line)'),
        _line(f"level = {_toml_str(v['log_level'])}", "debug, info, warning, error"),
        "",
        "[limits]",
        _line(f"# max_body_bytes = {v['max_body_bytes']}", "largest peer request body accepted"),
        f"# max_events_per_message = {v['max_events_per_message']}",
        _line(f"# exchange_budget_bytes = {v['exchange_budget_bytes']}",
              "bytes of events sent in one exchange"),
        _line(f"# request_timeout_s = {v['request_timeout_s']}",
              "deadline of every peer request, both ways"),
        f"# connect_timeout_s = {v['connect_timeout_s']}",
        _line(f"# peer_rate = {v['peer_rate']}", "requests per second served to one address"),
        f"# peer_burst = {v['peer_burst']}",
        f"# max_connections_per_ip = {v['max_connections_per_ip']}",
        f"# max_connections = {v['max_connections']}",
        _line(f"# pending_max_bytes = {v['pending_max_bytes']}",
              "out-of-order events held for their predecessors"),
        "",
        "[tlog]",
        _line(f"# checkpoint_interval_s = {v['tlog_checkpoint_interval_s']}",
              "at most one checkpoint of our chain per interval"),
        _line(f"# cosign_interval_s = {v['tlog_cosign_interval_s']}",
              "at most one batch of cosignatures per interval"),
        "[alerts]",
        "# Run on a new communication request (and an answer to yours); each bounded by",
        "# timeout_s, failures logged. The summary never holds the sealed subject and text",
        "# unless include_content = true.",
        _line("# command = []", 'argv, no shell, JSON summary on stdin: ["/usr/bin/page"]'),
        _line('# webhook = ""', "URL: HTTP POST of the JSON summary"),
        _line('# smtp_host = ""', "SMTP relay for e-mail alerts"),
        f"# smtp_port = {v['alerts_smtp_port']}",
        '# smtp_from = ""',
        _line("# smtp_to = []", "recipients' addresses"),
        "# smtp_starttls = false",
        '# smtp_user = ""',
        _line('# smtp_password_file = ""', "0600; relative to the data dir unless absolute"),
        "# include_content = false",
        f"# timeout_s = {v['alerts_timeout_s']}",
        _line(f"# per_member_hour = {v['alerts_per_member_hour']}",
              "receipts and alerts per sending member per hour"),
        "",
        "[ping]",
        _line("# schedule = []", 'campaigns, UTC: ["mon 09:00"] weekly, ["06:00"] daily'),
        _line("# targets = []", "members to ping; empty: every other member"),
        _line('# domain = ""', "diplomatic, policy or technical: whose PoC is pinged"),
    ]
    return "\n".join(lines) + "\n"
