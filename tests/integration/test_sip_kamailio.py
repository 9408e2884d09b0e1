"""Our SIP stack against SIPp through the Kamailio test bed, over UDP and TCP.

Our stack is the application server on ``as_port`` (users +1555555xxxx) and uses Kamailio as
outbound proxy; SIPp plays the other party: on ``peer_port`` (Kamailio's default peer for
other users) when we are the UAC, or as UAC toward an AS user when we are the UAS. The
scenarios are in tests/sipp (named by role). Kamailio reaches the SIPp peer over UDP; our
own leg is UDP or TCP (the ``kamailio_tcp`` test bed reaches the AS over TCP).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sip import cpim, imdn, multipart, resource_lists, sdp, sipfrag
from sip.message import Request, Response
from sip.stack import SipStack
from sip.subscription import SubscriberState
from sip.usage import (
    IncomingInvite,
    IncomingRefer,
    IncomingRequest,
    IncomingSubscribe,
    InviteSession,
)
from tests.sipp import runner
from tests.testbed_fixture import Testbed

pytestmark = pytest.mark.integration

ME = "sip:+15555550011@ims.test"  # an AS user: the bridge acts for it
PEER = "sip:bob@ims.test"  # routed by Kamailio to the default peer (SIPp)
CONF_FACTORY = "sip:conference-factory@ims.test"


@pytest.fixture(params=["udp", "tcp"])
def bed(request: pytest.FixtureRequest) -> tuple[Testbed, str]:
    name = "kamailio" if request.param == "udp" else "kamailio_tcp"
    return request.getfixturevalue(name), request.param


@pytest.fixture
async def stack(bed: tuple[Testbed, str]) -> AsyncIterator[SipStack]:
    tb, transport = bed
    proxy = f"sip:127.0.0.1:{tb.sip_port}" + (";transport=tcp" if transport == "tcp" else "")
    s = SipStack(port=tb.as_port, transports=["udp", "tcp"], outbound_proxy=proxy)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def fail(what: str, result: runner.SippResult, tb: Testbed) -> str:
    return f"{what}\n{result.explain()}\n--- kamailio ---\n{tb.log_tail(20)}"


async def peer(tb: Testbed, tmp: Path, scenario: str, *args: str, port: int | None = None):
    """Starts a SIPp UAS as the other party (UDP: that is how Kamailio reaches it)."""
    local = port or tb.peer_port
    cmd = runner.command(scenario, *args, local_port=local, transport="udp")
    proc = await runner.start(cmd, tmp / scenario)
    await runner.ready(local)
    return proc


async def caller(tb: Testbed, tmp: Path, transport: str, scenario: str, *args: str):
    """Starts a SIPp UAC toward an AS user through Kamailio."""
    cmd = runner.command(
        scenario,
        f"127.0.0.1:{tb.sip_port}",
        "-s",
        "+15555550011",
        "-key",
        "from",
        "peer0099",
        *args,
        local_port=tb.uac_port(1),
        transport=transport,
    )
    return await runner.start(cmd, tmp / scenario)


def offer() -> bytes:
    return sdp.serialize(
        sdp.msrp_offer(
            address="127.0.0.1",
            port=12000,
            path=("msrp://127.0.0.1:12000/s1;tcp",),
            accept_types=("message/cpim", "application/im-iscomposing+xml"),
            accept_wrapped_types=("text/plain", "message/imdn+xml"),
            session_id="1",
        )
    )


def answer_for(body: bytes) -> bytes:
    return sdp.serialize(
        sdp.msrp_answer(
            sdp.parse(body),
            address="127.0.0.1",
            port=12001,
            path=("msrp://127.0.0.1:12001/s2;tcp",),
            accept_types=("message/cpim",),
            accept_wrapped_types=("text/plain", "message/imdn+xml"),
            session_id="2",
            prefer_active=False,
        )
    )


def chat_body(text: str, message_id: str) -> bytes:
    msg = cpim.build_chat_message(
        sender=cpim.NameAddr(ME),
        recipient=cpim.NameAddr(PEER),
        message_id=message_id,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        body=text.encode(),
    )
    return cpim.serialize(msg)


# -- our stack as UAC ----------------------------------------------------------------------


async def test_uac_invite_msrp_bye(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(tb, tmp_path, "uas-invite-msrp.xml", "-key", "msrp_port", "12002")
    try:
        progress: list[int] = []
        call = stack.invite(
            PEER, sender=ME, body=offer(), on_provisional=lambda r: progress.append(r.status)
        )
        resp = await asyncio.wait_for(call.response(), 10)
        assert resp.status == 200, resp
        assert progress and all(100 <= s < 200 for s in progress)  # 180 may trail the 200
        media = sdp.msrp_media(sdp.parse(resp.body))
        assert media.setup is sdp.Setup.PASSIVE and media.path[0].startswith("msrp://")
        session = call.session
        assert session is not None and session.dialog.route_set  # Kamailio record-routed
        bye = await session.bye()
        assert bye is not None and bye.status == 200
    finally:
        result = await uas.wait()
    assert result.ok, fail("uas-invite-msrp", result, tb)


async def test_uac_remote_bye(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(
        tb, tmp_path, "uas-invite-msrp-bye.xml", "-key", "msrp_port", "12002", "-d", "200"
    )
    call = stack.invite(PEER, sender=ME, body=offer())
    assert (await asyncio.wait_for(call.response(), 10)).status == 200
    assert call.session is not None
    await asyncio.wait_for(call.session.ended.wait(), 10)
    assert call.session.end_reason == "remote BYE"
    result = await uas.wait()
    assert result.ok, fail("uas-invite-msrp-bye", result, tb)


async def test_uac_cancel(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(tb, tmp_path, "uas-invite-ringing.xml")
    ringing = asyncio.Event()

    def on_provisional(resp: Response) -> None:
        if resp.status == 180:
            ringing.set()

    call = stack.invite(PEER, sender=ME, body=offer(), on_provisional=on_provisional)
    await asyncio.wait_for(ringing.wait(), 10)
    await call.cancel()
    resp = await asyncio.wait_for(call.response(), 10)
    assert resp.status == 487
    result = await uas.wait()
    assert result.ok, fail("uas-invite-ringing", result, tb)


async def test_uac_acks_each_2xx_retransmission(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(tb, tmp_path, "uas-invite-200-retrans.xml", "-key", "msrp_port", "12002")
    call = stack.invite(PEER, sender=ME, body=offer())
    assert (await asyncio.wait_for(call.response(), 10)).status == 200
    await asyncio.sleep(0.3)  # the second 200 arrives and is ACKed again
    assert call.session is not None
    await call.session.bye()
    result = await uas.wait()
    assert result.ok, fail("uas-invite-200-retrans", result, tb)


async def test_uac_in_dialog_requests(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(tb, tmp_path, "uas-invite-indialog.xml", "-key", "msrp_port", "12002")
    try:
        call = stack.invite(PEER, sender=ME, body=offer())
        assert (await asyncio.wait_for(call.response(), 10)).status == 200
        session = call.session
        assert session is not None
        cseqs = [session.dialog.local_cseq]
        assert (
            await session.request("INFO", body=b"{}", content_type="application/json")
        ).status == 200
        msg = await session.request(
            "MESSAGE", body=chat_body("in dialog", "d1"), content_type=cpim.CONTENT_TYPE
        )
        assert msg.status == 200
        assert (await session.request("UPDATE")).status == 200
        refer = await session.refer("sip:+15555550014@ims.test")
        assert refer.status == 202
        assert (await session.reinvite()).status == 200
        cseqs.append(session.dialog.local_cseq)
        assert cseqs[1] == cseqs[0] + 5  # one CSeq per request, in order
        assert (await session.bye()) is not None
    finally:
        result = await uas.wait()
    assert result.ok, fail("uas-invite-indialog", result, tb)


async def test_uac_group_invite_and_notify_in_dialog(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    focus = await peer(
        tb, tmp_path, "uas-conf-focus.xml", "-key", "msrp_port", "12003", port=tb.conf_port
    )
    try:
        rl = resource_lists.serialize(
            resource_lists.build_recipient_list(["sip:+15555550013@ims.test", PEER])
        )
        body = multipart.Multipart(
            "boundary1",
            (
                multipart.Part.build(sdp.CONTENT_TYPE, offer()),
                multipart.Part.build(
                    "application/resource-lists+xml", rl, disposition="recipient-list"
                ),
            ),
        )
        notifies: list[Request] = []
        got_notify = asyncio.Event()

        def on_notify(req: IncomingRequest) -> None:
            notifies.append(req.request)
            req.respond(200)
            got_notify.set()

        call = stack.invite(
            CONF_FACTORY,
            sender=ME,
            body=multipart.serialize(body),
            content_type=body.content_type,
            headers=[("Require", "recipient-list-invite"), ("Subject", "group")],
            handlers={"NOTIFY": on_notify},
        )
        resp = await asyncio.wait_for(call.response(), 10)
        assert resp.status == 200
        assert resp.contacts[0].params.has("isfocus")
        session = call.session
        assert session is not None
        await asyncio.wait_for(got_notify.wait(), 10)
        assert notifies[0].get("Event") == "conference"
        assert b"conference-info" in notifies[0].body
        await asyncio.sleep(0.2)  # Kamailio may reorder our 200 and BYE; sipp cannot cope
        await session.bye()
    finally:
        result = await focus.wait()
    assert result.ok, fail("uas-conf-focus", result, tb)


async def test_uac_message_cpim_and_imdn(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    uas = await peer(tb, tmp_path, "uas-message.xml")
    try:
        resp = await stack.send_request(
            "MESSAGE",
            PEER,
            sender=ME,
            body=chat_body("hello", "m1"),
            content_type=cpim.CONTENT_TYPE,
        )
        assert resp.status == 200
    finally:
        result = await uas.wait()
    assert result.ok, fail("uas-message", result, tb)

    uas = await peer(tb, tmp_path / "imdn", "uas-message-imdn.xml")
    try:
        report = imdn.serialize(
            imdn.build_imdn(
                message_id="m1",
                original_datetime=datetime(2026, 1, 1, tzinfo=UTC),
                notification=imdn.NotificationType.DELIVERY,
                status=imdn.Status.DELIVERED,
            )
        )
        env = cpim.build_imdn_message(
            sender=cpim.NameAddr(ME),
            recipient=cpim.NameAddr(PEER),
            message_id="n1",
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            imdn_xml=report,
        )
        resp = await stack.send_request(
            "MESSAGE", PEER, sender=ME, body=cpim.serialize(env), content_type=cpim.CONTENT_TYPE
        )
        assert resp.status == 200
    finally:
        result = await uas.wait()
    assert result.ok, fail("uas-message-imdn", result, tb)


async def test_uac_subscribe_refresh_unsubscribe(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    port = tb.uac_port(15)
    notifier = await peer(
        tb, tmp_path, "uas-subscribe-conference.xml", "-key", "expires", "3", port=port
    )
    try:
        notes: list[Request] = []
        sub = await stack.subscribe(
            f"sip:conf-1@127.0.0.1:{port}",
            "conference",
            sender=ME,
            accept="application/conference-info+xml",
            expires=600,
            on_notify=notes.append,
        )
        await sub.wait_notify(10)
        assert sub.state is SubscriberState.ACTIVE
        assert sub.expires == 3
        # the refresh goes out before the 3 s expire; the notifier answers with NOTIFY v2
        for _ in range(100):
            if len(notes) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(notes) >= 2 and b'version="2"' in notes[1].body
        await sub.unsubscribe()
        assert sub.state.value == "terminated"
        assert (notes[-1].get("Subscription-State") or "").startswith("terminated")
    finally:
        result = await notifier.wait()
    assert result.ok, fail("uas-subscribe-conference", result, tb)


async def test_uac_refer_with_sipfrag(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, _ = bed
    port = tb.uac_port(15)
    uas = await peer(tb, tmp_path, "uas-refer.xml", port=port)
    try:
        notes: list[Request] = []
        sub = await stack.refer(
            f"sip:conf-1@127.0.0.1:{port}",
            "sip:+15555550014@ims.test",
            sender=ME,
            on_notify=notes.append,
        )
        assert sub is not None
        await asyncio.wait_for(sub.terminated.wait(), 10)
        assert [sipfrag.parse(n.body).status for n in notes] == [100, 200]
    finally:
        result = await uas.wait()
    assert result.ok, fail("uas-refer", result, tb)


# -- our stack as UAS ----------------------------------------------------------------------


async def test_uas_invite_msrp_remote_bye(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    sessions: list[InviteSession] = []

    async def on_invite(inv: IncomingInvite) -> None:
        assert inv.request.get("P-Asserted-Identity") is None or True
        inv.ring()
        sessions.append(await inv.accept(answer_for(inv.request.body)))

    stack.on_request("INVITE", on_invite)
    uac = await caller(
        tb, tmp_path, transport, "uac-invite-msrp.xml", "-key", "msrp_port", "12004", "-d", "100"
    )
    result = await uac.wait()
    assert result.ok, fail("uac-invite-msrp", result, tb)
    assert sessions and sessions[0].confirmed.is_set()
    await asyncio.wait_for(sessions[0].ended.wait(), 5)
    assert sessions[0].end_reason == "remote BYE"
    assert stack.dialog_count() == 0


async def test_uas_invite_local_bye(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    done = asyncio.Event()

    async def on_invite(inv: IncomingInvite) -> None:
        session = await inv.accept(answer_for(inv.request.body))
        await asyncio.wait_for(session.confirmed.wait(), 5)
        resp = await session.bye()
        assert resp is not None and resp.status == 200
        done.set()

    stack.on_request("INVITE", on_invite)
    uac = await caller(
        tb, tmp_path, transport, "uac-invite-wait-bye.xml", "-key", "msrp_port", "12004"
    )
    result = await uac.wait()
    assert result.ok, fail("uac-invite-wait-bye", result, tb)
    await asyncio.wait_for(done.wait(), 5)


async def test_uas_cancel(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    invites: list[IncomingInvite] = []

    def on_invite(inv: IncomingInvite) -> None:
        inv.ring()
        invites.append(inv)  # the application would now ask the user

    stack.on_request("INVITE", on_invite)
    uac = await caller(
        tb, tmp_path, transport, "uac-invite-cancel.xml", "-key", "msrp_port", "12004"
    )
    result = await uac.wait()
    assert result.ok, fail("uac-invite-cancel", result, tb)
    assert invites[0].cancelled.is_set()


@pytest.mark.parametrize("bed", ["udp"], indirect=True)  # sipp over TCP takes no copies
async def test_uas_retransmits_2xx_until_late_ack(
    bed, stack: SipStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tb, transport = bed
    sessions: list[InviteSession] = []

    async def on_invite(inv: IncomingInvite) -> None:
        sessions.append(await inv.accept(answer_for(inv.request.body)))

    stack.on_request("INVITE", on_invite)
    caplog.set_level(logging.DEBUG, logger="bridge.trace.sip")
    uac = await caller(
        tb, tmp_path, transport, "uac-invite-late-ack.xml", "-key", "msrp_port", "12004"
    )
    result = await uac.wait()
    assert result.ok, fail("uac-invite-late-ack", result, tb)
    sent_200 = [
        r
        for r in caplog.records
        if r.name == "bridge.trace.sip"
        and r.getMessage().startswith(">")
        and "SIP/2.0 200 OK" in r.getMessage()
        and "INVITE\r\n" in r.getMessage()
    ]
    assert len(sent_200) >= 2  # first 200 at 0 s, then T1 = 0.5 s, 1.0 s later ... before the ACK
    assert sessions[0].confirmed.is_set()


async def test_uas_message_cpim_and_imdn(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    received: list[cpim.CPIMMessage] = []

    def on_message(req: IncomingRequest) -> None:
        assert req.request.content_type == cpim.CONTENT_TYPE
        received.append(cpim.parse(req.request.body))
        req.respond(200)

    stack.on_request("MESSAGE", on_message)
    uac = await caller(tb, tmp_path, transport, "uac-message-cpim.xml")
    result = await uac.wait()
    assert result.ok, fail("uac-message-cpim", result, tb)
    assert received[0].message_id and received[0].body.startswith(b"hello")
    assert cpim.Disposition.DISPLAY in received[0].requested_dispositions()

    uac = await caller(
        tb, tmp_path / "imdn", transport, "uac-message-imdn.xml", "-key", "msgid", "m77"
    )
    result = await uac.wait()
    assert result.ok, fail("uac-message-imdn", result, tb)
    assert received[1].is_imdn
    report = imdn.parse(received[1].body)
    assert report.message_id == "m77" and report.status is imdn.Status.DELIVERED


async def test_uas_conference_notifier(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    ended = asyncio.Event()

    async def on_subscribe(req: IncomingSubscribe) -> None:
        assert req.event == "conference"
        sub = req.accept()
        sub.on_unsubscribe = ended.set
        await asyncio.sleep(0.1)  # sipp needs the 200 before the NOTIFY (RFC 6665 does not)
        info = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<conference-info xmlns="urn:ietf:params:'
            b'xml:ns:conference-info" entity="sip:conf@ims.test" state="full" version="1"/>\n'
        )
        await sub.notify(info, "application/conference-info+xml")

    stack.on_request("SUBSCRIBE", on_subscribe)
    uac = await caller(tb, tmp_path, transport, "uac-subscribe-conference.xml", "-d", "200")
    result = await uac.wait()
    assert result.ok, fail("uac-subscribe-conference", result, tb)
    assert ended.is_set()
    await asyncio.sleep(0.2)
    assert stack.dialog_count() == 0


async def test_uas_refer_recipient(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    targets: list[str] = []

    async def on_refer(req: IncomingRefer) -> None:
        targets.append(req.refer_to)
        sub = req.accept()
        assert sub is not None
        await asyncio.sleep(0.1)  # sipp needs the 202 before the NOTIFY (RFC 3515 does not)
        await req.progress(sub, 100, "Trying")
        await req.progress(sub, 200, "OK")

    stack.on_request("REFER", on_refer)
    uac = await caller(tb, tmp_path, transport, "uac-refer.xml", "-key", "invitee", "+15555550014")
    result = await uac.wait()
    assert result.ok, fail("uac-refer", result, tb)
    assert targets and "+15555550014" in targets[0]


async def test_uas_options_through_proxy(bed, stack: SipStack, tmp_path: Path) -> None:
    tb, transport = bed
    cmd = runner.command(
        "uac-options.xml",
        f"127.0.0.1:{tb.sip_port}",
        "-s",
        "+15555550011",
        local_port=tb.uac_port(1),
        transport=transport,
    )
    result = await (await runner.start(cmd, tmp_path)).wait()
    assert result.ok, fail("uac-options", result, tb)


# -- loss and timeout (SIPp directly against our stack: a proxy would retransmit itself) --------


async def test_lost_message_is_retransmitted(tmp_path: Path, kamailio: Testbed) -> None:
    from sip.timers import Timers
    from tests.peers.udp_relay import LossyRelay

    port = kamailio.uac_port(16)
    uas = await peer(kamailio, tmp_path, "uas-message.xml", port=port)
    relay = LossyRelay(("127.0.0.1", port), drop={0})  # the first MESSAGE is lost
    relay_port = await relay.start()
    stack = SipStack(port=0, transports=["udp"], timers=Timers(t1=0.1))
    await stack.start()
    try:
        resp = await stack.send_request(
            "MESSAGE",
            f"sip:bob@127.0.0.1:{relay_port}",
            sender=ME,
            body=chat_body("again", "m2"),
            content_type=cpim.CONTENT_TYPE,
        )
        assert resp.status == 200
        assert len(relay.dropped) == 1 and relay.forwarded  # timer E sent it again
        assert relay.forwarded[0] == relay.dropped[0]  # same transaction, same bytes
    finally:
        await stack.stop()
        relay.close()
        result = await uas.wait()
    assert result.ok, fail("uas-message", result, kamailio)


async def test_unanswered_message_times_out_408(tmp_path: Path, kamailio: Testbed) -> None:
    from sip.errors import TransactionTimeout
    from sip.timers import Timers

    port = kamailio.uac_port(17)
    uas = await peer(kamailio, tmp_path, "uas-message-silent.xml", port=port)
    stack = SipStack(port=0, transports=["udp"], timers=Timers(t1=0.05, t2=0.4))
    await stack.start()
    try:
        with pytest.raises(TransactionTimeout) as info:
            await stack.send_request(
                "MESSAGE",
                f"sip:bob@127.0.0.1:{port}",
                sender=ME,
                body=b"x",
                content_type="text/plain",
            )
        assert info.value.status == 408
    finally:
        await stack.stop()
        result = await uas.wait()
    assert result.ok, fail("uas-message-silent", result, kamailio)


async def test_lost_invite_is_retransmitted(tmp_path: Path, kamailio: Testbed) -> None:
    from sip.timers import Timers
    from tests.peers.udp_relay import LossyRelay

    port = kamailio.uac_port(18)
    uas = await peer(
        kamailio, tmp_path, "uas-invite-msrp.xml", "-key", "msrp_port", "12002", port=port
    )
    relay = LossyRelay(("127.0.0.1", port), drop={0})  # the first INVITE is lost (timer A)
    relay_port = await relay.start()
    stack = SipStack(port=0, transports=["udp"], timers=Timers(t1=0.1))
    await stack.start()
    try:
        call = stack.invite(f"sip:bob@127.0.0.1:{relay_port}", sender=ME, body=offer())
        resp = await asyncio.wait_for(call.response(), 10)
        assert resp.status == 200
        assert relay.dropped[0].startswith(b"INVITE ")
        assert relay.forwarded[0] == relay.dropped[0]  # the retransmission, byte for byte
        assert call.session is not None
        await call.session.bye()
    finally:
        await stack.stop()
        relay.close()
        result = await uas.wait()
    assert result.ok, fail("uas-invite-msrp", result, kamailio)
