"""conference-info documents (RFC 4575 §5) for the ``conference`` event package.

Why it looks like this
----------------------
Group chat learns its participants from NOTIFYs of the conference focus
(docs/protocol-mapping.md "Group chat", N12), and the bridge acts as a focus itself where
none exists, so the codec goes both ways.  The model covers what chat
needs: the conference description (subject, maximum-user-count), the
conference state, and users with their endpoints (status, joining and
disconnection method/info, media).  Other elements are ignored on input.

Tolerance for real focuses (docs/protocol-mapping.md "Interoperability rules"):

* the non-standard endpoint statuses ``declined`` and ``busy`` seen from RCS
  focuses are accepted (``EndpointStatus.DECLINED``/``BUSY``);
* the OMA ``yourown`` user attribute (in any or no namespace) marks the
  subscriber's own entry; it is written unqualified, as RCS clients read it;
* ``maximum-user-count`` is also read from ``conference-state``, where some
  focuses put it, and always written in ``conference-description``.

Absent optional elements stay ``None`` (or ``()``) so a document round-trips
and a partial document says only what changed.  ``users=None`` means the
``<users>`` element is absent; ``users=()`` means it is present and empty;
``users_state=None`` means ``<users>`` has no ``state`` attribute.  In a
partial document such a ``<users>`` is read as a delta (focuses omit the
attribute there), not as the schema's default ``full`` that would wipe
everyone not listed.

The pure ``ConferenceView`` (sip.conference_view) folds full and partial
documents into the current user set with RFC 4575 §4.6 version checks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar
from xml.etree.ElementTree import Element

from sip.errors import CodecError
from sip.xmlutil import (
    XMLNode,
    child,
    children,
    expect_root,
    format_datetime,
    parse_bool,
    parse_datetime,
    parse_uint,
    parse_xml,
    render_xml,
    text_node,
    text_of,
    token_of,
)

NAMESPACE = "urn:ietf:params:xml:ns:conference-info"
CONTENT_TYPE = "application/conference-info+xml"
EVENT_PACKAGE = "conference"
_WHAT = "conference-info"


class ElementState(enum.StrEnum):
    """The ``state`` attribute of partial-notification elements (RFC 4575 §5.1)."""

    FULL = "full"
    PARTIAL = "partial"
    DELETED = "deleted"


class EndpointStatus(enum.StrEnum):
    """Endpoint ``status`` (RFC 4575 §5.7.2) plus the non-standard RCS values."""

    PENDING = "pending"
    DIALING_OUT = "dialing-out"
    DIALING_IN = "dialing-in"
    ALERTING = "alerting"
    ON_HOLD = "on-hold"
    CONNECTED = "connected"
    MUTED_VIA_FOCUS = "muted-via-focus"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"
    DECLINED = "declined"
    BUSY = "busy"


class JoiningMethod(enum.StrEnum):
    """Endpoint ``joining-method`` (RFC 4575 §5.7.3)."""

    DIALED_IN = "dialed-in"
    DIALED_OUT = "dialed-out"
    FOCUS_OWNER = "focus-owner"


class DisconnectionMethod(enum.StrEnum):
    """Endpoint ``disconnection-method`` (RFC 4575 §5.7.5)."""

    DEPARTED = "departed"
    BOOTED = "booted"
    FAILED = "failed"
    BUSY = "busy"


class MediaStatus(enum.StrEnum):
    """Media ``status`` (RFC 4575 §5.7.8.5)."""

    RECVONLY = "recvonly"
    SENDONLY = "sendonly"
    SENDRECV = "sendrecv"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Execution:
    """An execution-type element: referred, joining-info, disconnection-info (§5.7.1)."""

    when: datetime | None = None
    reason: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """An endpoint ``<media>`` element (RFC 4575 §5.7.8)."""

    id: str
    display_text: str | None = None
    type: str | None = None
    label: str | None = None
    src_id: str | None = None
    status: MediaStatus | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A user's ``<endpoint>`` (RFC 4575 §5.7)."""

    entity: str | None = None
    state: ElementState = ElementState.FULL
    display_text: str | None = None
    referred: Execution | None = None
    status: EndpointStatus | None = None
    joining_method: JoiningMethod | None = None
    joining_info: Execution | None = None
    disconnection_method: DisconnectionMethod | None = None
    disconnection_info: Execution | None = None
    media: tuple[Media, ...] = ()


@dataclass(frozen=True, slots=True)
class User:
    """A ``<user>`` (RFC 4575 §5.6); ``yourown`` is the OMA self-entry marker."""

    entity: str | None = None
    state: ElementState = ElementState.FULL
    display_text: str | None = None
    roles: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    yourown: bool = False


@dataclass(frozen=True, slots=True)
class ConferenceDescription:
    """``<conference-description>`` (RFC 4575 §5.3), the parts chat uses."""

    display_text: str | None = None
    subject: str | None = None
    free_text: str | None = None
    maximum_user_count: int | None = None


@dataclass(frozen=True, slots=True)
class ConferenceState:
    """``<conference-state>`` (RFC 4575 §5.5)."""

    user_count: int | None = None
    active: bool | None = None
    locked: bool | None = None


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    """A ``<conference-info>`` document (RFC 4575 §5.2)."""

    entity: str
    state: ElementState = ElementState.FULL
    version: int | None = None
    description: ConferenceDescription | None = None
    conference_state: ConferenceState | None = None
    users: tuple[User, ...] | None = None
    users_state: ElementState | None = None


# ----------------------------------------------------------------------- parse

_T = TypeVar("_T", bound=enum.StrEnum)


def _enum(cls: type[_T], text: str, what: str) -> _T:
    try:
        return cls(text.strip().lower())
    except ValueError:
        raise CodecError(f"conference-info: unknown {what} {text.strip()!r}") from None


def _state(element: Element) -> ElementState:
    value = element.get("state")
    return ElementState.FULL if value is None else _enum(ElementState, value, "state")


def _text(parent: Element, local: str) -> str | None:
    found = child(parent, NAMESPACE, local)
    return None if found is None else text_of(found)


def _token(parent: Element, local: str) -> str | None:
    found = child(parent, NAMESPACE, local)
    return None if found is None else token_of(found)


def _uint(parent: Element, local: str) -> int | None:
    value = _token(parent, local)
    return None if value is None else parse_uint(value, _WHAT, local)


def _bool(parent: Element, local: str) -> bool | None:
    value = _token(parent, local)
    return None if value is None else parse_bool(value, _WHAT, local)


def _execution(parent: Element, local: str) -> Execution | None:
    found = child(parent, NAMESPACE, local)
    if found is None:
        return None
    when = _token(found, "when")
    return Execution(
        when=None if when is None else parse_datetime(when, f"conference-info: {local}"),
        reason=_text(found, "reason"),
        by=_token(found, "by"),
    )


def _media(element: Element) -> Media:
    media_id = element.get("id")
    if media_id is None:
        raise CodecError("conference-info: media without id")
    status = _token(element, "status")
    return Media(
        id=media_id,
        display_text=_text(element, "display-text"),
        type=_token(element, "type"),
        label=_token(element, "label"),
        src_id=_token(element, "src-id"),
        status=None if status is None else _enum(MediaStatus, status, "media status"),
    )


def _endpoint(element: Element) -> Endpoint:
    status = _token(element, "status")
    joining = _token(element, "joining-method")
    disconnection = _token(element, "disconnection-method")
    return Endpoint(
        entity=element.get("entity"),
        state=_state(element),
        display_text=_text(element, "display-text"),
        referred=_execution(element, "referred"),
        status=None if status is None else _enum(EndpointStatus, status, "endpoint status"),
        joining_method=None if joining is None else _enum(JoiningMethod, joining, "joining-method"),
        joining_info=_execution(element, "joining-info"),
        disconnection_method=None
        if disconnection is None
        else _enum(DisconnectionMethod, disconnection, "disconnection-method"),
        disconnection_info=_execution(element, "disconnection-info"),
        media=tuple(_media(m) for m in children(element, NAMESPACE, "media")),
    )


def _yourown(element: Element) -> bool:
    for name, value in element.attrib.items():
        if name.rsplit("}", 1)[-1] == "yourown":
            return parse_bool(value, _WHAT, "yourown")
    return False


def _user(element: Element) -> User:
    roles = child(element, NAMESPACE, "roles")
    return User(
        entity=element.get("entity"),
        state=_state(element),
        display_text=_text(element, "display-text"),
        roles=()
        if roles is None
        else tuple(token_of(e) for e in children(roles, NAMESPACE, "entry")),
        endpoints=tuple(_endpoint(e) for e in children(element, NAMESPACE, "endpoint")),
        yourown=_yourown(element),
    )


def parse(data: bytes) -> ConferenceInfo:
    """Parses an ``application/conference-info+xml`` body (RFC 4575 §5)."""
    root = parse_xml(data, _WHAT)
    expect_root(root, NAMESPACE, "conference-info", _WHAT)
    entity = root.get("entity")
    if entity is None:
        raise CodecError("conference-info: missing entity")
    version = root.get("version")
    desc_elem = child(root, NAMESPACE, "conference-description")
    state_elem = child(root, NAMESPACE, "conference-state")
    users_elem = child(root, NAMESPACE, "users")
    description = None
    if desc_elem is not None:
        description = ConferenceDescription(
            display_text=_text(desc_elem, "display-text"),
            subject=_text(desc_elem, "subject"),
            free_text=_text(desc_elem, "free-text"),
            maximum_user_count=_uint(desc_elem, "maximum-user-count"),
        )
    conference_state = None
    if state_elem is not None:
        misplaced = _uint(state_elem, "maximum-user-count")
        if misplaced is not None:
            description = replace(
                description or ConferenceDescription(), maximum_user_count=misplaced
            )
        conference_state = ConferenceState(
            user_count=_uint(state_elem, "user-count"),
            active=_bool(state_elem, "active"),
            locked=_bool(state_elem, "locked"),
        )
    return ConferenceInfo(
        entity=entity,
        state=_state(root),
        version=None if version is None else parse_uint(version, _WHAT, "version"),
        description=description,
        conference_state=conference_state,
        users=None
        if users_elem is None
        else tuple(_user(u) for u in children(users_elem, NAMESPACE, "user")),
        users_state=None
        if users_elem is None or users_elem.get("state") is None
        else _state(users_elem),
    )


# ------------------------------------------------------------------- serialize


def _execution_node(tag: str, value: Execution | None) -> tuple[XMLNode, ...]:
    if value is None:
        return ()
    when = None if value.when is None else format_datetime(value.when)
    nodes = (
        *text_node("when", when),
        *text_node("reason", value.reason),
        *text_node("by", value.by),
    )
    return (XMLNode(tag, children=nodes),)


def _enum_node(tag: str, value: enum.StrEnum | None) -> tuple[XMLNode, ...]:
    return text_node(tag, None if value is None else value.value)


def _media_node(media: Media) -> XMLNode:
    nodes = (
        *text_node("display-text", media.display_text),
        *text_node("type", media.type),
        *text_node("label", media.label),
        *text_node("src-id", media.src_id),
        *_enum_node("status", media.status),
    )
    return XMLNode("media", (("id", media.id),), nodes)


def _entity_attrs(entity: str | None, state: ElementState) -> tuple[tuple[str, str], ...]:
    attrs = () if entity is None else (("entity", entity),)
    return (*attrs, ("state", state.value))


def _endpoint_node(endpoint: Endpoint) -> XMLNode:
    nodes = (
        *text_node("display-text", endpoint.display_text),
        *_execution_node("referred", endpoint.referred),
        *_enum_node("status", endpoint.status),
        *_enum_node("joining-method", endpoint.joining_method),
        *_execution_node("joining-info", endpoint.joining_info),
        *_enum_node("disconnection-method", endpoint.disconnection_method),
        *_execution_node("disconnection-info", endpoint.disconnection_info),
        *(_media_node(m) for m in endpoint.media),
    )
    return XMLNode("endpoint", _entity_attrs(endpoint.entity, endpoint.state), nodes)


def _user_node(user: User) -> XMLNode:
    attrs = _entity_attrs(user.entity, user.state)
    if user.yourown:
        attrs = (*attrs, ("yourown", "true"))
    roles = (
        (XMLNode("roles", children=tuple(XMLNode("entry", text=r) for r in user.roles)),)
        if user.roles
        else ()
    )
    nodes = (
        *text_node("display-text", user.display_text),
        *roles,
        *(_endpoint_node(e) for e in user.endpoints),
    )
    return XMLNode("user", attrs, nodes)


def _bool_text(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def serialize(doc: ConferenceInfo) -> bytes:
    """Serializes a conference-info document in RFC 4575 element order."""
    attrs: tuple[tuple[str, str], ...] = (
        ("xmlns", NAMESPACE),
        ("entity", doc.entity),
        ("state", doc.state.value),
    )
    if doc.version is not None:
        attrs = (*attrs, ("version", str(doc.version)))
    nodes: list[XMLNode] = []
    if doc.description is not None:
        d = doc.description
        count = None if d.maximum_user_count is None else str(d.maximum_user_count)
        desc_nodes = (
            *text_node("display-text", d.display_text),
            *text_node("subject", d.subject),
            *text_node("free-text", d.free_text),
            *text_node("maximum-user-count", count),
        )
        nodes.append(XMLNode("conference-description", children=desc_nodes))
    if doc.conference_state is not None:
        s = doc.conference_state
        user_count = None if s.user_count is None else str(s.user_count)
        state_nodes = (
            *text_node("user-count", user_count),
            *text_node("active", _bool_text(s.active)),
            *text_node("locked", _bool_text(s.locked)),
        )
        nodes.append(XMLNode("conference-state", children=state_nodes))
    if doc.users is not None:
        users_attrs = () if doc.users_state is None else (("state", doc.users_state.value),)
        nodes.append(XMLNode("users", users_attrs, tuple(_user_node(u) for u in doc.users)))
    return render_xml(XMLNode("conference-info", attrs, tuple(nodes)), _WHAT)
