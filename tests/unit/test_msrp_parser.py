"""MSRP stream parser: splits, limits, malformed frames, hypothesis properties (RFC 4975 §9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import CodecError
from sip.msrp.message import MSRPMessage, parse_message
from sip.msrp.parser import MalformedFrame, MSRPParser

FIXTURES = Path(__file__).parent.parent / "fixtures" / "msrp"
SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.msrp"))]
STREAM = b"".join(SAMPLES)
EXPECTED = [parse_message(s) for s in SAMPLES]


def feed_all(parser: MSRPParser, pieces: list[bytes]) -> list[MSRPMessage | MalformedFrame]:
    out: list[MSRPMessage | MalformedFrame] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def test_whole_stream_at_once():
    parser = MSRPParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.buffered == 0


def test_byte_by_byte():
    parser = MSRPParser()
    assert feed_all(parser, [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_split_gives_the_same_frames(cuts: list[int]):
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert feed_all(MSRPParser(), pieces) == EXPECTED


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=6
    ),
    st.integers(min_value=1, max_value=64),
)
def test_mutations_raise_only_codec_error(sample: bytes, edits: list[tuple[int, int]], step: int):
    data = bytearray(sample)
    for pos, value in edits:
        data[pos % len(data)] = value
    parser = MSRPParser(max_frame_size=4096)
    try:
        for i in range(0, len(data), step):
            for frame in parser.feed(bytes(data[i : i + step])):
                assert isinstance(frame, MSRPMessage | MalformedFrame)
    except CodecError:
        pass


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_error(data: bytes):
    try:
        MSRPParser().feed(data)
    except CodecError:
        pass
    try:
        parse_message(data)
    except CodecError:
        pass


def test_end_line_of_another_transaction_does_not_end_the_frame():
    data = (FIXTURES / "send_cpim_unknown_headers.msrp").read_bytes()
    frames = MSRPParser().feed(data)
    assert len(frames) == 1 and isinstance(frames[0], MSRPMessage)
    assert frames[0].body is not None and frames[0].body.endswith(b"-------0fz9q2abX\r\n")


def test_malformed_frame_keeps_paths_for_a_400():
    data = (
        b"MSRP abcd1234 SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
        b"Byte-Range: nonsense\r\nFailure-Report: partial\r\n-------abcd1234$\r\n"
    )
    (frame,) = MSRPParser().feed(data)
    assert isinstance(frame, MalformedFrame)
    assert frame.transaction_id == "abcd1234" and frame.method == "SEND"
    assert str(frame.error) == "invalid Byte-Range: 'nonsense'"
    assert frame.to_path is not None and frame.to_path[0].session_id == "s"
    assert frame.from_path is not None and frame.from_path[0].port == 2
    assert frame.failure_report == "partial"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n", "invalid MSRP frame start"),
        (b"MSRP " + b"a" * 600, "MSRP start line too long"),
        (b"MSRP x SEND\r\n", "invalid MSRP transaction id: 'x'"),
        (b"MSRP abcd1234 SEND\r\n" + b"x" * 5000, "MSRP frame too large"),
    ],
)
def test_framing_errors(data: bytes, message: str):
    parser = MSRPParser(max_frame_size=4096)
    with pytest.raises(CodecError) as info:
        parser.feed(data)
    assert str(info.value) == message
    with pytest.raises(CodecError) as again:
        parser.feed(STREAM)
    assert str(again.value) == "MSRP stream unusable after an earlier framing error"


def test_frame_too_large_even_when_complete():
    body = b"y" * 5000
    data = (
        b"MSRP abcd1234 SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
        b"Content-Type: text/plain\r\n\r\n" + body + b"\r\n-------abcd1234$\r\n"
    )
    with pytest.raises(CodecError, match="MSRP frame too large"):
        MSRPParser(max_frame_size=4096).feed(data)
    assert len(MSRPParser().feed(data)) == 1


def test_long_stream_compacts_buffer():
    parser = MSRPParser()
    frames = 0
    for _ in range(200):
        frames += len(parser.feed(STREAM))
    assert frames == 200 * len(SAMPLES)
    assert parser.buffered == 0
