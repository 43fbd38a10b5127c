"""host setup: everything a droplet needs so that backupd's key can read what the config
backs up and nothing else (decision 0022), as one POSIX shell script run as root there.

The script installs the gate (backupd/remote/droplet_gate.py, as it is) and the host's
allowlist (generated from the config, root-owned), writes backupd's key into the login's
``authorized_keys`` as ``restrict,command="... gate.py ALLOWLIST"`` (replacing the key's
earlier line, keeping every other), writes the sudoers drop-in for what runs as another
user (checked with ``visudo -cf`` before it is moved into place) and creates the
database roles each source's kind asks for. It is idempotent: running it again after a
config change installs the new allowlist. ``sh SCRIPT ROOT`` installs under ROOT instead
of ``/`` (to look at what it does first).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.actions.context import Context, ssh_target
from backupd.actions.gatelist import (
    allowlist,
    restore_allowlist,
    restore_gates,
    restore_key_file,
)
from backupd.config.load import HostConfig
from backupd.errors import RemoteError, UsageError
from backupd.local.process import Invocation, run_local
from backupd.remote import droplet_gate
from backupd.remote.hostkeys import pinned_keys
from jobs.registry import registry

GATE_DIR = "/usr/local/lib/backupd-gate"
ALLOW_DIR = "/etc/backupd-gate"
SUDOERS = "/etc/sudoers.d/backupd"
_SUDOERS_SPECIAL = re.compile(r'([\\,:=!()#"])')


@dataclass(frozen=True)
class Setup:
    """The set-up of one droplet: ``script`` (POSIX sh, run as root there: ``sh - [ROOT]``)."""

    host: str
    script: str
    digest: str  # the allowlist's, as `backupctl config check` expects it


def setup_script(host: HostConfig) -> Setup:
    """The script for ``host`` (its name is a plain file name: the config's rule). UsageError
    when the host is not marked ``gate = true``, a source cannot go through the gate (each
    named with why), or a key is unreadable (the restore key: by others too)."""
    if not host.gate:
        raise UsageError(
            f"{host.name}: set gate = true on the host first (backupd then asks for its "
            "trees as the gate needs); see docs/droplet-setup.md"
        )
    allow = allowlist(host)
    parts = [
        _HEADER.format(host=host.name, login=shlex.quote(host.user)),
        _file_step(f"{GATE_DIR}/gate.py", "0755", Path(droplet_gate.__file__).read_text()),
        _file_step(f"{ALLOW_DIR}/{host.name}.json", "0644", json.dumps(allow, indent=1) + "\n"),
        _key_step(host, host.key, f"{host.name}.json", "backupd", "backupd's key (reads)"),
    ]
    requests = list(allow["requests"])
    if host.restore_key is not None:  # the operator's key for restores: write verbs only
        restore_key_file(host)
        if public_key(host, host.restore_key) == public_key(host, host.key):
            raise UsageError(f"{host.name}: restore_key must be another key than key")
        restore = restore_allowlist(host)
        name = f"{host.name}-restore.json"
        parts += [
            _file_step(f"{ALLOW_DIR}/{name}", "0644", json.dumps(restore, indent=1) + "\n"),
            _key_step(host, host.restore_key, name, "backupd-restore", "the restore key"),
            *(f"restore_dir {shlex.quote(p)}\n" for p in host.restore_paths),
        ]
        requests += restore["requests"]
    parts.append(_sudoers_step(requests))
    restoring = restore_gates(host) if host.restore_key is not None else {}
    for source in host.sources.values():
        lines = registry()[source.kind].droplet_setup(source.options, source.name, host.user)
        if source.name in restoring:
            lines = [*lines, *restoring[source.name].setup]
        if lines:
            head = f"# {source.name} ({source.kind})\nif databases {shlex.quote(source.name)}; then"
            parts.append("\n".join((head, *lines, "fi")) + "\n")
    parts.append(f'say "done: {host.name} is gated (allowlist {allow["digest"][:12]})"\n')
    return Setup(host.name, "".join(parts), allow["digest"])


def public_key(host: HostConfig, key_file: Path) -> str:
    """``TYPE BASE64`` of the private key in ``key_file`` (backupd's, or the restore key)."""
    import paramiko  # only here: the CLI starts without it

    try:
        key = paramiko.PKey.from_path(key_file)
    except OSError as e:
        raise UsageError(f"{host.name}: cannot read the key {key_file}: {e.strerror}") from None
    except (paramiko.SSHException, ValueError) as e:
        raise UsageError(f"{host.name}: cannot read the key {key_file}: {e}") from None
    return f"{key.get_name()} {key.get_base64()}"


def _file_step(path: str, mode: str, text: str) -> str:
    """Write ``text`` to ROOT/path through a temporary file (a reader never sees half)."""
    end = "BACKUPD_EOF"
    while end in text:
        end += "_"
    return (
        f'put {shlex.quote(path)} {mode} <<"{end}"\n{text}'
        + ("" if text.endswith("\n") else "\n")
        + f"{end}\n"
    )


def _key_step(host: HostConfig, key_file: Path, allow_name: str, label: str, what: str) -> str:
    key = public_key(host, key_file)
    gate = f"$root{GATE_DIR}/gate.py"
    allow = f"$root{ALLOW_DIR}/{allow_name}"
    return (
        f"key={shlex.quote(key)}\n"
        f'line="restrict,command=\\"$python {gate} {allow}\\" $key {label}@{host.name}"\n'
        f"authorize {shlex.quote(what)}\n"
    )


def _sudoers_step(requests: list[dict[str, Any]]) -> str:
    """One line per request that runs as another user (sudo -n [-u USER --] COMMAND...),
    the command's arguments as the allowlist fixes them; a request with a parameter
    cannot be a sudoers line and is said instead."""
    lines: list[str] = []
    for request in requests:
        tree = request.get("tree")
        if tree is not None and tree.get("sudo"):
            rrsync = f'"$(where {shlex.quote(tree["rrsync"])})"'
            found, top = _tree_top(request["name"], tree)
            mode = "-wo" if tree.get("write") else "-ro"
            lines += [*found, f"keep {rrsync}", f"rule root {rrsync} {mode} {top}"]
        argv = request.get("argv") or []
        if argv[:2] == ["sudo", "-n"]:
            lines += _sudo_rule(request["name"], argv[2:])
    if not lines:
        return f"no_sudoers {SUDOERS}  # nothing runs as another user\n"
    rules: set[str] = set()  # a rule or keep line once (a finding line each time: $top)
    lines = [x for x in lines if not x.startswith(("rule ", "keep ")) or not _seen(x, rules)]
    return "sudoers_begin\n" + "\n".join(lines) + f"\nsudoers_end {SUDOERS}\n"


def _seen(line: str, seen: set[str]) -> bool:
    if line in seen and "$top" not in line:
        return True
    seen.add(line)
    return False


def _tree_top(name: str, tree: dict[str, Any]) -> tuple[list[str], str]:
    """(script lines, shell word) for a tree's directory in a sudoers rule: its path, or
    for a volume where Docker keeps it, asked while the script runs (as root: no sudo);
    the script stops if Docker cannot say."""
    if "path" in tree:
        return [], shlex.quote(_sudoers_word(tree["path"]))
    inspect = [a for a in tree["inspect"] if a not in ("sudo", "-n")]
    failed = shlex.quote(f"{name}: {shlex.join(inspect)} failed")
    found = [
        f"top=$({shlex.join(inspect)}) || die {failed}",
        f"case $top in /*) ;; *) die {failed};; esac",
    ]
    return found, '"$top"'


def _sudo_rule(name: str, argv: list[Any]) -> list[str]:
    """The rule for ``sudo -n [-u USER --] COMMAND...``: every argument fixed, or a tree's
    directory (found as _tree_top finds it); any other parameter cannot be a rule."""
    user = "root"
    if argv[:1] == ["-u"] and len(argv) >= 3 and argv[2] == "--":
        user, argv = str(argv[1]), argv[3:]
    found: list[str] = []
    words: list[str] = []
    for arg in argv[1:]:
        if isinstance(arg, str):
            words.append(shlex.quote(_sudoers_word(arg)))
        elif arg.get("type") == "tree":
            found, top = _tree_top(name, arg["tree"])
            suffix = arg.get("suffix", "")
            words.append(top + (shlex.quote(_sudoers_word(suffix)) if suffix else ""))
        else:
            said = f"not in sudoers: {name} (a varying argument); see docs/droplet-setup.md"
            return [f"say {shlex.quote(said)}"]
    if not argv or not isinstance(argv[0], str):
        return [f"say {shlex.quote(f'not in sudoers: {name}')}"]
    program = f'"$(where {shlex.quote(argv[0])})"'
    return [*found, f"rule {shlex.quote(user)} {program} {' '.join(words)}"]


def _sudoers_word(word: str) -> str:
    return _SUDOERS_SPECIAL.sub(r"\\\1", word)


_HEADER = r"""#!/bin/sh
# backupd: set-up of droplet {host} (backupctl host setup {host}; decision 0022).
# Run as root on the droplet: sh THIS-FILE [ROOT]. Idempotent. ROOT: install under it.
set -eu
PATH=$PATH:/usr/sbin:/sbin  # visudo, getent, runuser
root=${{1:-}}
login={login}
umask 022
say() {{ printf 'backupd-setup: %s\n' "$*"; }}
die() {{ say "$*" >&2; exit 1; }}
where() {{  # a program's file on PATH (sudoers needs one: not a shell's builtin)
  case $1 in /*) printf '%s\n' "$1"; return 0;; esac
  old_ifs=$IFS; IFS=:
  for d in $PATH; do
    if [ -f "$d/$1" ] && [ -x "$d/$1" ]; then IFS=$old_ifs; printf '%s\n' "$d/$1"; return 0; fi
  done
  IFS=$old_ifs; die "not found on PATH: $1"
}}
put() {{  # put PATH MODE < TEXT: written whole, then moved into place
  mkdir -p "$root$(dirname "$1")"
  cat > "$root$1.new"
  chmod "$2" "$root$1.new"
  mv -f "$root$1.new" "$root$1"
  say "wrote $root$1"
}}
authorize() {{  # authorize WHAT: $key restricted to the gate ($line); other key lines kept
  keys="$root$home/.ssh/authorized_keys"
  mkdir -p "$(dirname "$keys")"
  {{ grep -vF "${{key#* }}" "$keys" 2>/dev/null || true; printf '%s\n' "$line"; }} > "$keys.new"
  chmod 0600 "$keys.new"
  mv -f "$keys.new" "$keys"
  chown "$login" "$keys" "$(dirname "$keys")" 2>/dev/null || true
  chmod 0700 "$(dirname "$keys")"
  say "authorized $1 for $login (restricted to the gate) in $keys"
}}
restore_dir() {{  # a directory restores may write into: the login's, when made here
  if [ ! -d "$root$1" ]; then
    mkdir -p "$root$1" && chown "$login" "$root$1" && chmod 0750 "$root$1"
    say "created $root$1 for restores, owned by $login"
  fi
}}
databases() {{  # the roles are the servers' own: never under a ROOT that is only a look
  [ -z "$root" ] && return 0
  say "$1: database roles not created (installing under $root)"; return 1
}}
sudoers_begin() {{ rules=$(mktemp); }}
keep() {{ printf 'Defaults!%s env_keep += "SSH_ORIGINAL_COMMAND"\n' "$1" >> "$rules"; }}
rule() {{  # rule RUNAS PROGRAM ARGS...
  runas=$1; shift
  printf '%s ALL=(%s) NOPASSWD: %s\n' "$login" "$runas" "$*" >> "$rules"
}}
sudoers_end() {{
  visudo -cqf "$rules" || {{ visudo -cf "$rules" >&2; die "sudoers drop-in fails visudo -c"; }}
  put "$1" 0440 < "$rules"
  rm -f "$rules"
}}
no_sudoers() {{  # nothing runs as root (any more): a drop-in of an earlier set-up goes
  if [ -e "$root$1" ]; then rm -f "$root$1"; say "removed $root$1: nothing runs as root"; fi
}}
if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=$(where python3); fi
[ -d "$root/" ] || die "no such directory: $root"
entry=$(getent passwd "$login") ||
  die "no such login: $login (useradd --create-home --shell /bin/sh $login)"
home=$(printf '%s' "$entry" | cut -d: -f6)
shell=$(printf '%s' "$entry" | cut -d: -f7)
case $shell in
  */nologin|*/false|'')
    die "$login's shell is '$shell': the gate runs through it (usermod --shell /bin/sh $login)";;
esac
[ -n "$home" ] && [ "$home" != / ] || die "the login $login has no home for its authorized_keys"
"""


APPLY_TIMEOUT = 600.0


def apply(
    ctx: Context,
    host: HostConfig,
    setup: Setup,
    admin: str,
    *,
    sudo: bool,
    root: str,
    identity: Path | None = None,
) -> str:
    """Run ``setup`` on the droplet through an operator's own login ``admin`` (OpenSSH,
    their agent or key; the droplet's host key as backupd pinned it), as root through
    ``sudo`` unless ``sudo`` is false; ``identity``: the admin's key file, else their
    OpenSSH defaults. Returns what the script said; RemoteError with its stderr when it
    failed."""
    keys = pinned_keys(ssh_target(host, ctx.config.state_dir))
    if not keys:
        raise UsageError(f"{host.name}: pin its host key first: backupctl host trust {host.name}")
    lookup = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    known = ctx.run_dir() / f"setup-{host.name}.known_hosts"
    fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{lookup} {key}\n" for key in keys)
    remote = (*(("sudo",) if sudo else ()), "sh", "-s", "--", *((root,) if root else ()))
    argv = (
        "ssh",
        *("-p", str(host.port)),
        *("-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"),
        *("-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"),
        *(("-i", str(identity), "-o", "IdentitiesOnly=yes") if identity else ()),
        f"{admin}@{host.address}",
        shlex.join(remote),
    )
    try:
        result = run_local(argv, Invocation(timeout=APPLY_TIMEOUT, stdin=setup.script.encode()))
    finally:
        known.unlink(missing_ok=True)
    if not result.ok:
        tail = result.stderr_tail()
        raise RemoteError(
            f"{host.name}: the set-up failed as {admin} (exit {result.exit_status}): {tail}",
            stderr_tail=tail,
        )
    return result.stdout.decode(errors="replace")
