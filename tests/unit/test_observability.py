"""Operations (docs/operations.md): request ids, access log, REST metrics, /metrics, /ready,
the SIP/MSRP counting hooks, the JSON log formatter, secrets and redaction, the IMS pinger."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import MASK, Credential, Settings
from bridge.observability.logs import (
    REQUEST_ID,
    JsonFormatter,
    Scrubber,
    hide_secrets,
    redact,
    setup_logging,
)
from bridge.observability.metrics import Metrics
from bridge.observability.readiness import ImsPinger, Readiness, listener_check, store_check
from rest import app as rest_app
from rest.observability import METRICS, READINESS, request_id
from sip.message import parse_message
from state.db import Database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await db.migrate()
    yield db
    await db.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# --- request ids -----------------------------------------------------------------------


def test_request_id_kept_when_sane_else_made() -> None:
    assert request_id("abc-123_X.y:z") == "abc-123_X.y:z"
    made = {request_id(bad) for bad in (None, "", "a b", "x\r\nSet-Cookie: 1", "é", "a" * 129)}
    assert len(made) == 6
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in made)


async def test_request_id_header_access_log_and_rest_metrics(
    database, aiohttp_client, caplog
) -> None:
    app = rest_app.make_app(Settings(), database)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO, logger="bridge.access")
    resp = await client.get("/health", headers={"X-Request-Id": "probe-1"})
    assert resp.status == 200 and resp.headers["X-Request-Id"] == "probe-1"
    resp = await client.get("/health", headers={"X-Request-Id": "bad id\t"})
    assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["X-Request-Id"])
    resp = await client.get("/chat/v1/tel%3A%2B15551230001/subscriptions/nope")
    assert resp.status == 404 and "X-Request-Id" in resp.headers
    resp = await client.get("/no/such/route")
    assert resp.status == 404 and "X-Request-Id" in resp.headers

    lines = [r for r in caplog.records if r.name == "bridge.access"]
    assert [(r.method, r.route, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/health", 200),
        ("GET", "/health", 200),
        ("GET", "/chat/v1/{userId}/subscriptions/{subscriptionId}", 404),
        ("GET", "unmatched", 404),
    ]
    assert lines[0].request_id == "probe-1"  # type: ignore[attr-defined]
    assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]
    assert "+1555" not in " ".join(r.getMessage() for r in lines)  # templates, not paths

    text = await (await client.get("/metrics")).text()
    assert value(text, "chat_bridge_http_requests_total", method="GET", route="/health",
                 status="200") == 2  # fmt: skip
    assert value(text, "chat_bridge_http_requests_total", method="GET", route="unmatched",
                 status="404") == 1  # fmt: skip
    count = value(text, "chat_bridge_http_request_duration_seconds_count", method="GET",
                  route="/health")  # fmt: skip
    assert count == 2
    assert value(text, "chat_bridge_notification_outbox_backlog") == 0
    assert app[METRICS].registry is not Metrics().registry  # one registry per app


async def test_metrics_and_ready_need_no_credentials_unless_asked(database, aiohttp_client) -> None:
    creds = [Credential(kind="bearer", token="t1", users=["*"])]
    open_app = rest_app.make_app(Settings(credentials=creds), database)
    client = await aiohttp_client(open_app)
    assert (await client.get("/metrics")).status == 200
    resp = await client.get("/ready")
    assert resp.status == 200 and await resp.json() == {"status": "ok", "reasons": {}}
    assert (await client.get("/chat/v1/acr%3Aauth/subscriptions")).status == 401

    closed = rest_app.make_app(Settings(credentials=creds, metrics_require_auth=True), database)
    client = await aiohttp_client(closed)
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers={"Authorization": "Bearer t1"})
    assert resp.status == 200 and "chat_bridge_info" in await resp.text()


async def test_ready_reports_each_failing_check(database, aiohttp_client) -> None:
    readiness = Readiness()
    bound = {"sip": True}
    readiness.add("store", store_check(database.ping, 1.0))
    readiness.add("sip", listener_check(lambda: bound["sip"]))
    client = await aiohttp_client(rest_app.make_app(Settings(), database, readiness=readiness))
    assert (await client.get("/ready")).status == 200
    bound["sip"] = False
    resp = await client.get("/ready")
    assert resp.status == 503
    assert await resp.json() == {"status": "unavailable", "reasons": {"sip": "listener not bound"}}
    assert client.app[READINESS] is readiness


async def test_store_check_times_out_and_reports_down() -> None:
    async def slow() -> bool:
        await asyncio.sleep(5)
        return True

    async def down() -> bool:
        return False

    assert await store_check(slow, 0.05)() == "no answer within 0.05 s"
    assert await store_check(down, 1.0)() == "does not answer"

    async def broken() -> str | None:
        raise RuntimeError("boom")

    readiness = Readiness()
    readiness.add("x", broken)
    assert await readiness.reasons() == {"x": "check failed: RuntimeError"}


async def test_ims_pinger_flips_with_the_answers(caplog) -> None:
    answering = {"up": False}
    changes: list[bool] = []

    async def ping() -> object:
        if not answering["up"]:
            await asyncio.sleep(1)  # unanswered: the pinger's timeout cuts it
        return 200

    pinger = ImsPinger(
        ping, target="sip:core", interval=0.02, timeout=0.05, on_change=changes.append
    )
    assert await pinger.check() == "no OPTIONS answered yet"
    pinger.start()
    try:

        async def until(ready: bool) -> None:
            for _ in range(200):
                if (await pinger.check() is None) == ready:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"pinger never became ready={ready}")

        for _ in range(200):
            if changes:
                break
            await asyncio.sleep(0.01)
        assert await pinger.check() == "no answer to OPTIONS within 0.05 s"
        answering["up"] = True
        await until(True)
        answering["up"] = False
        await until(False)
        answering["up"] = True
        await until(True)
    finally:
        await pinger.stop()
    assert changes == [False, True, False, True]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 2  # once per outage, not once per ping


async def test_ims_pinger_stale_answer_is_not_ready() -> None:
    async def ping() -> object:
        return 200

    pinger = ImsPinger(ping, target="sip:core", interval=0.05, timeout=0.05)
    pinger.start()
    for _ in range(100):
        if await pinger.check() is None:
            break
        await asyncio.sleep(0.01)
    await pinger.stop()  # the task stalls: the last answer ages
    await asyncio.sleep(0.15)
    reason = await pinger.check()
    assert reason is not None and reason.startswith("no OPTIONS answered for")


# --- counting hooks --------------------------------------------------------------------

INVITE = (
    b"INVITE sip:+15551230002@ims.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:+15551230001@ims.test>;tag=a\r\nTo: <sip:+15551230002@ims.test>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
RINGING = (
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:+15551230001@ims.test>;tag=a\r\nTo: <sip:+15551230002@ims.test>;tag=b\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


async def test_sip_and_msrp_counters_with_bounded_labels() -> None:
    metrics = Metrics()
    invite, ringing = parse_message(INVITE), parse_message(RINGING)
    odd = parse_message(INVITE.replace(b"INVITE", b"FOOBAR"))
    metrics.sip.received(invite)
    metrics.sip.sent(ringing)
    metrics.sip.sent(ringing)
    for _ in range(3):
        metrics.sip.received(odd)
    metrics.sip.retransmitted("MESSAGE")
    metrics.sip.timed_out("XYZ")
    metrics.msrp.sent(2, 300)
    metrics.msrp.received(1, 120)
    metrics.msrp.received(0, 10)
    metrics.msrp.error("broken")
    metrics.msrp.error("whatever")
    metrics.store_committed(0.003, 4)
    metrics.delivery.queued(3)
    metrics.delivery.delivered(0.2, channel=False)
    metrics.delivery.dropped("expired", 2)
    text = (await metrics.scrape()).decode()
    v = samples(text)

    def get(name: str, **labels: str) -> float:
        return v.get((name, tuple(sorted(labels.items()))), 0.0)

    assert get("chat_bridge_sip_requests_total", direction="in", method="INVITE") == 1
    assert get("chat_bridge_sip_requests_total", direction="in", method="other") == 3
    assert get("chat_bridge_sip_responses_total", direction="out", method="INVITE",
               status_class="1xx") == 2  # fmt: skip
    assert get("chat_bridge_sip_retransmissions_total", method="MESSAGE") == 1
    assert get("chat_bridge_sip_transaction_timeouts_total", method="other") == 1
    assert get("chat_bridge_msrp_frames_total", direction="out") == 2
    assert get("chat_bridge_msrp_frames_total", direction="in") == 1
    assert get("chat_bridge_msrp_bytes_total", direction="in") == 130
    assert get("chat_bridge_msrp_errors_total", kind="broken") == 1
    assert get("chat_bridge_msrp_errors_total", kind="other") == 1
    assert get("chat_bridge_store_commit_batch_size_sum") == 4
    assert get("chat_bridge_notifications_queued_total") == 3
    assert get("chat_bridge_notifications_delivered_total", via="callback") == 1
    assert get("chat_bridge_notification_delivery_seconds_count", via="callback") == 1
    assert get("chat_bridge_notifications_dropped_total", reason="expired") == 2
    assert "FOOBAR" not in text and "+1555" not in text


# --- logs ------------------------------------------------------------------------------


def record(msg: str, *args: object, name: str = "bridge.x", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_formatter_stable_fields_and_extras() -> None:
    rec = record("%s %s %d", "POST", "/x", 201, request_id="r1", status=201, duration_ms=1.5)
    out = json.loads(JsonFormatter().format(rec))
    assert list(out)[:4] == ["ts", "level", "logger", "msg"]
    assert out["msg"] == "POST /x 201" and out["level"] == "INFO" and out["logger"] == "bridge.x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])
    assert out["request_id"] == "r1" and out["status"] == 201 and out["duration_ms"] == 1.5
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        rec = logging.LogRecord("b", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(rec))
    assert "ValueError: bad" in out["exc"] and "\n" not in JsonFormatter().format(rec)


def test_secrets_are_hidden_always() -> None:
    assert hide_secrets("store postgresql+asyncpg://bridge:s3cret@db/chat") == (
        f"store postgresql+asyncpg://bridge:{MASK}@db/chat"
    )
    assert hide_secrets("POST to https://u:pw@app.example/cb failed") == (
        f"POST to https://u:{MASK}@app.example/cb failed"
    )
    assert (
        hide_secrets("proxy sip:alice:pw@core;transport=tcp")
        == f"proxy sip:alice:{MASK}@core;transport=tcp"
    )
    trace = 'REGISTER\r\nAuthorization: Digest username="a", response="abc"\r\nTo: x'
    assert hide_secrets(trace) == f"REGISTER\r\nAuthorization: Digest {MASK}\r\nTo: x"
    assert hide_secrets("sip:127.0.0.1:5060;transport=tcp") == "sip:127.0.0.1:5060;transport=tcp"
    rec = record("url %s", "http://u:pw@h/")
    Scrubber(redact=False).filter(rec)
    assert rec.getMessage() == f"url http://u:{MASK}@h/"


def test_redaction_masks_users_and_bodies() -> None:
    line = (
        "session of tel:+15551230001 with sip:+15551230002@ims.test, "
        "caller +1 555 123 0003, url /chat/v1/tel%3A%2B15551230001/oneToOne/"
        "sip%3Abob%40ims.test/adhoc at 2026-12-08T03:31:24+00:00 port 5060"
    )
    out = redact(line)
    for user in ("15551230001", "15551230002", "555 123 0003", "bob"):
        assert user not in out
    assert "@ims.test" in out and "2026-12-08T03:31:24+00:00 port 5060" in out
    assert redact("tel:+15551230001") == redact("tel:+15551230001")  # same user, same token
    assert redact("tel:+15551230001") != redact("tel:+15551230002")
    assert redact("sip:127.0.0.1:5070;transport=tcp") == "sip:127.0.0.1:5070;transport=tcp"
    wire = "< udp 127.0.0.1:5060\nMESSAGE sip:x@h SIP/2.0\r\nTo: <sip:x@h>\r\n\r\nhello secret text"
    clean = redact(wire, trace=True)
    assert "hello secret text" not in clean and "[17 characters redacted]" in clean
    msrp = (
        r"< 1.2.3.4:5 90 bytes: b'MSRP a SEND\r\nTo-Path: x\r\n\r\nsecret words\r\n-------a$\r\n'"
    )
    assert "secret words" not in redact(msrp, trace=True)


def test_setup_logging_json_lines_redacted_with_request_id() -> None:
    out = io.StringIO()
    settings = Settings(log_format="json", log_redact=True)
    handler = setup_logging(settings, stream=out)
    try:
        token = REQUEST_ID.set("rid-7")
        try:
            logging.getLogger("bridge.test").info("invite to %s", "tel:+15551230009")
        finally:
            REQUEST_ID.reset(token)
        logging.getLogger("bridge.test").info("no request")
        first, second = (json.loads(line) for line in out.getvalue().splitlines())
        assert first["request_id"] == "rid-7" and "15551230009" not in first["msg"]
        assert "request_id" not in second
        again = setup_logging(Settings(), stream=out)  # replaces, never stacks
        assert handler not in logging.getLogger().handlers and again in logging.getLogger().handlers
        handler = again
    finally:
        logging.getLogger().removeHandler(handler)


async def test_store_url_in_the_start_up_line_hides_its_password() -> None:
    # bridge.app logs database.url.render_as_string(): SQLAlchemy hides the password
    database = Database("postgresql+asyncpg://bridge:s3cret@db.example/chat")
    try:
        shown = database.url.render_as_string()
        assert "s3cret" not in shown and "bridge:***@db.example" in shown
    finally:
        await database.close()
