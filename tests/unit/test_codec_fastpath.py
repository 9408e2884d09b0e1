"""The optimised chat codecs against their plain predecessors (tests/unit/codec_reference.py).

Every optimisation (single-pass header parsing, known-name shortcuts, caches, the MSRP
stream parser cutting frames straight from the received bytes, the direct IMDN writer)
must give the same values, bytes and CodecError messages as the code it replaced, on
generated models, on captured samples and on damaged copies of both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast
from xml.etree.ElementTree import Element, tostring

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip import cpim, imdn, multipart, xmlutil
from sip.cpim import CPIMMessage, Disposition, NameAddr
from sip.errors import CodecError
from sip.msrp import message as msrp
from sip.msrp import uri as uri_module
from sip.msrp.message import ByteRange, MSRPMessage, TransactionId
from sip.msrp.parser import DEFAULT_MAX_FRAME_SIZE, MalformedFrame, MSRPParser
from sip.msrp.uri import MSRPURI, SessionId, serialize_path, serialize_uri
from tests.strategies import mutated
from tests.unit import codec_reference as ref

Buffer = bytes | bytearray | memoryview
FIXTURES = Path(__file__).parent.parent / "fixtures"
CPIM_SAMPLES = [p.read_bytes() for p in sorted((FIXTURES / "codecs" / "cpim").iterdir())]
IMDN_SAMPLES = [p.read_bytes() for p in sorted((FIXTURES / "codecs" / "imdn").iterdir())]
MSRP_SAMPLES = [p.read_bytes() for p in sorted((FIXTURES / "msrp").glob("*.msrp"))]
SLOW = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def outcome(func: Callable[..., object], *args: object) -> tuple[str, object]:
    """The value, or the CodecError message: what both implementations must agree on."""
    try:
        return ("ok", func(*args))
    except CodecError as exc:
        return ("error", str(exc))


# ------------------------------------------------------------------ CPIM

TEXT = st.text(
    alphabet=st.characters(max_codepoint=0xD7FF) | st.characters(min_codepoint=0xE000), max_size=12
)
URI = st.from_regex(r"(sip|tel):[A-Za-z0-9+@.;=_-]{1,16}", fullmatch=True)
ADDR = st.builds(NameAddr, URI, st.none() | TEXT)
PREFIX = st.sampled_from(["imdn", "IMDN", "", "x", "bad prefix", "a\r"])
NAME = st.sampled_from(["x.Custom", "cpm.Payload-Type", "Content-type", "bad name", "a:b", ""])
UTC = timezone.utc
STAMP = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45)), timezone.min]),
)
MESSAGES = st.builds(
    CPIMMessage,
    content_type=st.none() | st.sampled_from(["text/plain;charset=UTF-8", "message/imdn+xml"]),
    body=st.binary(max_size=24),
    sender=st.none() | ADDR,
    to=st.lists(ADDR, max_size=2).map(tuple),
    cc=st.lists(ADDR, max_size=1).map(tuple),
    namespaces=st.lists(st.tuples(PREFIX, st.just(cpim.IMDN_NAMESPACE) | URI), max_size=2).map(
        tuple
    ),
    message_id=st.none() | TEXT,
    datetime=st.none() | STAMP,
    subject=st.none() | TEXT,
    require=st.lists(TEXT, max_size=2).map(tuple),
    disposition_notification=st.lists(st.sampled_from(list(Disposition)), unique=True).map(tuple),
    imdn_record_route=st.lists(URI, max_size=1).map(tuple),
    imdn_route=st.lists(TEXT, max_size=1).map(tuple),
    extra_headers=st.lists(st.tuples(NAME, TEXT), max_size=2).map(tuple),
    content_disposition=st.none() | TEXT,
    content_id=st.none() | TEXT,
    content_transfer_encoding=st.none() | st.sampled_from(["base64", "binary", "a\nb"]),
    content_extra=st.lists(st.tuples(NAME, TEXT), max_size=2).map(tuple),
)


@SLOW
@given(MESSAGES)
def test_cpim_serialize_and_parse_match_reference(message: CPIMMessage) -> None:
    written = outcome(cpim.serialize, message)
    assert written == outcome(ref.cpim_serialize, message)
    if written[0] == "ok":
        assert outcome(cpim.parse, written[1]) == outcome(ref.cpim_parse, written[1])


@st.composite
def damaged_cpim(draw: st.DrawFn) -> bytes:
    sample = draw(st.sampled_from(CPIM_SAMPLES))
    if draw(st.booleans()):
        sample = sample.replace(b"\r\n", b"\n")
    return draw(mutated(sample))


@SLOW
@given(damaged_cpim())
def test_cpim_parse_of_damaged_samples_matches_reference(data: bytes) -> None:
    assert outcome(cpim.parse, data) == outcome(ref.cpim_parse, data)


@given(st.sampled_from(CPIM_SAMPLES), st.sampled_from([b" \t", b"\r", b":", b"\xff", b".", b"\n"]))
def test_cpim_parse_with_inserted_separators_matches_reference(sample: bytes, junk: bytes) -> None:
    for pos in range(0, len(sample), 7):
        data = sample[:pos] + junk + sample[pos:]
        assert outcome(cpim.parse, data) == outcome(ref.cpim_parse, data)


@given(st.text(alphabet='ab <>"\\ :@\t', max_size=16))
def test_cached_parse_name_addr_matches_reference(value: str) -> None:
    first = outcome(cpim.parse_name_addr, value)
    assert first == outcome(ref.parse_name_addr, value)
    assert outcome(cpim.parse_name_addr, value) == first  # a cached answer is the same


def test_cpim_known_header_name_without_colon_is_malformed() -> None:
    data = b"From\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    assert outcome(cpim.parse, data) == ("error", "cpim: malformed header line 1")
    assert outcome(ref.cpim_parse, data) == ("error", "cpim: malformed header line 1")


# ------------------------------------------------------------------ MSRP

HOP = st.builds(
    MSRPURI,
    host=st.sampled_from(["127.0.0.1", "relay.example.net", "[::1]"]),
    port=st.none() | st.integers(1, 65535),
    session_id=st.none() | st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True).map(SessionId),
    transport=st.sampled_from(["tcp", "tls"]),
    scheme=st.sampled_from(["msrp", "msrps"]),
    user=st.none() | st.just("alice"),
    params=st.lists(st.sampled_from(["ws", "a=b"]), max_size=2).map(tuple),
)
PATH = st.lists(HOP, min_size=1, max_size=3).map(tuple)
HEADER = st.sampled_from(
    [
        ("Message-ID", "m0a1b2c3"),
        ("Message-ID", "x"),
        ("Byte-Range", "1-10/10"),
        ("Byte-Range", "1-*/*"),
        ("Byte-Range", "5-1/10"),
        ("Success-Report", "yes"),
        ("Failure-Report", "partial"),
        ("Failure-Report", "maybe"),
        ("Status", "000 200 OK"),
        ("Expires", "300"),
        ("Use-Path", "msrp://relay:2855;tcp"),
        ("Use-Path", ""),
        ("X-Custom", "whatever"),
        ("message-id", "lower1234"),
        ("To-Path", "msrp://a:1/s;tcp"),
        ("Content-Type", "text/plain"),
    ]
)
FRAMES = st.builds(
    MSRPMessage,
    transaction_id=st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True).map(TransactionId),
    method=st.none() | st.sampled_from(["SEND", "REPORT", "AUTH", "NICKNAME", "FOO"]),
    status=st.sampled_from([200, 403, 481]),
    reason=st.none() | st.sampled_from(["OK", "", "Session Does Not Exist"]),
    to_path=PATH,
    from_path=PATH,
    headers=st.lists(HEADER, max_size=4).map(tuple),
    content_type=st.none() | st.just("message/cpim"),
    body=st.none() | st.binary(max_size=40),
    continuation=st.sampled_from(["$", "+", "#"]),
)


@SLOW
@given(FRAMES)
def test_msrp_serialize_and_parse_match_reference(frame: MSRPMessage) -> None:
    data = msrp.serialize_message(frame)
    assert data == ref.serialize_message(frame)
    assert outcome(msrp.parse_message, data) == outcome(ref.parse_message, data)
    assert serialize_path(frame.to_path) == ref.serialize_path(frame.to_path)
    assert [serialize_uri(u) for u in frame.from_path] == [
        ref.serialize_uri(u) for u in frame.from_path
    ]


@st.composite
def damaged_msrp(draw: st.DrawFn) -> bytes:
    sample = draw(st.sampled_from(MSRP_SAMPLES))
    if draw(st.booleans()):  # a header line that is not UTF-8 somewhere in the head
        head_end = max(sample.find(b"\r\n", 1), 0)
        pos = draw(st.integers(head_end, len(sample)))
        sample = sample[:pos] + b"\xc3(" + sample[pos:]
    return draw(mutated(sample))


@SLOW
@given(damaged_msrp())
def test_msrp_parse_of_damaged_samples_matches_reference(data: bytes) -> None:
    assert outcome(msrp.parse_message, data) == outcome(ref.parse_message, data)


def test_msrp_utf8_error_comes_after_earlier_header_errors() -> None:
    frame = b"MSRP abcd SEND\r\nbad line\r\nX-A: \xff\r\n-------abcd$\r\n"
    assert outcome(msrp.parse_message, frame) == ("error", "invalid MSRP header line: 'bad line'")
    assert outcome(msrp.parse_message, frame) == outcome(ref.parse_message, frame)
    frame = b"MSRP abcd SEND\r\nX-A: \xff\r\nbad line\r\n-------abcd$\r\n"
    assert outcome(msrp.parse_message, frame) == ("error", "invalid MSRP header: not UTF-8")


@pytest.mark.parametrize("name", ["To-Path", "From-Path", "Content-Type", "from-path"])
def test_msrp_duplicate_typed_headers(name: str) -> None:
    value = "text/plain" if name == "Content-Type" else "msrp://a.example:1/s1;tcp"
    frame = (
        "MSRP abcd SEND\r\nTo-Path: msrp://a.example:1/s1;tcp\r\n"
        f"From-Path: msrp://b.example:2/s2;tcp\r\nContent-Type: text/plain\r\n{name}: {value}\r\n"
        "\r\nhi\r\n-------abcd$\r\n"
    ).encode()
    assert outcome(msrp.parse_message, frame) == ("error", f"duplicate {name} header")
    assert outcome(ref.parse_message, frame) == ("error", f"duplicate {name} header")


@given(st.from_regex(r"[0-9*]{1,3}-[0-9*]{1,3}/[0-9*]{1,3}|.{0,6}", fullmatch=True))
def test_cached_byte_range_matches_reference(value: str) -> None:
    first = outcome(msrp.parse_byte_range, value)
    assert first == outcome(ref.parse_byte_range, value)
    assert outcome(msrp.parse_byte_range, value) == first
    if first[0] == "ok":
        assert isinstance(first[1], ByteRange)


def _frames(result: list[MSRPMessage | MalformedFrame]) -> list[object]:
    """Frames with a MalformedFrame's error reduced to its message (exceptions compare by id)."""
    return [
        (f.transaction_id, f.method, str(f.error), f.to_path, f.from_path, f.failure_report)
        if isinstance(f, MalformedFrame)
        else f
        for f in result
    ]


def _run(parser: MSRPParser | ref.MSRPParser, pieces: Sequence[Buffer]) -> list[object]:
    """Feeds ``pieces``; records the frames of each feed, ``buffered``, and any error."""
    log: list[object] = []
    for piece in pieces:
        try:
            log.append(_frames(parser.feed(cast(bytes, piece))))  # feed takes any buffer
        except CodecError as exc:
            log.append(("error", str(exc)))
        log.append(parser.buffered)
    return log


@st.composite
def stream_pieces(draw: st.DrawFn) -> list[bytes]:
    frames = draw(st.lists(st.sampled_from(MSRP_SAMPLES), min_size=1, max_size=5))
    stream = b"".join(frames)
    if draw(st.booleans()):
        stream = draw(mutated(stream))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@SLOW
@given(stream_pieces(), st.sampled_from([DEFAULT_MAX_FRAME_SIZE, 600]))
def test_stream_parser_matches_reference_on_any_split(pieces: list[bytes], limit: int) -> None:
    new = _run(MSRPParser(max_frame_size=limit), pieces)
    assert new == _run(ref.MSRPParser(max_frame_size=limit), pieces)
    whole = _run(MSRPParser(max_frame_size=limit), [b"".join(pieces)])
    if limit == DEFAULT_MAX_FRAME_SIZE and not any(isinstance(entry, tuple) for entry in new):
        # without a framing error, any split gives the frames of the whole stream
        flat = [frame for entry in new if isinstance(entry, list) for frame in entry]
        assert flat == whole[0]


def test_stream_parser_accepts_bytearray_and_memoryview() -> None:
    stream = b"".join(MSRP_SAMPLES)
    expected = _run(ref.MSRPParser(), [stream[:100], stream[100:]])
    assert _run(MSRPParser(), [bytearray(stream[:100]), memoryview(stream[100:])]) == expected
    assert _run(MSRPParser(), [memoryview(stream)]) == _run(ref.MSRPParser(), [stream])


def test_stream_parser_compacts_a_long_buffer() -> None:
    frame = MSRP_SAMPLES[0]
    count = 70000 // len(frame) + 2
    stream = frame * count
    parser = MSRPParser()
    # the first byte keeps the buffer in use, so the rest goes through the buffered path
    assert parser.feed(stream[:1]) == []
    assert len(parser.feed(stream[1:] + frame[:10])) == count
    assert parser.buffered == 10
    assert parser.feed(frame[10:]) == [msrp.parse_message(frame)]
    assert parser.buffered == 0


# ------------------------------------------------------------------ IMDN, XML, date-time

IMDNS = st.builds(
    imdn.IMDN,
    message_id=TEXT,
    datetime=TEXT,
    notification=st.sampled_from(list(imdn.NotificationType)),
    status=st.sampled_from(list(imdn.Status)),
    recipient_uri=st.none() | TEXT,
    original_recipient_uri=st.none() | TEXT,
    subject=st.none() | TEXT,
)


@SLOW
@given(IMDNS)
def test_imdn_serialize_and_parse_match_reference(report: imdn.IMDN) -> None:
    written = outcome(imdn.serialize, report)
    assert written == outcome(ref.imdn_serialize, report)
    if written[0] == "ok":
        assert outcome(imdn.parse, written[1]) == outcome(ref.imdn_parse, written[1])


def _tree(root: Element) -> bytes:
    return tostring(root)


@SLOW
@given(st.sampled_from(IMDN_SAMPLES).flatmap(mutated))
def test_xml_and_imdn_parse_of_damaged_samples_match_reference(data: bytes) -> None:
    assert outcome(imdn.parse, data) == outcome(ref.imdn_parse, data)
    new = outcome(xmlutil.parse_xml, data, "imdn")
    old = outcome(ref.parse_xml, data, "imdn")
    if new[0] == "ok" and old[0] == "ok":
        assert isinstance(new[1], Element) and isinstance(old[1], Element)
        assert _tree(new[1]) == _tree(old[1])
    else:
        assert new == old


def test_parse_xml_still_refuses_doctype_and_deep_nesting() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
    assert outcome(xmlutil.parse_xml, bomb, "t") == ("error", "t: DOCTYPE is not allowed")
    deep = b"<a>" * (xmlutil.MAX_DEPTH + 1) + b"</a>" * (xmlutil.MAX_DEPTH + 1)
    assert outcome(xmlutil.parse_xml, deep, "t") == outcome(ref.parse_xml, deep, "t")
    assert outcome(xmlutil.parse_xml, deep, "t")[0] == "error"


def test_parse_xml_name_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmlutil, "_QUALIFIED", {})
    monkeypatch.setattr(xmlutil, "_QUALIFIED_MAX", 1)
    root = xmlutil.parse_xml(b'<r xmlns="urn:a"><b/><c x="1"/></r>', "t")
    assert [e.tag for e in root.iter()] == ["{urn:a}r", "{urn:a}b", "{urn:a}c"]
    assert root[1].attrib == {"x": "1"}
    assert len(xmlutil._QUALIFIED) == 1


@given(STAMP)
def test_format_datetime_matches_reference(value: datetime) -> None:
    assert xmlutil.format_datetime(value) == ref.format_datetime(value)


@given(
    st.from_regex(
        r"\s?[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-9]{2}:[0-9]{2})?\s?",
        fullmatch=True,
    )
)
def test_parse_datetime_matches_reference(text: str) -> None:
    assert outcome(xmlutil.parse_datetime, text, "t") == outcome(ref.parse_datetime, text, "t")


@given(st.text(alphabet=st.sampled_from('ab/;= "\\\t'), max_size=20))
def test_cached_parse_content_type_matches_uncached(value: str) -> None:
    first = outcome(multipart.parse_content_type, value)
    assert first == outcome(multipart._parse_content_type, value)
    assert outcome(multipart.parse_content_type, value) == first


LONG = 2000


@pytest.mark.parametrize(
    ("cached", "func", "value"),
    [
        (cpim._cached_name_addr, cpim.parse_name_addr, '"' + "n" * LONG + '" <sip:a@b>'),
        (cpim._cached_dispositions, cpim._parse_dispositions, "display, " * LONG),
        (msrp._cached_byte_range, msrp.parse_byte_range, " " * LONG + "1-2/3"),
        (multipart._cached_content_type, multipart.parse_content_type, "a/b;x=" + "y" * LONG),
        (uri_module._cached_path, uri_module.parse_path, "msrp://a:1/s;tcp " * LONG),
    ],
)
def test_long_values_are_parsed_but_not_cached(
    cached: Any, func: Callable[[str], object], value: str
) -> None:
    before = cached.cache_info().currsize
    assert func(value) == cached.__wrapped__(value)
    assert cached.cache_info().currsize == before


def test_long_xml_names_are_not_memoised() -> None:
    name = "e" * 300
    root = xmlutil.parse_xml(f"<{name}/>".encode(), "t")
    assert root.tag == name
    assert name not in xmlutil._QUALIFIED
