"""The conference focus over real SIP and MSRP stacks on 127.0.0.1 (docs/group-chat.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bridge.focus import ConferenceFocus, MemoryConferenceStore, build_focus
from sip import conference, cpim, multipart, rcs, resource_lists
from sip.conference_view import ParticipantStatus as PS
from sip.msrp import MSRPStack
from sip.stack import SipStack
from sip.usage import IncomingRequest
from tests.peers.conf_participant import NOW, Participant, start_stack

Handler = object


@dataclass
class Bed:
    sip: SipStack
    msrp: MSRPStack
    focus: ConferenceFocus
    store: MemoryConferenceStore
    factory: str
    people: dict[str, Participant]

    def conf(self):  # type: ignore[no-untyped-def]
        (only,) = self.focus.conferences.values()
        return only


def install(sip: SipStack, focus: ConferenceFocus) -> None:
    """The router the composition root would own: focus requests to the focus."""

    async def invite(incoming: IncomingRequest) -> None:
        if focus.owns(incoming.request):
            await focus.on_invite(incoming)  # type: ignore[arg-type]
        else:
            incoming.respond(404)

    def subscribe(incoming: IncomingRequest) -> None:
        if focus.owns(incoming.request):
            focus.on_subscribe(incoming)  # type: ignore[arg-type]
        else:
            incoming.respond(404)

    def refer(incoming: IncomingRequest) -> None:
        if focus.owns(incoming.request):
            focus.on_refer(incoming)  # type: ignore[arg-type]
        else:
            incoming.respond(404)

    sip.on_request("INVITE", invite)
    sip.on_request("SUBSCRIBE", subscribe)
    sip.on_request("REFER", refer)


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    sip = await start_stack()
    msrp = MSRPStack("127.0.0.1", 0)
    await msrp.start()
    store = MemoryConferenceStore()
    factory = f"sip:conference-factory@127.0.0.1:{sip.port}"
    focus = build_focus(sip, msrp, factory_uri=factory, store=store, max_size=5, invite_timeout=5.0)
    install(sip, focus)
    people = {n: await Participant(n).start() for n in ("alice", "bob", "carol", "dave")}
    try:
        yield Bed(sip, msrp, focus, store, factory, people)
    finally:
        await focus.close()
        for p in people.values():
            await p.stop()
        await msrp.close()
        await sip.stop()


async def create(bed: Bed, *names: str) -> Participant:
    alice = bed.people["alice"]
    response = await alice.create(bed.factory, [bed.people[n].uri for n in names])
    assert response.status == 200, response
    for n in names:
        p = bed.people[n]
        if p.policy == "accept":
            await p.wait(lambda p=p: p.media is not None and p.session is not None)
    return alice


def key(p: Participant) -> str:
    return rcs.normalize_user(p.uri)


async def test_create_with_three_invitees_and_dial_out_headers(bed: Bed) -> None:
    alice = await create(bed, "bob", "carol", "dave")
    assert alice.conference_target.startswith("sip:conf-")
    response_contact = alice.session.dialog.remote_target  # type: ignore[union-attr]
    assert str(response_contact).startswith("sip:conf-")
    conf = bed.conf()
    for name in ("bob", "carol", "dave"):
        req = bed.people[name].invites[0]
        assert str(req.from_.uri) == conf.uri
        contact = req.get("Contact") or ""
        assert ";isfocus" in contact and "icsi-ref" in contact
        assert req.get("Referred-By") == f"<{alice.uri}>"
        assert req.get("Contribution-ID") == conf.ids.contribution_id
        assert req.get("Conversation-ID") == conf.ids.conversation_id
        assert req.get("Subject") == "Lunch"
        parts = multipart.parse(req.body, req.get("Content-Type") or "")
        sdp_part = parts.find("application/sdp")
        assert sdp_part is not None and b"a=setup:actpass" in sdp_part.body
        listed = parts.find(resource_lists.CONTENT_TYPE)
        assert listed is not None and listed.disposition == "recipient-list-history"
        uris = {e.uri for e in resource_lists.parse(listed.body).entries()}
        assert alice.uri in uris
    assert (
        rcs.classify_invite(
            contact=bed.people["bob"].invites[0].get("Contact") or "",
            asserted_identity="",
            referred_by=None,
            accept_contact="",
            multipart=True,
        )
        is rcs.InviteKind.GROUP
    )


async def test_relay_keeps_sender_imdn_to_one_and_composing(bed: Bed) -> None:
    alice = await create(bed, "bob", "carol")
    bob, carol = bed.people["bob"], bed.people["carol"]
    await alice.send("hello", "m1")
    for p in (bob, carol):
        await p.wait(lambda p=p: len(p.received) == 1)
        got = cpim.parse(p.received[0].body)
        assert got.sender is not None and got.sender.uri == alice.uri
        assert got.body == b"hello"
    assert alice.received == []
    # anonymous From is replaced by the sender's address
    await bob.send("anon", "m2", sender=cpim.ANONYMOUS_URI)
    await carol.wait(lambda: len(carol.received) == 2)
    got = cpim.parse(carol.received[1].body)
    assert got.sender is not None and got.sender.uri == bob.uri
    # an IMDN goes to the member its CPIM To names only
    report = cpim.build_imdn_message(
        sender=cpim.NameAddr(carol.uri),
        recipient=cpim.NameAddr(alice.uri),
        message_id="r1",
        timestamp=NOW,
        imdn_xml=b"<imdn/>",
    )
    await carol.send_raw(cpim.serialize(report))
    await alice.wait(lambda: any(cpim.parse(m.body).is_imdn for m in alice.received))
    await asyncio.sleep(0.1)
    assert not any(cpim.parse(m.body).is_imdn for m in bob.received)
    # isComposing is relayed like a message
    composing = cpim.build_iscomposing_message(
        sender=cpim.NameAddr(bob.uri),
        recipient=cpim.NameAddr(bob.conference_target),
        timestamp=NOW,
        iscomposing_xml=b"<isComposing/>",
    )
    await bob.send_raw(cpim.serialize(composing))
    await alice.wait(
        lambda: any(
            cpim.parse(m.body).media_type == cpim.ISCOMPOSING_CONTENT_TYPE for m in alice.received
        )
    )
    assert bed.store.writes < 20  # membership writes only, none per message


async def test_notify_full_then_partial_decline_leave(bed: Bed) -> None:
    bed.people["dave"].policy = "603"
    bed.people["carol"].policy = "486"
    alice = await create(bed, "bob", "carol", "dave")
    bob = bed.people["bob"]
    await alice.subscribe()
    await alice.wait(
        lambda: (
            alice.statuses().get(key(bed.people["dave"])) is PS.DECLINED
            and alice.statuses().get(key(bed.people["carol"])) is PS.FAILED
            and alice.statuses().get(key(bob)) is PS.CONNECTED
        )
    )
    assert alice.notifies[0].state is conference.ElementState.FULL
    assert all(n.state is conference.ElementState.PARTIAL for n in alice.notifies[1:])
    versions = [n.version for n in alice.notifies]
    assert versions == list(range(1, len(versions) + 1))
    chair = alice.view.users[key(alice)]
    assert chair.roles == ("chairman",)
    await bob.subscribe(in_dialog=True)
    await bob.wait(lambda: bob.notifies != [])
    await bob.leave()
    await alice.wait(lambda: alice.statuses().get(key(bob)) is PS.DISCONNECTED)
    last = alice.notifies[-1]
    assert last.state is conference.ElementState.PARTIAL and len(last.users or ()) == 1


async def test_refer_add_and_remove(bed: Bed) -> None:
    alice = await create(bed, "bob")
    bob, carol = bed.people["bob"], bed.people["carol"]
    await alice.subscribe()
    response = await bob.refer(carol.uri)
    assert response.status == 202
    await carol.wait(lambda: carol.session is not None and carol.media is not None)
    assert carol.invites[0].get("Referred-By") == f"<{bob.uri}>"
    await alice.wait(lambda: alice.statuses().get(key(carol)) is PS.CONNECTED)
    again = await bob.refer(carol.uri)
    assert again.status == 202 and len(carol.invites) == 1
    refused = await bob.refer(carol.uri, bye=True)
    assert refused.status == 403
    removed = await alice.refer(carol.uri, bye=True)
    assert removed.status == 202
    await carol.wait(lambda: carol.byes != [])
    await alice.wait(lambda: alice.statuses().get(key(carol)) is PS.DISCONNECTED)
    user = alice.view.users[key(carol)]
    assert user.endpoints[0].disconnection_method is conference.DisconnectionMethod.BOOTED


async def test_conference_ends_when_last_leaves(bed: Bed) -> None:
    bed.people["carol"].policy = "603"
    alice = await create(bed, "bob", "carol")
    bob = bed.people["bob"]
    await bob.subscribe()
    await bob.wait(lambda: bob.statuses().get(key(bed.people["carol"])) is PS.DECLINED)
    target = alice.conference_target
    await alice.leave()
    await bob.leave()
    assert bob.subscription is not None
    await asyncio.wait_for(bob.subscription.terminated.wait(), 5)
    for _ in range(50):
        if not bed.focus.conferences:
            break
        await asyncio.sleep(0.05)
    assert bed.focus.conferences == {}
    response = await alice.sip.send_request("OPTIONS", target, sender=alice.uri)
    assert response.status == 200  # OPTIONS is the stack's; INVITE/SUBSCRIBE are the focus's
    with pytest.raises(Exception) as info:
        await alice.sip.subscribe(target, "conference", sender=alice.uri)
    assert getattr(info.value, "status", None) == 404
    assert all(c.ended_at is not None for c in bed.store.conferences.values())


async def test_close_byes_members_with_410(bed: Bed) -> None:
    alice = await create(bed, "bob")
    bob = bed.people["bob"]
    await bed.focus.close()
    await bob.wait(lambda: bob.byes != [] and alice.byes != [])
    assert bob.bye_reasons == ['SIP;cause=410;text="Gone"']
    assert alice.bye_reasons == ['SIP;cause=410;text="Gone"']
    assert bed.focus.conferences == {}


@pytest.mark.parametrize(
    ("invitees", "kwargs", "status"),
    [
        ([], {}, 400),
        (["sip:a@h", "sip:b@h", "sip:c@h", "sip:d@h", "sip:e@h"], {}, 403),
        (["sip:a@h"], {"with_list": False, "require": False}, 400),
        (["sip:a@h"], {"with_list": False}, 400),
        (["sip:a@h"], {"require": "recipient-list-invite, x-unknown"}, 420),
    ],
)
async def test_bad_create(
    bed: Bed, invitees: list[str], kwargs: dict[str, bool], status: int
) -> None:
    alice = bed.people["alice"]
    if not invitees and not kwargs:
        response = await alice.create(bed.factory, [alice.uri])  # only itself: empty
    else:
        response = await alice.create(bed.factory, invitees, **kwargs)
    assert response.status == status
    if status == 403:
        assert response.reason == "Too many participants"
    if status == 420:  # RFC 3261 §8.2.2.3: the tags we do not support, never ours
        assert response.get("Unsupported") == "x-unknown"
    assert bed.focus.conferences == {}


async def test_create_without_require_but_with_a_list_is_taken(bed: Bed) -> None:
    # docs/group-chat.md item 1: the body says what the option tag would (RFC 3261 §21.4.15)
    alice, bob = bed.people["alice"], bed.people["bob"]
    response = await alice.create(bed.factory, [bob.uri], require=False)
    assert response.status == 200
    await bob.wait(lambda: bob.session is not None and bob.media is not None)
    assert bob.invites[0].get("Referred-By") == f"<{alice.uri}>"


async def test_dial_out_timeout_cancels_and_fails_the_member(bed: Bed) -> None:
    bed.focus.ctx.invite_timeout = 0.5
    carol = bed.people["carol"]
    carol.policy = "ring"  # 180, then never answers
    alice = await create(bed, "bob", "carol")
    await alice.subscribe()
    await carol.wait(lambda: carol.cancelled != [])  # the focus CANCELled its INVITE
    assert carol.cancelled[0].call_id == carol.invites[0].call_id
    await alice.wait(lambda: alice.statuses().get(key(carol)) is PS.FAILED)
    (endpoint,) = alice.view.users[key(carol)].endpoints
    assert endpoint.disconnection_method is conference.DisconnectionMethod.FAILED
    assert endpoint.disconnection_info is not None
    assert endpoint.disconnection_info.reason == "SIP;cause=408"
    member = bed.conf().member(carol.uri)
    assert member is not None and member.cause == 408
    assert alice.statuses().get(key(bed.people["bob"])) is PS.CONNECTED
    assert not bed.conf().ended


async def test_duplicate_entries_collapse(bed: Bed) -> None:
    alice = bed.people["alice"]
    bob = bed.people["bob"]
    response = await alice.create(bed.factory, [bob.uri, bob.uri, alice.uri])
    assert response.status == 200
    await bob.wait(lambda: bob.session is not None)
    await asyncio.sleep(0.2)
    assert len(bob.invites) == 1
    assert set(bed.conf().legs) == {key(alice), key(bob)}
