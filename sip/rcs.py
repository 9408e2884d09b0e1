"""RCS signalling profiles: the SIP header sets of CPM and SIMPLE-IM.

The table: docs/protocol-mapping.md "Signalling profiles".

Pure functions over frozen values; no I/O, no clock, nothing from ``bridge``.

Why it looks like this
----------------------
An IMS core routes chat on the service identification a request carries, and
peers classify what they receive on the Contact feature tags, so one coherent
profile must be used everywhere (docs/protocol-mapping.md "Interoperability rules"):

* **CPM** (RCS Universal Profile, OMA CPM; the default): Contact and
  Accept-Contact carry the CPM session ICSI ``+g.3gpp.icsi-ref``; session
  requests carry ``P-Preferred-Service: ...oma.cpm.session``, pager MESSAGEs
  ``...oma.cpm.msg``; every session has a ``Contribution-ID`` (UUID) and every
  conversation a ``Conversation-ID`` (UUID, stable across sessions of one
  pair); User-Agent / Server ``CPM-client/OMA1.0``; CPIM From/To carry the real
  user URIs (as rust-rcs does).
* **SIMPLE-IM** (RCS 5.x, OMA SIMPLE IM): the ``+g.oma.sip-im`` tag,
  ``Contribution-ID`` only (32 hex digits, as rcsjta), no P-Preferred-Service,
  User-Agent ``IM-client/OMA1.0``; 1-1 CPIM From/To are
  ``sip:anonymous@anonymous.invalid`` (rcsjta), so the receiver takes the
  sender from P-Asserted-Identity.

Identity follows the trusted application server model (docs/decisions.md
"Trusted application server"): From and P-Asserted-Identity are the user the bridge acts for; the
SIP stack puts them in every request it builds. This module only adds the
profile's headers.

:func:`classify_invite` is the N1 classification order of rcsjta's
``ImsServiceDispatcher`` (docs/protocol-mapping.md N1): file transfer, store-and-forward
notification, group (``isfocus``), store-and-forward push (``Referred-By``),
else 1-1.
"""

from __future__ import annotations

import enum
import re
import secrets
import uuid
from dataclasses import dataclass

Header = tuple[str, str]

CPM_SESSION_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"
CPM_MSG_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg"
CPM_LARGEMSG_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.largemsg"
CPM_DEFERRED_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.deferred"
SIMPLE_IM_TAG = "+g.oma.sip-im"
FT_HTTP_IARI = "urn:urn-7:3gpp-application.ims.iari.rcs.fthttp"
SF_SERVER_USER = "rcse-standfw@"
"""User part of the store-and-forward server identity (rcsjta StoreAndForwardManager)."""

CPM_USER_AGENT = "CPM-client/OMA1.0"
SIMPLE_IM_USER_AGENT = "IM-client/OMA1.0"
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"

_E164 = re.compile(r"^\+[0-9]{1,20}$")
_VISUAL = re.compile(r"[-.() ]")


class Profile(enum.StrEnum):
    """The signalling profile toward one network (docs/decisions.md "Signalling profiles")."""

    CPM = "CPM"
    SIMPLE_IM = "SIMPLE-IM"


def _icsi_tag(icsi: str) -> str:
    return '+g.3gpp.icsi-ref="' + icsi.replace(":", "%3A") + '"'


def feature_tags(profile: Profile) -> str:
    """The Contact feature tags of chat session requests and responses (a profile's set)."""
    if profile is Profile.CPM:
        return _icsi_tag(CPM_SESSION_ICSI)
    return SIMPLE_IM_TAG


def user_agent(profile: Profile) -> str:
    """The User-Agent / Server value of the profile."""
    return CPM_USER_AGENT if profile is Profile.CPM else SIMPLE_IM_USER_AGENT


def new_contribution_id(profile: Profile) -> str:
    """A fresh Contribution-ID: a UUID (CPM) or 32 hex digits (SIMPLE-IM, as rcsjta)."""
    return str(uuid.uuid4()) if profile is Profile.CPM else secrets.token_hex(16)


def new_conversation_id() -> str:
    """A fresh Conversation-ID (CPM only; stable for one conversation)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ChatIds:
    """The RCS correlation ids of one chat session (docs/protocol-mapping.md "Identifiers")."""

    contribution_id: str
    conversation_id: str | None = None
    in_reply_to: str | None = None
    """InReplyTo-Contribution-ID (CPM): the peer's Contribution-ID we answer into."""


def new_chat_ids(profile: Profile, conversation_id: str | None = None) -> ChatIds:
    """Ids for a new outgoing session; CPM keeps ``conversation_id`` when given."""
    if profile is Profile.CPM:
        return ChatIds(new_contribution_id(profile), conversation_id or new_conversation_id())
    return ChatIds(new_contribution_id(profile))


def session_headers(profile: Profile, ids: ChatIds) -> tuple[Header, ...]:
    """Headers of a 1-1 chat INVITE beyond From/To/PAI/Contact."""
    if profile is Profile.CPM:
        out: list[Header] = [
            ("Accept-Contact", "*;" + _icsi_tag(CPM_SESSION_ICSI)),
            ("P-Preferred-Service", CPM_SESSION_ICSI),
            ("Contribution-ID", ids.contribution_id),
        ]
        if ids.conversation_id:
            out.append(("Conversation-ID", ids.conversation_id))
        if ids.in_reply_to:
            out.append(("InReplyTo-Contribution-ID", ids.in_reply_to))
        return tuple(out)
    return (
        ("Accept-Contact", "*;" + SIMPLE_IM_TAG),
        ("Contribution-ID", ids.contribution_id),
    )


def answer_headers(profile: Profile, ids: ChatIds | None) -> tuple[Header, ...]:
    """Headers of our 200 OK to a chat INVITE: the ids echoed back."""
    if ids is None:
        return ()
    out: list[Header] = [("Contribution-ID", ids.contribution_id)]
    if profile is Profile.CPM and ids.conversation_id:
        out.append(("Conversation-ID", ids.conversation_id))
    return tuple(out)


def pager_headers(profile: Profile, conversation_id: str | None = None) -> tuple[Header, ...]:
    """Headers of a pager-mode MESSAGE (chat or IMDN; RFC 3428)."""
    if profile is Profile.CPM:
        out: list[Header] = [
            ("Accept-Contact", "*;" + _icsi_tag(CPM_MSG_ICSI)),
            ("P-Preferred-Service", CPM_MSG_ICSI),
        ]
        if conversation_id:
            out.append(("Conversation-ID", conversation_id))
        return tuple(out)
    return (("Accept-Contact", "*;" + SIMPLE_IM_TAG),)


def cpim_party(profile: Profile, uri: str) -> str:
    """The URI a 1-1 CPIM From/To carries: the user (CPM) or anonymous (SIMPLE-IM)."""
    return uri if profile is Profile.CPM else ANONYMOUS_URI


def chat_ids_of(headers: dict[str, str | None]) -> ChatIds | None:
    """The Contribution-/Conversation-ID of a received request (None without Contribution-ID)."""
    contribution = (headers.get("contribution-id") or "").strip()
    if not contribution:
        return None
    conversation = (headers.get("conversation-id") or "").strip() or None
    return ChatIds(contribution, conversation)


# --- inbound classification (docs/protocol-mapping.md N1) -----------------------------


class InviteKind(enum.Enum):
    """What an incoming INVITE is (rcsjta ImsServiceDispatcher order, N1)."""

    ONE_TO_ONE = "1-1"
    GROUP = "group"
    SF_NOTIFICATIONS = "store-and-forward notifications"
    SF_PUSH = "store-and-forward push"
    FILE_TRANSFER = "file transfer"


def classify_invite(
    *,
    contact: str,
    asserted_identity: str,
    referred_by: str | None,
    accept_contact: str,
    multipart: bool,
) -> InviteKind:
    """Classifies an INVITE with an MSRP offer (N1, rcsjta order)."""
    if FT_HTTP_IARI.replace(":", "%3a") in accept_contact.lower():
        return InviteKind.FILE_TRANSFER
    if SF_SERVER_USER in asserted_identity.lower() and not multipart:
        return InviteKind.SF_NOTIFICATIONS
    if _has_param(contact, "isfocus"):
        return InviteKind.GROUP
    if referred_by:
        return InviteKind.SF_PUSH
    return InviteKind.ONE_TO_ONE


def _has_param(value: str, name: str) -> bool:
    tail = value.rsplit(">", 1)[-1] if ">" in value else value
    return any(p.split("=", 1)[0].strip().lower() == name for p in tail.split(";")[1:])


def normalize_user(uri: str) -> str:
    """The canonical user URI of a SIP/tel address: ``tel:+E164`` or ``sip:user@host``.

    ``sip:+15551230001@ims.test;user=phone`` and ``tel:+1-555-123-0001`` both give
    ``tel:+15551230001`` (docs/protocol-mapping.md "Interoperability rules"); display
    names, brackets and URI parameters are dropped; the host is lower-cased. Raises
    ValueError otherwise.
    """
    raw = uri.strip()
    if "<" in raw:
        start = raw.index("<")
        end = raw.find(">", start)
        if end < 0:
            raise ValueError(f"unterminated address: {uri!r}")
        raw = raw[start + 1 : end].strip()
    lower = raw.lower()
    if lower.startswith("tel:"):
        number = _VISUAL.sub("", raw[4:].split(";", 1)[0])
        if not number:
            raise ValueError(f"empty tel URI: {uri!r}")
        return "tel:" + number
    if lower.startswith(("sip:", "sips:")):
        scheme, rest = raw.split(":", 1)
        addr = rest.split(";", 1)[0].split("?", 1)[0]
        if "@" not in addr:
            raise ValueError(f"SIP URI without user part: {uri!r}")
        user, host = addr.rsplit("@", 1)
        user = user.split(":", 1)[0]
        number = _VISUAL.sub("", user)
        if _E164.match(number):
            return "tel:" + number
        return f"{scheme.lower()}:{user}@{host.lower()}"
    raise ValueError(f"not a tel: or sip: URI: {uri!r}")
