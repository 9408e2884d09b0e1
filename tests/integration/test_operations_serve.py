"""Operations on a real ``chat-bridge serve`` (docs/operations.md).

* ``/metrics`` after a real chat on the embedded default (two REST users of one bridge,
  real SIP and MSRP on loopback; adhoc messages in pager mode, so SIP MESSAGE too),
  parsed with ``prometheus_client``'s parser: the counters moved by what the exchange
  did; JSON log lines, the request id, redaction of user addresses in the log.
* ``/ready`` behind a real IMS core: Kamailio (tests/testbed) answers the OPTIONS ping,
  then is stopped (503, reason ``ims_core``), then started again on the same ports (200).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_chat_serve import A, B, Serve, q, serving
from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import TESTBED, free_port_block, start_testbed, stop_testbed
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

MESSAGES = "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}/messages"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Scrape:
    def __init__(self, text: str) -> None:
        self.values = samples(text)

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(root: str, request_id: str | None = None) -> tuple[Scrape, dict[str, str]]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(root + "/metrics", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return Scrape(await resp.text()), {k.lower(): v for k, v in resp.headers.items()}


async def ready(root: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(root + "/ready") as resp:
            return resp.status, await resp.json()


async def test_metrics_after_a_chat_on_the_embedded_default(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serving(
        tmp_path,
        receiver,
        CHAT_BRIDGE_CHAT_ADHOC_MODE="pager",
        CHAT_BRIDGE_LOG_FORMAT="json",
        CHAT_BRIDGE_LOG_REDACT="true",
        CHAT_BRIDGE_LOOP_LAG_INTERVAL="0.1",
    ) as serve:
        await serve.start()
        assert await ready(serve.root) == (200, {"status": "ok", "reasons": {}})
        receiver.failures = [503]  # the first notification fails once: one retry
        await serve.subscribe(A)
        await serve.subscribe(B)
        a_session = await confirmed_session(serve)
        for i in range(3):
            body = {"chatMessage": {"text": f"confirmed {i}", "reportRequest": ["Delivered"]}}
            await serve.call("POST", a_session + "/messages", body, 201)
        await serve.notes(B, "chatMessageNotification", 3)
        await serve.notes(A, "chatMessageStatusNotification", 3)
        for i in range(2):  # pager mode: one SIP MESSAGE each
            body = {"chatMessage": {"text": f"adhoc {i}"}}
            await serve.call("POST", f"/chat/v1/{q(B)}/oneToOne/{q(A)}/adhoc/messages", body, 201)
        await serve.notes(A, "chatMessageNotification", 2)
        notified = len(receiver.received)

        m, headers = await scrape(serve.root, request_id="ops-test-1")
        assert headers["x-request-id"] == "ops-test-1"
        post = {"method": "POST", "route": MESSAGES, "status": "201"}
        assert m("chat_bridge_http_requests_total", **post) == 5
        assert m("chat_bridge_http_request_duration_seconds_count", method="POST",
                 route=MESSAGES) == 5  # fmt: skip
        assert m("chat_bridge_http_requests_total", method="POST",
                 route="/chat/v1/{userId}/subscriptions", status="201") == 2  # fmt: skip
        # the bridge is its own proxy here: every request goes out and comes back in
        for direction in ("out", "in"):
            assert m("chat_bridge_sip_requests_total", direction=direction, method="INVITE") >= 1
            assert m("chat_bridge_sip_requests_total", direction=direction, method="MESSAGE") >= 2
            assert m("chat_bridge_sip_responses_total", direction=direction, method="INVITE",
                     status_class="2xx") >= 1  # fmt: skip
            assert m("chat_bridge_sip_responses_total", direction=direction, method="MESSAGE",
                     status_class="2xx") >= 2  # fmt: skip
            assert m("chat_bridge_msrp_frames_total", direction=direction) >= 3
            assert m("chat_bridge_msrp_bytes_total", direction=direction) > 300
        assert m("chat_bridge_sip_transaction_timeouts_total", method="INVITE") == 0
        assert m("chat_bridge_sessions", kind="confirmed", state="connected") == 2
        delivered = m("chat_bridge_notifications_delivered_total", via="callback")
        assert notified - 1 <= delivered <= notified  # the last 2xx may still be on its way
        assert m("chat_bridge_notifications_queued_total") >= delivered
        assert m("chat_bridge_notifications_retried_total") == 1
        assert m("chat_bridge_notification_delivery_seconds_count", via="callback") == delivered
        assert m("chat_bridge_store_commit_seconds_count") >= 1
        assert m("chat_bridge_store_commit_batch_size_sum") >= 5
        assert m("chat_bridge_event_loop_lag_seconds_count") >= 1

        await serve.call("DELETE", a_session, status=204)
        await serve.notes(B, "chatEventNotification", 1)
        m, _ = await scrape(serve.root)
        assert m("chat_bridge_sessions", kind="confirmed", state="connected") == 0

        lines = [json.loads(line) for line in serve.log.read_text().splitlines() if line]
        access = [r for r in lines if r["logger"] == "bridge.access"]
        mine = [r for r in access if r.get("request_id") == "ops-test-1"]
        assert len(mine) == 1 and mine[0]["route"] == "/metrics" and mine[0]["status"] == 200
        assert {"ts", "level", "logger", "msg", "method", "duration_ms"} <= mine[0].keys()
        assert sum(1 for r in access if r["route"] == MESSAGES) == 5
        text = serve.log.read_text()
        assert A.removeprefix("tel:") not in text and B.removeprefix("tel:") not in text


async def confirmed_session(serve: Serve) -> str:
    """A invites B, B accepts: A's session path."""
    created = await serve.call(
        "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
    )
    a_session = serve.local(created["chatSessionInformation"]["resourceURL"])
    (invite,) = await serve.notes(B, "chatSessionInvitationNotification")
    links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
    await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
    (accepted,) = await serve.notes(A, "chatEventNotification")
    assert accepted["eventType"] == "Accepted"
    return a_session


async def wait_ready(root: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(int(timeout / 0.1)):
        got, body = await ready(root)
        if got == status:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/ready never answered {status}: last {body}")


async def test_ready_follows_the_ims_core_options(tmp_path: Path) -> None:
    tb = start_testbed(tmp_path / "kamailio")
    base = free_port_block(size=4, start=30000)
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=base,
        sip_port=tb.as_port,
        CHAT_BRIDGE_SIP_OUTBOUND_PROXY=f"sip:127.0.0.1:{tb.sip_port}",
        CHAT_BRIDGE_IMS_PING_INTERVAL="0.3",
        CHAT_BRIDGE_IMS_PING_TIMEOUT="0.5",
    )
    bridge = ServeProcess(env, tmp_path / "bridge.log", base)
    restarted = None
    try:
        await bridge.start()
        await wait_ready(bridge.root, 200)
        m, _ = await scrape(bridge.root)
        assert m("chat_bridge_ims_core_reachable") == 1
        assert m("chat_bridge_sip_requests_total", direction="out", method="OPTIONS") >= 1
        assert m("chat_bridge_sip_responses_total", direction="in", method="OPTIONS",
                 status_class="2xx") >= 1  # fmt: skip

        stop_testbed(tb)  # the IMS core goes away
        body = await wait_ready(bridge.root, 503)
        assert body["status"] == "unavailable" and list(body["reasons"]) == ["ims_core"]
        assert "OPTIONS" in body["reasons"]["ims_core"]
        m, _ = await scrape(bridge.root)
        assert m("chat_bridge_ims_core_reachable") == 0
        async with aiohttp.ClientSession() as http:  # liveness is not readiness
            async with http.get(bridge.root + "/health") as resp:
                assert resp.status == 200

        restarted = tmp_path / "kamailio-again"  # the same core back on the same ports
        restarted.mkdir()
        proc = subprocess.run(
            [str(TESTBED / "start.sh"), str(restarted)],
            env={**os.environ, **tb.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        await wait_ready(bridge.root, 200)
        m, _ = await scrape(bridge.root)
        assert m("chat_bridge_ims_core_reachable") == 1
        log = bridge.log.read_text()
        assert "unreachable" in log and "answers OPTIONS" in log
    finally:
        bridge.stop()
        if restarted is not None:
            subprocess.run(
                [str(TESTBED / "stop.sh"), str(restarted)], capture_output=True, timeout=30
            )
        stop_testbed(tb)
