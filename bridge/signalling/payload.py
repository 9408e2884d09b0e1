"""Bodies of 1-1 chat: the SDP offer/answer, CPIM chat messages, IMDNs and isComposing.

Pure functions between the domain values of ``bridge.chat`` and the codecs of
``sip/`` (sdp, cpim, imdn, iscomposing, multipart); no I/O, no clock (times
are passed in). The adapter (``bridge.signalling.adapter``) moves the bytes.

Choices (docs/protocol-mapping.md "SDP and MSRP", "CPIM, IMDN and isComposing bodies"):

* We offer ``a=setup:actpass`` and answer ``active`` to ``actpass`` (RFC 6135),
  with ``message/cpim`` and ``application/im-iscomposing+xml`` as
  accept-types and ``text/plain``, ``message/imdn+xml`` and isComposing as
  wrapped types (``message/imdn+xml`` must be there, rcsjta issue #208).
* A chat message and an IMDN are always CPIM-wrapped; a 1-1 isComposing is
  sent bare when the peer lists it in accept-types, else CPIM-wrapped.
* Inbound we accept CPIM with text, IMDN or isComposing inside, and bare
  ``text/plain`` or isComposing. The sender of a 1-1 message is the session
  peer (P-Asserted-Identity), never the CPIM From, which may be anonymous.
  A message without ``imdn.Message-ID`` gets the transport's id instead.
* Group legs (docs/group-chat.md, wire contract 4-5): CPIM From/To always carry
  the real URIs (SIMPLE-IM's anonymous parties are for 1-1 only), isComposing is
  always CPIM-wrapped, and the sender of what arrives is the CPIM From (the
  focus relays every member's traffic on one session), see :func:`decode_group`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bridge.chat.model import Composing, ComposingState, Disposition, ReportKind
from bridge.chat.ports import IncomingMessage, OutgoingMessage, OutgoingReport
from bridge.ids import MessageId, UserUri
from sip import cpim, imdn, iscomposing, multipart, rcs, resource_lists, sdp
from sip.errors import CodecError


class UnsupportedContent(CodecError):
    """A body of a type the bridge does not take (answered 415 / 488)."""


ACCEPT_TYPES = ("message/cpim", iscomposing.CONTENT_TYPE)
ACCEPT_WRAPPED_TYPES = ("text/plain", imdn.CONTENT_TYPE, iscomposing.CONTENT_TYPE)

_DISPOSITIONS = {
    Disposition.POSITIVE_DELIVERY: cpim.Disposition.POSITIVE_DELIVERY,
    Disposition.NEGATIVE_DELIVERY: cpim.Disposition.NEGATIVE_DELIVERY,
    Disposition.DISPLAY: cpim.Disposition.DISPLAY,
}
_DISPOSITION_ORDER = (
    Disposition.POSITIVE_DELIVERY,
    Disposition.NEGATIVE_DELIVERY,
    Disposition.DISPLAY,
)
_FROM_CPIM = {v: k for k, v in _DISPOSITIONS.items()}
_REPORTS = {
    ReportKind.DELIVERED: (imdn.NotificationType.DELIVERY, imdn.Status.DELIVERED),
    ReportKind.DISPLAYED: (imdn.NotificationType.DISPLAY, imdn.Status.DISPLAYED),
    ReportKind.FAILED: (imdn.NotificationType.DELIVERY, imdn.Status.FAILED),
}


# --- SDP -------------------------------------------------------------------------------


def offer(address: str, port: int, path: str, fingerprint: str | None = None) -> bytes:
    """Our MSRP offer: ``actpass``, our ``a=path`` (docs/protocol-mapping.md "SDP and MSRP");
    with ``fingerprint`` (an ``msrps`` path) ``TCP/TLS/MSRP`` and ``a=fingerprint`` (RFC 4975
    §14, RFC 8122)."""
    desc = sdp.msrp_offer(
        address=address,
        port=port,
        path=tuple(path.split()),
        accept_types=ACCEPT_TYPES,
        accept_wrapped_types=ACCEPT_WRAPPED_TYPES,
        session_id=sdp.new_origin_id(),
        tls=fingerprint is not None,
        fingerprint=fingerprint,
    )
    return sdp.serialize(desc)


def answer(
    remote: sdp.SessionDescription,
    address: str,
    port: int,
    path: str,
    fingerprint: str | None = None,
) -> bytes:
    """Our MSRP answer to ``remote`` (RFC 6135 roles: active to actpass); a
    ``TCP/TLS/MSRP`` offer is answered in kind with our ``fingerprint``."""
    desc = sdp.msrp_answer(
        remote,
        address=address,
        port=port,
        path=tuple(path.split()),
        accept_types=ACCEPT_TYPES,
        accept_wrapped_types=ACCEPT_WRAPPED_TYPES,
        session_id=sdp.new_origin_id(),
        fingerprint=fingerprint,
    )
    return sdp.serialize(desc)


def invite_body(
    sdp_body: bytes, first: bytes | None, recipients: bytes | None = None
) -> tuple[bytes, str]:
    """The INVITE body: SDP alone, or multipart/mixed SDP + message/cpim (adhoc first message),
    or SDP + the recipient list of a group INVITE (RFC 5366 §4; docs/group-chat.md)."""
    if first is None and recipients is None:
        return sdp_body, sdp.CONTENT_TYPE
    parts = [multipart.Part.build(sdp.CONTENT_TYPE, sdp_body)]
    if first is not None:
        parts.append(multipart.Part.build(cpim.CONTENT_TYPE, first))
    if recipients is not None:
        parts.append(
            multipart.Part.build(
                resource_lists.CONTENT_TYPE,
                recipients,
                disposition=resource_lists.CONTENT_DISPOSITION,
            )
        )
    body = multipart.Multipart("boundary-" + secrets.token_hex(8), tuple(parts))
    return multipart.serialize(body), body.content_type


@dataclass(frozen=True)
class InviteOffer:
    """What an INVITE body carries: the SDP and, maybe, a first message in CPIM."""

    description: sdp.SessionDescription
    media: sdp.MSRPMedia
    first: bytes | None = None
    recipients: bytes | None = None
    """The ``application/resource-lists+xml`` part (a focus's dial-out, RFC 5366)."""


def split_invite_body(body: bytes, content_type: str | None) -> InviteOffer:
    """Parses an INVITE body (SDP, or multipart/mixed with SDP and message/cpim)."""
    if not content_type:
        raise CodecError("invite: no body (late offer is not supported)")
    ctype = multipart.parse_content_type(content_type)
    first: bytes | None = None
    recipients: bytes | None = None
    if ctype.media_type.startswith("multipart/"):
        parts = multipart.parse(body, content_type)
        sdp_part = parts.find(sdp.CONTENT_TYPE)
        if sdp_part is None:
            raise CodecError("invite: multipart body without application/sdp")
        cpim_part = parts.find(cpim.CONTENT_TYPE)
        first = None if cpim_part is None else cpim_part.body
        list_part = parts.find(resource_lists.CONTENT_TYPE)
        recipients = None if list_part is None else list_part.body
        sdp_bytes = sdp_part.body
    elif ctype.media_type == sdp.CONTENT_TYPE:
        sdp_bytes = body
    else:
        raise UnsupportedContent(f"invite: unsupported body type {ctype.media_type}")
    desc = sdp.parse(sdp_bytes)
    return InviteOffer(desc, sdp.msrp_media(desc), first, recipients)


# --- outgoing CPIM -----------------------------------------------------------------------


def _party(profile: rcs.Profile, uri: str, group: bool = False) -> cpim.NameAddr:
    return cpim.NameAddr(uri if group else rcs.cpim_party(profile, uri))


def recipient_list(invitees: Iterable[tuple[str, str | None]]) -> bytes:
    """The ``recipient-list`` body of a group INVITE: one ``copyControl="to"`` entry per
    (address, display name) (RFC 5366 §4, RFC 5364; docs/group-chat.md contract 1)."""
    entries = tuple(
        resource_lists.Entry(uri, name, resource_lists.CopyControl.TO) for uri, name in invitees
    )
    if not entries:
        raise CodecError("resource-lists: a recipient list needs at least one entry")
    doc = resource_lists.ResourceLists((resource_lists.ResourceList(entries),))
    return resource_lists.serialize(doc)


def chat_message(profile: rcs.Profile, message: OutgoingMessage, *, group: bool = False) -> bytes:
    """The CPIM envelope of a chat message (RFC 3862; real From/To on a group leg)."""
    wanted = tuple(_DISPOSITIONS[d] for d in _DISPOSITION_ORDER if d in message.dispositions)
    envelope = cpim.build_chat_message(
        sender=_party(profile, message.user, group),
        recipient=_party(profile, message.peer, group),
        message_id=message.message_id,
        timestamp=message.date_time,
        body=message.text.encode("utf-8"),
        content_type=f"{message.content_type};charset=UTF-8",
        dispositions=wanted,
    )
    return cpim.serialize(envelope)


def report(
    profile: rcs.Profile, outgoing: OutgoingReport, now: datetime, *, group: bool = False
) -> bytes:
    """The CPIM-wrapped IMDN for a received message (RFC 3862, RFC 5438).

    On a group leg From/To are the real URIs: the focus relays the report to the
    member named in To (RFC 5438 §7.1.1.3).
    """
    notification, status = _REPORTS[outgoing.kind]
    doc = imdn.build_imdn(
        message_id=outgoing.message_id,
        original_datetime=outgoing.original_date_time,
        notification=notification,
        status=status,
    )
    envelope = cpim.build_imdn_message(
        sender=_party(profile, outgoing.user, group),
        recipient=_party(profile, outgoing.peer, group),
        message_id="r" + secrets.token_hex(12),
        timestamp=now,
        imdn_xml=imdn.serialize(doc),
    )
    return cpim.serialize(envelope)


def composing(state: Composing) -> bytes:
    """An isComposing document (RFC 3994)."""
    doc = iscomposing.IsComposing(
        state=iscomposing.ComposingState(state.state.value),
        last_active=state.last_active,
        content_type=state.content_type,
        refresh=state.refresh,
    )
    return iscomposing.serialize(doc)


def wrapped_composing(
    profile: rcs.Profile, user: str, peer: str, body: bytes, now: datetime, *, group: bool = False
) -> bytes:
    """isComposing inside CPIM, for peers that list it only as a wrapped type (and on
    every group leg, with the real From: the focus relays it to the members)."""
    envelope = cpim.build_iscomposing_message(
        sender=_party(profile, user, group),
        recipient=_party(profile, peer, group),
        timestamp=now,
        iscomposing_xml=body,
    )
    return cpim.serialize(envelope)


# --- inbound -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedReport:
    """An IMDN decoded from a received body."""

    message_id: MessageId
    kind: ReportKind


Decoded = IncomingMessage | ReceivedReport | Composing


def _report_kind(doc: imdn.IMDN) -> ReportKind:
    if doc.notification is imdn.NotificationType.DISPLAY:
        return ReportKind.DISPLAYED if doc.status is imdn.Status.DISPLAYED else ReportKind.FAILED
    if doc.notification is imdn.NotificationType.DELIVERY:
        return ReportKind.DELIVERED if doc.status is imdn.Status.DELIVERED else ReportKind.FAILED
    raise CodecError(f"imdn: {doc.notification.value} is not reported to the app")


def _composing(body: bytes) -> Composing:
    doc = iscomposing.parse(body)
    return Composing(
        state=ComposingState(doc.state.value),
        last_active=doc.last_active,
        content_type=doc.content_type,
        refresh=doc.refresh,
    )


def _text(body: bytes, content_type: str | None) -> str:
    charset = "utf-8"
    if content_type:
        charset = multipart.parse_content_type(content_type).param("charset") or "utf-8"
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise CodecError(f"chat: undecodable text ({charset}): {exc}") from None


def decode(content_type: str | None, body: bytes, *, sender: UserUri, fallback_id: str) -> Decoded:
    """Decodes a received chat body (MSRP SEND or SIP MESSAGE; docs/protocol-mapping.md N8-N11).

    ``sender`` is the session peer (or the asserted sender of a MESSAGE);
    ``fallback_id`` names a message that has no ``imdn.Message-ID``.
    Raises CodecError for a body the bridge cannot use.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == cpim.CONTENT_TYPE:
        return _decode_cpim(cpim.parse(body), sender, fallback_id)
    if media == iscomposing.CONTENT_TYPE:
        return _composing(body)
    if media == "text/plain":
        return IncomingMessage(
            message_id=MessageId(fallback_id), sender=sender, text=_text(body, content_type)
        )
    raise UnsupportedContent(f"chat: unsupported content type {media or '(none)'}")


def decode_group(
    content_type: str | None, body: bytes, *, focus: UserUri, fallback_id: str
) -> tuple[UserUri, Decoded]:
    """Decodes a body received on a group leg: (its sender, what it is).

    The sender is the CPIM From, normalized (docs/group-chat.md contract 4: the
    focus relays the envelope unchanged); ``focus`` when the body is not CPIM or
    its From is missing, anonymous or no user URI. Raises CodecError.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != cpim.CONTENT_TYPE:
        return focus, decode(content_type, body, sender=focus, fallback_id=fallback_id)
    envelope = cpim.parse(body)
    sender = focus
    if envelope.sender is not None and envelope.sender.uri != rcs.ANONYMOUS_URI:
        try:
            sender = UserUri(rcs.normalize_user(envelope.sender.uri))
        except ValueError:
            sender = focus
    return sender, _decode_cpim(envelope, sender, fallback_id)


def _decode_cpim(envelope: cpim.CPIMMessage, sender: UserUri, fallback_id: str) -> Decoded:
    inner = envelope.media_type
    if inner == cpim.IMDN_CONTENT_TYPE:
        doc = imdn.parse(envelope.body)
        return ReceivedReport(MessageId(doc.message_id), _report_kind(doc))
    if inner == iscomposing.CONTENT_TYPE:
        return _composing(envelope.body)
    if inner is None or inner.startswith("text/"):
        wanted = frozenset(
            _FROM_CPIM[d] for d in envelope.requested_dispositions() if d in _FROM_CPIM
        )
        name = envelope.sender.display_name if envelope.sender is not None else None
        return IncomingMessage(
            message_id=MessageId(envelope.message_id or fallback_id),
            sender=sender,
            text=_text(envelope.body, envelope.content_type),
            date_time=envelope.datetime,
            dispositions=wanted,
            sender_name=name,
            content_type=inner or "text/plain",
            route=envelope.imdn_record_route,
        )
    raise UnsupportedContent(f"chat: unsupported CPIM payload {inner}")
