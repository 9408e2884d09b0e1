"""REFER to the focus (docs/group-chat.md items 6 and 7): several members in one REFER
(``Refer-To: <cid:…>`` + resource list, RFC 5368) and REFER outside the INVITE dialog."""

from __future__ import annotations

import pytest

from bridge.focus import wire
from sip import multipart, resource_lists, sipfrag
from sip.conference_view import ParticipantStatus as PS
from sip.errors import CodecError, SIPError
from sip.message import Request
from tests.unit.test_focus_loopback import Bed, bed, create, key

__all__ = ["bed"]  # the fixture, shared with the loopback tests


async def test_multiple_refer_adds_then_removes_several(bed: Bed) -> None:
    alice = await create(bed, "bob")
    bob, carol, dave = bed.people["bob"], bed.people["carol"], bed.people["dave"]
    await alice.subscribe()
    added = await bob.refer_list([carol.uri, dave.uri, alice.uri])  # alice: already in
    assert added.status == 202 and added.get("Refer-Sub") == "false"
    for p in (carol, dave):
        await p.wait(lambda p=p: p.session is not None and p.media is not None)
        assert p.invites[0].get("Referred-By") == f"<{bob.uri}>"
    await alice.wait(
        lambda: all(alice.statuses().get(key(p)) is PS.CONNECTED for p in (carol, dave))
    )
    assert len(alice.invites) == 0  # the creator was not dialled
    refused = await bob.refer_list([f"{carol.uri};method=BYE"])
    assert refused.status == 403  # only the chairman removes
    removed = await alice.refer_list([f"{carol.uri};method=BYE", f"{dave.uri};method=BYE"])
    assert removed.status == 202
    for p in (carol, dave):
        await p.wait(lambda p=p: p.byes != [])
    await alice.wait(
        lambda: all(alice.statuses().get(key(p)) is PS.DISCONNECTED for p in (carol, dave))
    )
    assert alice.statuses().get(key(bob)) is PS.CONNECTED


async def test_multiple_refer_over_the_size_limit_changes_nothing(bed: Bed) -> None:
    alice = await create(bed, "bob")  # max_size 5: two in, four more is one too many
    many = [f"sip:extra{n}@127.0.0.1:9" for n in range(4)]
    response = await alice.refer_list(many)
    assert response.status == 403
    assert set(bed.conf().legs) == {key(alice), key(bed.people["bob"])}


async def test_out_of_dialog_refer_from_a_member_with_sipfrag_notify(bed: Bed) -> None:
    alice = await create(bed, "bob")
    bob, carol = bed.people["bob"], bed.people["carol"]
    notifies: list[Request] = []
    sub = await bob.sip.refer(
        bob.conference_target, carol.uri, sender=bob.uri, on_notify=notifies.append
    )
    assert sub is not None
    await carol.wait(lambda: carol.session is not None and carol.media is not None)
    assert carol.invites[0].get("Referred-By") == f"<{bob.uri}>"
    await sub.terminated.wait()
    frags = [sipfrag.parse(n.body) for n in notifies if n.body]
    assert frags and frags[-1].status == 200  # RFC 3515 §2.4.5
    # several at once, outside the dialog too (RFC 5368)
    dave = bed.people["dave"]
    response = await alice.refer_list([dave.uri], in_dialog=False)
    assert response.status == 202
    await dave.wait(lambda: dave.session is not None)


async def test_out_of_dialog_refer_refusals(bed: Bed) -> None:
    alice = await create(bed, "bob")
    carol, dave = bed.people["carol"], bed.people["dave"]
    with pytest.raises(SIPError) as outsider:  # not a member of the conference
        await dave.sip.refer(alice.conference_target, carol.uri, sender=dave.uri, refer_sub=False)
    assert outsider.value.status == 403
    unknown = alice.conference_target.replace("conf-", "conf-0")
    with pytest.raises(SIPError) as gone:
        await alice.sip.refer(unknown, carol.uri, sender=alice.uri, refer_sub=False)
    assert gone.value.status == 404
    assert carol.invites == []


def _list(*uris: str) -> bytes:
    entries = tuple(resource_lists.Entry(u) for u in uris)
    return resource_lists.serialize(
        resource_lists.ResourceLists((resource_lists.ResourceList(entries),))
    )


def test_refer_targets_plain_single_body_and_multipart() -> None:
    assert wire.refer_targets("<sip:a@h>", b"", None, None) == ["<sip:a@h>"]
    body = _list("sip:a@h", "sip:b@h;method=BYE")
    ctype = resource_lists.CONTENT_TYPE
    assert wire.refer_targets("<cid:l1@h>", body, ctype, "<l1@h>") == [
        "sip:a@h",
        "sip:b@h;method=BYE",
    ]
    parts = multipart.Multipart(
        "bnd",
        (
            multipart.Part.build("text/plain", b"x"),
            multipart.Part.build(ctype, body, disposition="recipient-list", content_id="<l1@h>"),
        ),
    )
    found = wire.refer_targets("<cid:l1%40h>", multipart.serialize(parts), parts.content_type, None)
    assert found == ["sip:a@h", "sip:b@h;method=BYE"]
    with pytest.raises(CodecError):
        wire.refer_targets("<cid:other@h>", body, ctype, "<l1@h>")
    with pytest.raises(CodecError):
        wire.refer_targets("<cid:l1@h>", b"", None, None)
