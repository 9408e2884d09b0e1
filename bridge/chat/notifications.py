"""The bodies of the 1-1 chat notifications, with their links (OMA REST Chat v1.0 notifications).

Each builder returns ``(root, body)``: the OMA 1.0 root name (docs/decisions.md
"Enumerations and notification names") and the JSON object under it, ready for
``state.outbox.enqueue``. ``callbackData`` is copied from the subscription;
every notification carries the ``link``s the app needs, so it never builds a URL
itself (docs/decisions.md "URLs and user ids"). URLs come from a
:class:`ChatUrls` (``rest.uris.ServerRoot`` satisfies it), which keeps this
module free of the REST layer.

Choices written down here:

* chatMessageNotification links ``MessageStatusReport`` (where the recipient
  PUTs its reports) and ``ChatMessage`` (the message itself); an isComposing
  one links the session (``ChatSessionInformation``) except for ``adhoc``,
  which has no session resource. The typing state is named ``state`` (OMA
  1.0 profile; GSMA's ``status`` is a profile switch of the REST layer).
* chatSessionInvitationNotification links ``ChatSessionInformation`` (to
  GET or DELETE = decline) and ``ParticipantSessionStatus`` (to PUT
  ``Connected`` = accept) and carries the invitee's ``sessionId``.
* chatMessageStatusNotification links the sent message (``ChatMessage``).
* Group chat (docs/group-chat.md "REST behaviour") uses the same builders: a message
  whose ``rest_session`` is a group id (``g-…``) is linked under
  ``…/group/{sessionId}/messages/{messageId}`` and its ``senderAddress`` is
  the real sender (the stored ``peer`` of a received group message); a group
  session's events link ``GroupChatSessionInformation``. The group-only
  notifications are in ``bridge.chat.group_notifications``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from bridge.chat.model import (
    ADHOC,
    ChatEventType,
    ChatSession,
    Composing,
    RestStatus,
    SessionKind,
    StoredMessage,
    is_group_id,
)
from bridge.ids import UserUri
from bridge.subscriptions import Subscription

CHAT_EVENT = "chatEventNotification"
CHAT_SESSION_INVITATION = "chatSessionInvitationNotification"
CHAT_MESSAGE = "chatMessageNotification"
CHAT_MESSAGE_STATUS = "chatMessageStatusNotification"

Body = dict[str, object]


class ChatUrls(Protocol):
    """Builds absolute chat resource URLs (``rest.uris.ServerRoot``)."""

    def chat(self, user: str, *segments: str) -> str:
        """``{serverRoot}/chat/v1/{user}/{segments…}``, percent-encoded."""
        ...


def format_datetime(value: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC (docs/decisions.md "JSON, XML and form bodies")."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _link(rel: str, href: str) -> dict[str, str]:
    return {"rel": rel, "href": href}


def _start(sub: Subscription) -> Body:
    return {} if sub.callback_data is None else {"callbackData": sub.callback_data}


def session_url(urls: ChatUrls, user: UserUri, peer: UserUri, rest_session: str) -> str:
    """The 1-1 session resource (R4)."""
    return urls.chat(user, "oneToOne", peer, rest_session)


def group_url(urls: ChatUrls, user: UserUri, session_id: str, *tail: str) -> str:
    """The group session resource (R10), or one below it (R11-R15)."""
    return urls.chat(user, "group", session_id, *tail)


def message_url(urls: ChatUrls, msg: StoredMessage, *tail: str) -> str:
    """The message resource (R7b, R15b), or one below it (``status``: R7, R15)."""
    if is_group_id(msg.rest_session):
        return group_url(urls, msg.user, msg.rest_session, "messages", msg.id, *tail)
    return urls.chat(msg.user, "oneToOne", msg.peer, msg.rest_session, "messages", msg.id, *tail)


def session_event(
    urls: ChatUrls, sub: Subscription, cs: ChatSession, event: ChatEventType
) -> tuple[str, Body]:
    """chatEventNotification for ``cs`` (a group: rel GroupChatSessionInformation)."""
    body = _start(sub)
    if cs.kind is SessionKind.GROUP:
        body["link"] = [_link("GroupChatSessionInformation", group_url(urls, cs.user, cs.id))]
    else:
        body["link"] = [
            _link("ChatSessionInformation", session_url(urls, cs.user, cs.peer, cs.rest_id))
        ]
    body["eventType"] = event.value
    body["sessionId"] = cs.rest_id
    return CHAT_EVENT, body


def invitation(urls: ChatUrls, sub: Subscription, cs: ChatSession) -> tuple[str, Body]:
    """chatSessionInvitationNotification for the invitee's session ``cs``."""
    url = session_url(urls, cs.user, cs.peer, cs.rest_id)
    body = _start(sub)
    body["originatorAddress"] = cs.peer
    if cs.originator_name is not None:
        body["originatorName"] = cs.originator_name
    body["tParticipantAddress"] = cs.user
    if cs.subject is not None:
        body["subject"] = cs.subject
    body["sessionId"] = cs.rest_id
    body["link"] = [
        _link("ChatSessionInformation", url),
        _link("ParticipantSessionStatus", url + "/status"),
    ]
    return CHAT_SESSION_INVITATION, body


def message(urls: ChatUrls, sub: Subscription, msg: StoredMessage) -> tuple[str, Body]:
    """chatMessageNotification for a received chat message."""
    body = _start(sub)
    body["link"] = [
        _link("MessageStatusReport", message_url(urls, msg, "status")),
        _link("ChatMessage", message_url(urls, msg)),
    ]
    body["dateTime"] = format_datetime(msg.date_time)
    body["chatMessage"] = {"text": msg.text}
    body["sessionId"] = msg.rest_session
    body["messageId"] = msg.id
    body["senderAddress"] = msg.peer
    if msg.sender_name is not None:
        body["senderName"] = msg.sender_name
    return CHAT_MESSAGE, body


def composing(
    urls: ChatUrls,
    sub: Subscription,
    user: UserUri,
    peer: UserUri,
    rest_session: str,
    state: Composing,
    now: datetime,
) -> tuple[str, Body]:
    """chatMessageNotification carrying an isComposing indication (RFC 3994)."""
    body = _start(sub)
    if is_group_id(rest_session):
        body["link"] = [_link("GroupChatSessionInformation", group_url(urls, user, rest_session))]
    elif rest_session != ADHOC:
        body["link"] = [
            _link("ChatSessionInformation", session_url(urls, user, peer, rest_session))
        ]
    body["dateTime"] = format_datetime(now)
    inner: Body = {"state": state.state.value}
    if state.last_active is not None:
        inner["lastActive"] = format_datetime(state.last_active)
    if state.content_type is not None:
        inner["contentType"] = state.content_type
    if state.refresh is not None:
        inner["refresh"] = state.refresh
    body["isComposing"] = inner
    body["sessionId"] = rest_session
    body["senderAddress"] = peer
    return CHAT_MESSAGE, body


def message_status(
    urls: ChatUrls, sub: Subscription, msg: StoredMessage, status: RestStatus
) -> tuple[str, Body]:
    """chatMessageStatusNotification for a sent message."""
    body = _start(sub)
    body["link"] = [_link("ChatMessage", message_url(urls, msg))]
    body["status"] = status.value
    body["messageId"] = msg.id
    return CHAT_MESSAGE_STATUS, body
