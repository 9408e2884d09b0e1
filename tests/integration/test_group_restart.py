"""Group chat across ``kill -9``: ``chat-bridge serve`` on its embedded focus, restarted.

Two groups are live on one bridge (embedded default, SQLite file): A with B and C, and B
with D. A burst of messages to the first group gets its 201s, and the bridge is killed with
SIGKILL at once, so some of them are still in flight (between the REST answer, the MSRP leg
to the focus and the focus's relay). The bridge is started again on the same store and ports.

Afterwards (docs/group-chat.md "REST behaviour"; the participation machine's RESTART event):

* every member's group session reads ``Disconnected`` and lists nobody ``Connected``: the
  legs, the focus's conference and its MSRP sessions died with the process, so nothing that
  reads as live is left;
* every member got ``chatEventNotification`` ``SessionEnded`` on its own sessionId;
* every accepted message reached a member's notifyURL, or reads ``Failed`` to its sender
  with a ``chatMessageStatusNotification`` ``Failed``: none is lost;
* the users can start a group and chat again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.group_api import Group, GroupApi, group_bridge
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = "tel:+15555550401"
B = "tel:+15555550402"
C = "tel:+15555550403"
D = "tel:+15555550404"
BURST = 12


async def open_group(
    api: GroupApi, owner: str, others: list[str], subject: str
) -> dict[str, Group]:
    """A group of ``owner`` and ``others``, every invitee accepted and connected."""
    group, _ = await api.create_group(owner, others, subject)
    members = {owner: group}
    for user in others:
        inv = await api.invitation(user, lambda n: n.get("subject") == subject, f"for {subject}")
        await api.accept(inv)
        members[user] = inv.group
    await api.event(owner, group.session_id, "Successful")
    for g in members.values():
        await api.own_status(g, "Connected")
    for user in others:
        await api.participant_status(owner, group.session_id, user, "Connected")
    return members


async def test_two_groups_survive_kill_9_without_losing_a_message(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with group_bridge(tmp_path, receiver, timeout=15.0) as api:
        for user in (A, B, C, D):
            await api.subscribe(user)
        first = await open_group(api, A, [B, C], "first")
        second = await open_group(api, B, [D], "second")
        before = await api.send(first[A].url, "before the crash")
        await api.received_message(C, first[C].session_id, before, A)
        await api.received_message(D, second[D].session_id, await api.send(second[B].url, "b"), B)

        # a burst the app got its 201s for, then SIGKILL at once
        sent = await asyncio.gather(
            *(api.send(first[A].url, f"burst {i}", ["Delivered"]) for i in range(BURST))
        )
        api.serve.kill()
        await api.serve.start()  # same store, same ports

        # every membership is over, and reads so
        memberships = [(u, g) for u, g in first.items()] + [(u, g) for u, g in second.items()]
        for user, group in memberships:
            await api.event(user, group.session_id, "SessionEnded")
        for user, group in memberships:
            info = await api.own_status(group, "Disconnected")
            live = [
                p.address for p in info.participant if p.status and p.status.value == "Connected"
            ]
            assert not live, f"{user} on {group.session_id}: still Connected after restart: {live}"
            listed = await api.participants(group)
            still = [a for a, s in listed.items() if s == "Connected"]
            assert not still, f"{user} on {group.session_id}: participants Connected: {listed}"

        # every accepted message reached a member or is reported Failed to A
        def delivered() -> set[str]:
            return {
                n["messageId"]
                for user in (B, C)
                for n in api.got(user, "chatMessageNotification")
                if "messageId" in n
            }

        async def settled() -> tuple[bool, dict[str, str]]:
            states = {m: await api.message_status(first[A].url, m) for m in sent}
            got = delivered()
            lost = {m: s for m, s in states.items() if s != "Failed" and m not in got}
            return not lost, lost or states

        states = await api.until(settled, "accepted burst messages neither delivered nor Failed")
        failed = {m for m, s in states.items() if s == "Failed"}
        reported = {
            n["messageId"]
            for n in api.got(A, "chatMessageStatusNotification")
            if n["status"] == "Failed"
        }
        assert failed <= reported, f"Failed without a notification: {failed - reported}"

        # a group that died cannot be written to
        await api.fault(
            "POST",
            api.local(first[A].url) + "/messages",
            {"chatMessage": {"text": "to a dead group"}},
            409,
        )

        # and the users chat in a group again
        again = await open_group(api, A, [B], "again")
        mid = await api.send(again[A].url, "after restart")
        await api.received_message(B, again[B].session_id, mid, A)
