"""XML bodies of the chat and Notification Channel APIs (OMA NetAPI Common; docs/rest-formats.md).

The mapping is the one the OMA JSON encoding is derived from, read backwards:

* the root element is the JSON root name, qualified in the namespace of its
  API (:func:`namespace_of`): chat ``urn:oma:xml:rest:netapi:chat:1``, common
  ``urn:oma:xml:rest:netapi:common:1`` (``requestError``,
  ``resourceReference``), notification channel
  ``urn:oma:xml:rest:netapi:notificationchannel:1``;
* child elements carry the JSON member names, unqualified; a JSON array is the
  element repeated; numbers and booleans are their XSD lexical forms;
* a JSON ``"type": "nc:LongPollingData"`` member is the ``xsi:type`` attribute
  of its element;
* in a ``notificationList`` each item is its notification's root element,
  qualified in its API's namespace.

Reading is guided by the pydantic model of the expected root (which members
repeat, which are structures); the values are then validated by the model
exactly as JSON ones are (lax mode: ``"true"``, ``"5"``).

Parsing is safe against hostile input (the approach of the SIP codecs'
expat reader): any DOCTYPE is refused before an entity can be declared,
parameter entities are never parsed, nesting is bounded by :data:`MAX_DEPTH`
and the body size by the application's ``client_max_size``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from pydantic import BaseModel

XML = "application/xml"
CHAT_NS = "urn:oma:xml:rest:netapi:chat:1"
COMMON_NS = "urn:oma:xml:rest:netapi:common:1"
NC_NS = "urn:oma:xml:rest:netapi:notificationchannel:1"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PREFIXES: dict[str, str] = {CHAT_NS: "chat", COMMON_NS: "common", NC_NS: "nc"}
_XSI_TYPE = f"{{{XSI_NS}}}type"

COMMON_ROOTS = frozenset({"requestError", "resourceReference"})
CHANNEL_ROOTS = frozenset({"notificationChannel", "notificationChannelList", "notificationList"})

MAX_DEPTH = 32
"""Deepest element nesting accepted (the deepest OMA chat body has 5 levels)."""
MAX_ELEMENTS = 10_000
"""Most elements accepted in one body."""

_DECLARATIONS = (
    f' xmlns:chat="{CHAT_NS}" xmlns:common="{COMMON_NS}" xmlns:nc="{NC_NS}" xmlns:xsi="{XSI_NS}"'
)


class XMLBodyError(ValueError):
    """The body is not acceptable XML (the message says why; rendered as 400 SVC0002)."""


def namespace_of(root: str) -> str:
    """The namespace of a root element name (the API that defines it)."""
    if root in COMMON_ROOTS:
        return COMMON_NS
    if root in CHANNEL_ROOTS:
        return NC_NS
    return CHAT_NS


def is_xml(content_type: str) -> bool:
    """True for ``application/xml``, ``text/xml`` and ``application/…+xml``."""
    return content_type in {XML, "text/xml"} or (
        content_type.startswith("application/") and content_type.endswith("+xml")
    )


# --- reading -----------------------------------------------------------------


def _local(tag: str) -> tuple[str, str]:
    uri, sep, local = tag.rpartition("\x1f")
    return (uri, local) if sep else ("", tag)


def parse_xml(data: bytes) -> Element:
    """Parse ``data`` into an element tree: no DTD, no entities, bounded depth and size.

    Tags are ``{namespace}local`` (ElementTree form). Raises :class:`XMLBodyError`.
    """
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="\x1f")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    depth = 0
    count = 0

    def qualify(name: str) -> str:
        uri, local = _local(name)
        return f"{{{uri}}}{local}" if uri else local

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, count
        depth += 1
        count += 1
        if depth > MAX_DEPTH:
            raise XMLBodyError(f"XML nesting deeper than {MAX_DEPTH} levels")
        if count > MAX_ELEMENTS:
            raise XMLBodyError(f"more than {MAX_ELEMENTS} XML elements")
        builder.start(qualify(name), {qualify(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(qualify(name))

    def refuse(*_args: object) -> None:
        raise XMLBodyError("DOCTYPE and entity declarations are not allowed")

    def refuse_external(*_args: object) -> int:
        raise XMLBodyError("external entities are not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        raise XMLBodyError(
            f"malformed XML: {message} at line {exc.lineno}, column {exc.offset}"
        ) from None
    except (LookupError, UnicodeError):
        raise XMLBodyError("unsupported XML encoding") from None
    return builder.close()


def split_tag(tag: str) -> tuple[str, str]:
    """``{ns}local`` → (ns, local); a tag without namespace → ("", tag)."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """(repeats, item type) of a field annotation (Optional and Annotated removed)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else Any
        elif origin is list:
            (item,) = typing.get_args(annotation)
            return True, _unwrap(item)[1]
        else:
            return False, annotation


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def fields_by_name(model: type[BaseModel]) -> dict[str, tuple[bool, Any]]:
    """Element name → (repeats, item type) of every field of ``model``."""
    out: dict[str, tuple[bool, Any]] = {}
    for name, info in model.model_fields.items():
        element = info.alias or name
        out[element] = _unwrap(info.annotation)
    return out


def element_data(element: Element, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON-shaped content of ``element`` read as ``model`` (not validated yet)."""
    fields = fields_by_name(model)
    data: dict[str, Any] = {}
    xsi_type = element.get(_XSI_TYPE)
    if xsi_type is not None and "type" in fields:
        prefix, _, local = xsi_type.rpartition(":")
        data["type"] = f"nc:{local}" if prefix else local
    for child in element:
        _, name = split_tag(child.tag)
        repeats, kind = fields.get(name, (False, None))
        value: Any
        if _is_model(kind):
            value = element_data(child, kind)
        elif len(child):
            raise XMLBodyError(f"element {name!r} must not have child elements")
        else:
            value = child.text or ""
        if repeats:
            data.setdefault(name, []).append(value)
        elif name in data:
            raise XMLBodyError(f"element {name!r} must not repeat")
        else:
            data[name] = value
    return data


def read_document(data: bytes, models: Mapping[str, type[BaseModel]]) -> tuple[str, dict[str, Any]]:
    """(root, JSON-shaped content) of an XML body whose root is a key of ``models``."""
    root = parse_xml(data)
    ns, local = split_tag(root.tag)
    if local not in models:
        expected = " or ".join(repr(r) for r in models)
        raise XMLBodyError(f"expected one root element {expected}, found {local!r}")
    if ns and ns != namespace_of(local):
        raise XMLBodyError(f"root element {local!r} must be in namespace {namespace_of(local)}")
    return local, element_data(root, models[local])


# --- writing -----------------------------------------------------------------


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return escape(str(value))


def _write(out: list[str], name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            _write(out, name, item)
        return
    if isinstance(value, dict):
        attrs = ""
        if isinstance(value.get("type"), str):
            attrs = f" xsi:type={quoteattr(value['type'])}"
        inner: list[str] = []
        for key, member in value.items():
            if key != "type" or not attrs:
                _write(inner, key, member)
        out.append(f"<{name}{attrs}>{''.join(inner)}</{name}>" if inner else f"<{name}{attrs}/>")
        return
    out.append(f"<{name}>{_text(value)}</{name}>")


def render(root: str, content: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> bytes:
    """The XML document of the JSON-shaped ``{root: content}``.

    A list ``content`` (``notificationList``) holds single-root items, each
    written as its root element in its own API's namespace.
    """
    prefix = PREFIXES[namespace_of(root)]
    inner: list[str] = []
    if isinstance(content, Mapping):
        for key, member in content.items():
            _write(inner, key, member)
    else:
        for item in content:
            for item_root, body in item.items():
                _write(inner, f"{PREFIXES[namespace_of(item_root)]}:{item_root}", dict(body))
    tag = f"{prefix}:{root}"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag}{_DECLARATIONS}>{"".join(inner)}</{tag}>'
    ).encode()


def render_model(root: str, model: BaseModel) -> bytes:
    """The XML document of ``{root: model}``."""
    return render(root, model.model_dump(mode="json", by_alias=True, exclude_none=True))


def parse_model(data: bytes, model: type[BaseModel]) -> BaseModel:
    """Parse and validate an XML document whose root is ``model.ROOT`` (tests, clients)."""
    root_name = str(getattr(model, "ROOT", "")) or model.__name__[0].lower() + model.__name__[1:]
    _, content = read_document(data, {root_name: model})
    return model.model_validate(content)
