"""Alerts to chat and push services (issue 17, decision 0027): one message per cause and
service, folded within the interval, queued per service while it is down and sent once
when it is back, claimed so two senders never send one alert twice; nothing old for a
new service; the URLs' tokens never in the catalogue nor the log. The send is faked only
at its seam (dispatch_chat's ``send``); where a real send is needed, a real webhook."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from backupd.actions.context import Context
from backupd.actions.metrics import exposition
from backupd.actions.notify import dispatch_chat
from backupd.catalogue.channels import AlertSend
from backupd.catalogue.models import AlertEvent, utcnow
from backupd.cli.main import cli
from backupd.config.load import NotifyConfig
from backupd.daemon.alerts import AlertLoop
from backupd.errors import ConfigError, CredentialError, NotifyError
from backupd.notify.chat import Service, fingerprint_key, send_notification, services
from jobs.registry import load_config
from tests.harness.example_report import write_config
from tests.harness.recorder import webhook_server

CHAT = "json://127.0.0.1:9/hooks/chat-token-1"
PUSH = "ntfy://ntfy.example.org/push-topic-2"
Sent = list[tuple[str, str, str, bool]]
KEY = b"k" * 32  # a fingerprint key, where no state directory is involved


def make_ctx(tmp_path: Path, notify: str) -> Context:
    config = write_config(tmp_path, {"web1": {"app": "sqlite"}}, f"[notify]\n{notify}\n")
    return Context(load_config(config))


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return make_ctx(tmp_path, f'urls = ["{CHAT}", "{PUSH}"]')


def recorder(sent: Sent, down: set[str] | None = None):  # type: ignore[no-untyped-def]
    """A send that records (service label, title, body, failure), or raises NotifyError
    for the services whose label is in ``down``."""

    def send(service: Service, title: str, body: str, failure: bool) -> None:
        if down and service.label in down:
            raise NotifyError(f"{service.label}: A Connection error occurred")
        sent.append((service.label, title, body, failure))

    return send


def found(ctx: Context) -> list[Service]:
    assert ctx.config.notify is not None
    targets = services(ctx.config.notify, fingerprint_key(ctx.private_dir(ctx.config.state_dir)))
    assert targets.problems == []
    return targets.found


def fail(ctx: Context, source: str = "app", message: str = "boom") -> int:
    return ctx.catalogue.record_alert(
        "backup_failed", f"web1/{source}: {message}", host="web1", source=source
    )


def test_one_message_per_cause_and_service_then_folded_within_the_interval(
    ctx: Context,
) -> None:
    now = utcnow()
    fail(ctx, message="first")
    fail(ctx, message="second")  # same cause: one message
    ctx.catalogue.record_alert("disk_warning", "store 90% full", dedup_key="disk:warning")
    sent: Sent = []
    assert dispatch_chat(ctx, recorder(sent), now) == 4
    chat = sorted((title, failure) for label, title, _, failure in sent if label.startswith("json"))
    assert chat == [
        ("[backupd] backup failed: web1/app", True),
        ("[backupd] disk warning: backupd", False),  # a warning, not a failure
    ]
    body = next(b for _, t, b, _ in sent if "failed" in t)
    assert "web1/app: first" in body and "web1/app: second" in body
    assert "(2 alerts with the same cause)" in body

    assert dispatch_chat(ctx, recorder(sent), now) == 0  # nothing new: silent
    fail(ctx, message="third")  # within the interval: folded on both services
    assert dispatch_chat(ctx, recorder(sent), now + timedelta(minutes=10)) == 0
    assert len(sent) == 4
    fail(ctx, message="fourth")  # after it: sent again
    assert dispatch_chat(ctx, recorder(sent), now + timedelta(hours=2)) == 2
    assert ["web1/app: fourth" in b for _, _, b, _ in sent[4:]] == [True, True]


def test_a_service_that_is_down_keeps_its_alerts_and_gets_them_once_when_back(
    ctx: Context,
) -> None:
    alert = fail(ctx)
    sent: Sent = []
    chat = found(ctx)[0]
    # the chat is down; push is not held back by it
    assert dispatch_chat(ctx, recorder(sent, {chat.label}), utcnow()) == 1
    assert [label for label, *_ in sent] == ["ntfy://ntfy.example.org"]
    [waiting] = [d for d in ctx.catalogue.deliveries([alert])[alert] if d.sent_at is None]
    assert waiting.attempts == 1 and "Connection error" in str(waiting.last_error)
    assert dispatch_chat(ctx, recorder(sent, {chat.label}), utcnow()) == 0
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 1  # back: delivered
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 0  # and never again
    assert [label for label, *_ in sent] == ["ntfy://ntfy.example.org", chat.label]
    rows = ctx.catalogue.deliveries([alert])[alert]
    assert all(r.sent_at is not None and r.claimed_by is None for r in rows)
    assert next(r for r in rows if r.channel == chat.channel).last_error is None


def test_two_senders_at_once_send_each_alert_once(ctx: Context) -> None:
    """The daemon's loop and `backupctl alerts --send` at the same moment: the second
    starts while the first is in the middle of its send, and finds it all claimed."""
    fail(ctx)
    sent: Sent = []
    inner: list[int] = []

    def slow_send(service: Service, title: str, body: str, failure: bool) -> None:
        if not inner:  # the other sender runs while this one holds its claims
            inner.append(dispatch_chat(ctx, recorder(sent), utcnow()))
        sent.append((service.label, title, body, failure))

    dispatch_chat(ctx, slow_send, utcnow())
    assert sorted(label for label, *_ in sent) == [
        "json://127.0.0.1:9",
        "ntfy://ntfy.example.org",
    ]
    assert inner == [1]  # the other sender only sent to the service not yet claimed


def test_a_sender_that_died_holding_a_claim_is_taken_over_after_its_lease(
    ctx: Context,
) -> None:
    alert = fail(ctx)
    chat = found(ctx)[0]
    now = utcnow()
    for service in found(ctx):  # both known from a look before (with their day)
        ctx.catalogue.open_channel(
            service.channel, service.label, now, now - timedelta(days=1), None
        )
    lease = timedelta(minutes=5)
    assert ctx.catalogue.claim_channel_alerts(
        chat.channel, _key(ctx, alert), "dead:1:x", lease, now - timedelta(days=1)
    )
    sent: Sent = []
    dispatch_chat(ctx, recorder(sent), now)  # the dead sender's lease runs: left alone
    assert [label for label, *_ in sent] == ["ntfy://ntfy.example.org"]
    with ctx.catalogue.session() as s:  # six minutes later: its lease (five) is over
        for row in s.scalars(select(AlertSend).where(AlertSend.claimed_by == "dead:1:x")):
            row.claimed_at = utcnow() - timedelta(minutes=6)
    dispatch_chat(ctx, recorder(sent), utcnow())
    assert [label for label, *_ in sent] == ["ntfy://ntfy.example.org", chat.label]


def _key(ctx: Context, alert: int) -> str:
    with ctx.catalogue.session() as s:
        event = s.get_one(AlertEvent, alert)
        return event.dedup_key or event.kind


def test_a_new_service_gets_the_last_day_not_the_whole_history(ctx: Context) -> None:
    old = fail(ctx, source="old")
    with ctx.catalogue.session() as s:
        s.get_one(AlertEvent, old).created_at = utcnow() - timedelta(days=3)
    fail(ctx, source="recent")
    sent: Sent = []
    dispatch_chat(ctx, recorder(sent), utcnow())
    assert {t for _, t, _, _ in sent} == {"[backupd] backup failed: web1/recent"}


def test_the_chat_column_says_sent_waiting_or_not_for_chat(ctx: Context) -> None:
    old = fail(ctx, source="old")
    with ctx.catalogue.session() as s:
        s.get_one(AlertEvent, old).created_at = utcnow() - timedelta(days=3)
    fail(ctx, source="sent")
    assert chat_column(ctx)["web1/sent"] == "not yet"  # before the first look
    chat = found(ctx)[0]
    dispatch_chat(ctx, recorder([]), utcnow())
    fail(ctx, source="waits")
    dispatch_chat(ctx, recorder([], {chat.label}), utcnow())
    fail(ctx, source="new")
    assert chat_column(ctx) == {
        "web1/new": "not yet",
        "web1/waits": "no (1 try)",  # the chat is down; push got it
        "web1/sent": "sent 2/2",
        "web1/old": "-",  # older than either service: never to be sent
    }


def test_a_service_added_later_or_a_rotated_token_starts_from_its_first_look(
    tmp_path: Path,
) -> None:
    """The first services get the last day; a URL added later (a rotated token is a new
    URL) does not: the same room would hear the day's alerts twice."""
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT}"]')
    fail(ctx, source="before")
    sent: Sent = []
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 1  # the first: the last day
    rotated = CHAT.replace("chat-token-1", "chat-token-rotated")
    ctx = make_ctx(tmp_path, f'urls = ["{rotated}"]')
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 0  # not again
    fail(ctx, source="after")
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 1
    assert [t for _, t, _, _ in sent] == [
        "[backupd] backup failed: web1/before",
        "[backupd] backup failed: web1/after",
    ]


def test_what_alerts_and_metrics_count_is_the_services_configured_now(
    tmp_path: Path,
) -> None:
    """A removed service no longer counts (the next look has forgotten it); a service not
    yet tried for an alert is waiting, not sent; an older alert is not due there."""
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT}", "{PUSH}"]')
    fail(ctx)
    chat, push = found(ctx)
    dispatch_chat(ctx, recorder([], {chat.label}), utcnow())
    assert b"backupd_alerts_pending 1.0" in exposition(ctx)  # the chat still waits
    ctx = make_ctx(tmp_path, f'urls = ["{PUSH}"]')  # the broken chat removed
    dispatch_chat(ctx, recorder([]), utcnow())
    assert b"backupd_alerts_pending 0.0" in exposition(ctx)
    [row] = listed(ctx)["alerts"]
    assert [(n["service"], n["sent"] is not None) for n in row["notified"]] == [(push.label, True)]
    third = "json://127.0.0.1:9/hooks/third-room"
    ctx = make_ctx(tmp_path, f'urls = ["{PUSH}", "{third}"]')
    fail(ctx, source="new")
    failures: list[str] = []
    dispatch_chat(ctx, recorder([], {"ntfy://ntfy.example.org"}), utcnow(), failures)
    assert len(failures) == 1 and failures[0].startswith("ntfy://ntfy.example.org: ")
    old, new = listed(ctx)["alerts"][1], listed(ctx)["alerts"][0]
    assert [n["service"] for n in old["notified"]] == [push.label]  # not due on the third
    assert sorted((n["service"], n["attempts"]) for n in new["notified"]) == [
        ("json://127.0.0.1:9", 0),
        ("ntfy://ntfy.example.org", 1),
    ]


def listed(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    shown = CliRunner().invoke(cli, ["--config", str(ctx.config.path), "alerts", "--json"])
    assert shown.exit_code == 0, shown.output
    listing: dict[str, list[dict[str, Any]]] = json.loads(shown.output)
    return listing


def test_alerts_send_exits_15_when_a_delivery_failed_and_0_when_none_did(
    tmp_path: Path,
) -> None:
    with webhook_server() as (port, received):
        ctx = make_ctx(tmp_path, f'urls = ["json://127.0.0.1:{port}/hook"]\ntimeout = 5')
        fail(ctx)
        config = ["--config", str(ctx.config.path), "alerts", "--send"]
        ok = CliRunner().invoke(cli, config)
        assert ok.exit_code == 0, ok.output
        assert len(received) == 1
    fail(ctx, source="other")  # the webhook is gone now
    down = CliRunner().invoke(cli, config)
    assert down.exit_code == 15, down.output
    last = down.output.strip().splitlines()[-1]
    assert last == (
        "backupctl: error: 1 delivery problem(s), said above; the alerts are kept for the next look"
    )
    assert "notification failed (kept, retried later): json://127.0.0.1:" in down.output
    assert CliRunner().invoke(cli, [*config[:3]]).exit_code == 0  # only --send says so


def test_urls_and_urls_from_of_the_wrong_shape_say_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"notify\.urls: a list of URLs, even of one"):
        make_ctx(tmp_path, f'urls = "{CHAT}"')
    with pytest.raises(ConfigError, match=r"notify\.urls_from: a table naming where they are"):
        make_ctx(tmp_path, 'urls_from = "/etc/backupd/notify-urls"')
    with pytest.raises(ConfigError, match=r"Apprise's 'mmost' service cannot read this URL"):
        make_ctx(tmp_path, 'urls = ["mmost://127.0.0.1:8065"]')
    with pytest.raises(ConfigError, match=r"'https' is no Apprise service: .* mmosts://HOST/KEY"):
        make_ctx(tmp_path, 'urls = ["https://chat.example.org/hooks/abc"]')


def chat_column(ctx: Context) -> dict[str, str]:
    """WHERE -> CHAT of `backupctl alerts` (no [mail]: MAILED says "-")."""
    shown = CliRunner().invoke(cli, ["--config", str(ctx.config.path), "alerts"])
    assert shown.exit_code == 0, shown.output
    head, *lines = shown.output.splitlines()
    where, chat_at, message = head.index("WHERE"), head.index("CHAT"), head.index("MESSAGE")
    assert {line[head.index("MAILED") : chat_at].strip() for line in lines} == {"-"}
    return {line[where:].split()[0]: line[chat_at:message].strip() for line in lines}


def test_without_notify_nothing_is_sent_and_nothing_is_pending(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"web1": {"app": "sqlite"}})
    ctx = Context(load_config(config))
    fail(ctx)
    assert dispatch_chat(ctx, recorder([]), utcnow()) == 0
    assert b"backupd_alerts_pending 0.0" in exposition(ctx)


def test_alerts_waiting_for_a_service_are_pending_in_the_metrics(ctx: Context) -> None:
    fail(ctx)
    fail(ctx, source="other")
    chat = found(ctx)[0]
    dispatch_chat(ctx, recorder([], {chat.label}), utcnow())
    assert b"backupd_alerts_pending 2.0" in exposition(ctx)
    dispatch_chat(ctx, recorder([]), utcnow())
    assert b"backupd_alerts_pending 0.0" in exposition(ctx)


def test_urls_from_a_private_file_one_per_line(tmp_path: Path) -> None:
    urls = tmp_path / "notify-urls"
    urls.write_text(f"# the ops room\n\n{CHAT}\n{PUSH}\n{CHAT}\n")
    urls.chmod(0o600)
    ctx = make_ctx(tmp_path, f'urls_from = {{ file = "{urls}" }}')
    assert ctx.config.notify is not None
    assert [s.label for s in found(ctx)] == ["json://127.0.0.1:9", "ntfy://ntfy.example.org"]
    urls.chmod(0o644)
    [readable] = services(ctx.config.notify, KEY).problems
    assert re.match(r"notify\.urls_from: file .* readable by others", readable)
    urls.chmod(0o600)
    urls.write_text(f"{CHAT}\nhttps//not-a-url/secret-part\n")
    targets = services(ctx.config.notify, KEY)  # the good line still counts
    assert [s.label for s in targets.found] == ["json://127.0.0.1:9"]
    assert [p[:36] for p in targets.problems] == ["notify.urls_from: line 2: not a URL "]
    assert "secret-part" not in targets.problems[0]


def test_a_failing_urls_from_command_does_not_print_what_it_said(tmp_path: Path) -> None:
    """A secrets tool (or a `set -x` wrapper) may say the URL on stderr: not repeated."""
    script = "echo json://127.0.0.1:9/stderr-token >&2; exit 3"
    ctx = make_ctx(
        tmp_path, f'urls = ["{PUSH}"]\nurls_from = {{ command = ["sh", "-c", "{script}"] }}'
    )
    assert ctx.config.notify is not None
    targets = services(ctx.config.notify, KEY)
    [problem] = targets.problems
    assert problem.startswith("notify.urls_from: command 'sh' exited 3")
    assert "stderr-token" not in problem
    assert [s.label for s in targets.found] == ["ntfy://ntfy.example.org"]  # inline: still
    silent = make_ctx(tmp_path, 'urls_from = { command = ["true"] }')
    assert silent.config.notify is not None
    assert services(silent.config.notify, KEY).problems == ["notify.urls_from: gave no URL"]


def test_labels_show_a_host_never_a_token_in_its_place() -> None:
    urls = (
        "ntfy://SECRETTOPICbackups",
        "tgram://123456789:SECRETBOT/-100123",
        "pbul://SECRETPUSHBULLETq",
        "ntfys://ntfy.example.org/topic-1",
        "mmosts://user:pw@chat.example.org:8443/key-1",
        "mmosts://chat.example.org:8443/key-2",
        "json://[::1]:8080/hook",
    )
    found = services(NotifyConfig(urls=urls), KEY).found
    two = [s.channel.removeprefix("apprise:")[:4] for s in found[4:6]]
    assert [s.label for s in found] == [
        "ntfy://…",
        "tgram://…",
        "pbul://…",
        "ntfys://ntfy.example.org",
        f"mmosts://chat.example.org:8443 #{two[0]}",  # two rooms on one server, told
        f"mmosts://chat.example.org:8443 #{two[1]}",  # apart by their fingerprints
        "json://[::1]:8080",
    ]
    backwards = services(NotifyConfig(urls=tuple(reversed(urls))), KEY).found
    assert {s.channel: s.label for s in backwards} == {s.channel: s.label for s in found}


def test_a_fingerprint_is_keyed_by_a_private_secret_of_the_install(tmp_path: Path) -> None:
    """A copy of the catalogue does not let anyone confirm a guessed URL by hashing it."""
    key = fingerprint_key(tmp_path)
    assert len(key) == 32 and fingerprint_key(tmp_path) == key
    assert (tmp_path / "notify.key").stat().st_mode & 0o777 == 0o600
    [service] = services(NotifyConfig(urls=(PUSH,)), key).found
    assert service.channel != f"apprise:{hashlib.sha256(PUSH.encode()).hexdigest()[:16]}"
    assert service.channel != services(NotifyConfig(urls=(PUSH,)), KEY).found[0].channel
    (tmp_path / "notify.key").write_bytes(b"short")
    with pytest.raises(CredentialError, match="not a key backupd made"):
        fingerprint_key(tmp_path)


def test_a_rotated_token_gets_what_the_old_one_could_not_deliver(tmp_path: Path) -> None:
    """The token was revoked, so deliveries failed; the operator rotates it: the new URL
    gets the alerts still owed, and not those the old one had already delivered."""
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT}"]')
    fail(ctx, source="delivered")
    sent: Sent = []
    dispatch_chat(ctx, recorder(sent), utcnow())
    fail(ctx, source="owed")
    dispatch_chat(ctx, recorder(sent, {"json://127.0.0.1:9"}), utcnow())  # revoked
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT.replace("token-1", "token-2")}"]')
    assert dispatch_chat(ctx, recorder(sent), utcnow()) == 1
    assert [t for _, t, _, _ in sent] == [
        "[backupd] backup failed: web1/delivered",
        "[backupd] backup failed: web1/owed",
    ]


def test_a_url_put_back_does_not_get_what_came_while_it_was_gone(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT}", "{PUSH}"]')
    sent: Sent = []
    dispatch_chat(ctx, recorder(sent), utcnow())
    ctx = make_ctx(tmp_path, f'urls = ["{PUSH}"]')  # the chat removed for a while
    fail(ctx, source="meanwhile")
    dispatch_chat(ctx, recorder(sent), utcnow())
    ctx = make_ctx(tmp_path, f'urls = ["{CHAT}", "{PUSH}"]')  # and put back
    fail(ctx, source="after")
    dispatch_chat(ctx, recorder(sent), utcnow())
    assert sorted((label, t) for label, t, _, _ in sent) == [
        ("json://127.0.0.1:9", "[backupd] backup failed: web1/after"),
        ("ntfy://ntfy.example.org", "[backupd] backup failed: web1/after"),
        ("ntfy://ntfy.example.org", "[backupd] backup failed: web1/meanwhile"),
    ]


def test_an_unreadable_urls_from_sends_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx(tmp_path, f'urls_from = {{ file = "{tmp_path / "missing"}" }}')
    fail(ctx)
    with caplog.at_level(logging.ERROR):
        assert dispatch_chat(ctx, recorder([]), utcnow()) == 0
    assert "[notify]: notify.urls_from: file " in caplog.text
    assert "(the other services are sent to)" in caplog.text


def test_a_bad_url_is_a_config_error_without_the_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as bad:
        make_ctx(tmp_path, 'urls = ["json://127.0.0.1/x", "nosuch://secret-token@host/p"]')
    assert "notify.urls: URL 2 of 2: Apprise has no service 'nosuch'" in str(bad.value)
    assert "secret-token" not in str(bad.value)
    with pytest.raises(ConfigError, match="give urls or urls_from"):
        make_ctx(tmp_path, "timeout = 5")


def test_a_real_send_names_the_service_never_its_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Against a real webhook: delivered; then, with it gone, the error line and the log
    name the service, never the URL's path (its token), and neither does the catalogue."""
    with webhook_server() as (port, received):
        url = f"json://user:pass-word-3@127.0.0.1:{port}/hooks/very-secret-token"
        ctx = make_ctx(tmp_path, f'urls = ["{url}"]')
        fail(ctx)
        with caplog.at_level(logging.DEBUG):
            assert dispatch_chat(ctx) == 1
    assert [m["title"] for m in received] == ["[backupd] backup failed: web1/app"]
    fail(ctx, source="other")
    with caplog.at_level(logging.DEBUG):
        assert dispatch_chat(ctx) == 0  # the webhook is gone now
    [service] = found(ctx)
    assert service.label == f"json://127.0.0.1:{port}"
    with pytest.raises(NotifyError) as down:
        send_notification(service, "t", "b", 2.0)
    assert str(down.value).startswith(f"json://127.0.0.1:{port}: ")
    # pytest hangs its handler on Apprise's logger too; what backupd logs is the rest, and
    # Apprise's own debug lines (URLs, payloads) are never made
    theirs = ("apprise", "urllib3")
    assert not [r for r in caplog.records if r.name.startswith(theirs) and r.levelno < 30]
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(theirs)]
    said = "\n".join(ours) + str(down.value) + repr(service)
    stored = (tmp_path / "state" / "catalogue.db").read_bytes()
    for secret in ("very-secret-token", "pass-word-3"):
        assert secret not in said and secret.encode() not in stored
    assert "notification failed (kept, retried later)" in caplog.text


def test_the_daemons_alert_loop_sends_to_chat_and_stays_silent_without_alerts(
    tmp_path: Path,
) -> None:
    """Counted in looks (each begins by asking for the context), not in seconds."""
    looks = 0
    counted = threading.Condition()

    def context_of() -> Context:
        nonlocal looks
        with counted:
            looks += 1
            counted.notify_all()
        return ctx

    def begun(n: int) -> None:
        with counted:
            assert counted.wait_for(lambda: looks >= n, timeout=120)

    with webhook_server() as (port, received):
        hook = f'urls = ["json://127.0.0.1:{port}/hook"]\n[alerts]\ncheck_interval = "1s"'
        ctx = make_ctx(tmp_path, hook)
        loop = AlertLoop(context_of)
        loop.start()
        try:
            begun(2)  # a whole look without an alert: nothing sent
            assert received == []
            fail(ctx)
            begun(4)  # a whole look after it: sent; and the one after: not again
            assert [m["title"] for m in received] == ["[backupd] backup failed: web1/app"]
        finally:
            loop.stop.set()
            loop.join(30)


def test_notify_config_defaults() -> None:
    cfg = NotifyConfig(urls=(CHAT,))
    assert (cfg.timeout, cfg.alert_interval) == (10.0, 3600.0)
