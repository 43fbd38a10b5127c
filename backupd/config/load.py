"""The TOML configuration, validated once at the edge into typed, frozen objects.

Every problem in a file is reported at once, each as ``FILE: dotted.key: what is wrong``.
Relative paths are resolved against the directory that holds the config file.
Each source kind validates its own options (``jobs/<kind>.py``), so adding a kind
does not touch this module.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from backupd.config.offsite import OffsiteConfig, RemoteConfig, resolve_offsite
from backupd.config.sections import (
    AlertsConfig,
    ChangesConfig,
    ChunkerParams,
    Cron,
    DaemonConfig,
    DrillsConfig,
    DrillSql,
    MailConfig,
    MaintenanceConfig,
    MetricsConfig,
    Model,
    NotifyConfig,
    PassphraseConfig,
    RetentionConfig,
    StoreConfig,
)
from backupd.config.units import Duration, Size
from backupd.errors import ConfigError

__all__ = [  # the section models live in config_sections; importers find them here
    "ChangesConfig",
    "Config",
    "Cron",
    "DaemonConfig",
    "DrillSql",
    "DrillsConfig",
    "HostConfig",
    "MailConfig",
    "MaintenanceConfig",
    "MetricsConfig",
    "NotifyConfig",
    "OffsiteConfig",
    "PassphraseConfig",
    "RemoteConfig",
    "RestoreTarget",
    "RetentionConfig",
    "SourceConfig",
    "StoreConfig",
    "load_config",
    "load_config_text",
    "read_config",
]

DEFAULT_STATE_DIR = "/var/lib/backupd"
DEFAULT_CONFIG = Path(os.environ.get("BACKUPD_CONFIG", "/etc/backupd/backupd.toml"))

# Names end up in repository paths and archive names: keep them boring. Source names
# cannot contain "." because "." separates source, item and time in archive names.
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

_M = TypeVar("_M", bound=BaseModel)
SECTIONS = (
    "daemon",
    "retention",
    "changes",
    "metrics",
    "maintenance",
    "drills",
    "alerts",
)  # optional tables, defaults inside
OPTIONAL = ("mail", "notify")  # optional tables without defaults
TOP_LEVEL = ("state_dir", "catalogue", "store", "passphrase", "hosts", "restore_targets")


class SourceConfig(Model):
    """A thing on a host to back up. ``options`` is validated by the source kind."""

    name: str
    host: str
    kind: str
    timeout: Duration = 6 * 3600.0
    idle_timeout: Duration = 600.0
    min_bytes: Size = 1
    compression: str | None = None  # Borg compression for this source; the store's if unset
    # Borg's chunker for this source's archives; the kind's choice if unset (decision 0020)
    chunker_params: ChunkerParams | None = None
    schedule: Cron | None = None  # the daemon's default when unset
    deadline: Duration | None = None  # the daemon's job_deadline when unset
    retention: RetentionConfig | None = None  # the top-level [retention] when unset
    changes: ChangesConfig | None = None  # the top-level [changes] when unset
    drill_sql: tuple[DrillSql, ...] = ()  # extra drill checks in the restored database
    drill_paths: tuple[str, ...] = ()  # paths a restored tree must contain (relative)
    ping_url: str | None = None  # dead-man's switch: GET on success, URL + "/fail" on failure
    options: Any = None


class HostConfig(Model):
    name: str
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str
    key: Path
    host_key: str | None = None
    known_hosts: Path | None = None
    connect_timeout: Duration = 20.0
    # no answer from the droplet for this long: the connection is declared lost (keepalives)
    dead_peer_timeout: Duration = Field(default=30.0, ge=5.0)
    # the droplet runs backupd's gate as this key's forced command (decision 0022): trees
    # are then asked for as rrsync checks them (their paths on rsync's command line)
    gate: bool = False
    # restores onto a gated droplet (restore --to-host) use this second key, never the
    # daemon's: root-owned 0600 on the backup host, so the daemon's user cannot read it
    restore_key: Path | None = None
    # directories on the droplet that restores may write into, besides its trees' own
    restore_paths: tuple[str, ...] = ()
    sources: Mapping[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("host_key")
    @classmethod
    def _key_line(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) < 2:
            raise ValueError('expected "TYPE BASE64", e.g. "ssh-ed25519 AAAAC3Nza..."')
        return value

    @field_validator("restore_paths")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not p.startswith("/") or "/../" in f"{p}/"]
        if bad:
            raise ValueError(f"absolute directories on the droplet, without '..': {bad}")
        return tuple(p.rstrip("/") or "/" for p in value)

    @model_validator(mode="after")
    def _pinned(self) -> HostConfig:
        # Neither is valid: the key is then pinned in <state_dir>/known_hosts by
        # `backupctl host trust`, and connections are refused until it is.
        if self.host_key is not None and self.known_hosts is not None:
            raise ValueError("pin the host key once: give host_key or known_hosts, not both")
        return self


class RestoreTarget(Model):
    """A database server on the backup host that `restore --into-db NAME` restores into.
    ``options`` are the kind's own connection settings (socket, port, user, sudo...)."""

    name: str
    kind: str
    options: Any = None


class Config(Model):
    path: Path
    state_dir: Path
    catalogue_url: str
    store: StoreConfig
    passphrase: PassphraseConfig
    daemon: DaemonConfig = DaemonConfig()
    retention: RetentionConfig = RetentionConfig()
    changes: ChangesConfig = ChangesConfig()
    metrics: MetricsConfig = MetricsConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    drills: DrillsConfig = DrillsConfig()
    alerts: AlertsConfig = AlertsConfig()
    mail: MailConfig | None = None  # no mail: reports are kept in the catalogue, alerts logged
    notify: NotifyConfig | None = None  # chat and push (Apprise URLs), besides mail
    offsite: OffsiteConfig | None = None  # the second copy, off the backup host
    hosts: Mapping[str, HostConfig]
    restore_targets: Mapping[str, RestoreTarget] = Field(default_factory=dict)

    def source(self, host: str, source: str) -> SourceConfig:
        return self.hosts[host].sources[source]

    def all_sources(self) -> list[SourceConfig]:
        return [s for h in self.hosts.values() for s in h.sources.values()]

    def schedule_for(self, source: SourceConfig) -> str:
        return source.schedule or self.daemon.schedule

    def deadline_for(self, source: SourceConfig) -> float:
        return source.deadline or self.daemon.job_deadline

    def retention_for(self, source: SourceConfig) -> RetentionConfig:
        return source.retention or self.retention

    def changes_for(self, source: SourceConfig) -> ChangesConfig:
        """[changes], with the keys the source's own ``changes`` table gives instead (a
        source says what differs; unlike retention, whose table replaces the whole)."""
        if source.changes is None:
            return self.changes
        given = {key: getattr(source.changes, key) for key in source.changes.model_fields_set}
        return self.changes.model_copy(update=given)


@dataclass(frozen=True)
class KindModels:
    """What configuration needs to know of the source kinds: each kind's options model by
    name, and the kinds that restore into a database server (restore targets). Given by
    the kinds' registry (jobs/registry.py), so this layer does not import the kinds."""

    options: Mapping[str, type[BaseModel]]
    databases: frozenset[str]


def load_config(path: Path | str | None, *, kinds: KindModels) -> Config:
    """Read, validate and resolve a config file; raise ConfigError listing every problem."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    return load_config_text(read_config_text(file), file, kinds=kinds)


def read_config(file: Path, *, kinds: KindModels) -> tuple[str, Config]:
    """The file's text (the daemon snapshots it for its workers) and the config it holds."""
    text = read_config_text(file)
    return text, load_config_text(text, file, kinds=kinds)


def read_config_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{file}: no such file"]) from None
    except OSError as e:
        raise ConfigError([f"{file}: cannot read: {e.strerror}"]) from None


def load_config_text(text: str, file: Path, *, kinds: KindModels) -> Config:
    """A config read earlier (the daemon's snapshot), resolved as if it were at ``file``."""
    try:
        return parse_config(tomllib.loads(text), file, kinds=kinds)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{file}: not valid TOML: {e}"]) from None


def parse_config(raw: dict[str, Any], file: Path, *, kinds: KindModels) -> Config:
    problems: list[str] = []
    base = file.resolve().parent
    state_dir = _resolve_path(base, str(raw.get("state_dir", DEFAULT_STATE_DIR)))
    hosts = {}
    raw_hosts = raw.get("hosts", {})
    if not isinstance(raw_hosts, dict) or not raw_hosts:
        problems.append(f"{file}: hosts: declare at least one [hosts.NAME] table")
        raw_hosts = {}
    for name, body in raw_hosts.items():
        host = _parse_host(name, body, base, file, problems, kinds)
        if host is not None:
            hosts[name] = host
    default_db = f"sqlite:///{state_dir / 'catalogue.db'}"
    top = {
        "path": file,
        "state_dir": state_dir,
        "catalogue_url": raw.get("catalogue", {}).get("url", default_db)
        if isinstance(raw.get("catalogue"), dict)
        else default_db,
        "store": _resolve_paths(raw.get("store"), base, ("path",)),
        "passphrase": _resolve_paths(raw.get("passphrase"), base, ("file",)),
        "hosts": hosts,
        "restore_targets": _parse_targets(
            raw.get("restore_targets", {}), base, file, problems, kinds
        ),
        **{k: raw[k] for k in SECTIONS if k in raw},
        **{k: _resolve_optional(raw[k], base) for k in OPTIONAL if k in raw},
        **({"offsite": resolve_offsite(raw["offsite"], base)} if "offsite" in raw else {}),
    }
    unknown = set(raw) - {*TOP_LEVEL, *SECTIONS, *OPTIONAL, "offsite"}
    problems += [f"{file}: {k}: unknown setting" for k in sorted(unknown)]
    config = _validate(Config, top, file, "", problems)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _parse_targets(
    raw: object, base: Path, file: Path, problems: list[str], kinds: KindModels
) -> dict[str, RestoreTarget]:
    if not isinstance(raw, dict):
        problems.append(f"{file}: restore_targets: expected tables [restore_targets.NAME]")
        return {}
    targets = {}
    for name, body in raw.items():
        where = f"restore_targets.{name}"
        if not SOURCE_NAME.match(name) or not isinstance(body, dict):
            problems.append(
                f"{file}: {where}: expected a table named with letters, digits, '_', '-'"
            )
            continue
        kind = body.get("kind")
        if kind not in kinds.databases:
            known = ", ".join(sorted(kinds.databases))
            problems.append(f"{file}: {where}.kind: expected one of {known}, got {kind!r}")
            continue
        body = {
            k: _resolve(base, v) if k == "password_file" else v
            for k, v in body.items()
            if k != "kind"
        }
        options = _validate(kinds.options[kind], body, file, where, problems)
        if options is not None:
            targets[name] = RestoreTarget(name=name, kind=kind, options=options)
    return targets


def _parse_host(
    name: str, body: object, base: Path, file: Path, problems: list[str], kinds: KindModels
) -> HostConfig | None:
    where = f"hosts.{name}"
    if not HOST_NAME.match(name):
        problems.append(f"{file}: {where}: host names use letters, digits, '.', '_', '-'")
        return None
    if not isinstance(body, dict):
        problems.append(f"{file}: {where}: expected a table")
        return None
    body = {k: _resolve(base, v) if k in ("key", "known_hosts") else v for k, v in body.items()}
    raw_sources = body.pop("sources", None) or {}
    if not isinstance(raw_sources, dict):
        problems.append(f"{file}: {where}.sources: expected tables [hosts.{name}.sources.NAME]")
        raw_sources = {}
    sources = {}
    for sname, sbody in raw_sources.items():
        source = _parse_source(name, sname, sbody, file, problems, kinds)
        if source is not None:
            sources[sname] = source
    return _validate(HostConfig, {**body, "name": name, "sources": sources}, file, where, problems)


def _parse_source(
    host: str, name: str, body: object, file: Path, problems: list[str], kinds: KindModels
) -> SourceConfig | None:
    where = f"hosts.{host}.sources.{name}"
    if not SOURCE_NAME.match(name):
        problems.append(f"{file}: {where}: source names use letters, digits, '_', '-'")
        return None
    if not isinstance(body, dict):
        problems.append(f"{file}: {where}: expected a table")
        return None
    common = set(SourceConfig.model_fields) - {"name", "host", "options"}
    kind_name = body.get("kind")
    if not isinstance(kind_name, str) or kind_name not in kinds.options:
        known = ", ".join(sorted(kinds.options))
        problems.append(f"{file}: {where}.kind: expected one of {known}, got {kind_name!r}")
        return None
    options_raw = {k: v for k, v in body.items() if k not in common}
    options = _validate(kinds.options[kind_name], options_raw, file, where, problems)
    fields = {k: v for k, v in body.items() if k in common}
    fields.update(name=name, host=host, options=options)
    return _validate(SourceConfig, fields, file, where, problems)


def _validate(
    model: type[_M], data: object, file: Path, where: str, problems: list[str]
) -> _M | None:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"] if p != "options")
            key = ".".join(p for p in (where, loc) if p) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            problems.append(f"{file}: {key}: {msg}")
        return None


def _resolve(base: Path, value: object) -> object:
    if isinstance(value, str) and value:
        return _resolve_path(base, value)
    return value


def _resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_optional(body: object, base: Path) -> object:
    """[mail] and [notify]: ``ca_file`` and a credential table's ``file`` relative to the
    configuration's directory."""
    if not isinstance(body, dict):
        return body
    body = _resolve_paths(body, base, ("ca_file",))
    assert isinstance(body, dict)
    tables = [k for k in ("password", "urls_from") if isinstance(body.get(k), dict)]
    return {**body, **{k: _resolve_paths(body[k], base, ("file",)) for k in tables}}


def _resolve_paths(body: object, base: Path, keys: tuple[str, ...]) -> object:
    if not isinstance(body, dict):
        return body
    return {k: _resolve(base, v) if k in keys else v for k, v in body.items()}
