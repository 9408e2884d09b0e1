"""SDP codec and MSRP media helpers (RFC 4566, RFC 4975, RFC 6135, RFC 6714)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import sdp
from sip.errors import CodecError
from sip.sdp import Attribute, Connection, Media, Origin, SessionDescription, Setup, Timing
from tests.strategies import mutated

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs" / "sdp"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    "name", ["rcsjta_offer.sdp", "focus_answer_passive.sdp", "tls_cema_active.sdp"]
)
def test_canonical_samples_round_trip(name: str) -> None:
    data = load(name)
    assert sdp.serialize(sdp.parse(data)) == data


def test_rcsjta_offer_fields() -> None:
    desc = sdp.parse(load("rcsjta_offer.sdp"))
    assert desc.origin == Origin("-", "3915446731", "3915446731", "IN", "IP4", "10.0.2.15")
    assert desc.connection == Connection("IN", "IP4", "10.0.2.15")
    assert desc.timings == (Timing(0, 0),)
    media = sdp.msrp_media(desc)
    assert media == sdp.MSRPMedia(
        address="10.0.2.15",
        port=20000,
        tls=False,
        path=("msrp://10.0.2.15:20000/1411553795318;tcp",),
        accept_types=("message/cpim", "application/im-iscomposing+xml"),
        accept_wrapped_types=("text/plain", "message/imdn+xml", "application/im-iscomposing+xml"),
        setup=Setup.ACTPASS,
        max_size=262144,
    )
    assert media.accepts("message/CPIM")
    assert media.accepts("message/imdn+xml", wrapped=True)
    assert not media.accepts("image/png", wrapped=True)


def test_tls_cema_media_level_connection() -> None:
    media = sdp.msrp_media(sdp.parse(load("tls_cema_active.sdp")))
    assert media.tls and media.cema
    assert media.address == "2001:db8::5"
    assert media.setup is Setup.ACTIVE
    assert media.port == 9
    assert media.fingerprint is not None and media.fingerprint.startswith("SHA-256 4A:AD")
    assert media.accepts("application/anything", wrapped=True)


def test_liberal_input_lf_and_other_media() -> None:
    desc = sdp.parse(load("lf_liberal_with_audio.sdp"))
    assert [m.media for m in desc.media] == ["audio", "message"]
    assert desc.bandwidths == ("AS:64",)
    media = sdp.msrp_media(desc)
    assert media.setup is None
    assert media.address == "198.51.100.7"
    assert media.chatroom == ("nickname", "private-messages")
    assert media.accept_wrapped_types == ()
    assert media.accepts("text/plain;charset=UTF-8")
    assert not media.accepts("text/html")
    # canonical output uses CRLF and the RFC 4566 order (c= before t=)
    out = sdp.serialize(desc)
    assert b"\r\nc=IN IP4 198.51.100.7\r\nb=AS:64\r\nt=0 0\r\n" in out
    assert sdp.parse(out) == desc


def test_relay_path_keeps_every_hop_in_order() -> None:
    data = _with_media(
        "accept-types:message/cpim",
        "path:msrps://relay.example.net:2855/r8sk;tcp  msrp://10.0.0.5:7654/ab12;tcp",
    )
    media = sdp.msrp_media(sdp.parse(data))
    assert media.path == (
        "msrps://relay.example.net:2855/r8sk;tcp",
        "msrp://10.0.0.5:7654/ab12;tcp",
    )


def test_type_wildcard_accept() -> None:
    media = sdp.MSRPMedia("h", 1, False, ("msrp://h:1/x;tcp",), ("message/cpim",), ("image/*",))
    assert media.accepts("image/jpeg", wrapped=True)
    assert not media.accepts("imagex/jpeg", wrapped=True)


def test_every_line_type_round_trips() -> None:
    data = (
        b"v=0\r\no=alice 1 2 IN IP4 h\r\ns=chat\r\ni=info\r\nu=http://x/\r\ne=a@x\r\n"
        b"p=+1 555\r\nc=IN IP4 h\r\nb=CT:1\r\nt=1 2\r\nr=7d 1h 0\r\nt=3 4\r\nz=0 -1h\r\n"
        b"k=prompt\r\na=tool:x\r\na=recvonly\r\nm=message 5/2 TCP/MSRP *\r\ni=mi\r\n"
        b"c=IN IP4 a\r\nc=IN IP4 b\r\nb=AS:1\r\nk=clear:x\r\na=path:msrp://a:5/s;tcp\r\n"
        b"a=accept-types:*\r\na=inactive\r\n"
    )
    desc = sdp.parse(data)
    assert sdp.serialize(desc) == data
    assert desc.attribute("recvonly") == ""
    assert desc.attribute("nothing") is None
    assert desc.timings[0].repeats == ("7d 1h 0",)
    m = desc.media[0]
    assert m.port_count == 2 and m.key == "clear:x" and m.information == "mi"
    assert m.attribute_values("path") == ("msrp://a:5/s;tcp",)
    assert sdp.msrp_media(desc).direction == "inactive"
    assert sdp.msrp_media(desc).address == "a"


BROKEN = [
    (b"", "sdp: first line is not v="),
    (b"o=- 1 1 IN IP4 h\r\n", "sdp: first line is not v="),
    (b"v=1\r\n", "sdp: unsupported version '1'"),
    (b"v=0\r\ns=-\r\n", "sdp: missing o= line"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\n", "sdp: missing s= line"),
    (b"v=0\r\no=- 1 IN IP4 h\r\ns=-\r\n", "sdp: invalid o= line '- 1 IN IP4 h'"),
    (b"v=0\r\nhello\r\n", "sdp: invalid line 'hello'"),
    (b"v=0\r\n1=x\r\n", "sdp: invalid line '1=x'"),
    (b"v=0\r\nx=1\r\n", "sdp: unknown line type x="),
    (b"v=0\r\nc=IN IP4\r\n", "sdp: invalid c= line 'IN IP4'"),
    (b"v=0\r\nt=0\r\n", "sdp: invalid t= line '0'"),
    (b"v=0\r\nt=a 0\r\n", "sdp: invalid time 'a'"),
    (b"v=0\r\nr=1 2\r\n", "sdp: r= line before any t= line"),
    (b"v=0\r\na=\r\n", "sdp: invalid a= line ''"),
    (b"v=0\r\na=:x\r\n", "sdp: invalid a= line ':x'"),
    (b"v=0\r\nm=message 1\r\n", "sdp: invalid m= line 'message 1'"),
    (b"v=0\r\nm=message x TCP/MSRP *\r\n", "sdp: invalid port 'x'"),
    (b"v=0\r\nm=message 70000 TCP/MSRP *\r\n", "sdp: invalid port '70000'"),
    (b"v=0\r\nm=message 1/x TCP/MSRP *\r\n", "sdp: invalid port count 'x'"),
    (b"v=0\r\nm=message 1 TCP/MSRP *\r\nt=0 0\r\n", "sdp: t= line not allowed in a media section"),
    (b"v=0\r\n\xff=1\r\n", "sdp: body is not UTF-8"),
    (b"v=0\r\ns=a\rb\r\n", "sdp: stray CR in line 's=a\\rb'"),
]


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken_input(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        sdp.parse(data)
    assert str(info.value) == message


def _with_media(*attrs: str, port: int = 7, conn: bool = True, proto: str = "TCP/MSRP") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 h", "s=-"]
    lines += ["c=IN IP4 h"] if conn else []
    lines += ["t=0 0", f"m=message {port} {proto} *"] + [f"a={a}" for a in attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


P = "path:msrp://h:7/s;tcp"
MSRP_BROKEN = [
    (_with_media(proto="TCP/RTP"), "sdp: no MSRP media line"),
    (_with_media(P, "accept-types:*", port=0), "sdp: MSRP media line was rejected (port 0)"),
    (_with_media(P, conn=False), "sdp: MSRP media without c= line"),
    (_with_media("accept-types:*"), "sdp: MSRP media without a=path"),
    (_with_media("path: ", "accept-types:*"), "sdp: MSRP media without a=path"),
    (_with_media(P), "sdp: MSRP media without a=accept-types"),
    (_with_media(P, "accept-types:*", "setup:both"), "sdp: invalid a=setup value 'both'"),
    (_with_media(P, "accept-types:*", "max-size:-1"), "sdp: invalid max-size '-1'"),
]


@pytest.mark.parametrize(("data", "message"), MSRP_BROKEN)
def test_broken_msrp_media(data: bytes, message: str) -> None:
    desc = sdp.parse(data)
    with pytest.raises(CodecError) as info:
        sdp.msrp_media(desc)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("offer", "prefer_active", "answer"),
    [
        (None, True, Setup.PASSIVE),
        (Setup.ACTIVE, True, Setup.PASSIVE),
        (Setup.PASSIVE, True, Setup.ACTIVE),
        (Setup.PASSIVE, False, Setup.ACTIVE),
        (Setup.ACTPASS, True, Setup.ACTIVE),
        (Setup.ACTPASS, False, Setup.PASSIVE),
    ],
)
def test_answer_setup_never_both_passive(
    offer: Setup | None, prefer_active: bool, answer: Setup
) -> None:
    assert sdp.answer_setup(offer, prefer_active=prefer_active) is answer
    offer_passive = offer is Setup.PASSIVE
    assert not (offer_passive and answer is Setup.PASSIVE)


def test_answer_setup_holdconn() -> None:
    with pytest.raises(CodecError, match="^sdp: a=setup:holdconn offer cannot be answered$"):
        sdp.answer_setup(Setup.HOLDCONN)


def test_is_active() -> None:
    assert sdp.is_active(None, offerer=True)
    assert not sdp.is_active(None, offerer=False)
    assert sdp.is_active(Setup.ACTIVE, offerer=False)
    assert not sdp.is_active(Setup.PASSIVE, offerer=True)
    with pytest.raises(CodecError, match="^sdp: actpass is not a negotiated role$"):
        sdp.is_active(Setup.ACTPASS, offerer=True)


def test_msrp_offer_wire_form() -> None:
    offer = sdp.msrp_offer(
        address="192.0.2.1",
        port=2855,
        path=("msrp://192.0.2.1:2855/s1;tcp",),
        accept_types=("message/cpim", "application/im-iscomposing+xml"),
        accept_wrapped_types=("text/plain", "message/imdn+xml"),
        session_id="42",
        max_size=1024,
    )
    assert sdp.serialize(offer) == (
        b"v=0\r\no=- 42 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=message 2855 TCP/MSRP *\r\n"
        b"a=accept-types:message/cpim application/im-iscomposing+xml\r\n"
        b"a=accept-wrapped-types:text/plain message/imdn+xml\r\n"
        b"a=setup:actpass\r\na=path:msrp://192.0.2.1:2855/s1;tcp\r\na=max-size:1024\r\n"
        b"a=sendrecv\r\n"
    )
    assert b"a=connection" not in sdp.serialize(offer)


def test_msrp_offer_active_tls_chatroom() -> None:
    offer = sdp.msrp_offer(
        address="2001:db8::1",
        port=4000,
        path=("msrps://[2001:db8::1]:9/s;tcp",),
        accept_types=("message/cpim",),
        setup=Setup.ACTIVE,
        session_id="1",
        chatroom=("nickname",),
        cema=True,
        tls=True,
        fingerprint="SHA-256 AA:BB",
    )
    media = sdp.msrp_media(sdp.parse(sdp.serialize(offer)))
    assert media.port == sdp.DISCARD_PORT
    assert media.tls and media.cema and media.chatroom == ("nickname",)
    assert media.fingerprint == "SHA-256 AA:BB"
    assert offer.origin.addrtype == "IP6"


def test_msrp_offer_without_setup() -> None:
    offer = sdp.msrp_offer(
        address="h",
        port=1,
        path=("msrp://h:1/s;tcp",),
        accept_types=("*",),
        session_id="1",
        setup=None,
    )
    assert sdp.msrp_media(offer).setup is None
    assert sdp.msrp_media(offer).port == 1


def test_msrp_offer_errors() -> None:
    kwargs = dict(address="h", port=1, session_id="1")
    with pytest.raises(CodecError, match="^sdp: TCP/TLS/MSRP needs a fingerprint$"):
        sdp.msrp_offer(path=("p",), accept_types=("*",), tls=True, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="^sdp: MSRP media needs at least one path URI$"):
        sdp.msrp_offer(path=(), accept_types=("*",), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="^sdp: MSRP media needs accept-types$"):
        sdp.msrp_offer(path=("p",), accept_types=(), **kwargs)  # type: ignore[arg-type]


def test_msrp_answer_to_rcsjta_offer() -> None:
    offer = sdp.parse(load("rcsjta_offer.sdp"))
    answer = sdp.msrp_answer(
        offer,
        address="192.0.2.9",
        port=3000,
        path=("msrp://192.0.2.9:9/b1;tcp",),
        accept_types=("message/cpim",),
        accept_wrapped_types=("text/plain", "message/imdn+xml"),
        session_id="7",
    )
    media = sdp.msrp_media(answer)
    assert media.setup is Setup.ACTIVE and media.port == 9
    passive = sdp.msrp_answer(
        offer,
        address="192.0.2.9",
        port=3000,
        path=("msrp://192.0.2.9:3000/b1;tcp",),
        accept_types=("message/cpim",),
        session_id="7",
        prefer_active=False,
    )
    assert sdp.msrp_media(passive).setup is Setup.PASSIVE
    assert sdp.msrp_media(passive).port == 3000


def test_msrp_answer_tls_cema() -> None:
    offer = sdp.parse(load("tls_cema_active.sdp"))
    kwargs = dict(address="h", port=5, path=("msrps://h:5/x;tcp",), accept_types=("*",))
    with pytest.raises(CodecError, match="^sdp: TCP/TLS/MSRP needs a fingerprint$"):
        sdp.msrp_answer(offer, session_id="1", **kwargs)  # type: ignore[arg-type]
    answer = sdp.msrp_answer(offer, session_id="1", fingerprint="SHA-1 00", **kwargs)  # type: ignore[arg-type]
    media = sdp.msrp_media(answer)
    assert media.tls and media.cema and media.setup is Setup.PASSIVE and media.port == 5


def test_serialize_rejects_line_breaks() -> None:
    desc = SessionDescription(origin=Origin("-", "1", "1", "IN", "IP4", "h"), session_name="a\r\nb")
    with pytest.raises(CodecError, match="^sdp: a field contains a line break$"):
        sdp.serialize(desc)


# ------------------------------------------------------------------ hypothesis

TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
)
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20
).filter(lambda s: s == s.strip() and "\x85" not in s)
ATTR = st.builds(Attribute, TOKEN.filter(lambda s: ":" not in s), st.none() | VALUE)
CONN = st.builds(Connection, TOKEN, TOKEN, TOKEN)
MEDIA = st.builds(
    Media,
    media=TOKEN,
    port=st.integers(0, 65535),
    proto=TOKEN,
    formats=st.lists(TOKEN, max_size=3).map(tuple),
    port_count=st.none() | st.integers(1, 9),
    information=st.none() | VALUE,
    connections=st.lists(CONN, max_size=2).map(tuple),
    bandwidths=st.lists(TOKEN, max_size=2).map(tuple),
    key=st.none() | VALUE,
    attributes=st.lists(ATTR, max_size=5).map(tuple),
)
SDP = st.builds(
    SessionDescription,
    origin=st.builds(Origin, TOKEN, TOKEN, TOKEN, TOKEN, TOKEN, TOKEN),
    session_name=VALUE,
    information=st.none() | VALUE,
    uri=st.none() | VALUE,
    emails=st.lists(VALUE, max_size=2).map(tuple),
    phones=st.lists(VALUE, max_size=2).map(tuple),
    connection=st.none() | CONN,
    bandwidths=st.lists(TOKEN, max_size=2).map(tuple),
    timings=st.lists(
        st.builds(
            Timing,
            st.integers(0, 2**40),
            st.integers(0, 2**40),
            st.lists(VALUE, max_size=2).map(tuple),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    zone=st.none() | VALUE,
    key=st.none() | VALUE,
    attributes=st.lists(ATTR, max_size=4).map(tuple),
    media=st.lists(MEDIA, max_size=3).map(tuple),
)


@given(SDP)
def test_model_round_trip(desc: SessionDescription) -> None:
    data = sdp.serialize(desc)
    assert sdp.parse(data) == desc
    assert sdp.serialize(sdp.parse(data)) == data


SAMPLES = [load(n) for n in sorted(p.name for p in FIXTURES.iterdir())]


@given(st.sampled_from(SAMPLES).flatmap(mutated))
def test_mutations_raise_only_codec_error(data: bytes) -> None:
    try:
        desc = sdp.parse(data)
    except CodecError:
        return
    try:
        sdp.msrp_media(desc)
    except CodecError:
        pass
    sdp.serialize(desc)
