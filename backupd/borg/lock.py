"""Who holds a Borg lock, and what backupd may do about it: wait, break it, or say so.

Borg 1.4 locks a repository (and each client cache) with two files, checked against 1.4.5:

- ``lock.exclusive/``: a directory created atomically, holding one empty file
  ``HOSTID.PID-THREAD`` (THREAD in hex, always 0). A writer keeps it for its whole command;
  a reader only while it adds itself to the roster.
- ``lock.roster``: JSON ``{"exclusive": [[HOSTID, PID, THREAD]], "shared": [[...], ...]}``.

HOSTID is ``$BORG_HOST_ID`` or ``FQDN@NODE`` (``uuid.getnode()``). Borg itself drops the
entries of dead pids of this machine when it next takes the lock; it waits (``--lock-wait``,
then exit 73 "Failed to create/acquire the lock") on a live pid, on a pid reused since, and
on anything of another host id.

Whose a live holder is: backupd starts every borg with ``BACKUPD_JOB`` (what it is doing,
e.g. "the backup of web1/db") and ``BACKUPD_PID`` (its own pid) in the environment, next to
its ``BORG_BASE_DIR``. A holder whose ``/proc/PID/environ`` has both, with this backupd's
``BORG_BASE_DIR``, is ours (an orphan if that backupd process is gone). Not the base dir
alone: an operator may run borg with backupd's cache (``BORG_BASE_DIR=... borg list``). Not
the ancestry: it cannot tell an orphan from an operator's borg. An environ we may not read
belongs to another user, so not to backupd.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shlex
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path

from backupd.config.units import human_age
from backupd.errors import RepositoryLockedError
from backupd.local.process import (
    Argv,
    CommandResult,
)
from backupd.local.procfs import process_alive, process_command, process_environ, process_started

log = logging.getLogger(__name__)
JOB_ENV = "BACKUPD_JOB"  # what backupd's borg is doing, for another backupd that waits on it
PID_ENV = "BACKUPD_PID"  # the backupd process that started it
REUSE_SLACK = 2.0  # seconds: /proc/stat's boot time is whole seconds
POLL_SECONDS = 0.5  # how often a waiting command looks at the lock again
CONFIRM_SECONDS = 0.2  # a foreign holder is looked at twice: readers pass through quickly
LOCK_CODES = frozenset(range(70, 76))  # borg's modern exit codes: lock errors, 73 its timeout
LOCK_FAILED = 72  # the lock could not be created at all (permissions): nobody holds it
QUICK_LOCK_WAIT = "1"  # borg's own --lock-wait per attempt: backupd judges the holder itself
UNEXPLAINED_RETRIES = 2  # a lock error while nobody holds the lock: try again this often
WRITERS = frozenset({"create", "recreate", "delete", "prune", "compact", "check", "rename"})
READERS = frozenset({"list", "info", "extract", "diff", "export-tar"})
_LOCK_NAMED = re.compile(r"Failed to create/acquire the lock (\S+) \(timeout\)")


class Verdict(StrEnum):
    OURS = "ours"  # a live backupd job of this installation: wait for it, that is normal
    STALE = "stale"  # this machine, and its process is gone (or its pid reused): break it
    MANUAL = "manual"  # this machine, alive, not this backupd's (an operator's borg)
    ORPHAN = "orphan"  # a borg backupd started, still running after its backupd went away
    ELSEWHERE = "elsewhere"  # another host id: backupd cannot tell whether it is stale


@dataclass(frozen=True)
class Holder:
    """One entry of a lock: who, since when (UTC), and the verdict."""

    host_id: str
    pid: int
    thread: int
    exclusive: bool  # holds the lock directory or is an exclusive roster entry
    since: datetime | None  # the lock file's mtime (a roster entry: the roster's)
    verdict: Verdict
    command: str = ""  # "borg with-lock ..." ("" when gone or elsewhere)
    job: str = ""  # backupd's BACKUPD_JOB of the holder, if any
    backupd_pid: int | None = None
    other_base: str | None = None  # a backupd marker with another BORG_BASE_DIR
    reused: bool = False  # STALE because the pid now belongs to a younger process


@dataclass(frozen=True)
class BorgLock:
    """A lock as messages name it: ``base`` is ``REPO/lock`` or ``CACHE/lock``."""

    base: Path
    what: str  # "repository /store/web1"
    clear: str  # the command that clears it by hand
    cache: bool = False  # a cache lock: always exclusive; backupd never breaks it itself


def repository_lock(repo: Path) -> BorgLock:
    clear = f"borg break-lock {shlex.quote(str(repo))}"
    return BorgLock(repo / "lock", f"repository {repo}", clear)


def cache_lock(repo: Path, base_dir: Path, cache_dir: Path | None = None) -> BorgLock | None:
    """The lock of backupd's Borg cache of ``repo`` (``BORG_BASE_DIR/.cache/borg/<id>``)."""
    if cache_dir is None:
        repo_id = repository_id(repo)
        if repo_id is None:
            return None
        cache_dir = base_dir / ".cache" / "borg" / repo_id
    clear = f"BORG_BASE_DIR={shlex.quote(str(base_dir))} borg break-lock {shlex.quote(str(repo))}"
    return BorgLock(
        cache_dir / "lock", f"the Borg cache of repository {repo} ({cache_dir})", clear, cache=True
    )


def named_lock(path: Path, repo: Path | None, base_dir: Path) -> BorgLock:
    """The lock borg named in its error (``.../lock.exclusive``): the repository's or a cache's."""
    base = path.with_name(path.name.removesuffix(".exclusive"))
    if repo is not None and base == repo / "lock":
        return repository_lock(repo)
    if base_dir / ".cache" in base.parents:
        return cache_lock(repo or base.parent, base_dir, base.parent) or repository_lock(base)
    return repository_lock(repo or base.parent)


def repository_id(repo: Path) -> str | None:
    """The id in ``REPO/config`` (plain INI, no key needed), which names its cache."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string((repo / "config").read_text())
        return parser.get("repository", "id")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None


@cache
def this_machine() -> frozenset[str]:
    """The host ids borg may give this machine: ``$BORG_HOST_ID``, else ``FQDN@NODE`` as
    borg computes FQDN (its patched getfqdn: getaddrinfo's canonical name), and the plain
    and short hostnames."""
    name = socket.gethostname()
    names = {name, name.split(".")[0], socket.getfqdn()}
    try:
        for *_, canonical, _addr in socket.getaddrinfo(
            name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME
        ):
            if canonical:
                names.add(canonical)
                break
    except OSError:
        pass
    node = uuid.getnode()
    own = os.environ.get("BORG_HOST_ID")  # passed on to backupd's borg (Borg.environment)
    return frozenset({f"{n}@{node}" for n in names} | ({own} if own else set()))


def read_holders(lock: BorgLock, base_dir: Path) -> list[Holder]:
    """Everyone in the lock directory and the roster, judged; [] when nobody holds it."""
    entries: dict[tuple[str, int, int], tuple[bool, datetime | None]] = {}
    directory = lock.base.with_name(lock.base.name + ".exclusive")
    for name, since in _lock_files(directory):
        parsed = _parse_name(name)
        if parsed is not None:
            entries[parsed] = (True, since)
    roster_path = lock.base.with_name(lock.base.name + ".roster")
    roster, roster_time = _roster(roster_path)
    for kind in ("exclusive", "shared"):
        for entry in roster.get(kind, []):
            try:
                key = (str(entry[0]), int(str(entry[1])), int(str(entry[2])))
            except (TypeError, ValueError, IndexError):
                continue
            held, since = entries.get(key, (False, None))
            entries[key] = (held or kind == "exclusive", since or roster_time)
    return [judge(k, excl, since, base_dir) for k, (excl, since) in entries.items()]


def _lock_files(directory: Path) -> list[tuple[str, datetime | None]]:
    try:
        names = os.listdir(directory)
    except OSError:  # not locked (or gone meanwhile)
        return []
    return [(n, _mtime(directory / n)) for n in names]


def _roster(path: Path) -> tuple[dict[str, list[list[object]]], datetime | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, None
    return (data if isinstance(data, dict) else {}), _mtime(path)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _parse_name(name: str) -> tuple[str, int, int] | None:
    """``HOSTID.PID-THREAD`` as borg writes it (``"%s.%d-%x"``)."""
    try:
        host_pid, thread = name.rsplit("-", 1)
        host, pid = host_pid.rsplit(".", 1)
        return host, int(pid), int(thread, 16)
    except ValueError:
        return None


def judge(
    key: tuple[str, int, int], exclusive: bool, since: datetime | None, base_dir: Path
) -> Holder:
    host_id, pid, thread = key
    if host_id not in this_machine():
        return Holder(host_id, pid, thread, exclusive, since, Verdict.ELSEWHERE)
    if not process_alive(pid):
        return Holder(host_id, pid, thread, exclusive, since, Verdict.STALE)
    started = process_started(pid)
    if since is not None and started is not None and started > since.timestamp() + REUSE_SLACK:
        return Holder(
            host_id, pid, thread, exclusive, since, Verdict.STALE, process_command(pid), reused=True
        )
    env = process_environ(pid)
    job, marker = env.get(JOB_ENV), env.get(PID_ENV, "")
    holder = Holder(host_id, pid, thread, exclusive, since, Verdict.MANUAL, process_command(pid))
    if job is None:
        return holder
    backupd_pid = int(marker) if marker.isdigit() else None
    if env.get("BORG_BASE_DIR") != str(base_dir):
        return replace(
            holder, job=job, backupd_pid=backupd_pid, other_base=env.get("BORG_BASE_DIR", "?")
        )
    verdict = Verdict.OURS if process_alive(backupd_pid) else Verdict.ORPHAN
    return replace(holder, verdict=verdict, job=job, backupd_pid=backupd_pid)


def in_the_way(holders: Iterable[Holder], exclusive: bool) -> list[Holder]:
    """The holders that keep a writer (``exclusive``: all) or a reader (writers only) out."""
    return [h for h in holders if exclusive or h.exclusive]


# -- what is said ---------------------------------------------------------------------------
def since_text(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    seconds = max(0.0, (now - since).total_seconds())
    ago = f"{int(seconds)}s" if seconds < 60 else human_age(seconds)
    return f" since {since.strftime('%Y-%m-%d %H:%M:%S')}Z ({ago} ago)"


def _who(h: Holder) -> str:
    if h.verdict is Verdict.ORPHAN:
        return (
            f"{h.command}, left running by {h.job or 'a backupd job'}, whose backupd "
            f"process {h.backupd_pid} is gone"
        )
    if h.other_base is not None:
        return f"{h.command}, {h.job} of another backupd (BORG_BASE_DIR {h.other_base})"
    return f"{h.command}, not backupd's"


def blocked(lock: BorgLock, h: Holder, now: datetime) -> str:
    """The one line for a holder backupd does not wait for (or no longer waits for)."""
    held = "locked" if h.exclusive or lock.cache else "held open (a shared lock)"
    when = since_text(h.since, now)
    if h.verdict is Verdict.ELSEWHERE:
        return (
            f"{lock.what} is {held} by pid {h.pid} on another machine (host id "
            f"{h.host_id}){when}; backupd cannot tell whether it is stale from here. If "
            f"nothing runs there any more, clear the lock with: {lock.clear}"
        )
    if h.verdict is Verdict.OURS:
        return (
            f"{lock.what} is {held} by {ours(h)} on this machine{when}; it is backupd's "
            "own job: try again when it has finished"
        )
    if h.verdict is Verdict.STALE:
        return (
            f"{lock.what} has a stale lock of pid {h.pid} on this machine{when} (that pid "
            f"is now {h.command or 'gone'}); clear it with: {lock.clear}"
        )
    return (
        f"{lock.what} is {held} by pid {h.pid} on this machine ({_who(h)}){when}; it is "
        "alive, so backupd will not break it. If nobody is using it: stop that process, "
        f"or clear the lock with: {lock.clear}"
    )


def ours(h: Holder) -> str:
    return f"{h.job or 'a backupd job'} (pid {h.backupd_pid or h.pid})"


def waiting(lock: BorgLock, h: Holder, seconds: float) -> str:
    return (
        f"waiting up to {seconds:.0f}s for {ours(h)} to finish: it holds the lock of "
        f"{lock.what} ..."
    )


def gave_up(lock: BorgLock, h: Holder, waited: float, now: datetime) -> str:
    return (
        f"{lock.what} is still locked by {ours(h)} on this machine"
        f"{since_text(h.since, now)}; gave up after waiting {waited:.0f}s: try again when "
        "it has finished"
    )


# -- meeting a held lock ----------------------------------------------------------------------
@dataclass
class Patience:
    """How long one borg command may wait for backupd's own jobs (seconds), and whether it
    has said that it waits."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    told: bool = False

    def waited(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Locks:
    """What a borg command does about a lock held against it: wait for backupd's own live
    jobs (within its Patience, saying so once), break a lock whose every holder is stale,
    and raise RepositoryLockedError for anyone else, at once."""

    base_dir: Path  # this backupd's BORG_BASE_DIR
    break_lock: Callable[[Path], None]  # ``borg break-lock REPO``
    notify: Callable[[str], object] | None = None  # e.g. a line on stderr; else the log

    def run(
        self, args: Argv, repo: Path | None, wait: float, attempt: Callable[[Argv], CommandResult]
    ) -> CommandResult:
        """Run a borg command (``attempt(argv)``) that takes a lock with a short --lock-wait;
        on a lock error settle with whoever holds the lock borg named, and try again."""
        if args[0] not in WRITERS | READERS:
            return attempt(args)
        if "--lock-wait" not in args:
            args = (args[0], "--lock-wait", QUICK_LOCK_WAIT, *args[1:])
        patience = Patience(wait)
        unexplained = 0
        while True:
            result = attempt(args)
            named = _LOCK_NAMED.search(result.stderr_tail())
            if result.exit_status not in LOCK_CODES - {LOCK_FAILED} or named is None:
                return result
            lock = named_lock(Path(named.group(1)), repo, self.base_dir)
            if not self.settle(lock, exclusive=args[0] in WRITERS, patience=patience):
                unexplained += 1  # released meanwhile: try again, a few times
                if unexplained > UNEXPLAINED_RETRIES:
                    return result

    def settle(self, lock: BorgLock, *, exclusive: bool, patience: Patience) -> bool:
        """Return when only dead processes of this machine (which borg clears itself) or
        nobody keep ``lock`` from a writer (``exclusive``) or reader; True if anyone did.
        Raises RepositoryLockedError."""
        suspect: tuple[str, int] | None = None
        anyone = False
        while True:
            holders = read_holders(lock, self.base_dir)
            way = in_the_way(holders, exclusive or lock.cache)
            live = [h for h in way if h.verdict is not Verdict.STALE]
            anyone = anyone or bool(way)
            if not live:
                self._clear_stale(lock, holders, [h for h in way if h.reused])
                return anyone
            now = datetime.now(UTC)
            foreign = next((h for h in live if h.verdict is not Verdict.OURS), None)
            if foreign is not None:  # seen twice: not a reader passing through the directory
                if suspect == (foreign.host_id, foreign.pid):
                    raise RepositoryLockedError(blocked(lock, foreign, now))
                suspect = (foreign.host_id, foreign.pid)
                time.sleep(CONFIRM_SECONDS)
                continue
            self._wait_for(lock, live[0], exclusive, patience, now)

    def await_free(self, repo: Path, *, exclusive: bool, wait: float) -> None:
        """Before work that ends in a borg command on ``repo``: return once a writer
        (``exclusive``) or a reader could take its lock, and backupd's cache's (borg 1.4
        locks the cache exclusively in every command that reads the manifest, list and
        extract too), waiting up to ``wait`` seconds for backupd's own jobs. Raises
        RepositoryLockedError at once for any other live holder."""
        locks = [repository_lock(repo), cache_lock(repo, self.base_dir)]
        patience = Patience(wait)
        for lock in locks:
            if lock is not None:
                self.settle(lock, exclusive=exclusive, patience=patience)

    def held(self, repo: Path) -> bool:
        """Whether anyone, live or dead, holds the repository's lock (files only: no borg)."""
        return bool(read_holders(repository_lock(repo), self.base_dir))

    def break_stale(self, repo: Path) -> list[str]:
        """Break the repository's lock if every holder is a dead process of this machine
        (or its pid was reused); a line for each live holder, left alone."""
        lock = repository_lock(repo)
        holders = read_holders(lock, self.base_dir)
        live = [h for h in holders if h.verdict is not Verdict.STALE]
        if holders and not live:
            self._clear_stale(lock, holders, [])
        now = datetime.now(UTC)
        return [blocked(lock, h, now) for h in live]

    def _clear_stale(self, lock: BorgLock, holders: list[Holder], reused: list[Holder]) -> None:
        if holders and not lock.cache and all(h.verdict is Verdict.STALE for h in holders):
            self.break_lock(lock.base.parent)
            reuse = " (pid reused since)" if any(h.reused for h in holders) else ""
            log.warning(
                "%s: broke a Borg lock left by dead process(es) %s%s",
                lock.base.parent,
                [h.pid for h in holders],
                reuse,
            )
        elif reused:  # borg would wait on it for ever, and backupd may not break it here
            raise RepositoryLockedError(blocked(lock, reused[0], datetime.now(UTC)))

    def _wait_for(
        self, lock: BorgLock, h: Holder, exclusive: bool, patience: Patience, now: datetime
    ) -> None:
        left = patience.seconds - patience.waited()
        if patience.seconds <= 0:
            raise RepositoryLockedError(blocked(lock, h, now))
        if left <= 0:
            raise RepositoryLockedError(gave_up(lock, h, patience.waited(), now))
        if not patience.told:
            patience.told = True
            line = waiting(lock, h, left)
            if self.notify is not None:
                self.notify(line)
            else:  # a backup waiting for another job is normal; a reader (restore) says so
                log.log(logging.INFO if exclusive else logging.WARNING, "%s", line)
        time.sleep(POLL_SECONDS)
