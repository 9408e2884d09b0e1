"""Safe XML reading and canonical XML writing shared by the XML codecs.

Why this module exists
----------------------
The XML bodies the bridge reads (IMDN, isComposing, conference-info,
resource-lists) come from remote peers, so the parser must be immune to
entity expansion ("billion laughs") and external entities.  The stdlib
``xml.etree`` parser resolves internal entities, so ``parse_xml`` drives
``pyexpat`` directly: any DOCTYPE is refused before an entity can be
declared, parameter-entity parsing is off, and nesting depth is bounded.
Expat expands every name to ``namespace + local name``, so a long namespace
declared once would be copied into every element's tag: a 62 KB body with a
30,000-character default namespace and 8,000 empty elements once took 240 MB.
The parse is therefore bounded in namespace length and count, element count,
attributes per element and attribute length (the ``MAX_*`` constants), which keeps
memory within a small multiple of the body.  Every failure surfaces as
``CodecError`` with a fixed message, an unsupported encoding included.  Expat buffers
character data, and the converted element names are memoised (bounded in count
and length), which keeps the Python callbacks per element to two.

Writing goes through a tiny node tree (``XMLNode``) rendered in one
canonical form (UTF-8 declaration, two-space indentation, ``<x/>`` for empty
elements) so that ``serialize(parse(x)) == x`` holds for canonical input.

The RFC 3339 helpers (CPIM ``DateTime``, isComposing ``lastactive``,
conference-info ``when``) live here as well, being shared by several codecs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current, read_uint

# the defaults of the limits (sip.limits.Limits.xml_*; parse_xml reads current())
MAX_DEPTH = DEFAULT_LIMITS.xml_depth
MAX_ELEMENTS = DEFAULT_LIMITS.xml_elements
MAX_ATTRIBUTES = DEFAULT_LIMITS.xml_attributes
MAX_ATTRIBUTE_LENGTH = DEFAULT_LIMITS.xml_attribute_length
MAX_NAMESPACE_LENGTH = DEFAULT_LIMITS.xml_namespace_length
MAX_NAMESPACES = DEFAULT_LIMITS.xml_namespaces

_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


_QUALIFIED: dict[str, str] = {}
_QUALIFIED_MAX = 4096
"""Memo of expat names already converted (bounded in count and length: names come from peers)."""


def _qualify(name: str) -> str:
    known = _QUALIFIED.get(name)
    if known is not None:
        return known
    uri, sep, local = name.rpartition("\x1f")
    qualified = f"{{{uri}}}{local}" if sep else local
    if len(_QUALIFIED) < _QUALIFIED_MAX and len(name) <= 256:
        _QUALIFIED[name] = qualified
    return qualified


def parse_xml(data: bytes, what: str) -> Element:
    """Parses ``data`` into an element tree, refusing DTDs and deep nesting."""
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="\x1f")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True  # one data callback per text run
    depth = 0
    elements = 0
    namespaces = 0
    limits = current()
    max_depth, max_elements = limits.xml_depth, limits.xml_elements
    max_attributes, max_attribute_length = limits.xml_attributes, limits.xml_attribute_length
    max_namespaces, max_namespace_length = limits.xml_namespaces, limits.xml_namespace_length
    builder_start = builder.start
    builder_end = builder.end

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, elements
        depth += 1
        elements += 1
        if depth > max_depth:
            raise CodecError(f"{what}: XML nesting deeper than {max_depth} levels")
        if elements > max_elements:
            raise CodecError(f"{what}: more than {max_elements} XML elements")
        if not attrs:
            builder_start(_qualify(name), {})
            return
        if len(attrs) > max_attributes:
            raise CodecError(f"{what}: more than {max_attributes} attributes on an XML element")
        for value in attrs.values():
            if len(value) > max_attribute_length:
                raise CodecError(
                    f"{what}: XML attribute longer than {max_attribute_length} characters"
                )
        builder_start(_qualify(name), {_qualify(k): v for k, v in attrs.items()})

    def namespace(_prefix: str | None, uri: str | None) -> None:
        nonlocal namespaces
        namespaces += 1
        if namespaces > max_namespaces:
            raise CodecError(f"{what}: more than {max_namespaces} XML namespace declarations")
        if uri is not None and len(uri) > max_namespace_length:
            raise CodecError(
                f"{what}: XML namespace name longer than {max_namespace_length} characters"
            )

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder_end(_qualify(name))

    def doctype(*_args: object) -> None:
        raise CodecError(f"{what}: DOCTYPE is not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = doctype
    parser.StartNamespaceDeclHandler = namespace
    try:
        parser.Parse(data, True)
    except CodecError:
        raise
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        raise CodecError(
            f"{what}: malformed XML: {message} at line {exc.lineno}, column {exc.offset}"
        ) from None
    except (LookupError, ValueError):  # ValueError: "multi-byte encodings are not supported"
        raise CodecError(f"{what}: unsupported XML encoding") from None
    return builder.close()


def qname(namespace: str, local: str) -> str:
    """Returns the ElementTree ``{namespace}local`` form."""
    return f"{{{namespace}}}{local}"


def expect_root(root: Element, namespace: str, local: str, what: str) -> None:
    """Checks the root element's qualified name."""
    if root.tag != qname(namespace, local):
        raise CodecError(f"{what}: root element is not {local} in {namespace}")


def text_of(element: Element) -> str:
    """Returns the element's character content ('' when empty)."""
    return element.text or ""


def token_of(element: Element) -> str:
    """Returns the element's character content with surrounding whitespace removed."""
    return text_of(element).strip()


def children(element: Element, namespace: str, local: str) -> list[Element]:
    """Returns the direct children named ``{namespace}local``."""
    return element.findall(qname(namespace, local))


def child(element: Element, namespace: str, local: str) -> Element | None:
    """Returns the first direct child named ``{namespace}local``, if any."""
    return element.find(qname(namespace, local))


def parse_uint(text: str, what: str, field: str) -> int:
    """Parses an ``xs:unsignedInt`` value."""
    value = read_uint(text.strip(), 10)
    if value is None or value > 0xFFFFFFFF:
        raise CodecError(f"{what}: {field} is not an unsigned integer")
    return value


def parse_bool(text: str, what: str, field: str) -> bool:
    """Parses an ``xs:boolean`` value."""
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise CodecError(f"{what}: {field} is not a boolean")


@dataclass(frozen=True)
class XMLNode:
    """One element to write: ``tag`` may carry a prefix (``cp:copyControl``)."""

    tag: str
    attributes: tuple[tuple[str, str], ...] = ()
    children: tuple[XMLNode, ...] = ()
    text: str | None = None


def _check_chars(value: str, what: str) -> None:
    if _XML_CHAR.search(value):
        raise CodecError(f"{what}: text contains a character not allowed in XML")


def escape_text(value: str, what: str) -> str:
    """Escapes character content (``\\r`` kept as a reference so it survives parsing)."""
    _check_chars(value, what)
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def escape_attribute(value: str, what: str) -> str:
    """Escapes an attribute value for double quotes."""
    return (
        escape_text(value, what).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    )


def _render(node: XMLNode, indent: int, what: str, out: list[str]) -> None:
    pad = "  " * indent
    attrs = "".join(f' {k}="{escape_attribute(v, what)}"' for k, v in node.attributes)
    if node.children:
        out.append(f"{pad}<{node.tag}{attrs}>\n")
        for sub in node.children:
            _render(sub, indent + 1, what, out)
        out.append(f"{pad}</{node.tag}>\n")
    elif node.text:
        out.append(f"{pad}<{node.tag}{attrs}>{escape_text(node.text, what)}</{node.tag}>\n")
    else:
        out.append(f"{pad}<{node.tag}{attrs}/>\n")


def render_xml(root: XMLNode, what: str) -> bytes:
    """Renders ``root`` as a UTF-8 XML document in the canonical layout."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _render(root, 0, what, out)
    return "".join(out).encode("utf-8")


def text_node(tag: str, value: str | None) -> tuple[XMLNode, ...]:
    """Returns a one-element tuple with a text element, or ``()`` for None."""
    return () if value is None else (XMLNode(tag, text=value),)


# RFC 3339 date-time (section 5.6), liberal on input: fraction of any length,
# 't'/'z' in lower case, and a missing offset read as UTC.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)


def parse_datetime(text: str, what: str) -> datetime:
    """Parses an RFC 3339 date-time; the result is always timezone-aware."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise CodecError(f"{what}: invalid date-time {text.strip()!r}")
    year, month, day, hour, minute, second, fraction, _, sign, tzh, tzm = match.groups()
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    tz = timezone.utc
    if sign:
        offset = timedelta(hours=int(tzh), minutes=int(tzm))
        if offset >= _DAY:
            raise CodecError(f"{what}: invalid date-time {text.strip()!r}")
        tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        raise CodecError(f"{what}: invalid date-time {text.strip()!r}") from None


_ZERO = timedelta(0)
_DAY = timedelta(hours=24)


def format_datetime(value: datetime) -> str:
    """Formats an aware datetime as RFC 3339 with milliseconds (``Z`` for UTC)."""
    offset = value.utcoffset()
    if offset is None:
        raise CodecError("date-time must be timezone-aware")
    # isoformat writes a four-digit year and truncates to milliseconds; [:23] drops its offset
    stamp = datetime.isoformat(value, timespec="milliseconds")[:23]
    if not offset:
        return stamp + "Z"
    sign = "-" if offset < _ZERO else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{stamp}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
