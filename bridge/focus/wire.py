"""Pure helpers of the focus: the bodies and headers of docs/group-chat.md ("Wire contract").

* ``parse_offer``: the SDP and the recipient list of a create INVITE (RFC 5366 §4,
  ``multipart/mixed`` with ``Content-Disposition: recipient-list``), or of a dial-out answer.
* ``offer``/``answer``: the focus's MSRP SDP (RFC 4975 §8; ``actpass`` offer, RFC 6135).
* ``dialout_body``: SDP offer + the current participant list as
  ``recipient-list-history`` (RFC 5364 §9; docs/group-chat.md item 2).
* ``focus_contact``: ``<conference URI>;isfocus`` plus the profile's feature tags
  (RFC 4579 §3.1; docs/group-chat.md item 1).
* ``parse_refer_to``: the target of a REFER and whether it asks for a BYE (RFC 4579 §5.5).
* ``refer_targets``: the Refer-To of a REFER, or the entries of the resource list a
  ``Refer-To: <cid:…>`` names (multiple-refer, RFC 5368; cid URLs, RFC 2392).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from sip import imdn, iscomposing, multipart, rcs, resource_lists, sdp
from sip.errors import CodecError
from sip.uri import SipURI, parse_uri

ACCEPT_TYPES = ("message/cpim",)
ACCEPT_WRAPPED_TYPES = ("text/plain", imdn.CONTENT_TYPE, iscomposing.CONTENT_TYPE)
HISTORY_DISPOSITION = "recipient-list-history"
RECIPIENT_LIST_OPTION = "recipient-list-invite"


class BadOffer(CodecError):
    """A create INVITE the focus cannot take; ``status`` is the SIP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Offer:
    """What a create INVITE (or a dial-out answer) carries."""

    description: sdp.SessionDescription
    media: sdp.MSRPMedia
    entries: tuple[resource_lists.Entry, ...] | None


def key_of(uri: str) -> str:
    """The comparison key of a user address (``sip.rcs.normalize_user``, else as given)."""
    try:
        return rcs.normalize_user(uri)
    except ValueError:
        return uri.strip().strip("<>")


def parse_offer(body: bytes, content_type: str | None) -> Offer:
    """Splits an INVITE or 200 body into its SDP and its recipient list (if any)."""
    ctype = multipart.parse_content_type(content_type or sdp.CONTENT_TYPE)
    entries: tuple[resource_lists.Entry, ...] | None = None
    if ctype.media_type == multipart.CONTENT_TYPE:
        parts = multipart.parse(body, content_type or "")
        sdp_part = parts.find(sdp.CONTENT_TYPE)
        list_part = parts.find(resource_lists.CONTENT_TYPE)
        if sdp_part is None:
            raise BadOffer(488, "No SDP offer")
        sdp_body = sdp_part.body
        if list_part is not None:
            entries = resource_lists.parse(list_part.body).entries()
    elif ctype.media_type == sdp.CONTENT_TYPE:
        sdp_body = body
    else:
        raise BadOffer(415, "Unsupported Media Type")
    description = sdp.parse(sdp_body)
    return Offer(description, sdp.msrp_media(description), entries)


def offer(address: str, port: int, path: str) -> bytes:
    """The focus's MSRP offer for a dial-out: ``actpass`` (RFC 6135 §4.2)."""
    return sdp.serialize(
        sdp.msrp_offer(
            address=address,
            port=port,
            path=tuple(path.split()),
            accept_types=ACCEPT_TYPES,
            accept_wrapped_types=ACCEPT_WRAPPED_TYPES,
            session_id=sdp.new_origin_id(),
        )
    )


def answer(
    remote: sdp.SessionDescription,
    address: str,
    port: int,
    path: str,
    fingerprint: str | None = None,
) -> bytes:
    """The focus's MSRP answer to a creator's offer (active to ``actpass``, RFC 6135); an
    msrps offer is answered ``TCP/TLS/MSRP`` with our ``fingerprint`` (RFC 4975 §14)."""
    return sdp.serialize(
        sdp.msrp_answer(
            remote,
            address=address,
            port=port,
            path=tuple(path.split()),
            accept_types=ACCEPT_TYPES,
            accept_wrapped_types=ACCEPT_WRAPPED_TYPES,
            session_id=sdp.new_origin_id(),
            fingerprint=fingerprint,
        )
    )


def participant_list(entries: Iterable[tuple[str, str | None]]) -> bytes:
    """A resource list of ``(uri, display name)`` pairs (RFC 4826 §3)."""
    items = tuple(
        resource_lists.Entry(uri, display_name=name, copy_control=resource_lists.CopyControl.TO)
        for uri, name in entries
    )
    return resource_lists.serialize(
        resource_lists.ResourceLists((resource_lists.ResourceList(items),))
    )


def dialout_body(sdp_body: bytes, participants: bytes) -> tuple[bytes, str]:
    """The dial-out INVITE body: SDP + ``recipient-list-history`` (docs/group-chat.md item 2)."""
    body = multipart.Multipart(
        "boundary-" + secrets.token_hex(8),
        (
            multipart.Part.build(sdp.CONTENT_TYPE, sdp_body),
            multipart.Part.build(
                resource_lists.CONTENT_TYPE, participants, disposition=HISTORY_DISPOSITION
            ),
        ),
    )
    return multipart.serialize(body), body.content_type


def focus_contact(host: str, port: int, transport: str, user: str, profile: rcs.Profile) -> str:
    """``<sip:conf-…@host:port>;isfocus;<feature tags>`` (RFC 4579 §3.1)."""
    tport = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:{user}@{host}:{port}{tport}>;isfocus;{rcs.feature_tags(profile)}"


def parse_refer_to(value: str) -> tuple[str, bool]:
    """The Refer-To target (without ``method``) and whether it asks to remove (RFC 4579 §5.5)."""
    raw = value.strip()
    if "<" in raw:
        raw = raw[raw.index("<") + 1 : raw.rindex(">")]
    uri = parse_uri(raw)
    if isinstance(uri, SipURI):
        method = uri.param("method")
        is_bye = method is not None and method.upper() == "BYE"
        return str(uri.without_params("method")), is_bye
    head, _, params = raw.partition(";")
    is_bye = any(p.strip().lower() == "method=bye" for p in params.split(";"))
    kept = [p for p in params.split(";") if p and not p.strip().lower().startswith("method=")]
    return ";".join([head, *kept]), is_bye


def _content_id(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


def refer_targets(
    refer_to: str, body: bytes, content_type: str | None, content_id: str | None
) -> list[str]:
    """The Refer-To values a REFER carries: its own, or with ``Refer-To: <cid:…>`` one per
    entry of the ``application/resource-lists+xml`` body (part) whose Content-ID the cid URL
    names (RFC 5368; cid URLs, RFC 2392 §2); an entry's URI may carry ``method=BYE``."""
    raw = refer_to.strip()
    if "<" in raw and ">" in raw:
        raw = raw[raw.index("<") + 1 : raw.rindex(">")]
    if not raw.lower().startswith("cid:"):
        return [refer_to]
    cid = unquote(raw[4:]).strip()
    ctype = multipart.parse_content_type(content_type or "")
    listed: bytes | None = None
    if ctype.media_type == resource_lists.CONTENT_TYPE:
        if _content_id(content_id) in ("", cid):
            listed = body
    elif ctype.media_type == multipart.CONTENT_TYPE:
        for part in multipart.parse(body, content_type or "").parts:
            part_type = part.content_type
            part_id = multipart.header_value(part.headers, "Content-ID")
            if (
                part_type is not None
                and part_type.media_type == resource_lists.CONTENT_TYPE
                and _content_id(part_id) == cid
            ):
                listed = part.body
                break
    if listed is None:
        raise CodecError(f"refer: no resource list with Content-ID {cid!r}")
    return [entry.uri for entry in resource_lists.parse(listed).entries()]
