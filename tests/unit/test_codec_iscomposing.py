"""isComposing documents (RFC 3994), checked against the schema of RFC 3994 §4."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from sip import iscomposing
from sip.errors import CodecError
from sip.iscomposing import ComposingState, IsComposing
from tests.strategies import mutated

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs" / "iscomposing"
SCHEMA = etree.XMLSchema(
    etree.parse(str(Path(__file__).parent.parent / "fixtures/xsd/iscomposing.xsd"))
)
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)
UTC = timezone.utc


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def assert_valid(data: bytes) -> None:
    SCHEMA.assertValid(etree.fromstring(data, SAFE))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_samples_are_schema_valid(name: str) -> None:
    assert_valid(load(name))
    assert_valid(iscomposing.serialize(iscomposing.parse(load(name))))


def test_canonical_round_trip() -> None:
    data = load("active_canonical.xml")
    doc = iscomposing.parse(data)
    assert doc == IsComposing(
        ComposingState.ACTIVE, datetime(2024, 5, 1, 10, tzinfo=UTC), "text/plain", 60
    )
    assert iscomposing.serialize(doc) == data
    assert doc.active_timeout == 60


def test_rcsjta_idle() -> None:
    doc = iscomposing.parse(load("idle_rcsjta.xml"))
    assert doc.state is ComposingState.IDLE
    assert doc.refresh is None and doc.active_timeout is None
    assert doc.last_active is not None
    assert doc.last_active.utcoffset() == timedelta(hours=2)


def test_prefixed_with_extension_and_default_timeout() -> None:
    doc = iscomposing.parse(load("active_extension_ns_prefix.xml"))
    assert doc == IsComposing(ComposingState.ACTIVE, content_type="test/plain")
    assert doc.active_timeout == iscomposing.DEFAULT_ACTIVE_TIMEOUT


NS = b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
BROKEN = [
    (
        b"<isComposing/>",
        "iscomposing: root element is not isComposing in urn:ietf:params:xml:ns:im-iscomposing",
    ),
    (NS + b"</isComposing>", "iscomposing: missing state"),
    (NS + b"<state>typing</state></isComposing>", "iscomposing: unknown state 'typing'"),
    (
        NS + b"<state>idle</state><refresh>0</refresh></isComposing>",
        "iscomposing: refresh is not a positive integer: '0'",
    ),
    (
        NS + b"<state>idle</state><refresh>-5</refresh></isComposing>",
        "iscomposing: refresh is not a positive integer: '-5'",
    ),
    (
        NS + b"<state>idle</state><lastactive>now</lastactive></isComposing>",
        "iscomposing: lastactive: invalid date-time 'now'",
    ),
]


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        iscomposing.parse(data)
    assert str(info.value) == message


def test_serialize_refuses_bad_refresh() -> None:
    with pytest.raises(CodecError, match="^iscomposing: refresh must be positive$"):
        iscomposing.serialize(IsComposing(ComposingState.ACTIVE, refresh=0))


STAMP = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))]),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
DOCS = st.builds(
    IsComposing,
    state=st.sampled_from(list(ComposingState)),
    last_active=st.none() | STAMP,
    content_type=st.none() | st.from_regex(r"[a-z]{1,8}/[a-z+.-]{1,12}", fullmatch=True),
    refresh=st.none() | st.integers(1, 2**31),
)


@given(DOCS)
def test_model_round_trip(doc: IsComposing) -> None:
    data = iscomposing.serialize(doc)
    assert iscomposing.parse(data) == doc
    assert_valid(data)


SAMPLES = [load(n) for n in sorted(p.name for p in FIXTURES.iterdir())]


@given(st.sampled_from(SAMPLES).flatmap(mutated))
def test_mutations_raise_only_codec_error(data: bytes) -> None:
    try:
        doc = iscomposing.parse(data)
    except CodecError:
        return
    try:
        assert iscomposing.parse(iscomposing.serialize(doc)).state is doc.state
    except CodecError as exc:
        assert str(exc) == "iscomposing: text contains a character not allowed in XML"
