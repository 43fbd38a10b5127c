"""A realistic demo catalogue for the weekly report, and its rendering by headless Chromium.

``python -m tests.harness.example_report`` writes ``docs/report-phone.png`` (375 px wide,
a phone) and ``docs/report-desktop.png`` (1024 px):
five sources on three droplets, eight weeks of nightly backups, weekly restore drills, one
drill failed (rows differ from the recorded facts), one source stale.

The row helpers are shared with the unit tests, which fill a catalogue directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backupd.actions.context import Context
from backupd.actions.report import gather
from backupd.catalogue.models import Archive, Drill, Host, Run, Source, utcnow
from backupd.render.report import html_preview
from jobs.registry import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
# the demo report as a phone and a desktop browser show it: file, window (CSS pixels),
# device pixels per CSS pixel (a phone's screen is dense: its picture is twice as wide)
VIEWS = {
    "phone": (DOCS / "report-phone.png", (375, 1700), 2),
    "desktop": (DOCS / "report-desktop.png", (1024, 1400), 1),
}
GiB, MiB = 1 << 30, 1 << 20
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"


def write_config(root: Path, hosts: dict[str, dict[str, str]], extra: str = "") -> Path:
    """A config whose hosts have the given sources ({source: kind}); nothing reachable."""
    lines = [
        f'state_dir = "{root / "state"}"',
        "[store]",
        f'path = "{root / "store"}"',
        "[passphrase]",
        f'file = "{root / "pass"}"',
    ]
    options = {
        "postgresql": "",
        "mariadb": "",
        "sqlite": 'path = "/srv/app/app.db"',
        "directory": 'path = "/srv/files"',
        "volume": 'volume = "uploads"',
    }
    for n, (host, sources) in enumerate(hosts.items()):
        lines += [
            f"[hosts.{host}]",
            f'address = "203.0.113.{10 + n}"',
            'user = "backup"',
            f'key = "{root / "id"}"',
            f'host_key = "{HOST_KEY}"',
        ]
        for source, kind in sources.items():
            lines += [f"[hosts.{host}.sources.{source}]", f'kind = "{kind}"', options[kind]]
    path = root / "backupd.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def source(s: Session, host: str, name: str, kind: str) -> Source:
    h = s.query(Host).filter_by(name=host).one_or_none()
    if h is None:
        h = Host(name=host, address="203.0.113.1")
        s.add(h)
    src = Source(host=h, name=name, kind=kind)
    s.add(src)
    s.flush()
    return src


def run(
    s: Session,
    src: Source,
    at: datetime,
    status: str = "succeeded",
    error: str | None = None,
    dedup: int = 0,
    original: int = 0,
    pruned_at: datetime | None = None,
) -> Run:
    """A run; a good one with one archive of the given sizes."""
    r = Run(
        source_id=src.id,
        trigger="schedule",
        status=status,
        started_at=at,
        finished_at=at + timedelta(minutes=4),
        nbytes=original,
        error=error,
    )
    s.add(r)
    s.flush()
    if status in ("succeeded", "warning"):
        s.add(
            Archive(
                run_id=r.id,
                source_id=src.id,
                repository=f"/store/{src.host.name}",
                name=f"{src.name}.{r.id}.{at:%Y%m%dT%H%M%S}",
                item=src.name,
                filename=f"{src.name}.dump",
                created_at=at,
                nbytes=original,
                sha256="0" * 64,
                original_size=original,
                compressed_size=original // 2,
                deduplicated_size=dedup,
                facts={},
                pruned_at=pruned_at,
            )
        )
    return r


Checks = list[dict[str, Any]]


def drill(
    s: Session,
    src: Source,
    at: datetime,
    status: str,
    rto: float | None,
    checks: Checks | None = None,
    detail: str | None = None,
) -> Drill:
    d = Drill(
        host=src.host.name,
        source=src.name,
        repository=f"/store/{src.host.name}",
        archive=f"{src.name}.x",
        trigger="schedule",
        status=status,
        started_at=at - timedelta(seconds=rto or 60),
        finished_at=at,
        rto_seconds=rto,
        nbytes=0,
        checks=checks or [{"check": "sha256", "ok": True, "detail": "matches"}],
        detail=detail,
    )
    s.add(d)
    return d


def fill_demo(ctx: Context, now: datetime) -> None:
    """Eight weeks of a small fleet: nightly backups, restore drills on Saturdays."""
    days = [
        (now - timedelta(days=d, hours=7)).replace(second=0, microsecond=0)
        for d in range(55, -1, -1)
    ]
    with ctx.catalogue.session() as s:
        fleet = {
            ("web1", "maindb", "postgresql"): (38 * MiB, 2.1 * GiB, 210.0),
            ("web1", "files", "directory"): (120 * MiB, 14 * GiB, 95.0),
            ("web2", "shopdb", "mariadb"): (22 * MiB, 1.4 * GiB, 150.0),
            ("web2", "uploads", "volume"): (300 * MiB, 31 * GiB, 420.0),
            ("web3", "app", "sqlite"): (2 * MiB, 90 * MiB, None),
        }
        for (host, name, kind), (daily, size, rto) in fleet.items():
            src = source(s, host, name, kind)
            for n, day in enumerate(days):
                if name == "uploads" and day > now - timedelta(days=4):
                    run(
                        s,
                        src,
                        day,
                        "failed",
                        "web2 (203.0.113.11:22): connect failed: timed out after 10s",
                    )
                    continue
                first = n == 0  # the first archive holds everything; then the changes
                # retention: the dailies of the last month, weeklies (and the first) before
                old = day < now - timedelta(days=31) and not first and n % 7
                pruned = day + timedelta(days=31) if old else None
                run(
                    s,
                    src,
                    day,
                    dedup=int(size * 0.45 if first else daily * (1 + n % 3 / 4)),
                    original=int(size + n * daily),
                    pruned_at=pruned,
                )
                if rto is not None and day.weekday() == 5:
                    slower = rto * (1 + n / 140) * (1.0 + (n % 4) / 12)
                    when = day + timedelta(hours=2)
                    if name == "shopdb" and day > now - timedelta(days=7):
                        drill(
                            s,
                            src,
                            when,
                            "fail",
                            slower,
                            [
                                {"check": "sha256", "ok": True, "detail": "matches"},
                                {
                                    "check": "rows",
                                    "ok": False,
                                    "detail": "orders: 19874 rows, 20000 recorded at backup time",
                                },
                            ],
                        )
                    else:
                        drill(s, src, when, "pass", slower)


def demo_html(root: Path, now: datetime | None = None) -> tuple[Path, str]:
    """Build the demo in ``root``; write its HTML preview; (file, verdict)."""
    config = write_config(
        root,
        {
            "web1": {"maindb": "postgresql", "files": "directory"},
            "web2": {"shopdb": "mariadb", "uploads": "volume"},
            "web3": {"app": "sqlite"},
        },
    )
    ctx = Context(load_config(config))
    fill_demo(ctx, now or utcnow())
    for host, gib in (("web1", 19), ("web2", 41), ("web3", 1)):
        repo = ctx.repository(host) / "data" / "0"
        repo.mkdir(parents=True)
        with (repo / "1").open("wb") as f:  # sparse: a repository's size, not its bytes
            f.truncate(gib * GiB)
    data = gather(ctx)
    out = root / "report.html"
    out.write_text(html_preview(data), encoding="utf-8")
    return out, data.verdict


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1000, 1400), scale: int = 1) -> None:
    """Render ``page`` with headless Chromium into ``png``: a window of ``size`` CSS
    pixels, ``scale`` device pixels to one (a phone's dense screen: 2 or 3)."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("chromium not found (scripts/bootstrap.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        argv = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            f"--force-device-scale-factor={scale}",
            page.resolve().as_uri(),
        ]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "HOME": profile},
        )
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr.strip()[-500:]}")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="backupd-report-") as tmp:
        page, verdict = demo_html(Path(tmp))
        for out, size, scale in VIEWS.values():
            screenshot(page, out, size, scale)
            print(f"{out}: {out.stat().st_size} bytes, verdict {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
