"""IMDN XML documents: delivery, display and processing notifications (RFC 5438 §7.2.1, §9).

Why it looks like this
----------------------
An IMDN answers one message: it names the original ``imdn.Message-ID`` and
``DateTime``, optionally the recipient (``recipient-uri`` /
``original-recipient-uri``, used when an IM server fans out a message) and
exactly one notification with one status.  Which statuses a notification
may carry is fixed by RFC 5438 (docs/protocol-mapping.md "Reports"):

* delivery-notification: delivered, failed, forbidden, error;
* display-notification: displayed, forbidden, error;
* processing-notification: processed, stored, forbidden, error.

``datetime`` stays a string: RFC 5438 types it as ``xs:string`` and echoes
the original CPIM ``DateTime``, whatever its format; ``build_imdn`` formats an
aware ``datetime`` for callers that have one.  Elements of other namespaces
(e.g. linphone's ``<reason>``) are ignored on input.  ``serialize`` writes the
``render_xml`` layout directly (the document shape is fixed) as every chat
message sends or receives one IMDN.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import Element

from sip.errors import CodecError
from sip.xmlutil import (
    escape_text,
    expect_root,
    format_datetime,
    parse_xml,
    qname,
    token_of,
)

NAMESPACE = "urn:ietf:params:xml:ns:imdn"
CONTENT_TYPE = "message/imdn+xml"
CONTENT_DISPOSITION = "notification"
_WHAT = "imdn"


class NotificationType(enum.StrEnum):
    """The notification element of an IMDN (RFC 5438 §7.2.1)."""

    DELIVERY = "delivery-notification"
    DISPLAY = "display-notification"
    PROCESSING = "processing-notification"


class Status(enum.StrEnum):
    """The status element inside a notification (RFC 5438 §7.2.1.1-3)."""

    DELIVERED = "delivered"
    FAILED = "failed"
    DISPLAYED = "displayed"
    PROCESSED = "processed"
    STORED = "stored"
    FORBIDDEN = "forbidden"
    ERROR = "error"


ALLOWED_STATUSES: dict[NotificationType, frozenset[Status]] = {
    NotificationType.DELIVERY: frozenset(
        {Status.DELIVERED, Status.FAILED, Status.FORBIDDEN, Status.ERROR}
    ),
    NotificationType.DISPLAY: frozenset({Status.DISPLAYED, Status.FORBIDDEN, Status.ERROR}),
    NotificationType.PROCESSING: frozenset(
        {Status.PROCESSED, Status.STORED, Status.FORBIDDEN, Status.ERROR}
    ),
}


@dataclass(frozen=True)
class IMDN:
    """One IMDN document (RFC 5438 §7.2.1)."""

    message_id: str
    datetime: str
    notification: NotificationType
    status: Status
    recipient_uri: str | None = None
    original_recipient_uri: str | None = None
    subject: str | None = None


_Q = {
    local: qname(NAMESPACE, local)
    for local in (
        "message-id",
        "datetime",
        "recipient-uri",
        "original-recipient-uri",
        "subject",
        "status",
        *(kind.value for kind in NotificationType),
    )
}
_IN_NAMESPACE = f"{{{NAMESPACE}}}"
_KINDS = tuple((kind, _Q[kind.value]) for kind in NotificationType)
_STATUSES = {status.value: status for status in Status}


def _optional_text(parent: Element, local: str) -> str | None:
    found = parent.find(_Q[local])
    return None if found is None else token_of(found)


def parse(data: bytes) -> IMDN:
    """Parses a ``message/imdn+xml`` body (RFC 5438 §7.2.1)."""
    root = parse_xml(data, _WHAT)
    expect_root(root, NAMESPACE, "imdn", _WHAT)
    message_id = _optional_text(root, "message-id")
    if not message_id:
        raise CodecError("imdn: missing message-id")
    stamp = _optional_text(root, "datetime")
    if not stamp:
        raise CodecError("imdn: missing datetime")
    found: list[tuple[NotificationType, Status]] = []
    for kind, tag in _KINDS:
        element = root.find(tag)
        if element is None:
            continue
        status_elem = element.find(_Q["status"])
        statuses = () if status_elem is None else status_elem
        known = [s.tag for s in statuses if s.tag.startswith(_IN_NAMESPACE)]
        if len(known) != 1:
            raise CodecError(f"imdn: {kind.value} needs exactly one status")
        local = known[0][len(_IN_NAMESPACE) :]
        status = _STATUSES.get(local)
        if status is None:
            raise CodecError(f"imdn: unknown status {local!r}")
        if status not in ALLOWED_STATUSES[kind]:
            raise CodecError(f"imdn: status {local!r} is not valid in {kind.value}")
        found.append((kind, status))
    if len(found) != 1:
        raise CodecError("imdn: expected exactly one notification element")
    kind, status = found[0]
    subject_elem = root.find(_Q["subject"])
    return IMDN(
        message_id=message_id,
        datetime=stamp,
        notification=kind,
        status=status,
        recipient_uri=_optional_text(root, "recipient-uri"),
        original_recipient_uri=_optional_text(root, "original-recipient-uri"),
        subject=None if subject_elem is None else subject_elem.text or "",
    )


_HEAD = f'<?xml version="1.0" encoding="UTF-8"?>\n<imdn xmlns="{NAMESPACE}">\n'


def _text_line(tag: str, value: str | None) -> str:
    """One child of the root as ``render_xml`` writes it; '' for None."""
    if value is None:
        return ""
    if not value:
        return f"  <{tag}/>\n"
    return f"  <{tag}>{escape_text(value, _WHAT)}</{tag}>\n"


def serialize(imdn: IMDN) -> bytes:
    """Serializes an IMDN document in the canonical layout."""
    if imdn.status not in ALLOWED_STATUSES[imdn.notification]:
        raise CodecError(
            f"imdn: status {imdn.status.value!r} is not valid in {imdn.notification.value}"
        )
    if (imdn.recipient_uri is None) != (imdn.original_recipient_uri is None):
        raise CodecError("imdn: recipient-uri and original-recipient-uri go together")
    if imdn.subject is not None and imdn.recipient_uri is None:
        raise CodecError("imdn: subject needs recipient-uri")
    # the layout of render_xml (sip.xmlutil), written directly: the document is fixed
    kind = imdn.notification.value
    return "".join(
        (
            _HEAD,
            _text_line("message-id", imdn.message_id),
            _text_line("datetime", imdn.datetime),
            _text_line("recipient-uri", imdn.recipient_uri),
            _text_line("original-recipient-uri", imdn.original_recipient_uri),
            _text_line("subject", imdn.subject),
            f"  <{kind}>\n    <status>\n      <{imdn.status.value}/>\n",
            f"    </status>\n  </{kind}>\n</imdn>\n",
        )
    ).encode("utf-8")


def build_imdn(
    *,
    message_id: str,
    original_datetime: datetime | str,
    notification: NotificationType,
    status: Status,
    recipient_uri: str | None = None,
) -> IMDN:
    """Builds an IMDN for a received message; its datetime echoes the original (RFC 5438)."""
    stamp = (
        original_datetime
        if isinstance(original_datetime, str)
        else format_datetime(original_datetime)
    )
    return IMDN(
        message_id=message_id,
        datetime=stamp,
        notification=notification,
        status=status,
        recipient_uri=recipient_uri,
        original_recipient_uri=recipient_uri,
    )
