"""Resource lists (RFC 4826) with copy control (RFC 5364), checked against both schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from sip import resource_lists
from sip.errors import CodecError
from sip.resource_lists import CopyControl, Entry, ResourceList, ResourceLists
from tests.strategies import mutated

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs" / "resource_lists"
SCHEMA = etree.XMLSchema(
    etree.parse(str(Path(__file__).parent.parent / "fixtures/xsd/copycontrol.xsd"))
)
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def assert_valid(data: bytes) -> None:
    SCHEMA.assertValid(etree.fromstring(data, SAFE))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_samples_are_schema_valid(name: str) -> None:
    if "prefixed" not in name:  # that one is liberal input: copyControl="TO"
        assert_valid(load(name))
    assert_valid(resource_lists.serialize(resource_lists.parse(load(name))))


@pytest.mark.parametrize("name", ["rcsjta_group_invite.xml", "copycontrol_canonical.xml"])
def test_canonical_round_trip(name: str) -> None:
    data = load(name)
    assert resource_lists.serialize(resource_lists.parse(data)) == data


def test_rcsjta_list_equals_builder() -> None:
    doc = resource_lists.parse(load("rcsjta_group_invite.xml"))
    assert doc == resource_lists.build_recipient_list(["tel:+15551230002", "tel:+15551230003"])
    assert [e.uri for e in doc.entries()] == ["tel:+15551230002", "tel:+15551230003"]


def test_nested_lists_and_copy_control() -> None:
    doc = resource_lists.parse(load("copycontrol_canonical.xml"))
    (top,) = doc.lists
    assert top.name == "friends" and top.display_name == "Friends & family"
    assert doc.entries() == (
        Entry("sip:bill@example.com", "Bill Doe", CopyControl.TO),
        Entry("sip:randy@example.net", copy_control=CopyControl.CC, count=2),
        Entry("sip:eddy@example.com", copy_control=CopyControl.BCC, anonymize=True),
        Entry("tel:+15551230004"),
    )
    assert isinstance(top.items[2], ResourceList) and top.items[2].name == "hidden"


def test_prefixed_document_ignores_references_and_extensions() -> None:
    doc = resource_lists.parse(load("rfc4826_style_prefixed.xml"))
    assert doc.entries() == (Entry("sip:joe@example.com", "Joe", CopyControl.TO, anonymize=False),)


RL = b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists" xmlns:cp="urn:ietf:params:xml:ns:copycontrol"><list>'  # noqa: E501
BROKEN = [
    (
        b"<resource-lists/>",
        "resource-lists: root element is not resource-lists in urn:ietf:params:xml:ns:resource-lists",  # noqa: E501
    ),
    (RL + b"<entry/></list></resource-lists>", "resource-lists: entry without uri"),
    (RL + b'<entry uri=" "/></list></resource-lists>', "resource-lists: entry without uri"),
    (
        RL + b'<entry uri="a" cp:copyControl="from"/></list></resource-lists>',
        "resource-lists: invalid copyControl 'from'",
    ),
    (
        RL + b'<entry uri="a" cp:anonymize="yes"/></list></resource-lists>',
        "resource-lists: anonymize is not a boolean",
    ),
    (
        RL + b'<entry uri="a" cp:count="x"/></list></resource-lists>',
        "resource-lists: count is not an unsigned integer",
    ),
    (
        RL + b'<entry uri="a" cp:count="0"/></list></resource-lists>',
        "resource-lists: count is not an unsigned integer",
    ),
    (
        RL + b"<entry uri='a'></list></resource-lists>",
        "resource-lists: malformed XML: mismatched tag at line 1, column 131",
    ),
]


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        resource_lists.parse(data)
    assert str(info.value) == message


def test_serialize_and_build_errors() -> None:
    with pytest.raises(CodecError, match="^resource-lists: count must be positive$"):
        resource_lists.serialize(ResourceLists((ResourceList((Entry("a", count=0),)),)))
    with pytest.raises(
        CodecError, match="^resource-lists: a recipient list needs at least one entry$"
    ):
        resource_lists.build_recipient_list([])


def test_build_without_copy_control() -> None:
    doc = resource_lists.build_recipient_list(["sip:a@x"], copy_control=None)
    assert b'<entry uri="sip:a@x"/>' in resource_lists.serialize(doc)


# ------------------------------------------------------------------ hypothesis

URI = st.from_regex(r"(sip|tel):[A-Za-z0-9+@.;=_-]{1,20}", fullmatch=True)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=16)
ENTRIES = st.builds(
    Entry,
    uri=URI,
    display_name=st.none() | TEXT,
    copy_control=st.none() | st.sampled_from(list(CopyControl)),
    anonymize=st.none() | st.booleans(),
    count=st.none() | st.integers(1, 1000),
)
LISTS = st.recursive(
    st.builds(ResourceList, st.lists(ENTRIES, max_size=3).map(tuple)),
    lambda inner: st.builds(
        ResourceList,
        st.lists(ENTRIES | inner, max_size=3).map(tuple),
        st.none() | TEXT,
        st.none() | TEXT,
    ),
    max_leaves=8,
)
DOCS = st.builds(ResourceLists, st.lists(LISTS, max_size=3).map(tuple))


@given(DOCS)
def test_model_round_trip(doc: ResourceLists) -> None:
    data = resource_lists.serialize(doc)
    assert resource_lists.parse(data) == doc
    assert_valid(data)


SAMPLES = [load(n) for n in sorted(p.name for p in FIXTURES.iterdir())]


@given(st.sampled_from(SAMPLES).flatmap(mutated))
def test_mutations_raise_only_codec_error(data: bytes) -> None:
    try:
        doc = resource_lists.parse(data)
    except CodecError:
        return
    try:
        assert resource_lists.parse(resource_lists.serialize(doc)) == doc
    except CodecError as exc:
        assert str(exc) == "resource-lists: text contains a character not allowed in XML"
