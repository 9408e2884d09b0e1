"""Hostile input against every parser (issue 13): only CodecError, and linear time.

The inputs are tests/hostile_inputs.py (also used by bench/parser_cost.py): a benign
input and the worst-known hostile shapes of each parser, at any size.  Three kinds of
test: the defects of the issue as fixed regression cases with their exact messages;
hypothesis drawing shapes, sizes up to 300 KB and random damage on top (only CodecError
may come out); and timing, in relative measures that a busy CI box does not upset (CPU
time, the fastest of five interleaved runs): from 10 to 100 KB each hostile shape's cost
may grow at most 4 times as much as the benign input's or the size ratio (linear grows
about 10 times, quadratic about 100), and at 100 KB it may take at most 50 times the
benign input's time. A test of the test shows a quadratic parser failing the check.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip import cpim, iscomposing, sdp, xmlutil
from sip.errors import MAX_ERROR_TEXT, CodecError
from sip.headers import parse_cseq, parse_name_addr, parse_via
from sip.limits import read_uint
from sip.message import parse_message
from sip.msrp.message import parse_byte_range
from sip.msrp.message import parse_message as parse_msrp
from sip.uri import parse_uri
from tests.hostile_inputs import CASES
from tests.strategies import mutated

# -- the defects of issue 13, as reported -----------------------------------------------


def _raises(parse: Callable[[bytes], object], data: bytes) -> str:
    with pytest.raises(CodecError) as info:
        parse(data)
    return str(info.value)


def test_cpim_whitespace_run_is_linear() -> None:
    # defect 1: 60,000 spaces in a CPIM To took about 5 s (regex backtracking)
    data = (
        b"From: <sip:a@b>\r\nTo: a" + b" " * 60000 + b"b\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    )
    start = time.perf_counter()
    message = _raises(cpim.parse, data)
    assert time.perf_counter() - start < 0.5
    assert message.startswith("cpim: invalid address 'a ")


def test_cpim_name_addr_forms() -> None:
    assert cpim.parse_name_addr(' "A \\"B\\"" <sip:a@b> ') == cpim.NameAddr("sip:a@b", 'A "B"')
    assert cpim.parse_name_addr("A  B <sip:a@b>") == cpim.NameAddr("sip:a@b", "A  B")
    assert cpim.parse_name_addr("<sip:a@b>") == cpim.NameAddr("sip:a@b")
    assert cpim.parse_name_addr("sip:a@b") == cpim.NameAddr("sip:a@b")
    for bad in ('"a\\', '"a\\\nb" <x>', '"a" x <y>', '"a" <y', "a <b<c>", 'a"b <c>', '"a'):
        with pytest.raises(CodecError, match="cpim: invalid address"):
            cpim.parse_name_addr(bad + "x" * 600)  # uncached path
        with pytest.raises(CodecError, match="cpim: invalid address"):
            cpim.parse_name_addr(bad)


def test_xml_namespace_amplification_is_refused() -> None:
    # defect 2: 62 KB isComposing, 30,000-character default namespace, 8,000 elements
    data = (
        b'<?xml version="1.0"?><isComposing xmlns="'
        + b"x" * 30000
        + b'">'
        + b"<a/>" * 8000
        + b"</isComposing>"
    )
    tracemalloc.start()
    try:
        message = _raises(iscomposing.parse, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == "iscomposing: XML namespace name longer than 512 characters"
    assert peak < 5 * len(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<r>" + b"<a/>" * 20001 + b"</r>", "x: more than 20000 XML elements"),
        (
            b"<r " + b" ".join(b"a%d='1'" % i for i in range(65)) + b"/>",
            "x: more than 64 attributes on an XML element",
        ),
        (b"<r a='" + b"v" * 8193 + b"'/>", "x: XML attribute longer than 8192 characters"),
        (
            b"<r>" + b"".join(b"<a xmlns:p='u'/>" for _ in range(257)) + b"</r>",
            "x: more than 256 XML namespace declarations",
        ),
        (b'<?xml version="1.0" encoding="euc-jp"?><a/>', "x: unsupported XML encoding"),
        (b'<?xml version="1.0" encoding="nope"?><a/>', "x: unsupported XML encoding"),
    ],
)
def test_xml_limits(data: bytes, message: str) -> None:
    assert _raises(lambda d: xmlutil.parse_xml(d, "x"), data) == message


def test_xml_below_the_limits_parses() -> None:
    root = xmlutil.parse_xml(
        b'<r xmlns="' + b"n" * 512 + b'" a="' + b"v" * 8192 + b'">' + b"<a/>" * 19999 + b"</r>",
        "x",
    )
    assert len(root) == 19999 and len(root.attrib["a"]) == 8192


def test_sdp_attribute_lines_are_linear() -> None:
    # defect 3: 40,000 a= lines took 1.7 s; now refused above 4,096 lines, linear below
    head = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\n"
    assert _raises(sdp.parse, head + b"a=x\r\n" * 40000) == "sdp: more than 4096 lines"
    start = time.perf_counter()
    body = head.replace(b"t=0 0\r\n", b"t=1 2\r\nr=1\r\nr=2\r\n")
    parsed = sdp.parse(body + b"a=x\r\nc=IN IP4 h\r\nb=AS:1\r\n" * 1300)
    assert time.perf_counter() - start < 0.5
    media = parsed.media[0]
    assert (len(media.attributes), len(media.connections), len(media.bandwidths)) == (1300,) * 3
    assert parsed.timings[0].repeats == ("1", "2")


DIGITS = b"9" * 5000


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (lambda d: parse_uri(d.decode()), b"sip:a@h:" + DIGITS, "invalid SIP URI port"),
        (lambda d: parse_via(d.decode()), b"SIP/2.0/UDP h :" + DIGITS, "invalid Via port"),
        (lambda d: parse_cseq(d.decode()), DIGITS + b" INVITE", "invalid CSeq"),
        (
            parse_message,
            b"OPTIONS sip:a@h SIP/2.0\r\nContent-Length: " + DIGITS + b"\r\n\r\n",
            "invalid Content-Length",
        ),
        (sdp.parse, b"v=0\r\nm=message " + DIGITS + b" TCP/MSRP *\r\n", "sdp: invalid port"),
        (
            cpim.parse,
            b"From: <sip:a@b>\r\n\r\nContent-Length: " + DIGITS + b"\r\n\r\nhi",
            "cpim: invalid Content-Length",
        ),
        (
            iscomposing.parse,
            b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>active</state>'
            b"<refresh>" + DIGITS + b"</refresh></isComposing>",
            "iscomposing: refresh is not a positive integer",
        ),
        (
            lambda d: xmlutil.parse_uint(d.decode(), "x", "n"),
            DIGITS,
            "x: n is not an unsigned integer",
        ),
        (lambda d: parse_byte_range(d.decode()), b"1-2/" + DIGITS, "invalid Byte-Range"),
        (
            parse_msrp,
            b"MSRP abcd SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://h:2/s;tcp\r\n"
            b"Expires: " + DIGITS + b"\r\n-------abcd$\r\n",
            "invalid Expires",
        ),
        (
            parse_msrp,
            b"MSRP abcd SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://h:2/s;tcp\r\n"
            b"Expires: \xc2\xb2\r\n-------abcd$\r\n",  # a superscript: isdigit() but not int()
            "invalid Expires",
        ),
    ],
)
def test_long_numbers_raise_codec_error(
    parse: Callable[[bytes], object], data: bytes, message: str
) -> None:
    # defect 4: int() refuses more than 4,300 digits with ValueError
    assert _raises(parse, data).startswith(message)


def test_read_uint() -> None:
    assert read_uint("0") == 0 and read_uint("65535", 5) == 65535
    assert [read_uint(t, 5) for t in ("", "123456", "1a", "\u00b2", "-1", " 1")] == [None] * 6


def test_via_rport_and_ttl_bounded() -> None:
    via = parse_via("SIP/2.0/UDP h;rport=" + "9" * 5000 + ";ttl=9999")
    assert (via.rport, via.ttl) == (None, None)
    assert parse_via("SIP/2.0/UDP h;rport=5060;ttl=16").rport == 5060


def test_two_to_headers_refused() -> None:
    # defect 5: the second To was never validated and broke every response built later
    data = (
        b"MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1"
        b"\r\nTo: <sip:b@h>\r\nTo: <sip:b@h;x=\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\r\n"
    )
    assert _raises(parse_message, data) == "duplicate header: To"


def test_long_values_are_not_cached() -> None:
    value = "<sip:a@h>;x=" + "v" * 600
    assert parse_name_addr(value) is not parse_name_addr(value)
    assert parse_name_addr("<sip:a@h>") is parse_name_addr("<sip:a@h>")


# -- only CodecError, whatever the shape, size and damage --------------------------------

SHAPES = [(name, label) for name, case in CASES.items() for label in ("benign", *case.hostile)]


def _make(name: str, label: str, size: int) -> bytes:
    case = CASES[name]
    return (case.benign if label == "benign" else case.hostile[label])(size)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(SHAPES), st.integers(0, 300_000), st.data())
def test_hostile_shapes_raise_only_codec_error(
    shape: tuple[str, str], size: int, data: st.DataObject
) -> None:
    name, label = shape
    raw = _make(name, label, size)
    if data.draw(st.booleans()):
        raw = data.draw(mutated(raw))
    try:
        CASES[name].parse(raw)
    except CodecError:
        pass


# -- time per byte -------------------------------------------------------------------------

SMALL, LARGE = 10_000, 100_000
"""The two sizes: linear cost grows about 10 times between them, quadratic about 100."""
REPEATS = 5
"""Runs of each input; the fastest counts (the others met a busy CPU or a cold cache)."""
GROWTH = 4
"""How much more than ``max(benign growth, LARGE / SMALL)`` a hostile shape's cost may grow
from SMALL to LARGE: 40 for linear parsers, where a quadratic one shows about 100."""
PER_BYTE = 50
"""How many times the benign input's time a hostile shape may take at LARGE (measured: at
most 12, the SDP lines below the limit); a quadratic parser's ratio keeps growing."""
ALLOWANCE = 0.002
"""Seconds of CPU time added to each bound: refusals that take microseconds are noise."""


def _cpu(parse: Callable[[bytes], object], data: bytes) -> float:
    start = time.process_time()  # CPU time: another process's load does not count
    try:
        parse(data)
    except CodecError:
        pass
    return time.process_time() - start


def _fastest(parse: Callable[[bytes], object], inputs: list[bytes]) -> list[float]:
    """The fastest of REPEATS runs of each input, the runs interleaved so that a burst of
    load slows all of them alike rather than one."""
    best = [float("inf")] * len(inputs)
    for _ in range(REPEATS):
        for i, data in enumerate(inputs):
            best[i] = min(best[i], _cpu(parse, data))
    return best


def _cost_violations(
    parse: Callable[[bytes], object],
    benign: Callable[[int], bytes],
    hostile: Callable[[int], bytes],
) -> list[str]:
    """What makes ``hostile`` cost more than linear, judged against ``benign``: its growth
    from SMALL to LARGE beyond GROWTH times the benign's (or the size ratio), its time at
    LARGE beyond PER_BYTE times the benign's."""
    b_small, b_large, h_small, h_large = _fastest(
        parse, [benign(SMALL), benign(LARGE), hostile(SMALL), hostile(LARGE)]
    )
    growth = max(b_large / max(b_small, 1e-9), LARGE / SMALL)
    out = []
    if h_large > GROWTH * growth * h_small + ALLOWANCE:
        out.append(
            f"grows {h_large / h_small:.0f}x from {SMALL} to {LARGE} B (benign {growth:.0f}x)"
        )
    if h_large > PER_BYTE * b_large + ALLOWANCE:
        out.append(f"{h_large * 1e3:.1f} ms at {LARGE} B, benign {b_large * 1e3:.2f} ms")
    return out


HOSTILE = [(name, label) for name, label in SHAPES if label != "benign"]


@pytest.mark.parametrize(("name", "label"), HOSTILE, ids=[f"{n}/{h}" for n, h in HOSTILE])
def test_hostile_cost_is_linear(name: str, label: str) -> None:
    case = CASES[name]
    assert _cost_violations(case.parse, case.benign, case.hostile[label]) == []


def _quadratic(data: bytes) -> object:
    """A parser that numbers each line by counting the newlines before it (a rescan of
    everything read so far for each line: quadratic)."""
    numbers = []
    offset = data.find(b"\n")
    while offset >= 0:
        numbers.append(data.count(b"\n", 0, offset))
        offset = data.find(b"\n", offset + 1)
    return numbers


def _lines(size: int) -> bytes:
    return (b"Header: " + b"x" * 90 + b"\r\n") * (size // 100)


def test_cost_check_catches_a_quadratic_parser() -> None:
    # the check above must fail a parser whose cost is quadratic in the input: the same
    # bench, with a linear parser as "benign" and a quadratic one as "hostile"
    def parse(data: bytes) -> object:
        return _quadratic(data) if data.startswith(b"q") else data.split(b"\n")

    violations = _cost_violations(parse, _lines, lambda n: b"q" + _lines(n))
    assert violations and violations[0].startswith("grows"), violations
    assert _cost_violations(parse, _lines, lambda n: b"l" + _lines(n)) == []


def test_codec_error_text_is_cut() -> None:
    # parsers quote what they refuse: a 60 KB header must not become a 60 KB log line
    with pytest.raises(CodecError) as caught:
        parse_name_addr("a" + " " * 60000 + "b")
    text = str(caught.value)
    assert len(text) < MAX_ERROR_TEXT + 40 and text.endswith(" characters)")
    assert str(CodecError("short")) == "short"


def test_limits_are_configurable() -> None:
    # Settings.limit_* reach the parsers through sip.limits.configure (bridge.app)
    from sip import limits

    deep = b"<a>" * 6 + b"</a>" * 6
    xmlutil.parse_xml(deep, "x")
    limits.configure(limits.Limits(xml_depth=4, sdp_lines=8, digits=3))
    try:
        with pytest.raises(CodecError, match="deeper than 4 levels"):
            xmlutil.parse_xml(deep, "x")
        with pytest.raises(CodecError, match="more than 8 lines"):
            sdp.parse(b"v=0\r\n" * 9)
        assert read_uint("1234") is None and read_uint("123") == 123
    finally:
        limits.configure(limits.DEFAULT_LIMITS)
    xmlutil.parse_xml(deep, "x")
    assert read_uint("1234") == 1234
