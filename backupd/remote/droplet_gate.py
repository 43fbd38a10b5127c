#!/usr/bin/env python3
"""backupd's gate: the forced command of backupd's key on a droplet (decision 0022).

sshd runs ``gate.py ALLOWLIST`` for every request of that key, with what was asked in
SSH_ORIGINAL_COMMAND. The gate runs it only if it matches one of the allowlist's
requests (templates of literal arguments and typed parameters, generated from backupd's
config by ``backupctl host setup``), and then runs the argv it builds itself from the
template, never the request, and never through a shell of the request's making.
Everything else is refused: one line on stderr, one in syslog (facility auth).

This file is copied onto droplets as it is: Python 3 standard library only (no backupd,
no third-party module), and it must keep working with the oldest Python 3 of a
supported droplet (3.8: no match statements, no ``X | Y`` types at run time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

GATE_VERSION = 1
MAX_REQUEST = 32768  # bytes: backupd's longest request (a wrapped MariaDB dump script) is ~9 KiB
EXIT_REFUSED = 126  # the shell's "found but cannot be run"
# what pg_export_snapshot() returns: 8 hex digits, 8 hex digits, a decimal number
SNAPSHOT = re.compile(r"[0-9A-F]{8}-[0-9A-F]{8}-[0-9]{1,10}")
HELLO = "backupd-gate hello"
# a private file a restore makes for pg_restore (its listing, its --use-list):
# ``mktemp /tmp/backupd.XXXXXXXXXX`` in jobs/pg_restore.py
TMPFILE = re.compile(r"/tmp/backupd\.[A-Za-z0-9]{10}")  # noqa: S108  (mktemp made it)
PSQL_VAR = re.compile(r"[a-z]{1,16}")
# a session's row count: SELECT count(*) FROM schema.table; both names as format('%I')
# writes them (a bare lower-case name, or a double-quoted one of up to 63 characters)
_PG_IDENT = rb'(?:[a-z_][a-z0-9_$]{0,62}|"(?:[^"\x00]|""){1,63}")'
PG_COUNT = re.compile(rb"SELECT count\(\*\) FROM " + _PG_IDENT + rb"\." + _PG_IDENT + rb";\n", re.S)
PG_COUNT_HEAD = b"SELECT count(*) FROM "
PG_COUNT_MAX = 400  # bytes: the longest statement PG_COUNT can match
# a tree read: rsync's own remote command (it quotes with backslashes, not as shlex
# does), split as rrsync splits it; rrsync then checks every option itself
RSYNC_SERVER = "rsync --server "
RSYNC_SENDER = RSYNC_SERVER + "--sender "
RSYNC_ARG = re.compile(r"(?:[^\s\\]+|\\.[^\s\\]*)+")
DE_BACKSLASH = re.compile(r"\\(.)")
INSPECT_TIMEOUT = 60  # seconds: the command that says where a volume's tree is
TREE_READ: dict[str, Any] = {"stdin": "pass"}  # rrsync speaks the rsync protocol on it
WARNING, INFO = 4, 6  # syslog severities
SYSLOG_WAIT = 2.0  # seconds a full syslog queue may hold a request up


class Refused(Exception):
    """A request the gate will not run; the message says why."""


def requests_digest(requests: list[Any]) -> str:
    """sha256 of the allowlist's requests in a canonical JSON form: what ``hello`` shows
    and what backupd compares with the allowlist its config would generate."""
    canonical = json.dumps(requests, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_allowlist(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        allow: dict[str, Any] = json.load(f)
    if allow.get("gate") != GATE_VERSION:
        raise Refused(
            f"the allowlist is for gate version {allow.get('gate')!r}, not {GATE_VERSION}"
        )
    return allow


# -- reading a request ------------------------------------------------------------------
def check_size(command: str) -> None:
    """Refused before anything reads it: longer than MAX_REQUEST bytes, or holding a NUL."""
    if len(command.encode("utf-8", "surrogateescape")) > MAX_REQUEST:
        raise Refused(f"request longer than {MAX_REQUEST} bytes")
    if "\x00" in command:
        raise Refused("request holds a NUL byte")


def split_request(command: str) -> list[str]:
    """The request's argv. It must be exactly what shlex.join makes of that argv (how
    backupd quotes), so nothing is left to a shell: no unquoted ``;``, ``$()``, newline."""
    check_size(command)
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise Refused(f"request is not a quoted command line ({e})") from None
    if not argv or " ".join(shlex.quote(a) for a in argv) != command:
        raise Refused("request is not an argument list as backupd quotes one")
    return argv


def unwrap(argv: list[str], wrapper: str) -> tuple[bool, list[str]]:
    """(wrapped, inner argv): backupd runs every command under a fixed ``sh -c`` wrapper
    that reports a killing signal and passes a stop on (backupd/remote/ssh.py); the gate
    accepts exactly that wrapper, byte for byte, around an allowed request."""
    head = ["sh", "-c", wrapper, "backupd-wrap"]
    if wrapper and argv[: len(head)] == head:
        return True, argv[len(head) :]
    return False, argv


# -- parameters ---------------------------------------------------------------------------
def _conninfo_decode(quoted: str) -> str | None:
    """``'na\\'me'`` -> ``na'me`` (libpq's quoting in a connection string); None if not
    exactly one such quoted value."""
    if len(quoted) < 2 or quoted[0] != "'" or quoted[-1] != "'":
        return None
    out: list[str] = []
    i, body = 0, quoted[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 == len(body):
                return None
            out.append(body[i + 1])
            i += 2
        elif c == "'":
            return None
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _conninfo_encode(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _allowed(spec: dict[str, Any], value: str) -> bool:
    """One of ``"values"`` (none: any), or a name that starts with one of ``"prefixes"``
    and ``_`` (a restore beside the database: shop_restored)."""
    values = spec.get("values")
    if values is None or value in values:
        return True
    return any(value.startswith(p + "_") for p in spec.get("prefixes", ()))


def param_choice(spec: dict[str, Any], given: str) -> str:
    """One of the listed values, as it is."""
    if given in spec["values"]:
        return given
    raise Refused(f"{spec['param']} {given!r} is not one the config names")


def param_pg_dbname(spec: dict[str, Any], given: str) -> str:
    """``--dbname=dbname='NAME'`` (backupd/jobs/pg_common.py: dbname_arg); NAME listed,
    or any name when the source dumps every database (no ``values``)."""
    prefix = "--dbname=dbname="
    name = _conninfo_decode(given[len(prefix) :]) if given.startswith(prefix) else None
    if name is None or "\x00" in name:
        raise Refused(f"{spec['param']} is not a quoted database name")
    if not _allowed(spec, name):
        raise Refused(f"database {name!r} is not one the config names")
    return prefix + _conninfo_encode(name)


def param_pg_snapshot(spec: dict[str, Any], given: str) -> str:
    if SNAPSHOT.fullmatch(given):
        return given
    raise Refused(f"{spec['param']} {given!r} is not a snapshot id")


def param_tree(spec: dict[str, Any], given: str) -> str:
    """The request's tree (``"tree"``: see tree_top), with ``"suffix"`` after it."""
    if given == tree_top(spec["tree"]) + spec.get("suffix", ""):
        return given
    raise Refused(f"{spec['param']} {given!r} is not the configured tree")


def param_psql_var(spec: dict[str, Any], given: str) -> str:
    """``NAME=VALUE`` for psql's ``--set``: NAME the allowlist's ``"var"``, VALUE any text
    (or, with ``"values"``, one of them: see _allowed).
    psql puts it into SQL only where the allowlist's fixed statements say ``:'NAME'`` or
    ``:"NAME"`` (quoted as a literal or an identifier); the name is never one of psql's
    own settings (ON_ERROR_STOP...)."""
    name, eq, value = given.partition("=")
    if not (eq and name == spec.get("var") and PSQL_VAR.fullmatch(name)):
        raise Refused(f"{spec['param']} is not the psql variable {spec.get('var')!r}")
    if not _allowed(spec, value):
        raise Refused(f"{spec['param']} {value!r} is not one the config names")
    return given


def param_tmpfile(spec: dict[str, Any], given: str) -> str:
    """A file ``mktemp /tmp/backupd.XXXXXXXXXX`` made (TMPFILE), and nothing else."""
    if TMPFILE.fullmatch(given):
        return given
    raise Refused(f"{spec['param']} {given!r} is not a restore's temporary file")


def param_any(spec: dict[str, Any], given: str) -> str:
    """Any text, as one argument (no NUL: check_size): where the program itself bounds
    what it can do (the sandboxed mariadb client as a restore user, decision 0022)."""
    return given


PARAM_TYPES: dict[str, Callable[[dict[str, Any], str], str]] = {
    "any": param_any,
    "choice": param_choice,
    "pg_dbname": param_pg_dbname,
    "pg_snapshot": param_pg_snapshot,
    "psql_var": param_psql_var,
    "tmpfile": param_tmpfile,
    "tree": param_tree,
}


# -- matching -------------------------------------------------------------------------------
def render(template: list[Any], argv: list[str]) -> list[str] | None:
    """The argv the gate runs for ``argv`` under ``template`` (a list of literal strings
    and parameters ``{"param": NAME, "type": TYPE, ...}``; a parameter with ``"flag"``
    takes two arguments, the flag and its value, and with ``"optional": true`` may be
    absent), or None if it does not match. Raises Refused when it matches in shape but a
    value is not allowed."""
    if not template:
        return [] if not argv else None
    first, rest = template[0], template[1:]
    if isinstance(first, str):
        if argv and argv[0] == first:
            tail = render(rest, argv[1:])
            return None if tail is None else [first, *tail]
        return None
    flag = first.get("flag")
    width = 2 if flag else 1
    wrong: Refused | None = None
    if len(argv) >= width and (not flag or argv[0] == flag):
        tail = render(rest, argv[width:])
        if tail is not None:
            check = PARAM_TYPES.get(first.get("type"))
            if check is None:
                raise Refused("the allowlist names an unknown parameter type")
            try:
                return ([flag] if flag else []) + [check(first, argv[width - 1])] + tail
            except Refused as e:  # an optional one may be absent: the next may take it
                if not first.get("optional"):
                    raise
                wrong = e
    if first.get("optional"):
        try:
            skipped = render(rest, argv)
        except Refused:
            if wrong is None:
                raise
            skipped = None  # say why this one was not taken, not why a later one was not
        if skipped is None and wrong is not None:
            raise wrong
        return skipped
    return None


def decide(allow: dict[str, Any], command: str) -> tuple[str, list[str], dict[str, Any]]:
    """(request name, argv to run, the allowlist's request) for a request; Refused
    otherwise."""
    argv = split_request(command)
    wrapped, inner = unwrap(argv, allow.get("wrapper", ""))
    refusal: Refused | None = None
    for request in allow.get("requests", []):
        if "argv" not in request:
            continue  # a tree: decide_tree's
        try:
            run = render(request["argv"], inner)
        except Refused as e:
            refusal = e  # right shape, wrong value: say why, unless another matches
            continue
        if run is None:
            continue
        if wrapped:
            run = ["sh", "-c", allow["wrapper"], "backupd-wrap", *run]
        return str(request["name"]), run, request
    raise refusal or Refused(f"not a request this host's backups need: {argv[0]}")


# -- trees ------------------------------------------------------------------------------------
def tree_top(tree: dict[str, Any]) -> str:
    """A configured tree's directory: ``"path"``, or what the allowlist's ``"inspect"``
    command prints (a Docker volume's mountpoint), asked by the gate itself."""
    if "path" in tree:
        return str(tree["path"])
    try:
        said = subprocess.run(  # the allowlist's own argv, never the request's
            tree["inspect"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INSPECT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Refused(f"cannot find the tree ({tree['inspect'][0]}: {e})") from None
    top = said.stdout.decode("utf-8", "surrogateescape").strip()
    if said.returncode != 0 or not top.startswith("/"):
        raise Refused(f"cannot find the tree ({tree['inspect'][0]} exited {said.returncode})")
    return top


def decide_tree(allow: dict[str, Any], command: str) -> tuple[str, list[str], str]:
    """(request name, argv to run, the command rrsync is to check) for a tree request:
    ``rsync --server --sender OPTIONS . TREE/`` reads a configured tree, ``rsync --server
    OPTIONS . TREE/`` writes into one the allowlist marks ``"write"`` (the restore key's).
    TREE must be exactly that tree. The gate runs ``rrsync -ro TREE`` (``-wo`` to write;
    under ``sudo -n`` when the allowlist says so) and hands it the request with the tree
    made relative (``./``): rrsync refuses the other direction, options that leave the
    tree (``-L``, ``-k``, ``--copy-unsafe-links``), paths with ``..`` or through symlinks
    out of it."""
    check_size(command)
    words = RSYNC_ARG.findall(command)
    if "." not in words or len(words) != words.index(".") + 2:
        raise Refused("a tree request names one tree, after the '.' argument")
    write = not command.startswith(RSYNC_SENDER)
    path = DE_BACKSLASH.sub(r"\1", words[-1])
    for request in allow.get("requests", []):
        tree = request.get("tree")
        if tree is not None and bool(tree.get("write")) == write and path.endswith("/"):
            top = tree_top(tree)
            if path.rstrip("/") == top.rstrip("/"):
                sudo = ["sudo", "-n"] if tree.get("sudo") else []
                mode = "-wo" if write else "-ro"
                run = [*sudo, tree.get("rrsync", "rrsync"), mode, top]
                return str(request["name"]), run, " ".join([*words[:-1], "./"])
    what = "writes into" if write else "reads"
    raise Refused(f"not a tree this key {what}: {path!r}")


# -- sessions -------------------------------------------------------------------------------
class SessionFilter:
    """What a session request (``"stdin": "session"``) may write to the program it runs
    (psql holding a snapshot): only the allowlist's ``messages``, byte for byte (the
    begin, facts, ping and commit statements, fixed by the config), and, with ``"counts":
    "pg"``, row counts of one table each (PG_COUNT). With ``"first"``, one of those
    messages must come before any other (the read-only transaction the counts run in). Input is held
    back until it is a whole allowed piece; anything else refuses the session."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.first: list[bytes] | None = [m.encode() for m in spec.get("first") or []] or None
        self.messages: list[bytes] = sorted(
            (m.encode() for m in spec.get("messages", [])), key=len
        )[::-1]
        self.counts = spec.get("counts") == "pg"
        longest = max([PG_COUNT_MAX, *(len(m) for m in [*self.messages, *(self.first or [])])])
        self.limit = longest + 1
        self.held = b""
        self.refused: Refused | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """The allowed pieces ``data`` completes, in order. At the first that is not
        allowed, ``refused`` says why (what came before it is still returned: it passes)."""
        self.held += data
        pieces = []
        try:
            while self.held and self.refused is None:
                piece = self._next()
                if piece is None:
                    break
                pieces.append(piece)
                self.held = self.held[len(piece) :]
            if len(self.held) >= self.limit:
                raise self._refusal()
        except Refused as e:
            self.refused = e
        return pieces

    def finish(self) -> None:
        if self.held:
            raise Refused(f"session ended inside a statement: {self.held[:80]!r}")

    def _next(self) -> bytes | None:
        held = self.held
        if self.first is not None:  # nothing before it
            for first in self.first:
                if held.startswith(first):
                    self.first = None
                    return first
            if any(first.startswith(held) for first in self.first):
                return None
            raise self._refusal()
        for message in self.messages:
            if held.startswith(message):
                return message
        if self.counts:
            match = PG_COUNT.match(held)
            if match:
                return bytes(match.group(0))
            if held.startswith(PG_COUNT_HEAD) or PG_COUNT_HEAD.startswith(held):
                return None  # a count statement not yet whole (or not one: the limit says)
        if any(message.startswith(held) for message in self.messages):
            return None
        raise self._refusal()

    def _refusal(self) -> Refused:
        shown = repr(self.held[:80])
        return Refused(f"session input is not a statement the allowlist holds: {shown}")


def run_session(run: list[str], spec: dict[str, Any]) -> int:
    """Run ``run`` with its stdin fed through a SessionFilter from ours; its stdout and
    stderr are the client's. Returns its exit status; Refused (it is stopped first) when
    the client writes what the allowlist does not hold."""
    child = subprocess.Popen(run, stdin=subprocess.PIPE)  # the gate's own argv
    assert child.stdin is not None
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)  # only the child writes to the client: its end is the session's end
    os.close(quiet)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # backupd's stop: pass it on
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    filt = SessionFilter(spec)
    try:
        while child.poll() is None:
            if not select.select([0], [], [], 0.2)[0]:
                continue
            data = os.read(0, 65536)
            if not data:
                filt.finish()
                break
            for piece in filt.feed(data):
                child.stdin.write(piece)
                child.stdin.flush()
            if filt.refused:
                raise filt.refused
    except Refused:
        child.terminate()
        child.wait()
        raise
    except BrokenPipeError:
        pass  # the program ended: its status says how
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()
    return child.wait()


def hello(allow: dict[str, Any]) -> dict[str, Any]:
    """What ``backupd-gate hello`` says: the gate's version, the allowlist's host and
    digest, and the programs its requests start that this droplet's PATH lacks."""
    import shutil

    wanted = {r["argv"][0] for r in allow.get("requests", []) if r.get("argv")}
    wanted |= {r["tree"].get("rrsync", "rrsync") for r in allow.get("requests", []) if "tree" in r}
    return {
        "gate": GATE_VERSION,
        "host": allow.get("host"),
        "digest": requests_digest(allow.get("requests", [])),
        "missing": sorted(p for p in wanted if isinstance(p, str) and not shutil.which(p)),
    }


# -- saying it --------------------------------------------------------------------------------
def _client() -> str:
    return (os.environ.get("SSH_CONNECTION") or "local").split(" ")[0]


def _syslog(socket_path: str, severity: int, text: str) -> None:
    """One line to syslog (facility auth) as a datagram to ``socket_path`` (/dev/log
    unless the allowlist names another); no syslog there, or one that has not read its
    queue (10 datagrams by default) within SYSLOG_WAIT: stderr still says it, and the
    request is not held up."""
    import socket

    message = f"<{4 * 8 + severity}>backupd-gate[{os.getpid()}]: {text}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.settimeout(SYSLOG_WAIT)
            s.sendto(message.encode("utf-8", "backslashreplace"), socket_path)
    except OSError:
        pass


def refuse(allow: dict[str, Any], command: str | None, reason: str) -> int:
    shown = (command or "").encode("unicode_escape").decode("ascii")[:200]
    who = os.environ.get("USER", "?")
    text = f"refused {who} from {_client()}: {reason}: {shown}"
    _syslog(allow.get("syslog", "/dev/log"), WARNING, text)
    sys.stderr.write(f"backupd-gate: refused: {reason}\n")
    return EXIT_REFUSED


def main(args: list[str]) -> int:
    if len(args) != 1:
        sys.stderr.write("usage: gate.py ALLOWLIST (as the command= of an authorized key)\n")
        return 2
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    allow: dict[str, Any] = {}
    try:
        allow = load_allowlist(args[0])
        if command is None:
            raise Refused("no command: interactive logins are not allowed")
        if command.startswith(RSYNC_SERVER):
            name, run, forwarded = decide_tree(allow, command)
            os.environ["SSH_ORIGINAL_COMMAND"] = forwarded  # what rrsync checks
            request = TREE_READ
        elif unwrap(split_request(command), allow.get("wrapper", ""))[1] == HELLO.split():
            sys.stdout.write(json.dumps(hello(allow), sort_keys=True) + "\n")
            return 0
        else:
            name, run, request = decide(allow, command)
    except Refused as e:
        return refuse(allow, command, str(e))
    except (OSError, ValueError) as e:
        return refuse(allow, command, f"the gate cannot read its allowlist ({e})")
    _syslog(allow.get("syslog", "/dev/log"), INFO, f"ran {name} for {_client()}")
    stdin = request.get("stdin", "none")
    if stdin == "session":
        try:
            return run_session(run, request.get("session", {}))
        except Refused as e:
            return refuse(allow, command, f"{name}: {e}")
        except OSError as e:
            sys.stderr.write(f"backupd-gate: cannot run {run[0]}: {e}\n")
            return 127
    if stdin == "none":  # what reads stdin gets nothing from the backup host
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    try:
        os.execvp(run[0], run)  # noqa: S606  (the gate's own argv, from its template)
    except OSError as e:
        sys.stderr.write(f"backupd-gate: cannot run {run[0]}: {e}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
