"""BYE after a restart: a fresh SIP stack ends a dialog from the stored ``DialogIds`` alone.

One bridge connects A to B over real SIP and MSRP on loopback (the embedded
default), so it holds both ends of one dialog. A second, freshly started
signalling side (the restarted process: new stack, nothing in memory) is given
only the ``DialogIds`` the chat store would have kept, and sends the BYE; the
first bridge's stack must accept it as an in-dialog request (tags, CSeq order,
Request-URI) and end the leg.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from bridge.chat.model import DialogIds
from bridge.chat.ports import IncomingInvitation, SessionAccepted, SessionEnded, SignallingError
from bridge.config import Settings
from bridge.signalling.adapter import STALE_CSEQ_STEP, stale_dialog
from bridge.signalling.wiring import SignallingSide, start_signalling
from sip.dialog import DialogError, DialogId, DialogState
from tests.unit.test_signalling import Sink, connect


@pytest.fixture
async def side() -> AsyncIterator[tuple[SignallingSide, Sink]]:
    settings = Settings(sip_port=0, sip_transports=["tcp"], chat_invite_timeout=5.0)
    running = await start_signalling(settings)
    sink = Sink()
    sink.port = running
    running.signalling.bind(sink)
    try:
        yield running, sink
    finally:
        await running.close()


@pytest.fixture
async def fresh() -> AsyncIterator[SignallingSide]:
    settings = Settings(sip_port=0, sip_transports=["tcp"])
    running = await start_signalling(settings)
    running.signalling.bind(Sink())
    try:
        yield running
    finally:
        await running.close()


async def legs(side: SignallingSide, sink: Sink) -> tuple[SessionAccepted, SessionAccepted]:
    leg = await connect(side, sink)
    inv = sink.of(IncomingInvitation)[0]
    caller = await sink.wait_for(SessionAccepted, lambda e: e.leg == leg)
    callee = await sink.wait_for(SessionAccepted, lambda e: e.leg == inv.leg)
    return caller, callee


async def test_accepted_legs_report_the_full_dialog_state(side) -> None:
    running, sink = side
    caller, callee = await legs(running, sink)
    a, b = caller.ids, callee.ids
    assert a is not None and b is not None
    assert a.uac is True and b.uac is False
    assert a.can_bye and b.can_bye
    assert a.call_id == b.call_id
    assert (a.local_tag, a.remote_tag) == (b.remote_tag, b.local_tag)
    assert f"tag={a.local_tag}" in (a.local_uri or "") and f"tag={a.remote_tag}" in (
        a.remote_uri or ""
    )
    assert a.remote_target and a.remote_target.startswith("sip:")
    assert a.local_cseq == 1  # the INVITE's
    assert b.local_cseq is not None
    # the invitation already carried what the 200 creates (N1; RFC 3261 §12.1.1)
    inv = sink.of(IncomingInvitation)[0]
    assert inv.ids.uac is False and inv.ids.can_bye
    assert (inv.ids.remote_uri, inv.ids.remote_target) == (b.remote_uri, b.remote_target)
    assert inv.ids.local_tag == b.local_tag


@pytest.mark.parametrize("end", ["caller", "callee"])
async def test_fresh_stack_byes_either_side_of_the_dialog(side, fresh, end: str) -> None:
    running, sink = side
    caller, callee = await legs(running, sink)
    # the restarted process ends the dialog of ``end``: its peer is the other leg
    gone, other = (caller, callee) if end == "caller" else (callee, caller)
    assert gone.ids is not None
    status = await fresh.signalling.end_stale_dialog(gone.ids)
    assert status == 200
    ended = await sink.wait_for(SessionEnded, lambda e: e.leg == other.leg)
    assert ended.reason == "remote BYE"


async def test_unknown_dialog_is_481_and_no_answer_is_408(side, fresh) -> None:
    running, sink = side
    caller, _ = await legs(running, sink)
    assert caller.ids is not None
    wrong = replace(caller.ids, remote_tag="not-the-tag")
    assert await fresh.signalling.end_stale_dialog(wrong) == 481
    dead = replace(caller.ids, remote_target="sip:127.0.0.1:9;transport=tcp", route_set=())
    assert await fresh.signalling.end_stale_dialog(dead, timeout=2.0) in (408, 503)
    assert not sink.of(SessionEnded)


def test_stale_dialog_rebuilds_the_request() -> None:
    ids = DialogIds(
        call_id="c1@h",
        local_tag="lt",
        remote_tag="rt",
        local_uri="<tel:+15555550001>;tag=lt",
        remote_uri="<tel:+15555550002>;tag=rt",
        remote_target="sip:peer@192.0.2.7:5070;transport=tcp",
        route_set=("<sip:p1.ims.test;lr;ftag=lt>", "<sip:p2.ims.test;lr>"),
        local_cseq=7,
        uac=True,
    )
    dialog = stale_dialog(ids)
    assert dialog.id == DialogId("c1@h", "lt", "rt")
    assert dialog.state is DialogState.CONFIRMED and dialog.is_uac
    bye = dialog.create_request("BYE")
    assert bye.cseq.seq == 7 + STALE_CSEQ_STEP + 1
    assert str(bye.uri) == "sip:peer@192.0.2.7:5070;transport=tcp"
    assert bye.get_all("Route") == ["<sip:p1.ims.test;lr;ftag=lt>", "<sip:p2.ims.test;lr>"]
    assert bye.from_tag == "lt" and bye.to_tag == "rt" and bye.call_id == "c1@h"
    assert bye.get("Contact") is None


def test_stale_dialog_needs_complete_parseable_state() -> None:
    with pytest.raises(SignallingError):
        stale_dialog(DialogIds(call_id="c", local_tag="l"))
    broken = DialogIds(
        call_id="c",
        local_tag="l",
        remote_tag="r",
        local_uri="<tel:+1>;tag=l",
        remote_uri="<tel:+2>;tag=r",
        remote_target="not a uri <<",
    )
    with pytest.raises(SignallingError, match="Stored dialog unusable"):
        stale_dialog(broken)
    # CSeq stays a valid 32-bit number however high the stored one was
    ok = replace(broken, remote_target="sip:h", local_cseq=2**31 - 2)
    assert stale_dialog(ok).create_request("BYE").cseq.seq == 2**31 - 1


def test_dialog_restore_rejects_bad_routes() -> None:
    from sip.dialog import Dialog

    with pytest.raises(DialogError) as info:
        Dialog.restore(
            DialogId("c", "l", "r"),
            local="<sip:a@h>;tag=l",
            remote="<sip:b@h>;tag=r",
            remote_target="sip:b@h",
            route_set=("",),
            local_cseq=1,
            is_uac=False,
        )
    assert info.value.status == 400
