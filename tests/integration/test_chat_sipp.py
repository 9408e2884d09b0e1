"""The bridge against SIPp peers through Kamailio, with our own MSRP peer on the media leg.

* incoming: a SIPp UAC (an RCS client) invites a bridge user with an MSRP offer and a
  first message; the test's MSRP endpoint (``sip.msrp``) plays the client's media; the
  app accepts over REST, both sides chat, the SIPp peer hangs up (BYE);
* outgoing: a SIPp UAS declines (486, 603) or is unavailable (480); nobody answers
  (Kamailio's 408); the IMS core is dead (the invite timeout ends it);
* pager mode: a SIPp UAC sends a MESSAGE with CPIM.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sip import cpim
from sip.msrp import MSRPStack
from sip.msrp.events import MessageReceived
from sip.uri import parse_uri
from tests.chat_api import local, q
from tests.integration.test_chat_kamailio import A, B, Bridge, open_bridge
from tests.sipp import runner
from tests.testbed_fixture import Testbed, free_port_block
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

CALLER = "+15550000199"
"""A caller outside the bridge's range (Kamailio routes its user to the SIPp peer port)."""
OTHER = "tel:+15550000177"
"""A peer outside the bridge's range: Kamailio sends requests for it to the peer port."""


async def closing(b: Bridge, db: Any) -> None:
    await b.client.close()
    await b.side.close()
    await db.close()


async def imdn_peer(tb: Testbed, workdir: Path) -> runner.SippProcess:
    """A SIPp UAS on the peer port that takes the bridge's pager-mode IMDN to ``CALLER``.

    Kamailio routes ``CALLER`` to the default peer port. Without a peer there, Kamailio
    keeps retransmitting that MESSAGE for fr_timer (10 s) after the test ends, and the
    next test's SIPp on the peer port receives it as its first call.
    """
    sipp = await runner.start(
        runner.command("uas-message-imdn.xml", local_port=tb.peer_port), workdir
    )
    await runner.ready(tb.peer_port)
    return sipp


def logged(workdir: Path) -> str:
    """What a SIPp run logged (``-trace_logs``)."""
    return "".join(p.read_text(errors="replace") for p in workdir.glob("*_logs.log"))


async def answer_path(workdir: Path, wait: float = 10.0) -> str:
    """The a=path of the bridge's SDP answer, as the SIPp UAC logged it."""
    for _ in range(int(wait / 0.05)):
        for log in workdir.glob("*_logs.log"):
            found = re.search(r"answer a=path:(msrp://\S+)", log.read_text(errors="replace"))
            if found:
                return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no SDP answer logged in {workdir}")


async def test_incoming_invite_with_msrp_peer_and_peer_bye(
    tmp_path: Path, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any
) -> None:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    peer = MSRPStack("127.0.0.1", 0)
    await peer.start()
    sipp = None
    imdn = await imdn_peer(kamailio, tmp_path / "imdn")
    try:
        await b.subscribe(B)
        media = await peer.create_session(session_id="sippeer1", accept_types=("message/cpim",))
        workdir = tmp_path / "uac"
        sipp = await runner.start(
            runner.command(
                "uac-chat-invite.xml",
                f"127.0.0.1:{kamailio.sip_port}",
                "-s",
                B.removeprefix("tel:"),
                "-key",
                "from",
                CALLER,
                "-key",
                "msrp_port",
                str(peer.port),
                "-key",
                "msrp_session",
                "sippeer1",
                "-d",
                "5000",
                local_port=kamailio.uac_port(1),
            ),
            workdir,
        )
        (invite,) = await b.notes(B, "chatSessionInvitationNotification")
        assert invite["originatorAddress"] == "tel:" + CALLER
        assert invite["subject"] == "from sipp"
        (first,) = await b.notes(B, "chatMessageNotification")
        assert first["chatMessage"] == {"text": "first from sipp"}
        assert first["senderAddress"] == "tel:" + CALLER
        links = {link["rel"]: local(link["href"]) for link in invite["link"]}
        await b.call("PUT", links["ParticipantSessionStatus"], status=204)

        # the bridge answered active: it connected to our MSRP peer and bound the session
        await media.start(await answer_path(workdir), active=False, timeout=10)
        envelope = cpim.build_chat_message(
            sender=cpim.NameAddr("tel:" + CALLER),
            recipient=cpim.NameAddr(B),
            message_id="msrp-peer-1",
            timestamp=datetime.now(UTC),
            body=b"over MSRP",
        )
        await media.send("message/cpim", cpim.serialize(envelope))
        notes = await b.notes(B, "chatMessageNotification", 2)
        assert notes[1]["chatMessage"] == {"text": "over MSRP"}
        assert notes[1]["messageId"] == "msrp-peer-1"

        await b.call(
            "POST",
            links["ChatSessionInformation"] + "/messages",
            {"chatMessage": {"text": "reply to sipp"}},
            201,
        )
        texts: list[bytes] = []
        reports: list[bytes] = []
        while not texts:
            event = await media.receive(timeout=10)
            assert isinstance(event, MessageReceived)
            got = cpim.parse(event.body)
            (reports if got.is_imdn else texts).append(got.body)
        assert texts == [b"reply to sipp"]

        result = await sipp.wait()  # SIPp hangs up after -d 5000 ms
        assert result.ok, result.explain()
        events = await b.notes(B, "chatEventNotification")
        assert events[-1]["eventType"] == "SessionEnded"
        got_session = await b.call("GET", links["ChatSessionInformation"])
        assert got_session["chatSessionInformation"]["status"] == "Disconnected"
        # the first message asked for positive-delivery: the IMDN goes to the caller by pager
        result = await imdn.wait(10)  # sent with the notification: no 30 s sipp timeout
        assert result.ok, result.explain()
        assert f"delivered message-id={first['messageId']}" in logged(tmp_path / "imdn")
    finally:
        if sipp is not None:
            await sipp.stop()
        await imdn.stop()
        await peer.close()
        await closing(b, db)


@pytest.mark.parametrize(
    ("scenario", "event"),
    [
        ("uas-chat-busy.xml", "Declined"),  # 486
        ("uas-chat-decline.xml", "Declined"),  # 603
        ("uas-chat-unavailable.xml", "Failed"),  # 480
    ],
)
async def test_peer_refuses(
    tmp_path: Path,
    kamailio: Testbed,
    receiver: Receiver,
    aiohttp_client: Any,
    scenario: str,
    event: str,
) -> None:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    sipp = await runner.start(
        runner.command(scenario, local_port=kamailio.peer_port),
        tmp_path / "uas",
    )
    try:
        await runner.ready(kamailio.peer_port)
        await b.subscribe(A)
        await b.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(OTHER)}", {"chatSessionInformation": {}}, 201
        )
        (note,) = await b.notes(A, "chatEventNotification")
        assert note["eventType"] == event
        result = await sipp.wait()
        assert result.ok, result.explain()
        assert "offer a=setup:actpass a=path:msrp://127.0.0.1:" in logged(tmp_path / "uas")
    finally:
        await sipp.stop()
        await closing(b, db)


async def test_peer_unreachable_gives_failed(
    tmp_path: Path, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any
) -> None:
    # nobody listens on the peer port: Kamailio's fr_timer (10 s) answers 408
    b, db = await open_bridge(
        tmp_path, kamailio, receiver, aiohttp_client, chat_invite_timeout=20.0
    )
    try:
        await b.subscribe(A)
        await b.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(OTHER)}", {"chatSessionInformation": {}}, 201
        )
        for _ in range(3):
            try:
                (note,) = await b.notes(A, "chatEventNotification")
                break
            except AssertionError:
                continue
        assert note["eventType"] == "Failed"
        assert b.side.signalling.leg_count == 0
    finally:
        await closing(b, db)


async def test_dead_ims_core_fails_within_the_invite_timeout(
    tmp_path: Path, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any
) -> None:
    dead = free_port_block(2, start=30000)
    b, db = await open_bridge(
        tmp_path,
        kamailio,
        receiver,
        aiohttp_client,
        chat_invite_timeout=2.0,
    )
    b.side.sip.transport.outbound_proxy = parse_uri(f"sip:127.0.0.1:{dead}")  # type: ignore[assignment]
    b.side.sip.outbound_proxy = f"sip:127.0.0.1:{dead}"
    try:
        await b.subscribe(A)
        t0 = asyncio.get_running_loop().time()
        await b.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
        )
        (note,) = await b.notes(A, "chatEventNotification")
        assert note["eventType"] == "Failed"
        assert asyncio.get_running_loop().time() - t0 < 8.0
    finally:
        await closing(b, db)


async def test_incoming_pager_message_with_cpim(
    tmp_path: Path, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any
) -> None:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    sipp = None
    imdn = await imdn_peer(kamailio, tmp_path / "imdn")
    try:
        await b.subscribe(B, confirmedChatSupported=False, adhocChatSupported=True)
        sipp = await runner.start(
            runner.command(
                "uac-chat-message.xml",
                f"127.0.0.1:{kamailio.sip_port}",
                "-s",
                B.removeprefix("tel:"),
                "-key",
                "from",
                CALLER,
                local_port=kamailio.uac_port(2),
            ),
            tmp_path / "pager",
        )
        result = await sipp.wait()
        assert result.ok, result.explain()
        (note,) = await b.notes(B, "chatMessageNotification")
        assert note["sessionId"] == "adhoc"
        assert note["chatMessage"] == {"text": "pager-from-sipp"}
        assert note["senderAddress"] == "tel:" + CALLER
        assert note["messageId"].startswith("sipp-pager-")
        # it asked for positive-delivery: the IMDN goes back to the sender by pager
        result = await imdn.wait(10)  # sent with the notification: no 30 s sipp timeout
        assert result.ok, result.explain()
        assert f"delivered message-id={note['messageId']}" in logged(tmp_path / "imdn")
    finally:
        if sipp is not None:
            await sipp.stop()
        await imdn.stop()
        await closing(b, db)


async def test_adhoc_falls_back_to_pager_when_the_peer_refuses_msrp(
    tmp_path: Path, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any
) -> None:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    sipp = await runner.start(
        runner.command("uas-chat-pager-fallback.xml", local_port=kamailio.peer_port, calls=2),
        tmp_path / "uas",
    )
    try:
        await runner.ready(kamailio.peer_port)
        await b.subscribe(A)
        sent = await b.call(
            "POST",
            f"/chat/v1/{q(A)}/oneToOne/{q(OTHER)}/adhoc/messages",
            {"chatMessage": {"text": "by pager", "reportRequest": ["Sent"]}},
            201,
        )
        (status,) = await b.notes(A, "chatMessageStatusNotification")
        assert status["status"] == "Sent"
        got = await b.call("GET", local(sent["resourceReference"]["resourceURL"]))
        assert got["messageStatusReport"]["status"] == "Sent"
        result = await sipp.wait()
        assert result.ok, result.explain()
        uas_log = logged(tmp_path / "uas")
        message_id = sent["resourceReference"]["resourceURL"].split("/")[-2]
        assert f"imdn={message_id}" in uas_log and "oma.cpm.msg" in uas_log
        assert "INVITE" in uas_log
    finally:
        await sipp.stop()
        await closing(b, db)
