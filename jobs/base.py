"""The small interfaces every job implements (the registries that find them: registry.py).

Source kinds (``KIND``) say what to pull; maintenance jobs (``JOB``) look after the store.

A kind turns its validated options into *units*: either a ``DumpStream`` (a remote command
whose stdout is the backup, pulled into its own archive through ``borg create
--content-from-command`` so a failed dump never becomes an archive) or a ``TreeTransfer``
(a remote directory mirrored incrementally with rsync, then archived file by file).
Adding a kind is adding one module here that defines ``KIND``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from backupd.catalogue import Check, Facts
from backupd.config.sections import DrillsConfig
from backupd.local.process import CommandResult, FeedResult
from backupd.remote.shells import CommandRunner, CommandShell

if TYPE_CHECKING:  # only named in signatures here
    from backupd.borg.adapter import Borg
    from backupd.catalogue import Catalogue
    from backupd.config.load import Config
    from backupd.remote.channel import Interactive
    from jobs.gating import GateRequest, RestoreGate


class Options(BaseModel):
    """Base of every kind's options: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def remote_prefix(self) -> tuple[str, ...]:
        """What every droplet command of this source starts with (sudo, docker exec)."""
        return ()

    def program(self, name: str) -> str:
        """The droplet program this source runs for ``name`` (an option may name another)."""
        return name


class ExecOptions(Options):
    """Where a kind's tools run on the droplet: directly, as another user, or in a container."""

    container: str | None = None  # run inside this Docker container (docker exec -i)
    container_user: str | None = None  # docker exec --user
    sudo_user: str | None = None  # run as this OS user (sudo -n -u USER)
    docker: str = "docker"

    def remote_prefix(self) -> tuple[str, ...]:
        return self.exec_prefix()

    def exec_prefix(self) -> tuple[str, ...]:
        prefix: tuple[str, ...] = ()
        if self.sudo_user:
            prefix += ("sudo", "-n", "-u", self.sudo_user, "--")
        if self.container:
            prefix += (self.docker, "exec", "-i")
            if self.container_user:
                prefix += ("--user", self.container_user)
            prefix += (self.container,)
        return prefix


O_contra = TypeVar("O_contra", bound=Options, contravariant=True)


class RemoteShell(CommandRunner, Protocol):
    """What a kind may do on the droplet: run short commands, or hold a conversation."""

    def interactive(self, argv: Sequence[str]) -> Interactive: ...


@dataclass(frozen=True)
class Held:
    """What a kind holds open while its stream is pulled (e.g. a database snapshot)."""

    extra_argv: tuple[str, ...] = ()  # appended to the stream's argv (e.g. --snapshot ID)
    facts: dict[str, Any] = field(default_factory=dict)  # taken in the same snapshot


# Borg's chunker for database dumps (decision 0020): ~64 KiB chunks. Seven nights of a
# learning platform's day took 31 % (PostgreSQL -Fc -Z0), 38 % (MariaDB) and 56 % (SQLite)
# less repository than Borg's default ~2 MiB chunks; a day touching every page, 3-5 % more.
DATABASE_CHUNKER = "buzhash,14,23,16,4095"


@dataclass(frozen=True)
class DumpStream:
    """A remote command whose stdout is the backup: one archive holding one file."""

    item: str  # what the stream holds, e.g. a database name
    filename: str  # the file's name inside the archive
    argv: tuple[str, ...]  # remote command that writes the dump to stdout
    tool: str  # the dump tool's name, for messages ("pg_dump exited with status 1")
    programs: tuple[str, ...] = ()  # what it runs on the droplet (config check looks)
    stdin: bytes = field(default=b"", repr=False)  # fed first (e.g. an option file); secret
    counter: str | None = None  # a stream fact counter run on the stream (remote/counters.py)
    # the smallest output that can be right, when the source's min_bytes (meant for its
    # databases) cannot apply: cluster globals are a few hundred bytes on a small server
    min_bytes: int | None = None
    # Borg's --chunker-params for this kind's dumps, chosen from measurements (decision
    # 0020); None: borg's default. A source's chunker_params setting wins.
    chunker_params: str | None = None


@dataclass(frozen=True)
class TreeTransfer:
    """A remote directory, mirrored with rsync into staging, archived with Borg's files cache."""

    item: str
    path: str  # remote directory (absolute)
    excludes: tuple[str, ...] = ()
    rsync_path: str = "rsync"  # remote rsync command, e.g. "sudo -n rsync"
    programs: tuple[str, ...] = ("rsync",)  # what it runs on the droplet (config check looks)
    sudo: bool = False  # read as root: what the login user may not read is still read
    before: tuple[str, ...] | None = None  # remote argv run first (e.g. take a snapshot)
    after: tuple[str, ...] | None = None  # remote argv always run afterwards (cleanup)
    hook_timeout: float = 600.0


Unit = DumpStream | TreeTransfer


class SourceKind(Protocol[O_contra]):
    name: str

    @property
    def options_model(self) -> type[Options]: ...

    def plan(self, options: O_contra, remote: RemoteShell) -> Sequence[Unit]:
        """The units to pull now; may ask the droplet (e.g. which databases exist)."""
        ...

    def hold(
        self, options: O_contra, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        """Held open around the pull of ``stream``; most kinds hold nothing (NOTHING_HELD)."""
        ...

    def vanished(self, options: O_contra, unit: Unit, remote: RemoteShell) -> bool:
        """After ``unit`` failed: whether its item is gone from the droplet since the plan
        (a database dropped, a file removed). That is a warning naming it, and the other
        items of the night are kept; any other failure of an item fails the run."""
        ...

    def gate_requests(self, options: O_contra, source: str) -> Sequence[GateRequest]:
        """Every request this source sends a gated droplet, as the gate's allowlist holds
        them (jobs/gating.py, decision 0022). UsageError when its options keep it from
        going through the gate (say why and what to change)."""
        ...

    def droplet_setup(self, options: O_contra, source: str, login: str) -> Sequence[str]:
        """Shell lines run as root on the droplet by `backupctl host setup` (functions
        ``say``, ``die``, ``where`` of its script): the least-privileged access this
        source needs for ``login`` (a database role and its grants); none for most."""
        ...


def nothing_held() -> AbstractContextManager[Held]:
    return nullcontext(Held())


class StreamFilter(Protocol):
    """Rewrites a dump stream on its way to the restore tool (e.g. keep one table)."""

    matched: bool  # what was asked for was in the stream

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


@dataclass(frozen=True)
class DatabaseRestore:
    """One dump restored into one database by streaming it into the kind's restore tool."""

    database: str  # the name to restore under (created by prepare_database)
    table: str | None = None  # one table only (a recorded fact key, see resolve_table)
    keep_owners: bool = True  # False on a foreign server: objects belong to our login
    replace: bool = False  # drop what is in the way (the database, or with table: the table)
    # the archive's recorded facts: what the database was (encoding...) and needs (roles...)
    facts: Facts = field(default_factory=lambda: Facts(), compare=False)


@dataclass(frozen=True)
class Lack:
    """Something a dump needs from the target server outside the database itself."""

    what: str  # "role app_reader", "extension postgis"
    creatable: bool  # backupd can create it (restore --create-roles; drills always do)
    how: str  # how a person gets it, one sentence ("HOST/SOURCE" is filled in)


@dataclass(frozen=True)
class Setup:
    """What a kind readied before the dump is streamed (e.g. the list of entries to restore)."""

    extra_argv: tuple[str, ...] = ()  # appended to restore_argv
    checks: tuple[Check, ...] = ()  # reported with the restore's checks


# runs argv with the archive's dump fed on its stdin (it may stop reading early)
Peek = Callable[[tuple[str, ...]], FeedResult]


@dataclass(frozen=True)
class ScratchEnv:
    """What a drill hands a kind to start its scratch server. ``backupd/actions/scratch.py``
    does the rest: the scratch user, waiting, stopping (also after a crash), removing."""

    drills: DrillsConfig
    root: Path  # private, removed afterwards: the server's data, socket and logs go here
    own: Callable[[Path], None]  # create a directory under root (0700), the server's
    # run a setup tool (initdb) as the server's user: RestoreError when it fails; (argv, what)
    run: Callable[[tuple[str, ...], str], None]
    # start the server and wait until ``probe`` succeeds: RestoreError with the server's
    # log when it does not; (argv, probe argv, what)
    serve: Callable[[tuple[str, ...], tuple[str, ...], str], None]


class ScratchServer(Protocol):
    """How a database kind starts a throwaway server of its own for restore drills: from
    the backup host's installed binaries, in ``env.root``, on a unix socket only."""

    @property
    def pid_file(self) -> str:
        """The server's own pid file, relative to the root: a crash's leftovers are
        stopped from it at the next start."""
        ...

    @property
    def stop_signal(self) -> int:
        """The signal for a quick clean stop (PostgreSQL: SIGINT, a fast shutdown)."""
        ...

    def start(self, env: ScratchEnv) -> Options:
        """Start the server: the kind's options that connect to it (socket, user)."""
        ...


class DatabaseKind(Protocol[O_contra]):
    """What a kind implements so its dumps restore into a database server (backupctl
    restore --into-db / --to-host --database, restore drills). ``shell`` runs the client
    tools on the backup host or on a droplet; ``options`` say how they connect there."""

    def restorable(self, item: str) -> bool:
        """Whether this item's dump is a database (PostgreSQL's globals are not)."""
        ...

    def resolve_table(self, table: str, recorded: Sequence[str]) -> str:
        """The recorded fact key (``facts["rows"]``) for a table named by a person."""
        ...

    def database_exists(self, options: O_contra, shell: CommandShell, name: str) -> bool: ...

    def prepare_database(
        self, options: O_contra, shell: CommandShell, req: DatabaseRestore
    ) -> None:
        """Create the database (dropping it first if ``req.replace`` and no table)."""
        ...

    def restore_argv(
        self, options: O_contra, req: DatabaseRestore, secret_path: str | None
    ) -> tuple[str, ...]:
        """The tool that reads the dump on stdin; ``secret_path`` holds restore_secret()."""
        ...

    def restore_secret(self, options: O_contra) -> bytes:
        """An option file the restore tool needs (b"": none)."""
        ...

    def stream_filter(self, table: str | None) -> StreamFilter | None: ...

    def row_counts(
        self, options: O_contra, shell: CommandShell, name: str, tables: Sequence[str]
    ) -> dict[str, int]:
        """Rows now in each of ``tables`` (fact keys) of database ``name``."""
        ...

    def tables(self, options: O_contra, shell: CommandShell, name: str) -> set[str]:
        """The tables now in database ``name``, named as the facts name them."""
        ...

    def query(self, options: O_contra, shell: CommandShell, name: str, sql: str) -> str:
        """Run an operator's check query (``drill_sql``) in database ``name``: its output."""
        ...

    @property
    def scratch(self) -> ScratchServer:
        """The throwaway server a drill restores this kind's dumps into."""
        ...

    # -- what a dump needs beyond itself (issue 12); NoServerNeeds: the kinds that need none
    def companion_items(self) -> tuple[str, ...]:
        """Items of the same backup that ``provide`` reads (PostgreSQL: the globals)."""
        ...

    def lacks(self, options: O_contra, shell: CommandShell, req: DatabaseRestore) -> list[Lack]:
        """What the target server lacks for this restore (asked before anything changes)."""
        ...

    def provide(
        self,
        options: O_contra,
        shell: CommandShell,
        req: DatabaseRestore,
        companions: Mapping[str, bytes],
    ) -> list[Check]:
        """Create the creatable ``lacks`` on the target (from ``companions``: item -> dump);
        checks saying what was created."""
        ...

    def restore_setup(
        self, options: O_contra, shell: CommandShell, req: DatabaseRestore, peek: Peek
    ) -> AbstractContextManager[Setup]:
        """Held around the stream into ``restore_argv`` (may read the dump first with
        ``peek``); raises RestoreError when the request cannot be met."""
        ...

    def extra_checks(
        self, options: O_contra, shell: CommandShell, req: DatabaseRestore
    ) -> list[Check]:
        """Checks beyond row counts of the restored database against ``req.facts``
        (VerificationError when it differs)."""
        ...

    def restore_gate(self, options: O_contra, source: str) -> RestoreGate:
        """What a restore onto a gated droplet runs as and asks (jobs/gating.py);
        UsageError when this kind cannot restore through the gate (say why)."""
        ...


class NoServerNeeds:
    """DatabaseKind's needs-methods for a kind whose dumps need nothing beyond themselves."""

    def companion_items(self) -> tuple[str, ...]:
        return ()

    def lacks(self, options: Any, shell: Any, req: DatabaseRestore) -> list[Lack]:
        return []

    def provide(
        self, options: Any, shell: Any, req: DatabaseRestore, companions: Mapping[str, bytes]
    ) -> list[Check]:
        return []

    def restore_setup(
        self, options: Any, shell: Any, req: DatabaseRestore, peek: Peek
    ) -> AbstractContextManager[Setup]:
        return nullcontext(Setup())

    def extra_checks(self, options: Any, shell: Any, req: DatabaseRestore) -> list[Check]:
        return []


class LoadRewrite(Protocol):
    """Rewrites a dump on its way into the restore tool so it loads on that server under
    the restore's name (MariaDB: definers the server lacks, the database's own name)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...

    def notes(self) -> list[str]:
        """What was changed, one line each (shown with the restore's checks)."""
        ...


@runtime_checkable
class RewritingKind(Protocol):
    """A DatabaseKind whose dumps must be rewritten to load elsewhere (MariaDB)."""

    def load_rewrite(
        self,
        options: Any,
        shell: CommandShell,
        source: str,
        tables: Sequence[str],
        req: DatabaseRestore,
    ) -> LoadRewrite | None:
        """For the dump of database ``source`` (its ``tables`` as recorded) restored as
        ``req``: the rewrite, or None when it loads as it is."""
        ...


# -- maintenance jobs -------------------------------------------------------------------
@dataclass(frozen=True)
class MaintenanceEnv:
    """What a maintenance job may touch. ``host``/``repository`` are None for store-wide jobs."""

    config: Config
    borg: Borg
    catalogue: Catalogue
    host: str | None
    repository: Path | None
    trigger: str = "schedule"  # who started it: "schedule", "backupctl"...
    accepted: frozenset[str] = frozenset()  # what the operator accepted for this run ("shrink")


@dataclass(frozen=True)
class MaintenanceResult:
    summary: str  # one line for the catalogue, the log and the weekly report
    warnings: tuple[str, ...] = ()  # done, but someone should look (recorded as an alert)


class MaintenanceJob(Protocol):
    """A job the daemon runs on a schedule (``[maintenance]`` holds its crontab line).

    ``per_repository`` jobs run once per host repository and count as that repository's
    writer; the others run once for the whole store. ``run`` raises BackupdError on failure.
    """

    name: str
    per_repository: bool

    def run(self, env: MaintenanceEnv) -> MaintenanceResult: ...


def scheduled_under(job: MaintenanceJob, config: object) -> bool:
    """Whether ``config`` has the table ``job`` needs (its ``requires``: [offsite]); a job
    without one is always scheduled."""
    needs = getattr(job, "requires", None)
    return needs is None or getattr(config, needs) is not None


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(item: str) -> str:
    """A name safe for archive names and file names; unique even when characters were lost."""
    # never a leading "-": borg (and most tools) would read the name as an option
    cleaned = _UNSAFE.sub("_", item).strip("_").lstrip("-")[:48] or "item"
    if cleaned == item:
        return item
    return f"{cleaned}-{hashlib.sha256(item.encode()).hexdigest()[:8]}"


def unreadable_argv(path: str) -> tuple[str, ...]:
    """The regular files below ``path`` the login user may not read, NUL-separated."""
    return ("find", "-P", path.rstrip("/") + "/", "-type", "f", "!", "-readable", "-print0")


def path_gone(remote: RemoteShell, prefix: tuple[str, ...], path: str) -> bool:
    """Whether ``path`` no longer exists on the droplet (``test -e`` says so, exit 1)."""
    return remote.run((*prefix, "test", "-e", path), timeout=60.0).exit_status == 1


def list_lines(result: CommandResult) -> list[str]:
    return [line for line in result.stdout.decode().splitlines() if line.strip()]
