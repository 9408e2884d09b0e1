"""Group chat end to end on the embedded default: ``chat-bridge serve`` and its own focus.

A real ``chat-bridge serve`` subprocess with no outbound proxy: the creator's group INVITE
to the conference factory (``sip:conference-factory@ims.test``) loops back over real SIP to
the bridge's own listener, where the bridge's focus takes it and dials the members out over
SIP again (docs/group-chat.md "Parts" and "Wire contract"). Four REST users A, B, C, D of that
one bridge have notifyURL subscriptions at a local receiver.

What is asserted is the REST contract: OMA REST Chat v1.0 R8-R15 (resources), §4.8-4.11
(bodies), §5.1 and §5.5 (notifications), §6.6-6.7 (flows), and where the OMA text leaves it
open, docs/group-chat.md "REST behaviour". Every body and notification is validated against
its model in ``rest.models`` (``tests.group_api``); every wait is bounded and reports what
arrived instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chat_api import q
from tests.group_api import Invitation, Json, group_bridge, links, statuses
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = "tel:+15555550301"
B = "tel:+15555550302"
C = "tel:+15555550303"
D = "tel:+15555550304"
MORE = [f"tel:+1555555031{i}" for i in range(5)]
"""Addresses beyond the size limit (never subscribed)."""

MAX_SIZE = "5"
"""CHAT_BRIDGE_CHAT_GROUP_MAX_SIZE of the bridge under test: small, to reach POL0003."""


def invited_to(subject: str) -> Callable[[Json], bool]:
    """Matches the invitation to the group of that subject."""
    return lambda n: n.get("subject") == subject


async def test_group_chat_through_the_bridges_own_focus(tmp_path: Path, receiver: Receiver) -> None:
    async with group_bridge(tmp_path, receiver, CHAT_BRIDGE_CHAT_GROUP_MAX_SIZE=MAX_SIZE) as api:
        for user in (A, B, C, D):
            await api.subscribe(user)

        # R9: A creates the group with B and C
        group_a, info = await api.create_group(A, [(B, "Bob"), (C, "Carol")], subject="Trip")
        assert group_a.session_id.startswith("g-"), group_a  # docs/group-chat.md "Ids"
        assert info.subject == "Trip"
        assert info.originator_address in (None, A)
        people = {str(p.address): p for p in info.participant}
        status = {a: p.status.value if p.status else None for a, p in people.items()}
        assert {A, B, C} <= set(people), people
        assert people[A].is_originator is True
        assert status[A] in ("Invited", "Connected"), status
        for other in (B, C):
            assert not people[other].is_originator
            assert status[other] == "Invited", status
        for address, p in people.items():
            assert p.resource_url == api.url(
                A, "group", group_a.session_id, "participants", address
            )

        # §5.5: B and C are invited, each with its own sessionId and links
        invitations: dict[str, Invitation] = {}
        for user in (B, C):
            inv = await api.invitation(user, invited_to("Trip"), "for Trip")
            invitations[user] = inv
            assert inv.session_id.startswith("g-") and inv.session_id != group_a.session_id
            assert inv.note["originatorAddress"] == A
            listed = statuses(inv.note.get("participant") or [])
            assert {A, B, C} <= set(listed), listed
            assert inv.links["GroupChatSessionInformation"] == api.url(
                user, "group", inv.session_id
            )
            mine = api.url(user, "group", inv.session_id, "participants", user)
            assert inv.links["ParticipantInformation"] == mine
            assert inv.links["ParticipantInformationStatus"] == mine + "/status"
        assert invitations[B].session_id != invitations[C].session_id

        # R13 accept, R12 decline
        await api.accept(invitations[B])
        await api.decline(invitations[C])
        group_b = invitations[B].group

        # §5.1, §5.5: A hears Successful and the members' changes
        ok = await api.event(A, group_a.session_id, "Successful")
        assert links(ok)["GroupChatSessionInformation"] == group_a.url
        await api.participant_status(A, group_a.session_id, B, "Connected")
        await api.participant_status(A, group_a.session_id, C, "Declined")
        for note in api.got(A, "chatParticipantStatusNotification"):
            assert note["sessionId"] == group_a.session_id
            assert links(note)["GroupChatSessionInformation"] == group_a.url
        await api.own_status(group_a, "Connected")
        await api.own_status(group_b, "Connected")

        # R14: messages both ways; each member sees the real sender on its own sessionId
        m1 = await api.send(group_a.url, "hello group", ["Delivered", "Displayed"])
        got = await api.received_message(B, group_b.session_id, m1, A)
        assert got["chatMessage"]["text"] == "hello group"
        assert links(got)["MessageStatusReport"] == api.url(
            B, "group", group_b.session_id, "messages", m1, "status"
        )
        m2 = await api.send(group_b.url, "hi from B")
        got = await api.received_message(A, group_a.session_id, m2, B)
        assert got["chatMessage"]["text"] == "hi from B"

        # isComposing (R14 → 204), relayed like a message
        await api.composing(group_a)
        typing = await api.note(
            B, "chatMessageNotification", lambda n: "isComposing" in n, "with isComposing"
        )
        assert typing["isComposing"]["state"] == "active"
        assert typing["senderAddress"] == A and typing["sessionId"] == group_b.session_id

        # R11 POST: A adds D, D accepts
        ref = await api.add(group_a, D, "Dave")
        assert ref == api.url(A, "group", group_a.session_id, "participants", D)
        inv_d = await api.invitation(D, invited_to("Trip"), "for Trip")
        assert inv_d.note["sessionId"].startswith("g-")
        await api.accept(inv_d)
        group_d = inv_d.group
        await api.participant_status(A, group_a.session_id, D, "Connected")
        await api.own_status(group_d, "Connected")

        async def members_settled() -> tuple[bool, object]:
            now = await api.participants(group_a)
            want = {B: "Connected", C: "Declined", D: "Connected"}
            return all(now.get(k) == v for k, v in want.items()), now

        listed = await api.until(members_settled, "A's participants B/C/D")
        assert listed.get(A) == "Connected", listed

        m3 = await api.send(group_a.url, "welcome D")
        await api.received_message(D, group_d.session_id, m3, A)
        await api.received_message(B, group_b.session_id, m3, A)

        # R15 PUT Displayed by B → A's chatMessageStatusNotification Displayed
        await api.report(group_b.url, m1, "Displayed")
        shown = await api.note(
            A,
            "chatMessageStatusNotification",
            lambda n: n["messageId"] == m1 and n["status"] == "Displayed",
            f"Displayed for {m1}",
        )
        assert links(shown)["ChatMessage"] == api.url(
            A, "group", group_a.session_id, "messages", m1
        )

        async def displayed() -> tuple[bool, str]:
            now = await api.message_status(group_a.url, m1)
            return now == "Displayed", now

        await api.until(displayed, f"A's status of {m1}")

        # R10 DELETE: B leaves; A and D see B Disconnected
        await api.leave(group_b)
        await api.participant_status(A, group_a.session_id, B, "Disconnected")
        await api.participant_status(D, group_d.session_id, B, "Disconnected")
        await api.own_status(group_b, "Disconnected")
        await api.fault(
            "POST",
            api.local(group_b.url) + "/messages",
            {"chatMessage": {"text": "after leaving"}},
            409,
        )

        # C declined: it never got the group's messages
        assert api.got(C, "chatMessageNotification") == [], api.arrived(C)


async def test_promote_one_to_one_to_group(tmp_path: Path, receiver: Receiver) -> None:
    async with group_bridge(tmp_path, receiver, CHAT_BRIDGE_CHAT_GROUP_MAX_SIZE=MAX_SIZE) as api:
        for user in (A, B, D):
            await api.subscribe(user)

        # a confirmed 1-1 session A → D, accepted (R3, R5)
        created = await api.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(D)}", {"chatSessionInformation": {}}, 201
        )
        one_url = created["chatSessionInformation"]["resourceURL"]
        one_id = one_url.rsplit("/", 1)[1]
        invite = await api.note(D, "chatSessionInvitationNotification")
        await api.call("PUT", api.local(links(invite)["ParticipantSessionStatus"]), None, 204)
        await api.note(
            A,
            "chatEventNotification",
            lambda n: n["sessionId"] == one_id and n["eventType"] == "Accepted",
            "Accepted on the 1-1 session",
        )
        m = await api.send(one_url, "just us")
        await api.note(D, "chatMessageNotification", lambda n: n.get("messageId") == m)

        # R8: extend with B → 201 + the new group
        doc = await api.call(
            "POST",
            api.local(one_url) + "/extend",
            {"extensionParameters": {"participant": [{"address": B}], "subject": "Now three"}},
            201,
        )
        group_url = doc["groupChatSessionInformation"]["resourceURL"]
        prefix = api.url(A, "group") + "/"
        assert group_url.startswith(prefix), group_url
        group_id = group_url.removeprefix(prefix)
        assert group_id.startswith("g-")
        listed = statuses(doc["groupChatSessionInformation"]["participant"])
        assert {B, D} <= set(listed), listed

        # D (the 1-1 peer) and B are invited to the new group
        inv_d = await api.invitation(D, invited_to("Now three"), "for the promoted group")
        inv_b = await api.invitation(B, invited_to("Now three"), "for the promoted group")
        for inv in (inv_d, inv_b):
            assert inv.note["originatorAddress"] == A
        await api.accept(inv_d)
        await api.accept(inv_b)
        await api.event(A, group_id, "Successful")
        await api.participant_status(A, group_id, D, "Connected")
        await api.participant_status(A, group_id, B, "Connected")

        # the 1-1 session is over, on both ends
        async def one_ended() -> tuple[bool, str]:
            got = await api.call("GET", api.local(one_url))
            now = got["chatSessionInformation"]["status"]
            return now == "Disconnected", now

        await api.until(one_ended, "A's 1-1 session ended after extend")
        await api.note(
            D,
            "chatEventNotification",
            lambda n: n["eventType"] == "SessionEnded" and "ChatSessionInformation" in links(n),
            "SessionEnded of the 1-1 session",
        )

        # and the group carries messages
        mid = await api.send(group_url, "three of us")
        await api.received_message(D, inv_d.session_id, mid, A)
        await api.received_message(B, inv_b.session_id, mid, A)


async def test_group_bad_input(tmp_path: Path, receiver: Receiver) -> None:
    async with group_bridge(tmp_path, receiver, CHAT_BRIDGE_CHAT_GROUP_MAX_SIZE=MAX_SIZE) as api:
        for user in (A, B, C):
            await api.subscribe(user)
        groups = f"/chat/v1/{q(A)}/group"

        def body(*people: str) -> dict[str, object]:
            return {
                "groupChatSessionInformation": {"participant": [{"address": p} for p in people]}
            }

        await api.fault("POST", groups, {"groupChatSessionInformation": {"participant": []}}, 400)
        await api.fault("GET", f"/chat/v1/{q(A)}/group/g-unknown", None, 404)
        await api.fault("DELETE", f"/chat/v1/{q(A)}/group/g-unknown", None, 404)
        await api.fault("GET", f"/chat/v1/{q(A)}/group/g-unknown/participants", None, 404)
        await api.fault(
            "POST", f"/chat/v1/{q(A)}/group/g-unknown/messages", {"chatMessage": {"text": "x"}}, 404
        )

        # the rules only the chat service knows
        err = await api.fault("POST", groups, body(B, B), 400)
        assert err.service_exception is not None
        err = await api.fault("POST", groups, body(A), 400)
        assert err.service_exception is not None
        too_many = body(B, C, D, *MORE)  # A + 8 > 5
        err = await api.fault("POST", groups, too_many, 403, "POL0003")
        assert err.policy_exception is not None

        # a group that exists: B may not accept for C, nor C for B
        group_a, _ = await api.create_group(A, [B, C], subject="Rules")
        inv_b = await api.invitation(B, invited_to("Rules"))
        other = api.local(inv_b.group.url) + f"/participants/{q(C)}/status"
        await api.fault("PUT", other, {"participantSessionStatus": {"status": "Connected"}}, 403)
        await api.fault(
            "PUT",
            api.local(inv_b.links["ParticipantInformationStatus"]),
            {"participantSessionStatus": {"status": "Disconnected"}},
            400,
            "SVC0003",
        )
        # adding someone beyond the limit is refused too (A + B + C + 3 > 5)
        await api.fault(
            "POST",
            api.local(group_a.url) + "/participants",
            {"participantList": {"participant": [{"address": p} for p in (D, *MORE[:2])]}},
            403,
            "POL0003",
        )
        # another user's group id is not B's
        await api.fault("GET", f"/chat/v1/{q(B)}/group/{group_a.session_id}", None, 404)
