"""The weekly report: what the catalogue says about a period, as a mail readable in a minute.

The verdict comes first. ``fail`` ("ACTION NEEDED") when a source is stale, its last
backup or its last restore drill failed, or a maintenance job's last run failed; ``warn``
when a source was never drilled, its drill warned, or it (or a maintenance job) failed
during the period but has recovered; ``ok`` otherwise. Then one row per source, the
failures of the period with their reasons, the store's disk use and two small charts
(inline PNG images).

The mail is multipart/alternative: plain text, and HTML (table layout, inline styles only,
as mail clients strip style sheets) inside multipart/related with the charts as parts
referenced by ``cid:``. ``html_preview`` inlines them as ``data:`` URIs for a browser.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from backupd.config.units import human_age, human_bytes
from backupd.render import charts

DEFAULT_PERIOD = timedelta(days=7)
GROWTH_DAYS = 56  # the store growth chart: eight weeks, one point per day
RTO_WINDOW = timedelta(days=GROWTH_DAYS)  # the RTO chart: the same eight weeks
HEADLINES = {"fail": "ACTION NEEDED", "warn": "CHECK", "ok": "ALL GOOD"}
# "stop": a run stopped (a shutdown, the off-site window's end), listed with the failures
# of the period but in no verdict
COLORS = {"fail": "#b00020", "warn": "#b45309", "ok": "#15803d", "stop": "#4b5563"}
ORDER = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class SourceLine:
    host: str
    source: str
    kind: str
    level: str  # ok, warn, fail: the worst of its problems
    age_seconds: float | None  # of the last successful backup; None: never
    stale: bool
    stored: int  # bytes the live archives added to the repository
    growth: int  # change of ``stored`` over the period
    dedup: float | None
    drill: str | None  # the last drill's verdict (pass, warn, fail); None: never drilled
    rto: float | None
    failures: tuple[str, ...]  # failed backups and drills, change alerts of the period
    problems: tuple[tuple[str, str], ...]  # (level, why): what puts it in the verdict

    @property
    def name(self) -> str:
        return f"{self.host}/{self.source}"


@dataclass(frozen=True)
class ReportData:
    start: datetime
    end: datetime
    sources: list[SourceLine]
    maintenance: list[tuple[str, str]]  # (level, line): how maintenance jobs stand, off-site ages
    store_path: str
    disk: tuple[int, int, int] | None  # total, used, free of the store's file system
    repositories: list[tuple[str, int]]  # (host, bytes on disk)
    growth: list[float]  # bytes stored at the end of each of the last GROWTH_DAYS days
    rto: list[tuple[str, list[tuple[float, float]]]]  # per source: (unix time, seconds)
    # per host with [offsite]: (host, last copied, copy last proved restorable), None: never
    offsite: list[tuple[str, datetime | None, datetime | None]] = field(default_factory=list)
    # (level, line): the period's failed, warning and interrupted maintenance runs, timed
    maintenance_history: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[str, str]]:
        found = [(lvl, f"{s.name}: {why}") for s in self.sources for lvl, why in s.problems]
        return sorted(found + self.maintenance, key=lambda p: -ORDER[p[0]])

    @property
    def verdict(self) -> str:
        return max((lvl for lvl, _ in self.problems), key=ORDER.__getitem__, default="ok")

    @property
    def headline(self) -> str:
        """ "ACTION NEEDED (2 problems, 3 to check)": every line of the list below is
        counted (a new-user trial read "2 problems" over five lines as a miscount)."""
        fails = sum(1 for lvl, _ in self.problems if lvl == "fail")
        warns = sum(1 for lvl, _ in self.problems if lvl == "warn")
        counts = [f"{fails} problem{'s' if fails != 1 else ''}"] if fails else []
        if warns:
            counts.append(
                f"{warns} to check" if fails else f"{warns} thing{'s' * (warns != 1)} to check"
            )
        return HEADLINES[self.verdict] + (f" ({', '.join(counts)})" if counts else "")

    @property
    def subject(self) -> str:
        # 69 characters at most with two-digit counts: a Subject line over 78 is folded,
        # and Python's email folds the whole value onto the next line, then reads it back
        # with a leading space
        return f"[backupd] {self.headline}, report {self.end:%Y-%m-%d}"


def _seconds(value: float) -> str:
    """A restore time: whole seconds, a tenth under ten (a 0.8 s restore is not "0 s")."""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _growth_text(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


# -- rendering ---------------------------------------------------------------------------
def chart_images(data: ReportData) -> dict[str, bytes]:
    """name -> PNG; a chart with nothing to show is left out."""
    images = {}
    if data.growth:
        images["store-growth"] = charts.area_chart(data.growth, data.end)
    if data.rto:
        window = ((data.end - RTO_WINDOW).timestamp(), data.end.timestamp())
        images["rto"] = charts.line_chart(data.rto, x_range=window)
    return images


def render_text(data: ReportData) -> str:
    lines = [
        f"{data.headline} - backupd weekly report",
        f"Period: {data.start:%Y-%m-%d %H:%M}Z to {data.end:%Y-%m-%d %H:%M}Z",
        "",
    ]
    for level, why in data.problems:
        lines.append(f"  {level.upper():5} {why}")
    if data.problems:
        lines.append("")
    header = ("", "HOST/SOURCE", "LAST BACKUP", "STORED", "GROWTH", "DEDUP", "DRILL", "RTO")
    rows = [
        (
            s.level.upper() if s.level != "ok" else "ok",
            s.name,
            ("STALE " if s.stale else "") + human_age(s.age_seconds),
            human_bytes(s.stored),
            _growth_text(s.growth),
            f"{s.dedup:.1f}x" if s.dedup else "-",
            (s.drill or "never").upper(),
            _seconds(s.rto).replace(" ", "") if s.rto is not None else "-",
        )
        for s in data.sources
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    failed = [(s.name, f) for s in data.sources for f in s.failures]
    if failed or data.maintenance_history:
        lines += ["", "Failures and losses in the period:"]
        lines += [f"  FAIL  {name}: {f}" for name, f in failed]
        lines += [f"  {lvl.upper():5} {m}" for lvl, m in data.maintenance_history]
    lines += ["", _store_line(data)]
    lines += [f"  {host}: {human_bytes(n)}" for host, n in data.repositories]
    if data.offsite:
        lines += ["", "Off-site copies:"]
        lines += [f"  {host}: {_copy_line(c, v)}" for host, c, v in data.offsite]
    return "\n".join(lines) + "\n"


def _copy_line(copied: datetime | None, verified: datetime | None) -> str:
    def when(t: datetime | None) -> str:
        return f"{t:%Y-%m-%d %H:%M}Z" if t else "never"

    return f"copied {when(copied)}, last proved restorable {when(verified)}"


def _store_line(data: ReportData) -> str:
    if data.disk is None:
        return f"Store {data.store_path}: not created yet"
    total, used, free = data.disk
    return (
        f"Store {data.store_path}: {human_bytes(used)} used of {human_bytes(total)} "
        f"({100 * used / total:.0f}%), {human_bytes(free)} free"
    )


FOOTER = "<code>backupctl status</code>, <code>backupctl runs --status failed</code>."
TD = "padding:4px 6px;border-bottom:1px solid #e5e7eb;font-size:13px"


def _td(text: str, level: str = "ok", align: str = "left") -> str:
    """A cell; a failure is red and bold, a warning amber, by class and by inline style
    (clients that drop classes still keep the style)."""
    style = f"{TD};text-align:{align}" + (";white-space:nowrap" if align == "right" else "")
    if level == "ok":
        return f'<td style="{style}">{html.escape(text)}</td>'
    return (
        f'<td class="{level}" style="color:{COLORS[level]};font-weight:bold;{style}">'
        f"{html.escape(text)}</td>"
    )


def render_html(data: ReportData, image_src: Callable[[str], str]) -> str:
    """``image_src(name)`` gives each chart's ``src`` (a cid: or a data: URI)."""
    color, e = COLORS[data.verdict], html.escape
    out = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        # a phone shows the page at its own width, not a desktop's shrunk (issue 17)
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>'
        + e(data.subject)
        + '</title></head><body style="margin:0;padding:8px;background:#f3f4f6;'
        'font-family:Arial,Helvetica,sans-serif;color:#111827;overflow-wrap:break-word">'
        # fixed layout: the page is as wide as the screen, whatever a line or chart holds
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
        'style="margin:0 auto;max-width:720px;table-layout:fixed;background:#ffffff;'
        'border:1px solid #e5e7eb">',
        f'<tr><td style="background:{color};color:#ffffff;padding:14px 18px">'
        f'<div style="font-size:22px;font-weight:bold">{e(data.headline)}</div>'
        f'<div style="font-size:13px">backupd weekly report, {data.start:%Y-%m-%d %H:%M}Z '
        f"to {data.end:%Y-%m-%d %H:%M}Z</div></td></tr>",
    ]
    if data.problems:
        items = "".join(
            f'<li style="color:{COLORS[lvl]};margin:2px 0">{e(why)}</li>'
            for lvl, why in data.problems
        )
        out.append(
            f'<tr><td style="padding:10px 18px;font-size:13px"><ul '
            f'style="margin:0;padding-left:18px">{items}</ul></td></tr>'
        )
    head = "".join(
        f'<th style="{TD};text-align:left;background:#f9fafb">{h}</th>'
        # what needs a person first: on a phone the rest is a sideways scroll away
        for h in ("Host/source", "Last backup", "Last drill", "RTO", "Stored", "Growth", "Dedup")
    )
    rows = "".join(
        "<tr>"
        + _td(s.name, s.level)
        + _td(("STALE " if s.stale else "") + human_age(s.age_seconds), "fail" if s.stale else "ok")
        + _td(
            (s.drill or "never").upper(),
            "ok" if s.drill == "pass" else ("fail" if s.drill == "fail" else "warn"),
        )
        + _td(_seconds(s.rto) if s.rto is not None else "-", align="right")
        + _td(human_bytes(s.stored), align="right")
        + _td(_growth_text(s.growth), align="right")
        + _td(f"{s.dedup:.1f}x" if s.dedup else "-", align="right")
        + "</tr>"
        for s in data.sources
    )
    # seven columns: on a phone the table scrolls sideways within its box, the page does not
    sources = _table(f"<tr>{head}</tr>{rows}")
    out.append(_section("Sources", f'<div style="overflow-x:auto">{sources}</div>'))
    failed = [(s.name, f) for s in data.sources for f in s.failures]
    if failed or data.maintenance_history:
        items = "".join(f"<tr>{_td(n, 'fail')}{_td(f, 'fail')}</tr>" for n, f in failed)
        items += "".join(
            f"<tr>{_td('maintenance', lvl)}{_td(m, lvl)}</tr>"
            for lvl, m in data.maintenance_history
        )
        out.append(_section("Failures and losses in the period", _table(items)))
    repos = "".join(
        f"<tr>{_td(h)}{_td(human_bytes(n), align='right')}</tr>" for h, n in data.repositories
    )
    out.append(
        _section(
            "Store",
            f'<div style="font-size:13px;margin-bottom:6px">'
            f"{e(_store_line(data))}</div>{_table(repos, 'auto')}",
        )
    )
    if data.offsite:
        copies = "".join(
            f"<tr>{_td(h)}{_td(_copy_line(c, v), 'ok' if c and v else 'warn')}</tr>"
            for h, c, v in data.offsite
        )
        out.append(_section("Off-site copies", _table(copies)))
    out += _chart_sections(data, image_src)
    out.append(
        '<tr><td style="padding:12px 18px;font-size:11px;color:#6b7280">Generated by '
        f"backupd at {data.end:%Y-%m-%d %H:%M}Z. Details: {FOOTER}</td></tr>"
        "</table></body></html>"
    )
    return "".join(out)


def _table(rows: str, width: str = "100%") -> str:
    return (
        f'<table role="presentation" width="{width}" cellpadding="0" cellspacing="0">{rows}</table>'
    )


def _section(title: str, body: str) -> str:
    return (
        f'<tr><td style="padding:12px 18px 4px 18px"><div style="font-size:15px;'
        f'font-weight:bold;margin-bottom:6px">{html.escape(title)}</div>{body}'
        "</td></tr>"
    )


def _chart_sections(data: ReportData, image_src: Callable[[str], str]) -> list[str]:
    out, images = [], chart_images(data)
    if "store-growth" in images:
        first, last = data.growth[0], data.growth[-1]
        caption = (
            f"Stored bytes, last {GROWTH_DAYS} days: {human_bytes(first)} to "
            f"{human_bytes(last)} (peak {human_bytes(max(data.growth))});"
            " axis from 0."
        )
        out.append(
            _section(
                "Store growth", _img(image_src("store-growth"), "store growth") + _caption(caption)
            )
        )
    if "rto" in images:
        legend = " ".join(
            f'<span style="color:{charts.PALETTE[n % len(charts.PALETTE)]};'
            f'font-weight:bold">&#9632;</span> {html.escape(name)} (last '
            f"{_seconds(pts[-1][1])}, max {_seconds(max(y for _, y in pts))})"
            for n, (name, pts) in enumerate(data.rto)
        )
        weeks = RTO_WINDOW.days // 7
        out.append(
            _section(
                f"Restore time (RTO) per drill, last {weeks} weeks",
                _img(image_src("rto"), "restore time per drill") + _caption(legend, escape=False),
            )
        )
    return out


def _img(src: str, alt: str) -> str:
    return (
        f'<img src="{html.escape(src)}" width="{charts.WIDTH}" height="{charts.HEIGHT}" '
        f'alt="{alt}" style="display:block;border:0;max-width:100%;height:auto">'
    )


def _caption(text: str, escape: bool = True) -> str:
    body = html.escape(text) if escape else text
    return f'<div style="font-size:12px;color:#4b5563;margin-top:4px">{body}</div>'


def html_preview(data: ReportData) -> str:
    """The HTML part with the charts inlined as data: URIs, for a browser."""
    images = chart_images(data)
    return render_html(
        data, lambda name: "data:image/png;base64," + base64.b64encode(images[name]).decode()
    )


def build_message(data: ReportData, sender: str, to: Sequence[str]) -> EmailMessage:
    """The report as a mail from ``sender`` to ``to`` (none: a report nobody is sent)."""
    msg = EmailMessage()
    msg["Subject"] = data.subject
    msg["From"] = sender
    if to:
        msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(data.end)
    domain = sender.rpartition("@")[2] or "backupd"  # make_msgid would ask DNS otherwise
    msg["Message-ID"] = make_msgid("report", domain=domain)
    images = chart_images(data)
    cids = {name: make_msgid(name, domain=domain) for name in images}
    msg.set_content(render_text(data))
    msg.add_alternative(render_html(data, lambda name: "cid:" + cids[name][1:-1]), subtype="html")
    html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
    for name, png in images.items():
        html_part.add_related(
            png,
            maintype="image",
            subtype="png",
            cid=cids[name],
            filename=f"{name}.png",
            disposition="inline",
        )
    return msg
