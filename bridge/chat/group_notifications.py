"""The group-only notification bodies (OMA REST Chat v1.0; docs/group-chat.md "REST behaviour").

Builders return ``(root, body)`` like ``bridge.chat.notifications``:

* groupChatSessionInvitationNotification: the invitee's own ``sessionId``,
  ``subject``, ``originatorAddress``/``originatorName`` = the inviter (when
  the focus said who invited), the members as the invitation listed them
  (address, name, status), and three links: ``GroupChatSessionInformation``
  (the invitee's group session), ``ParticipantInformationStatus`` (the
  invitee's own participant status: PUT ``Connected`` accepts) and
  ``ParticipantInformation`` (the invitee's own participant: DELETE declines).
* chatParticipantStatusNotification: link ``GroupChatSessionInformation``, the
  changed members only, each with address, name, status and its links
  ``ParticipantInformation`` and ``ParticipantInformationStatus``; sessionId.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.chat.model import ChatSession, Participant
from bridge.chat.notifications import Body, ChatUrls, _link, _start, group_url
from bridge.ids import UserUri
from bridge.subscriptions import Subscription

GROUP_INVITATION = "groupChatSessionInvitationNotification"
PARTICIPANT_STATUS = "chatParticipantStatusNotification"


def participant_url(urls: ChatUrls, user: UserUri, session_id: str, address: str) -> str:
    """One member of ``user``'s group session (R12)."""
    return group_url(urls, user, session_id, "participants", address)


def _participant(urls: ChatUrls, cs: ChatSession, p: Participant, links: bool) -> Body:
    entry: Body = {"address": p.address}
    if p.name is not None:
        entry["name"] = p.name
    if p.is_originator:
        entry["isOriginator"] = True
    entry["status"] = p.status.value
    if links:
        url = participant_url(urls, cs.user, cs.id, p.address)
        entry["link"] = [
            _link("ParticipantInformation", url),
            _link("ParticipantInformationStatus", url + "/status"),
        ]
    return entry


def group_invitation(
    urls: ChatUrls,
    sub: Subscription,
    cs: ChatSession,
    inviter: UserUri | None,
    people: Iterable[Participant],
) -> tuple[str, Body]:
    """groupChatSessionInvitationNotification for the invitee's session ``cs``."""
    own = participant_url(urls, cs.user, cs.id, cs.user)
    body = _start(sub)
    if cs.subject is not None:
        body["subject"] = cs.subject
    if inviter is not None:
        body["originatorAddress"] = inviter
    if cs.originator_name is not None:
        body["originatorName"] = cs.originator_name
    entries = [_participant(urls, cs, p, False) for p in people]
    if entries:
        body["participant"] = entries
    body["sessionId"] = cs.id
    body["link"] = [
        _link("GroupChatSessionInformation", group_url(urls, cs.user, cs.id)),
        _link("ParticipantInformationStatus", own + "/status"),
        _link("ParticipantInformation", own),
    ]
    return GROUP_INVITATION, body


def participant_status(
    urls: ChatUrls, sub: Subscription, cs: ChatSession, changed: Iterable[Participant]
) -> tuple[str, Body]:
    """chatParticipantStatusNotification with the members that changed."""
    body = _start(sub)
    body["link"] = [_link("GroupChatSessionInformation", group_url(urls, cs.user, cs.id))]
    body["participant"] = [_participant(urls, cs, p, True) for p in changed]
    body["sessionId"] = cs.id
    return PARTICIPANT_STATUS, body
