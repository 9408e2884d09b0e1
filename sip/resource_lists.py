"""Resource lists (RFC 4826 §3) with copy control (RFC 5364), for URI-list services.

Why it looks like this
----------------------
A group-chat INVITE to the conference factory (RFC 5366) and a REFER that
adds several participants (RFC 5368) carry the invitees as an
``application/resource-lists+xml`` body part with ``Content-Disposition:
recipient-list`` (RFC 5366 §4).  Each ``<entry>`` may carry the
RFC 5364 attributes ``cp:copyControl`` (to/cc/bcc), ``cp:anonymize`` and
``cp:count``.

Lists nest; ``ResourceList.items`` keeps entries and sub-lists in document
order so the document round-trips.  ``entry-ref`` and ``external`` items
(references to other documents, meaningless inside a SIP body) and
elements of other namespaces are ignored on input.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from sip.errors import CodecError
from sip.xmlutil import (
    XMLNode,
    children,
    expect_root,
    parse_bool,
    parse_uint,
    parse_xml,
    qname,
    render_xml,
    text_node,
    text_of,
)

NAMESPACE = "urn:ietf:params:xml:ns:resource-lists"
COPYCONTROL_NAMESPACE = "urn:ietf:params:xml:ns:copycontrol"
CONTENT_TYPE = "application/resource-lists+xml"
CONTENT_DISPOSITION = "recipient-list"
_WHAT = "resource-lists"
_LIST = qname(NAMESPACE, "list")
_ENTRY = qname(NAMESPACE, "entry")
_DISPLAY_NAME = qname(NAMESPACE, "display-name")


class CopyControl(enum.StrEnum):
    """The ``cp:copyControl`` attribute (RFC 5364 §4)."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"


@dataclass(frozen=True)
class Entry:
    """An ``<entry>``: a URI with an optional display name and copy control."""

    uri: str
    display_name: str | None = None
    copy_control: CopyControl | None = None
    anonymize: bool | None = None
    count: int | None = None


@dataclass(frozen=True)
class ResourceList:
    """A ``<list>``: entries and nested lists in document order."""

    items: tuple[Entry | ResourceList, ...] = ()
    name: str | None = None
    display_name: str | None = None

    def entries(self) -> Iterator[Entry]:
        """Yields every entry of this list and its sub-lists, depth first."""
        for item in self.items:
            if isinstance(item, Entry):
                yield item
            else:
                yield from item.entries()


@dataclass(frozen=True)
class ResourceLists:
    """A ``<resource-lists>`` document (RFC 4826 §3.2)."""

    lists: tuple[ResourceList, ...] = ()

    def entries(self) -> tuple[Entry, ...]:
        """Returns every entry of every list, in document order."""
        return tuple(entry for lst in self.lists for entry in lst.entries())


def _display_name(element: Element) -> str | None:
    found = element.find(_DISPLAY_NAME)
    return None if found is None else text_of(found)


def _parse_entry(element: Element) -> Entry:
    uri = element.get("uri", "").strip()
    if not uri:
        raise CodecError("resource-lists: entry without uri")
    copy_text = element.get(qname(COPYCONTROL_NAMESPACE, "copyControl"))
    copy_control: CopyControl | None = None
    if copy_text is not None:
        try:
            copy_control = CopyControl(copy_text.strip().lower())
        except ValueError:
            raise CodecError(f"resource-lists: invalid copyControl {copy_text!r}") from None
    anonymize_text = element.get(qname(COPYCONTROL_NAMESPACE, "anonymize"))
    count_text = element.get(qname(COPYCONTROL_NAMESPACE, "count"))
    count = None if count_text is None else parse_uint(count_text, _WHAT, "count")
    if count == 0:
        raise CodecError("resource-lists: count is not an unsigned integer")
    return Entry(
        uri=uri,
        display_name=_display_name(element),
        copy_control=copy_control,
        anonymize=None
        if anonymize_text is None
        else parse_bool(anonymize_text, _WHAT, "anonymize"),
        count=count,
    )


def _parse_list(element: Element) -> ResourceList:
    items: list[Entry | ResourceList] = []
    for sub in element:
        if sub.tag == _ENTRY:
            items.append(_parse_entry(sub))
        elif sub.tag == _LIST:
            items.append(_parse_list(sub))
    return ResourceList(tuple(items), element.get("name"), _display_name(element))


def parse(data: bytes) -> ResourceLists:
    """Parses an ``application/resource-lists+xml`` body (RFC 4826 §3.2, RFC 5364 §4)."""
    root = parse_xml(data, _WHAT)
    expect_root(root, NAMESPACE, "resource-lists", _WHAT)
    return ResourceLists(tuple(_parse_list(e) for e in children(root, NAMESPACE, "list")))


def _entry_node(entry: Entry) -> XMLNode:
    attrs = [("uri", entry.uri)]
    if entry.copy_control is not None:
        attrs.append(("cp:copyControl", entry.copy_control.value))
    if entry.anonymize is not None:
        attrs.append(("cp:anonymize", "true" if entry.anonymize else "false"))
    if entry.count is not None:
        if entry.count <= 0:
            raise CodecError("resource-lists: count must be positive")
        attrs.append(("cp:count", str(entry.count)))
    return XMLNode("entry", tuple(attrs), text_node("display-name", entry.display_name))


def _list_node(lst: ResourceList) -> XMLNode:
    attrs = () if lst.name is None else (("name", lst.name),)
    nodes = [*text_node("display-name", lst.display_name)]
    for item in lst.items:
        nodes.append(_entry_node(item) if isinstance(item, Entry) else _list_node(item))
    return XMLNode("list", attrs, tuple(nodes))


def serialize(doc: ResourceLists) -> bytes:
    """Serializes a resource-lists document; the ``cp`` namespace is declared on the root."""
    root = XMLNode(
        "resource-lists",
        (("xmlns", NAMESPACE), ("xmlns:cp", COPYCONTROL_NAMESPACE)),
        tuple(_list_node(lst) for lst in doc.lists),
    )
    return render_xml(root, _WHAT)


def build_recipient_list(
    uris: Iterable[str], copy_control: CopyControl | None = CopyControl.TO
) -> ResourceLists:
    """Builds the one-list recipient-list body RCS clients send (RFC 5366 §4)."""
    entries = tuple(Entry(uri, copy_control=copy_control) for uri in uris)
    if not entries:
        raise CodecError("resource-lists: a recipient list needs at least one entry")
    return ResourceLists((ResourceList(entries),))
