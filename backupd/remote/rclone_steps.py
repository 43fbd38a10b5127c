"""What ``borg with-lock`` runs for the off-site copy: rclone, in an order that keeps the
remote copy a good repository whenever it is cut off (decision 0028).

    python -m backupd.remote.rclone_steps RCLONE CONFIG REPO URL TRASH [RCLONE FLAGS...]

1. the new segments (``data/``; Borg never changes a committed one): copied, nothing
   deleted; 2. the repository's other files but its index (hints, integrity, config...);
3. ``index.N`` last: until it is there the remote's newest index is still the one before,
   and everything it names is there; 4. a sync that only deletes (moves into TRASH) what
   the repository no longer has: the index before, compacted segments. What any step
   would overwrite goes into TRASH as well. A run cut off in
   any step leaves the copy as it was, plus files nothing names yet; the next run goes
   on. Each step is one rclone command, argv as data; the first that fails ends the run
   with its exit status.
"""

from __future__ import annotations

import sys

from backupd.local.process import Invocation, run_local

# Borg's own lock files exist while with-lock holds the repository: never copied
LOCKS = ("--exclude", "lock.exclusive/**", "--exclude", "lock.roster")


def steps(repo: str, url: str, trash: str) -> list[list[str]]:
    """Each step keeps what it would overwrite in TRASH too: a committed segment that
    differs from the copy's (a damaged disk, tampering) never replaces the copy's own.
    Remote places end in "/": rclone then takes them as directories without first asking
    the remote whether one is a file, a question that, unanswered (a remote gone or a
    key refused), it reports as "is a file not a directory" instead of the real cause."""
    url, trash = url.rstrip("/"), trash.rstrip("/")
    top = ["--max-depth", "1", *LOCKS, "--backup-dir", f"{trash}/"]
    return [
        ["copy", f"{repo}/data", f"{url}/data/", "--backup-dir", f"{trash}/data/"],
        ["copy", repo, f"{url}/", *top, "--exclude", "index.*"],
        ["copy", repo, f"{url}/", *top, "--include", "index.*"],
        ["sync", repo, f"{url}/", *LOCKS, "--backup-dir", f"{trash}/"],
    ]


def main(argv: list[str]) -> int:
    rclone, config, repo, url, trash, *flags = argv
    for step in steps(repo, url, trash):
        done = run_local((rclone, "--config", config, *step, *flags), Invocation())
        sys.stdout.buffer.write(done.stdout)  # rclone's log and statistics, for backupd
        sys.stderr.buffer.write(done.stderr)
        if not done.ok:
            return done.exit_status or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
