"""multipart/mixed and Content-Type values (RFC 2045, RFC 2046)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import multipart
from sip.errors import CodecError
from sip.multipart import ContentType, Multipart, Part, parse_content_type
from tests.strategies import mutated

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_group_invite_round_trip() -> None:
    data = load("multipart/group_invite_canonical.mime")
    body = multipart.parse(data, 'multipart/mixed; boundary="boundary1"')
    assert multipart.serialize(body) == data
    assert body.content_type == "multipart/mixed;boundary=boundary1"
    assert [p.content_type for p in body.parts] == [
        ContentType("application/sdp"),
        ContentType("application/resource-lists+xml"),
    ]
    rl = body.find("application/resource-lists+xml")
    assert rl is not None and rl.disposition == "recipient-list"
    assert rl.body.startswith(b"<?xml") and rl.body.endswith(b"</resource-lists>\n")
    assert body.find("message/cpim") is None
    sdp = body.find("APPLICATION/SDP")
    assert sdp == Part.build("application/sdp", load("sdp/rcsjta_offer.sdp"))


def test_rcsjta_first_message_invite() -> None:
    data = load("multipart/first_message_invite.mime")
    body = multipart.parse(data, "multipart/mixed;boundary=----=_Part_12_345")
    assert body.boundary == "----=_Part_12_345"
    assert body.parts[0].body == load("sdp/rcsjta_offer.sdp")
    cpim = body.parts[1]
    assert cpim.body == load("cpim/rcsjta_chat.cpim")
    assert cpim.disposition == "render"
    assert multipart.header_value(cpim.headers, "content-disposition") == (
        "render;handling=optional"
    )
    # canonical output drops the preamble/epilogue and parses back to the same model
    assert multipart.parse(multipart.serialize(body), body.content_type) == body


def test_part_without_headers_or_body() -> None:
    data = b"--b\r\n\r\nx\r\n--b\r\nA: 1\r\n\r\n\r\n--b\r\n\r\n\r\n--b--\r\n"
    body = multipart.parse(data, "multipart/mixed;boundary=b")
    assert body.parts == (Part((), b"x"), Part((("A", "1"),), b""), Part((), b""))
    assert multipart.serialize(body) == data
    assert body.parts[0].content_type is None and body.parts[0].disposition is None


def test_lf_only_and_headers_without_blank_line() -> None:
    data = b"--b\nContent-Type: text/plain\n--b\nContent-Type: text/plain\n\nhi\r\n\n--b--"
    body = multipart.parse(data, "multipart/mixed;boundary=b")
    assert body.parts[0] == Part((("Content-Type", "text/plain"),), b"")
    assert body.parts[1].body == b"hi\r\n"
    bare = multipart.parse(b"--b\n\nbody\n--b--\n", "multipart/mixed;boundary=b")
    assert bare.parts == (Part((), b"body"),)


def test_boundary_text_mid_line_is_not_a_delimiter() -> None:
    data = b"--b\r\n\r\nsee --b here\r\n--b--\r\n"
    body = multipart.parse(data, "multipart/mixed;boundary=b")
    assert body.parts[0].body == b"see --b here"
    assert multipart.serialize(body) == data


MB = "multipart/mixed;boundary=b"
BROKEN = [
    (b"--b\r\n\r\nx\r\n--b--", "text/plain", "multipart: not a multipart type 'text/plain'"),
    (b"", "multipart/mixed", "multipart: Content-Type has no boundary parameter"),
    (b"", "multipart/mixed;boundary=a\x01", "multipart: invalid boundary"),
    (b"", 'multipart/mixed;boundary=" "', "multipart: invalid boundary"),
    (b"no delimiter", MB, "multipart: no boundary delimiter found"),
    (b"--b\r\n\r\nx", MB, "multipart: missing close delimiter"),
    (b"--bx\r\n\r\nx\r\n--b--", MB, "multipart: garbage after boundary delimiter"),
    (b"--b", MB, "multipart: garbage after boundary delimiter"),
    (b"--b--\r\n", MB, "multipart: no body parts"),
    (b"--b\r\nbad\r\n\r\nx\r\n--b--", MB, "multipart: malformed header line 1"),
    (b"--b\r\nA: \xff\r\n\r\nx\r\n--b--", MB, "multipart: headers are not UTF-8"),
    (b"", "multipart", "invalid Content-Type 'multipart'"),
]


@pytest.mark.parametrize(("data", "ctype", "message"), BROKEN)
def test_broken(data: bytes, ctype: str, message: str) -> None:
    with pytest.raises(CodecError) as info:
        multipart.parse(data, ctype)
    assert str(info.value) == message


def test_folded_header_lines() -> None:
    assert multipart.parse_headers(b"A: 1\r\n\t2\r\nB: x", "t") == (("A", "1 2"), ("B", "x"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Text/Plain", ContentType("text/plain")),
        ("text/plain; charset=UTF-8", ContentType("text/plain", (("charset", "UTF-8"),))),
        (
            'multipart/mixed;boundary="a b;c\\"d";x=',
            ContentType("multipart/mixed", (("boundary", 'a b;c"d'), ("x", ""))),
        ),
        ('a/b; k = "v" ; j=w', ContentType("a/b", (("k", "v"), ("j", "w")))),
        ("a/b;", ContentType("a/b")),
    ],
)
def test_parse_content_type(value: str, expected: ContentType) -> None:
    assert parse_content_type(value) == expected
    assert parse_content_type(str(expected)) == expected
    assert expected.param("nope") is None


def test_content_type_param_and_str() -> None:
    ctype = parse_content_type("text/plain;Charset=utf-8")
    assert ctype.param("charset") == "utf-8"
    assert str(ContentType("a/b", (("q", 'x"y'),))) == 'a/b;q="x\\"y"'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("text", "invalid Content-Type 'text'"),
        ("te xt/plain", "invalid Content-Type 'te xt/plain'"),
        ("text/plain;charset", "invalid Content-Type parameter in 'text/plain;charset'"),
        ("text/plain;=x", "invalid Content-Type parameter in 'text/plain;=x'"),
        ('a/b;k="v', "unterminated quoted string in 'a/b;k=\"v'"),
        ('a/b;k="v"x', "invalid Content-Type parameter in 'a/b;k=\"v\"x'"),
    ],
)
def test_parse_content_type_broken(value: str, message: str) -> None:
    with pytest.raises(CodecError) as info:
        parse_content_type(value)
    assert str(info.value) == message


def test_serialize_errors() -> None:
    with pytest.raises(CodecError, match="^multipart: invalid boundary$"):
        multipart.serialize(Multipart("", (Part((), b""),)))
    with pytest.raises(CodecError, match="^multipart: no body parts$"):
        multipart.serialize(Multipart("b", ()))
    with pytest.raises(CodecError, match="^multipart: boundary occurs inside a body part$"):
        multipart.serialize(Multipart("b", (Part((), b"x\r\n--b--"),)))
    with pytest.raises(CodecError, match="^multipart: boundary occurs inside a body part$"):
        multipart.serialize(Multipart("b", (Part((), b"--b"),)))
    with pytest.raises(CodecError, match="^multipart: invalid header in a body part$"):
        multipart.serialize(Multipart("b", (Part((("A", "1\r\n"),), b""),)))
    with pytest.raises(CodecError, match="^multipart: invalid header in a body part$"):
        multipart.serialize(Multipart("b", (Part((("A B", "1"),), b""),)))


def test_build_part() -> None:
    part = Part.build(
        "message/cpim", b"abc", disposition="render", content_id="<x@y>", with_length=False
    )
    assert part.headers == (
        ("Content-Type", "message/cpim"),
        ("Content-Disposition", "render"),
        ("Content-ID", "<x@y>"),
    )


# ------------------------------------------------------------------ hypothesis

NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20
).filter(lambda s: s == s.strip() and "\x85" not in s)
BOUNDARY = st.from_regex(r"[0-9A-Za-z'()+_,./:=?-]{1,40}", fullmatch=True)


@st.composite
def multiparts(draw: st.DrawFn) -> Multipart:
    boundary = draw(BOUNDARY)
    parts = draw(
        st.lists(
            st.builds(Part, st.lists(st.tuples(NAME, VALUE), max_size=4).map(tuple), st.binary()),
            min_size=1,
            max_size=4,
        )
    )
    delim = b"--" + boundary.encode()
    parts = [p for p in parts if not p.body.startswith(delim) and b"\n" + delim not in p.body]
    return Multipart(boundary, tuple(parts) or (Part((), b""),))


@given(multiparts())
def test_model_round_trip(body: Multipart) -> None:
    data = multipart.serialize(body)
    assert multipart.parse(data, body.content_type) == body


SAMPLES = [
    (load("multipart/group_invite_canonical.mime"), "multipart/mixed;boundary=boundary1"),
    (load("multipart/first_message_invite.mime"), "multipart/mixed;boundary=----=_Part_12_345"),
]


@given(st.sampled_from(SAMPLES).flatmap(lambda s: st.tuples(mutated(s[0]), st.just(s[1]))))
def test_mutations_raise_only_codec_error(sample: tuple[bytes, str]) -> None:
    data, ctype = sample
    try:
        body = multipart.parse(data, ctype)
    except CodecError:
        return
    for part in body.parts:
        try:
            part.content_type  # noqa: B018
        except CodecError:
            pass
    try:
        multipart.serialize(body)
    except CodecError as exc:
        assert str(exc) == "multipart: boundary occurs inside a body part"


@given(st.text(max_size=40))
def test_content_type_fuzz(value: str) -> None:
    try:
        ctype = parse_content_type(value)
    except CodecError:
        return
    assert parse_content_type(str(ctype)) == ctype


def test_bare_cr_in_folded_header_line_is_refused() -> None:
    data = (
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition:\r\n render\r\x00\r\n\r\n"
        b"hi\r\n--b--\r\n"
    )
    with pytest.raises(CodecError, match="multipart: malformed header line 3"):
        multipart.parse(data, "multipart/mixed;boundary=b")
