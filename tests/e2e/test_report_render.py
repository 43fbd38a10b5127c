"""The HTML report rendered by headless Chromium: the preview of a real deployment, and the
demo report as a phone (375 px) and a desktop (1024 px) show it, kept as
docs/report-phone.png and docs/report-desktop.png (rewritten when
BACKUPD_WRITE_EXAMPLE_REPORT=1, or by ``python -m tests.harness.example_report``)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet
from tests.harness.example_report import VIEWS, chromium, demo_html, screenshot

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(chromium() is None, reason="chromium not installed (bootstrap.sh)"),
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def files(droplet: Droplet) -> Iterator[Path]:
    root = droplet.root / "srv" / "report-render"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "a.txt").write_text("a line\n" * 5000)
    subprocess.run(["chown", "-R", f"{droplet.user}:", str(root)], check=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_preview_of_a_deployment_renders_in_chromium(
    deploy: Callable[..., Deployment], files: Path, tmp_path: Path
) -> None:
    d = deploy(
        {
            "files": {"kind": "directory", "path": str(files)},
            "gone": {"kind": "directory", "path": "/nonexistent/report-tree"},
        }
    )
    d.backupctl("backup", "now", "web1/files", check=True)
    assert d.backupctl("backup", "now", "web1/gone").returncode != 0  # something in red
    page = tmp_path / "report.html"
    out = d.backupctl("report", "--preview", str(page), check=True)
    assert out.stdout.startswith(f"{page}: ACTION NEEDED")
    assert d.catalogue_rows("SELECT count(*) FROM reports") == [(0,)]  # nothing recorded
    html = page.read_text()
    assert "No such file or directory" in html  # the failure's reason
    assert html.count('src="data:image/png;base64,') == 1  # store growth; no drill yet
    png = tmp_path / "report.png"
    screenshot(page, png)
    assert png_size(png) == (1000, 1400)
    assert png.stat().st_size > 15_000  # a rendered page, not a blank one


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_the_example_report_renders_on_a_phone_and_a_desktop(view: str, tmp_path: Path) -> None:
    page, verdict = demo_html(tmp_path)
    assert verdict == "fail"
    html = page.read_text()
    assert 'name="viewport"' in html and "max-width:100%" in html  # fits a phone's width
    docs, size, scale = VIEWS[view]
    png = tmp_path / docs.name
    screenshot(page, png, size, scale)
    assert png_size(png) == (size[0] * scale, size[1] * scale)
    assert 40_000 < png.stat().st_size < 1_500_000
    if os.environ.get("BACKUPD_WRITE_EXAMPLE_REPORT") == "1":
        shutil.copyfile(png, docs)
