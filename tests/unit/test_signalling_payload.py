"""bridge.signalling.payload: SDP roles, INVITE bodies, CPIM out, decoding in.

The rules: docs/protocol-mapping.md "SDP and MSRP", "CPIM, IMDN and isComposing bodies".
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from bridge.chat.model import Composing, ComposingState, Disposition, ReportKind
from bridge.chat.ports import IncomingMessage, OutgoingMessage, OutgoingReport
from bridge.ids import MessageId, UserUri
from bridge.signalling import payload
from sip import cpim, imdn, multipart, rcs, sdp
from sip.errors import CodecError

A = UserUri("tel:+15555550001")
B = UserUri("tel:+15555550002")
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
PATH = "msrp://127.0.0.1:4000/abc;tcp"


def media(setup: str | None) -> sdp.MSRPMedia:
    return sdp.MSRPMedia(
        address="127.0.0.1",
        port=9,
        tls=False,
        path=(PATH,),
        accept_types=("message/cpim",),
        setup=None if setup is None else sdp.Setup(setup),
    )


def test_offer_is_actpass_with_our_path_and_types() -> None:
    desc = sdp.parse(payload.offer("127.0.0.1", 4000, PATH))
    m = sdp.msrp_media(desc)
    assert m.setup is sdp.Setup.ACTPASS and m.path == (PATH,) and m.port == 4000
    assert m.accepts("message/cpim") and m.accepts("application/im-iscomposing+xml")
    assert m.accepts("message/imdn+xml", wrapped=True)
    assert b"a=connection" not in payload.offer("127.0.0.1", 4000, PATH)


@pytest.mark.parametrize(("setup", "active"), [("active", False), ("passive", True), (None, True)])
def test_offerer_role(setup: str | None, active: bool) -> None:
    assert sdp.offerer_active(media(setup)) is active


def test_offerer_role_refuses_actpass_answer() -> None:
    with pytest.raises(CodecError):
        sdp.offerer_active(media("actpass"))


@pytest.mark.parametrize(
    ("setup", "active"), [("actpass", True), ("passive", True), ("active", False), (None, False)]
)
def test_answer_role(setup: str | None, active: bool) -> None:
    assert sdp.answerer_active(media(setup)) is active


def test_answer_to_actpass_is_active_on_port_9() -> None:
    offer = sdp.parse(payload.offer("127.0.0.1", 4000, PATH))
    answer = sdp.msrp_media(
        sdp.parse(payload.answer(offer, "127.0.0.1", 5000, "msrp://127.0.0.1:5000/x;tcp"))
    )
    assert answer.setup is sdp.Setup.ACTIVE and answer.port == sdp.DISCARD_PORT


def outgoing(**kw: object) -> OutgoingMessage:
    values: dict[str, object] = {
        "message_id": MessageId("m1"),
        "user": A,
        "peer": B,
        "text": "héllo",
        "date_time": NOW,
        "dispositions": frozenset({Disposition.DISPLAY, Disposition.POSITIVE_DELIVERY}),
    }
    values.update(kw)
    return OutgoingMessage(**values)  # type: ignore[arg-type]


def test_invite_body_multipart_round_trip() -> None:
    first = payload.chat_message(rcs.Profile.CPM, outgoing())
    body, ctype = payload.invite_body(payload.offer("127.0.0.1", 4000, PATH), first)
    assert ctype.startswith("multipart/mixed;boundary=")
    parsed = payload.split_invite_body(body, ctype)
    assert parsed.first == first and parsed.media.path == (PATH,)
    sdp_only, sdp_type = payload.invite_body(payload.offer("127.0.0.1", 4000, PATH), None)
    assert sdp_type == "application/sdp"
    assert payload.split_invite_body(sdp_only, sdp_type).first is None


def test_split_invite_body_errors() -> None:
    with pytest.raises(CodecError, match="no body"):
        payload.split_invite_body(b"", None)
    with pytest.raises(payload.UnsupportedContent):
        payload.split_invite_body(b"hi", "text/plain")
    only_cpim = multipart.Multipart("b1", (multipart.Part.build("message/cpim", b"x"),))
    with pytest.raises(CodecError, match="without application/sdp"):
        payload.split_invite_body(multipart.serialize(only_cpim), only_cpim.content_type)


def test_chat_message_per_profile() -> None:
    cpm = cpim.parse(payload.chat_message(rcs.Profile.CPM, outgoing()))
    assert cpm.sender == cpim.NameAddr(A) and cpm.to == (cpim.NameAddr(B),)
    assert cpm.message_id == "m1" and cpm.datetime == NOW
    assert cpm.disposition_notification == (
        cpim.Disposition.POSITIVE_DELIVERY,
        cpim.Disposition.DISPLAY,
    )
    assert cpm.body == "héllo".encode() and cpm.content_type == "text/plain;charset=UTF-8"
    simple = cpim.parse(payload.chat_message(rcs.Profile.SIMPLE_IM, outgoing()))
    assert simple.sender == cpim.ANONYMOUS and simple.to == (cpim.ANONYMOUS,)
    none = cpim.parse(payload.chat_message(rcs.Profile.CPM, outgoing(dispositions=frozenset())))
    assert none.disposition_notification == ()


@pytest.mark.parametrize(
    ("kind", "element", "status"),
    [
        (ReportKind.DELIVERED, imdn.NotificationType.DELIVERY, imdn.Status.DELIVERED),
        (ReportKind.DISPLAYED, imdn.NotificationType.DISPLAY, imdn.Status.DISPLAYED),
        (ReportKind.FAILED, imdn.NotificationType.DELIVERY, imdn.Status.FAILED),
    ],
)
def test_report_round_trip(
    kind: ReportKind, element: imdn.NotificationType, status: imdn.Status
) -> None:
    out = OutgoingReport(MessageId("m1"), B, A, kind, NOW)
    body = payload.report(rcs.Profile.CPM, out, NOW)
    envelope = cpim.parse(body)
    assert envelope.is_imdn and envelope.content_disposition == "notification"
    assert envelope.message_id != "m1" and not envelope.disposition_notification
    doc = imdn.parse(envelope.body)
    assert (doc.message_id, doc.notification, doc.status) == ("m1", element, status)
    decoded = payload.decode("message/cpim", body, sender=B, fallback_id="x")
    assert decoded == payload.ReceivedReport(MessageId("m1"), kind)


def test_decode_chat_message() -> None:
    body = payload.chat_message(rcs.Profile.SIMPLE_IM, outgoing())
    got = payload.decode("message/cpim", body, sender=A, fallback_id="x")
    assert isinstance(got, IncomingMessage)
    assert got.sender == A and got.text == "héllo" and got.message_id == "m1"
    assert got.dispositions == {Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY}
    assert got.date_time == NOW


def test_decode_without_imdn_id_uses_the_fallback_and_base64() -> None:
    raw = (
        b"From: <tel:+15555550001>\r\nTo: <tel:+15555550002>\r\n\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode("中文".encode())
    )
    got = payload.decode("message/cpim", raw, sender=A, fallback_id="msrp-1")
    assert isinstance(got, IncomingMessage)
    assert got.message_id == "msrp-1" and got.text == "中文" and got.dispositions == frozenset()


def test_decode_bare_bodies() -> None:
    text = payload.decode("text/plain; charset=utf-8", b"plain", sender=A, fallback_id="f")
    assert isinstance(text, IncomingMessage) and text.text == "plain" and text.message_id == "f"
    typing = payload.composing(Composing(ComposingState.ACTIVE, refresh=90))
    got = payload.decode("application/im-iscomposing+xml", typing, sender=A, fallback_id="f")
    assert got == Composing(ComposingState.ACTIVE, None, None, 90)
    wrapped = payload.wrapped_composing(rcs.Profile.CPM, A, B, typing, NOW)
    assert payload.decode("message/cpim", wrapped, sender=A, fallback_id="f") == got


@pytest.mark.parametrize(
    ("ctype", "body", "error"),
    [
        ("image/png", b"x", payload.UnsupportedContent),
        (None, b"x", payload.UnsupportedContent),
        ("text/plain;charset=nope", b"x", CodecError),
        ("text/plain", b"\xff\xfe", CodecError),
        ("application/im-iscomposing+xml", b"<nope/>", CodecError),
        ("message/cpim", b"garbage without blocks", CodecError),
    ],
)
def test_decode_errors(ctype: str | None, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        payload.decode(ctype, body, sender=A, fallback_id="f")


def test_decode_unsupported_cpim_payload() -> None:
    raw = b"From: <tel:+1>\r\n\r\nContent-Type: image/png\r\n\r\nPNG"
    with pytest.raises(payload.UnsupportedContent):
        payload.decode("message/cpim", raw, sender=A, fallback_id="f")
