"""isComposing documents (RFC 3994 §3, §4).

Why it looks like this
----------------------
A composer sends ``active`` while typing (with ``refresh``: the seconds
before it sends another ``active``) and ``idle`` when it stops; the
receiver falls back to idle after ``refresh`` seconds, or after
``DEFAULT_ACTIVE_TIMEOUT`` when no refresh was given (RFC 3994 §3.2;
docs/protocol-mapping.md "isComposing").  The codec only carries the values: timing is
the session's job.  ``contenttype`` is free text (tests send
``test/plain``), and elements of other namespaces are ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sip.errors import CodecError
from sip.limits import read_uint
from sip.xmlutil import (
    XMLNode,
    child,
    expect_root,
    format_datetime,
    parse_datetime,
    parse_xml,
    render_xml,
    text_node,
    token_of,
)

NAMESPACE = "urn:ietf:params:xml:ns:im-iscomposing"
CONTENT_TYPE = "application/im-iscomposing+xml"
DEFAULT_ACTIVE_TIMEOUT = 120
"""Seconds an ``active`` state lasts when the sender gave no refresh (RFC 3994 §3.2)."""
DEFAULT_REFRESH = 60
"""Refresh interval the bridge announces (rcsjta uses 60)."""
_WHAT = "iscomposing"


class ComposingState(enum.StrEnum):
    """The ``state`` element (RFC 3994 §4)."""

    ACTIVE = "active"
    IDLE = "idle"


@dataclass(frozen=True)
class IsComposing:
    """One isComposing document (RFC 3994 §4)."""

    state: ComposingState
    last_active: datetime | None = None
    content_type: str | None = None
    refresh: int | None = None

    @property
    def active_timeout(self) -> int | None:
        """Seconds after which the receiver treats an ``active`` state as idle."""
        if self.state is ComposingState.IDLE:
            return None
        return self.refresh if self.refresh is not None else DEFAULT_ACTIVE_TIMEOUT


def parse(data: bytes) -> IsComposing:
    """Parses an ``application/im-iscomposing+xml`` body (RFC 3994 §4)."""
    root = parse_xml(data, _WHAT)
    expect_root(root, NAMESPACE, "isComposing", _WHAT)
    state_elem = child(root, NAMESPACE, "state")
    if state_elem is None:
        raise CodecError("iscomposing: missing state")
    state_text = token_of(state_elem)
    try:
        state = ComposingState(state_text.lower())
    except ValueError:
        raise CodecError(f"iscomposing: unknown state {state_text!r}") from None
    last_elem = child(root, NAMESPACE, "lastactive")
    type_elem = child(root, NAMESPACE, "contenttype")
    refresh_elem = child(root, NAMESPACE, "refresh")
    refresh: int | None = None
    if refresh_elem is not None:
        text = token_of(refresh_elem)
        refresh = read_uint(text)
        if not refresh:
            raise CodecError(f"iscomposing: refresh is not a positive integer: {text[:40]!r}")
    return IsComposing(
        state=state,
        last_active=None
        if last_elem is None
        else parse_datetime(token_of(last_elem), "iscomposing: lastactive"),
        content_type=None if type_elem is None else token_of(type_elem),
        refresh=refresh,
    )


def serialize(doc: IsComposing) -> bytes:
    """Serializes an isComposing document in the canonical layout."""
    if doc.refresh is not None and doc.refresh <= 0:
        raise CodecError("iscomposing: refresh must be positive")
    last = None if doc.last_active is None else format_datetime(doc.last_active)
    nodes = (
        XMLNode("state", text=doc.state.value),
        *text_node("lastactive", last),
        *text_node("contenttype", doc.content_type),
        *text_node("refresh", None if doc.refresh is None else str(doc.refresh)),
    )
    return render_xml(XMLNode("isComposing", (("xmlns", NAMESPACE),), nodes), _WHAT)
