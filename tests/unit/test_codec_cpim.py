"""CPIM (RFC 3862) with IMDN headers (RFC 5438 §6)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import cpim
from sip.cpim import ANONYMOUS, CPIMMessage, Disposition, NameAddr
from sip.errors import CodecError
from tests.strategies import mutated

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs" / "cpim"
UTC = timezone.utc


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


CANONICAL = sorted(p.name for p in FIXTURES.iterdir() if "canonical" in p.name)


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_samples_round_trip(name: str) -> None:
    data = load(name)
    assert cpim.serialize(cpim.parse(data)) == data


def test_rcsjta_chat() -> None:
    msg = cpim.parse(load("rcsjta_chat.cpim"))
    assert msg == CPIMMessage(
        content_type="text/plain; charset=utf-8",
        body=b"Hello world",
        sender=ANONYMOUS,
        to=(ANONYMOUS,),
        namespaces=(("imdn", cpim.IMDN_NAMESPACE),),
        message_id="Msg1h3Rx9kDNzgyN",
        datetime=datetime(2014, 9, 24, 10, 12, 33, 318000, tzinfo=UTC),
        disposition_notification=(Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY),
    )
    assert msg.media_type == "text/plain"
    assert not msg.is_imdn
    assert msg.requested_dispositions() == (Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY)
    # canonical form: canonical header spelling, same model
    out = cpim.serialize(msg)
    assert b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n\r\n" in out
    assert cpim.parse(out) == msg


def test_group_chat_sender_display_name() -> None:
    msg = cpim.parse(load("group_chat_canonical.cpim"))
    assert msg.sender == NameAddr("sip:+15551230001@ims.example.net;user=phone", "Alice Martin")
    assert msg.body.decode() == "Réunion à 15h ? 👍"


def test_imdn_envelope_has_no_disposition() -> None:
    msg = cpim.parse(load("imdn_delivered_canonical.cpim"))
    assert msg.is_imdn
    assert msg.content_disposition == "notification"
    assert msg.disposition_notification == ()
    assert msg.requested_dispositions() == ()
    assert b"<delivered/>" in msg.body


def test_rustrcs_base64_and_cpm_namespace() -> None:
    msg = cpim.parse(load("rustrcs_base64_canonical.cpim"))
    assert msg.body.decode() == "你好，世界"
    assert msg.content_transfer_encoding == "base64"
    assert msg.extra_headers == (("cpm.Payload-Type", "Application/X-CPM-Session"),)
    assert msg.datetime == datetime(2023, 11, 2, 0, 15, 30, tzinfo=UTC)
    assert msg.datetime is not None and msg.datetime.utcoffset() == timedelta(hours=8)
    assert msg.disposition_notification == (
        Disposition.POSITIVE_DELIVERY,
        Disposition.NEGATIVE_DELIVERY,
        Disposition.DISPLAY,
    )


def test_other_prefix_lf_and_trailing_bytes() -> None:
    msg = cpim.parse(load("other_prefix_lf.cpim"))
    assert msg.sender == NameAddr("sip:bob@example.org", "Bob")
    assert msg.to == (NameAddr("sip:alice@example.org"),)
    assert msg.cc == (NameAddr("sip:carol@example.org"),)
    assert msg.message_id == "abc-123"
    assert msg.disposition_notification == (Disposition.DISPLAY, Disposition.PROCESSING)
    assert msg.imdn_record_route == ("sip:as.example.org;lr",)
    assert msg.subject == "lunch"
    assert msg.require == ("Foo", "Bar")
    assert msg.datetime == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert msg.body == b"hello"
    out = cpim.serialize(msg)
    assert b"NS: rcs <urn:ietf:params:imdn>\r\nrcs.Message-ID: abc-123\r\n" in out
    assert b"rcs.IMDN-Record-Route: <sip:as.example.org;lr>\r\n" in out
    assert cpim.parse(out) == msg


def test_group_iscomposing_without_imdn() -> None:
    msg = cpim.parse(load("group_iscomposing_canonical.cpim"))
    assert msg.media_type == "application/im-iscomposing+xml"
    assert msg.message_id is None and msg.namespaces == ()
    assert msg.requested_dispositions() == ()


def test_build_iscomposing_message() -> None:
    original = cpim.parse(load("group_iscomposing_canonical.cpim"))
    msg = cpim.build_iscomposing_message(
        sender=NameAddr("sip:+15551230003@ims.example.net"),
        recipient=NameAddr("sip:chat-7f3a@conf.ims.example.net"),
        timestamp=datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC),
        iscomposing_xml=original.body,
    )
    assert cpim.serialize(msg) == load("group_iscomposing_canonical.cpim")


def test_stripped_disposition_header_policy() -> None:
    msg = CPIMMessage(content_type="text/plain", body=b"x", message_id="m1")
    assert msg.requested_dispositions() == (Disposition.POSITIVE_DELIVERY,)
    assert CPIMMessage(content_type=None).media_type is None


def test_imdn_namespace_added_when_missing() -> None:
    msg = CPIMMessage(content_type="text/plain", body=b"x", message_id="m1", imdn_route=("sip:r",))
    out = cpim.serialize(msg)
    assert out == (
        b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: m1\r\nimdn.IMDN-Route: <sip:r>\r\n"
        b"\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
    )
    assert cpim.parse(out).namespaces == (("imdn", cpim.IMDN_NAMESPACE),)


def test_unknown_prefix_and_duplicates_kept_as_extra() -> None:
    data = (
        b"From: <sip:a@x>\r\nfoo.Message-ID: 1\r\nSubject: one\r\nSubject: two\r\n"
        b"NS: <urn:default>\r\n\r\n"
        b"Content-Type: text/plain\r\nContent-Type: text/html\r\nX-Extra: y\r\n\r\nbody"
    )
    msg = cpim.parse(data)
    assert msg.message_id is None
    assert msg.subject == "one"
    assert msg.extra_headers == (("foo.Message-ID", "1"), ("Subject", "two"))
    assert msg.namespaces == (("", "urn:default"),)
    assert msg.content_type == "text/plain"
    assert msg.content_extra == (("Content-Type", "text/html"), ("X-Extra", "y"))
    assert msg.body == b"body"
    assert b"NS: <urn:default>\r\n" in cpim.serialize(msg)
    assert cpim.parse(cpim.serialize(msg)) == msg


def test_empty_message_headers() -> None:
    data = b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    msg = cpim.parse(data)
    assert msg == CPIMMessage(content_type="text/plain", body=b"hi")
    assert cpim.serialize(msg) == data


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:a@b>", NameAddr("sip:a@b")),
        ('"A \\"B\\"" <tel:+1>', NameAddr("tel:+1", 'A "B"')),
        ("Plain Name  <sip:x@y>", NameAddr("sip:x@y", "Plain Name")),
        ('"" <sip:x@y>', NameAddr("sip:x@y", "")),
        ("  tel:+15551230002 ", NameAddr("tel:+15551230002")),
    ],
)
def test_parse_name_addr(value: str, expected: NameAddr) -> None:
    assert cpim.parse_name_addr(value) == expected
    assert cpim.parse_name_addr(str(expected)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "cpim: invalid address ''"),
        ("a b", "cpim: invalid address 'a b'"),
        ("<>", "cpim: invalid address '<>'"),
        ("<a<b>", "cpim: invalid address '<a<b>'"),
    ],
)
def test_parse_name_addr_broken(value: str, message: str) -> None:
    with pytest.raises(CodecError) as info:
        cpim.parse_name_addr(value)
    assert str(info.value) == message


OK_HEAD = b"From: <sip:a@x>\r\n\r\n"
BROKEN = [
    (b"From: <sip:a@x>\r\n", "cpim: missing blank line after message headers"),
    (OK_HEAD + b"Content-Type: text/plain\r\n", "cpim: missing blank line after content headers"),
    (b"From <sip:a@x>\r\n\r\n\r\n", "cpim: malformed header line 1"),
    (b"To: <sip:b@x>\r\nBad Name: x\r\n\r\n\r\n", "cpim: malformed header line 2"),
    (b"To: \xff\r\n\r\n\r\n", "cpim: headers are not UTF-8"),
    (
        b"NS: imdn urn:ietf:params:imdn\r\n\r\n\r\n",
        "cpim: invalid NS header 'imdn urn:ietf:params:imdn'",
    ),
    (b"DateTime: yesterday\r\n\r\n\r\n", "cpim: DateTime: invalid date-time 'yesterday'"),
    (
        b"DateTime: 2024-02-30T10:00:00Z\r\n\r\n\r\n",
        "cpim: DateTime: invalid date-time '2024-02-30T10:00:00Z'",
    ),
    (
        b"DateTime: 2024-02-01T10:00:00+24:00\r\n\r\n\r\n",
        "cpim: DateTime: invalid date-time '2024-02-01T10:00:00+24:00'",
    ),
    (b"From: <>\r\n\r\n\r\n", "cpim: invalid address '<>'"),
    (OK_HEAD + b"Content-Length: ten\r\n\r\n", "cpim: invalid Content-Length 'ten'"),
    (
        OK_HEAD + b"Content-Length: 10\r\n\r\nshort",
        "cpim: body is shorter than Content-Length (5 < 10)",
    ),
    (OK_HEAD + b"Content-Transfer-Encoding: base64\r\n\r\n!!!", "cpim: invalid base64 body"),
    (OK_HEAD + b"Content-Type\r\n\r\n", "cpim: malformed header line 1"),
]


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        cpim.parse(data)
    assert str(info.value) == message


def test_serialize_rejects_header_injection() -> None:
    with pytest.raises(CodecError, match="^cpim: invalid header 'Subject'$"):
        cpim.serialize(CPIMMessage(content_type="text/plain", subject="a\r\nFrom: <x>"))
    with pytest.raises(CodecError, match="^cpim: invalid header 'a b'$"):
        cpim.serialize(CPIMMessage(content_type="text/plain", extra_headers=(("a b", "c"),)))


def test_build_chat_message_matches_mapping_section() -> None:
    msg = cpim.build_chat_message(
        sender=ANONYMOUS,
        recipient=ANONYMOUS,
        message_id="m-1",
        timestamp=datetime(2024, 5, 1, 10, 0, 0, 5000, tzinfo=UTC),
        body="héllo".encode(),
    )
    assert cpim.serialize(msg) == (
        b"From: <sip:anonymous@anonymous.invalid>\r\n"
        b"To: <sip:anonymous@anonymous.invalid>\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: m-1\r\n"
        b"DateTime: 2024-05-01T10:00:00.005Z\r\n"
        b"imdn.Disposition-Notification: positive-delivery, display\r\n"
        b"\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n"
        b"Content-Length: 6\r\n"
        b"\r\n" + "héllo".encode()
    )


def test_build_imdn_message() -> None:
    msg = cpim.build_imdn_message(
        sender=NameAddr("tel:+15551230002"),
        recipient=NameAddr("sip:+15551230001@ims.example.net;user=phone"),
        message_id="d1e5a9b0-77c3-4c1e-a0f2-6b9e3c4d2f81",
        timestamp=datetime(2024, 5, 1, 10, 0, 1, 2000, tzinfo=UTC),
        imdn_xml=cpim.parse(load("imdn_delivered_canonical.cpim")).body,
    )
    assert cpim.serialize(msg) == load("imdn_delivered_canonical.cpim")


def test_naive_datetime_rejected_on_serialize() -> None:
    with pytest.raises(CodecError, match="^date-time must be timezone-aware$"):
        cpim.serialize(CPIMMessage(content_type=None, datetime=datetime(2024, 1, 1)))


def test_datetime_offsets_and_fraction() -> None:
    data = b"DateTime: 2024-05-01T10:00:00.123456789-03:30\r\n\r\n\r\n"
    msg = cpim.parse(data)
    assert msg.datetime is not None
    assert msg.datetime.microsecond == 123456
    assert msg.datetime.utcoffset() == -timedelta(hours=3, minutes=30)
    assert b"DateTime: 2024-05-01T10:00:00.123-03:30\r\n" in cpim.serialize(msg)


# ------------------------------------------------------------------ hypothesis

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20
).filter(lambda s: s == s.strip() and "\x85" not in s)
URI = st.from_regex(r"(sip|tel):[A-Za-z0-9+@.;=_-]{1,20}", fullmatch=True)
ADDR = st.builds(NameAddr, URI, st.none() | TEXT.filter(lambda s: "<" not in s))
TOKEN = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,10}", fullmatch=True)
STAMP = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))]),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
RESERVED = {"from", "to", "cc", "datetime", "subject", "require", "ns"}
EXTRA = st.tuples(
    st.from_regex(r"x\.[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True), TEXT.filter(bool)
)
CONTENT_EXTRA = st.tuples(st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True), TEXT.filter(bool))
MESSAGES = st.builds(
    CPIMMessage,
    content_type=st.none() | st.sampled_from(["text/plain;charset=UTF-8", "message/imdn+xml"]),
    body=st.binary(max_size=64),
    sender=st.none() | ADDR,
    to=st.lists(ADDR, max_size=2).map(tuple),
    cc=st.lists(ADDR, max_size=2).map(tuple),
    namespaces=st.sampled_from([(), (("imdn", cpim.IMDN_NAMESPACE),), (("x", "urn:x"),)]),
    message_id=st.none() | TOKEN,
    datetime=st.none() | STAMP,
    subject=st.none() | TEXT,
    require=st.lists(TOKEN, max_size=2).map(tuple),
    disposition_notification=st.lists(st.sampled_from(list(Disposition)), unique=True).map(tuple),
    imdn_record_route=st.lists(URI, max_size=2).map(tuple),
    imdn_route=st.lists(URI, max_size=2).map(tuple),
    extra_headers=st.lists(EXTRA, max_size=2).map(tuple),
    content_disposition=st.none() | st.just("notification"),
    content_id=st.none() | st.just("<part1@x>"),
    content_transfer_encoding=st.none() | st.sampled_from(["base64", "binary"]),
    content_extra=st.lists(CONTENT_EXTRA, max_size=2).map(tuple),
)


def _normal(msg: CPIMMessage) -> CPIMMessage:
    """The model as it reads back: the IMDN namespace is declared once IMDN headers exist."""
    uses_imdn = bool(
        msg.message_id or msg.disposition_notification or msg.imdn_record_route or msg.imdn_route
    )
    if uses_imdn and ("imdn", cpim.IMDN_NAMESPACE) not in msg.namespaces:
        return CPIMMessage(**{**msg.__dict__, "namespaces": msg.namespaces + (
            ("imdn", cpim.IMDN_NAMESPACE),
        )})  # fmt: skip
    return msg


@given(MESSAGES)
def test_model_round_trip(msg: CPIMMessage) -> None:
    data = cpim.serialize(msg)
    assert cpim.parse(data) == _normal(msg)
    assert cpim.serialize(cpim.parse(data)) == data


SAMPLES = [load(n) for n in sorted(p.name for p in FIXTURES.iterdir())]


@given(st.sampled_from(SAMPLES).flatmap(mutated))
def test_mutations_raise_only_codec_error(data: bytes) -> None:
    try:
        msg = cpim.parse(data)
    except CodecError:
        return
    msg.requested_dispositions()
    assert cpim.parse(cpim.serialize(msg)).body == msg.body


def test_base64_round_trip_exact() -> None:
    msg = CPIMMessage(
        content_type="text/plain", body=b"\x00\xff", content_transfer_encoding="BASE64"
    )
    data = cpim.serialize(msg)
    assert base64.b64encode(b"\x00\xff") in data
    assert cpim.parse(data) == msg
