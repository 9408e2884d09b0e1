"""Dialog state (RFC 3261 §12): creation on both sides, route sets, CSeq, target refresh."""

from __future__ import annotations

import pytest

from sip.dialog import (
    TRANSITIONS,
    Dialog,
    DialogError,
    DialogEvent,
    DialogState,
    retransmit_intervals,
)
from sip.message import Request, Response, parse_message
from sip.timers import Timers

INVITE = (
    b"INVITE sip:bob@ims.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1\r\n"
    b"Record-Route: <sip:p2.ims.test;lr;ftag=x>\r\n"
    b"Record-Route: <sip:p1.ims.test;lr>\r\n"
    b"From: <sip:alice@ims.test>;tag=A\r\n"
    b"To: <sip:bob@ims.test>\r\n"
    b"Call-ID: c1@host\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1\r\n"
    b"Record-Route: <sip:p2.ims.test;lr;ftag=x>\r\n"
    b"Record-Route: <sip:p1.ims.test;lr>\r\n"
    b"From: <sip:alice@ims.test>;tag=A\r\n"
    b"To: <sip:bob@ims.test>;tag=B\r\n"
    b"Call-ID: c1@host\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:bob@10.0.0.2:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def resp(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def test_uac_dialog_route_set_is_reversed() -> None:
    d = Dialog.from_uac(req(INVITE), resp(OK), "<sip:alice@10.0.0.1:5070>")
    assert d.id.call_id == "c1@host" and d.id.local_tag == "A" and d.id.remote_tag == "B"
    assert d.state is DialogState.CONFIRMED
    assert d.route_set == ("<sip:p1.ims.test;lr>", "<sip:p2.ims.test;lr;ftag=x>")
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:bob@10.0.0.2:5060"  # remote target from the 2xx Contact
    assert bye.get_all("Route") == ["<sip:p1.ims.test;lr>", "<sip:p2.ims.test;lr;ftag=x>"]
    assert bye.cseq.seq == 8 and bye.cseq.method == "BYE"
    assert bye.to_tag == "B" and bye.from_tag == "A"
    assert bye.get("Contact") is None
    ack = d.create_ack(7)
    assert ack.cseq.seq == 7 and ack.method == "ACK" and d.local_cseq == 8


def test_uas_dialog_keeps_route_order_and_checks_cseq() -> None:
    d = Dialog.from_uas(req(INVITE), "B", "<sip:bob@10.0.0.2:5060>")
    assert d.state is DialogState.EARLY and not d.is_uac
    assert d.route_set == ("<sip:p2.ims.test;lr;ftag=x>", "<sip:p1.ims.test;lr>")
    assert str(d.remote_target) == "sip:alice@10.0.0.1:5070"
    info = d.create_request("INFO", body=b"x", content_type="text/plain")
    assert info.get("Contact") == "<sip:bob@10.0.0.2:5060>"
    assert info.to_tag == "A" and info.from_tag == "B"
    # an in-dialog request from the peer: CSeq must grow
    reinvite = req(
        INVITE.replace(b"To: <sip:bob@ims.test>", b"To: <sip:bob@ims.test>;tag=B")
        .replace(b"CSeq: 7", b"CSeq: 8")
        .replace(b"alice@10.0.0.1:5070>", b"alice@10.0.0.9:5070>")
    )
    d.receive_request(reinvite)
    assert str(d.remote_target) == "sip:alice@10.0.0.9:5070"  # target refresh
    with pytest.raises(DialogError) as info_err:
        d.receive_request(reinvite)
    assert info_err.value.status == 500


def test_strict_router_becomes_request_uri() -> None:
    strict = OK.replace(b"<sip:p1.ims.test;lr>", b"<sip:p1.ims.test>")
    d = Dialog.from_uac(req(INVITE), resp(strict), "<sip:a@h>")
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:p1.ims.test"
    assert bye.get_all("Route") == ["<sip:p2.ims.test;lr;ftag=x>", "<sip:bob@10.0.0.2:5060>"]


def test_no_tags_or_contact_is_rejected() -> None:
    with pytest.raises(DialogError):
        Dialog.from_uac(req(INVITE), resp(OK.replace(b";tag=B", b"")), "<sip:a@h>")
    with pytest.raises(DialogError):
        Dialog.from_uas(
            req(INVITE.replace(b"Contact: <sip:alice@10.0.0.1:5070>\r\n", b"")), "B", "x"
        )


def test_terminated_dialog_refuses_requests() -> None:
    d = Dialog.from_uac(req(INVITE), resp(OK), "<sip:a@h>")
    d.handle(DialogEvent.TERMINATE)
    with pytest.raises(DialogError) as info:
        d.create_request("INFO")
    assert info.value.status == 481


@pytest.mark.parametrize("state", list(DialogState))
@pytest.mark.parametrize("event", list(DialogEvent))
def test_every_state_event_pair(state: DialogState, event: DialogEvent) -> None:
    d = Dialog.from_uac(req(INVITE), resp(OK), "<sip:a@h>")
    d.state = state
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(DialogError):
            d.handle(event)
        assert d.state is state
    else:
        assert d.handle(event) is expected


def test_2xx_retransmission_schedule() -> None:
    assert retransmit_intervals(Timers()) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert sum(retransmit_intervals(Timers())) < 64 * 0.5
