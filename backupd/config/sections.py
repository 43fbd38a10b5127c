"""The top-level tables of the configuration besides hosts: store, passphrase, retention,
daemon, maintenance, drills, mail. Validated by backupd.config.load, which re-exports them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from backupd.config.units import Delay, Duration


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassphraseConfig(Model):
    """Where the Borg passphrase comes from: exactly one of the three."""

    file: Path | None = None
    credential: str | None = None
    command: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PassphraseConfig:
        given = [k for k in ("file", "credential", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of file, credential or command")
        if self.command is not None and not self.command:
            raise ValueError("command must be a non-empty list of arguments")
        return self


class StoreConfig(Model):
    path: Path
    encryption: Literal["repokey-blake2", "keyfile-blake2", "repokey", "keyfile"] = "repokey-blake2"
    # lz4 probes each chunk; compressible ones get zstd level 3 (text dumps shrink like
    # pg_dump -Fc's zlib), incompressible ones (media) are stored as they are.
    compression: str = "auto,zstd,3"
    borg: str = "borg"  # the borg executable; the venv's when left as "borg"


def check_cron(value: str) -> str:
    """A crontab line ("minute hour day month weekday", optional leading seconds), in UTC."""
    from backupd.config.cron import cron_trigger

    try:
        cron_trigger(value)
    except ValueError as e:
        raise ValueError(f'not a crontab schedule ({e}): expected e.g. "0 2 * * *"') from None
    return value


Cron = Annotated[str, AfterValidator(check_cron)]


def check_chunker_params(value: str) -> str:
    """Borg's ``--chunker-params``, checked here as borg 1.4 checks them (so a typo is a
    config error, not a failed night): ``default``, ``buzhash,MIN,MAX,MASK,WINDOW``
    (exponents of two, 6 <= MIN <= MASK <= MAX <= 23, WINDOW odd) or
    ``fixed,BLOCK[,HEADER]`` (bytes, BLOCK >= 64)."""
    example = 'expected "default", "buzhash,14,23,16,4095" or "fixed,4194304"'
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise ValueError(f"not chunker params: {example}") from None
    if parts == ["default"]:
        return "default"
    if parts[0] == "buzhash" and len(numbers) == 4:
        low, high, mask, window = numbers
        if not 6 <= low <= mask <= high <= 23:
            raise ValueError("buzhash needs 6 <= MIN <= MASK <= MAX <= 23 (powers of two)")
        if window % 2 == 0:
            raise ValueError("buzhash's WINDOW must be odd, e.g. 4095")
        return ",".join(parts)
    if parts[0] == "fixed" and len(numbers) in (1, 2):
        if numbers[0] < 64 or min(numbers) < 0 or max(numbers) > 20 * 1024 * 1024:
            raise ValueError("fixed needs 64 <= BLOCK (bytes) and sizes up to 20 MiB")
        return ",".join(parts)
    raise ValueError(f"not chunker params: {example}")


ChunkerParams = Annotated[str, AfterValidator(check_chunker_params)]


class RetentionConfig(Model):
    """Which archives `prune` keeps, per source and item (borg prune's rules, plus two)."""

    keep_last: int = Field(default=3, ge=1)  # the newest N always stay, whatever their dates
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)
    keep_monthly: int = Field(default=6, ge=0)
    keep_yearly: int = Field(default=0, ge=0)
    # and never the newest archive that passed a restore drill


Share = Annotated[float, Field(gt=0.0, le=1.0)]  # a part of the whole: 0.5 is half


class ChangesConfig(Model):
    """When a night looks like loss rather than change (issue 16, decision 0024): an alert
    at once, and prune keeps the archive before it until `backupctl alerts ack`."""

    enabled: bool = True
    rows_lost: Share = 0.5  # a table that lost at least this share of its rows
    min_rows: int = Field(default=100, ge=1)  # ... and had at least this many
    files_lost: Share = 0.5  # a tree whose files went (moved ones did not), at least this share
    bytes_lost: Share = 0.5  # a tree that shrank by at least this share of its bytes
    rewritten: Share = 0.9  # a tree whose files got new content, this share in one night
    min_files: int = Field(default=100, ge=1)  # trees with fewer files are not judged
    # table keys ("schema.table"; MariaDB, SQLite: the name) whose rows come and go: globs
    ignore_tables: tuple[str, ...] = ()


class MetricsConfig(Model):
    """Prometheus metrics (issue 17, decision 0025): the daemon serves /metrics here."""

    # HOST:PORT ([::1]:PORT for IPv6; port 0: any free one, logged); "" serves none.
    # Loopback: a scraper elsewhere reaches it through a reverse proxy, or reads
    # node_exporter's textfile (backupctl metrics --textfile)
    listen: str = "127.0.0.1:9469"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            bare_v6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
            if (
                not sep
                or not host
                or "/" in host
                or bare_v6
                or not port.isdigit()
                or not 0 <= int(port) < 65536
            ):
                raise ValueError(
                    'expected "HOST:PORT" ("127.0.0.1:9469", "[::1]:9469"), or "" for none'
                )
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on; None: no metrics served."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class DaemonConfig(Model):
    workers: int = Field(default=2, ge=1)  # jobs at once, over all hosts
    per_host: int = Field(default=1, ge=1)  # jobs at once on one droplet
    schedule: Cron = "0 2 * * *"  # sources without their own schedule
    jitter: Delay = 3600.0  # each firing is delayed by up to this, so droplets are not hit at once
    catch_up_delay: Delay = 60.0  # a run missed while down starts this long after start
    job_deadline: Duration = 12 * 3600.0  # a job still running after this is stopped
    stop_grace: Duration = 300.0  # on SIGTERM, running jobs get this long to finish
    retries: int = Field(default=3, ge=0)  # for transient failures only
    retry_backoff: Duration = 300.0  # first retry delay; doubles each time


class MaintenanceConfig(Model):
    prune: Cron = "30 5 * * *"
    compact: Cron = "0 6 * * 0"
    check: Cron = "0 7 * * *"
    verify_archives: int = Field(default=3, ge=0)  # archives per check read back in full
    catalogue: Cron = "45 5 * * *"  # a copy of the catalogue into the store
    drill: Cron = "0 4 * * 6"  # restore drills of every source (weekly)
    report: Cron = "0 8 * * 1"  # the weekly report (Monday morning)
    offsite: Cron = "15 6 * * *"  # the off-site copy, after prune and compact (with [offsite])
    offsite_drill: Cron = "45 7 1 * *"  # a restore drill of each copy, monthly (with [offsite])


class DrillsConfig(Model):
    """Restore drills: scratch servers backupd starts itself, unix socket only."""

    scratch_user: str = "nobody"  # runs scratch PostgreSQL/MariaDB when backupd runs as root
    postgres_bindir: Path | None = None  # default: the newest /usr/lib/postgresql/N/bin
    mariadbd: str = "mariadbd"
    mariadb_install_db: str = "mariadb-install-db"
    older_archives: int = Field(default=1, ge=0)  # older restore points drilled per run
    timeout: Duration = 4 * 3600.0


class DrillSql(Model):
    """A query run in the restored database; its first line of output must equal expect."""

    sql: str
    expect: str


class MailConfig(Model):
    """Where the weekly report and alerts go (SMTP with STARTTLS or TLS)."""

    to: tuple[str, ...]
    sender: str = "backupd@localhost"
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: PassphraseConfig | None = None  # file, credential or command, like [passphrase]
    ca_file: Path | None = None  # trust this CA (PEM) for the server's certificate (own relay)
    timeout: Duration = 30.0
    retry: Duration = 600.0  # a failed send is retried this often (the mail is queued)
    alert_interval: Duration = 3600.0  # the same alert is mailed at most once per interval


class AlertsConfig(Model):
    """What is watched besides job outcomes; alerts are mailed at once via [mail]."""

    stale_factor: float = Field(default=2.0, gt=1.0)  # no success in factor x the interval
    disk_warn_percent: float = Field(default=85.0, gt=0, le=100)  # store's file system use
    disk_critical_percent: float = Field(default=95.0, gt=0, le=100)
    check_interval: Duration = 60.0  # how often the daemon looks and mails


class NotifyConfig(Model):
    """Chat and push notifications through Apprise (issue 17, decision 0027): every alert
    also goes to each URL, deduplicated, rate-limited and queued per URL like mail.

    The URLs carry their services' tokens: they are never logged nor stored (the catalogue
    keeps a fingerprint and a label without path, user or password)."""

    urls: tuple[str, ...] = ()
    # the URLs kept out of this file, one per line: a file, credential or command
    urls_from: PassphraseConfig | None = None
    timeout: Duration = Field(default=10.0, gt=0)  # per service: connect, then each read
    alert_interval: Duration = 3600.0  # the same alert at most once per interval and URL

    @field_validator("urls", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError('a list of URLs, even of one: urls = ["service://..."]')
        return value

    @field_validator("urls_from", mode="before")
    @classmethod
    def _a_table(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                'a table naming where they are: urls_from = { file = "/etc/backupd/notify-urls" }'
                " (or credential = ..., command = [...])"
            )
        return value

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for n, url in enumerate(value, 1):
            problem = url_problem(url)
            if problem:
                raise ValueError(f"URL {n} of {len(value)}: {problem}")
        return value

    @model_validator(mode="after")
    def _some(self) -> NotifyConfig:
        if not self.urls and self.urls_from is None:
            raise ValueError("give urls or urls_from (or leave [notify] out)")
        return self


def url_problem(url: str) -> str | None:
    """Why ``url`` is no Apprise URL (None: it is one). The URL itself is never repeated:
    it holds a token."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme or not rest:
        return "not a URL of the form service://... (see Apprise's list of services)"
    quiet_apprise()
    import apprise  # here, not at the top: loading its services takes 0.1 s
    from apprise.apprise import N_MGR

    asset = apprise.AppriseAsset(plugin_paths=[], storage_mode="memory")
    if apprise.Apprise.instantiate(url.strip(), asset=asset) is not None:
        return None
    if scheme.lower() in ("http", "https"):
        return (
            f"{scheme!r} is no Apprise service: write the service's own scheme (a Mattermost "
            "webhook https://HOST/hooks/KEY is mmosts://HOST/KEY) or json://, form://"
        )
    if scheme.lower() in N_MGR:
        return (
            f"Apprise's {scheme!r} service cannot read this URL: a part it needs is missing "
            "or malformed (see the service's page in Apprise's wiki)"
        )
    return f"Apprise has no service {scheme!r}"


def quiet_apprise() -> None:
    """Apprise's own log says URLs, paths and payloads (its debug lines name a webhook's
    secret path), and so does urllib3's under it ("POST /hooks/TOKEN"): none of it
    reaches backupd's log, and their debug lines are never made. What failed is read from
    Apprise's results (its warnings, the URL's secrets blanked)."""
    for name in ("apprise", "urllib3"):
        log = logging.getLogger(name)
        if not log.handlers:
            log.addHandler(logging.NullHandler())  # else Python's last resort prints them
        log.setLevel(logging.WARNING)
        log.propagate = False
