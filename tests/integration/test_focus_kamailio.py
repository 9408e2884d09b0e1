"""The bridge's own focus through Kamailio, inviting a remote SIPp participant (docs/group-chat.md).

The focus runs in the test process on a SipStack + MSRPStack listening where Kamailio sends
``sip:conference-factory@ims.test`` (``kamailio.conf_port``, KTB_CONF_URI), with Kamailio as
its outbound proxy. A participant built from ``sip/`` only (tests/peers/conf_participant.py)
creates the conference through Kamailio; the invitee is a user outside the bridge's range, so
Kamailio routes the focus's dial-out to the default peer port, where a SIPp UAS plays the
remote member (tests/sipp/uas-conf-participant.xml). SIPp speaks no MSRP: its SDP answer
points at an MSRP peer of ours (``sip.msrp``), which plays the remote member's media leg.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bridge.focus import MemoryConferenceStore, build_focus
from bridge.focus.members import MemberStatus
from sip import conference, cpim, rcs
from sip.conference_view import ParticipantStatus as PS
from sip.msrp import MSRPStack
from sip.msrp.events import MessageReceived
from tests.peers.conf_participant import NOW, Participant, start_stack
from tests.sipp import runner
from tests.testbed_fixture import Testbed
from tests.unit.test_focus_loopback import install

pytestmark = pytest.mark.integration

FACTORY = "sip:conference-factory@ims.test"
REMOTE = "tel:+15550000177"
"""Outside the bridge's range: Kamailio sends requests for it to the default peer (SIPp)."""
MSRP_SESSION = "sippconf1"


def logged(workdir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in workdir.glob("*_logs.log"))


async def offer_path(workdir: Path, wait: float = 10.0) -> str:
    """The a=path of the focus's dial-out offer, as the SIPp UAS logged it."""
    for _ in range(int(wait / 0.05)):
        found = re.search(r"offer a=path:(msrp://\S+)", logged(workdir))
        if found:
            return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no dial-out offer logged in {workdir}")


async def test_focus_invites_remote_sipp_participant_and_receives_its_bye(
    tmp_path: Path, kamailio: Testbed
) -> None:
    proxy = f"sip:127.0.0.1:{kamailio.sip_port};transport=tcp"
    sip = await start_stack(port=kamailio.conf_port, outbound_proxy=proxy)
    msrp = MSRPStack("127.0.0.1", 0)
    await msrp.start()
    focus = build_focus(
        sip, msrp, factory_uri=FACTORY, store=MemoryConferenceStore(), invite_timeout=10.0
    )
    install(sip, focus)
    alice = await Participant("alice", outbound_proxy=proxy).start()
    peer = MSRPStack("127.0.0.1", 0)  # the remote member's media leg
    await peer.start()
    media = await peer.create_session(session_id=MSRP_SESSION, accept_types=("message/cpim",))
    workdir = tmp_path / "uas"
    sipp = await runner.start(
        runner.command(
            "uas-conf-participant.xml",
            "-key",
            "msrp_port",
            str(peer.port),
            "-key",
            "msrp_session",
            MSRP_SESSION,
            "-d",
            "4000",
            local_port=kamailio.peer_port,
        ),
        workdir,
    )
    try:
        await runner.ready(kamailio.peer_port)
        response = await alice.create(FACTORY, [REMOTE])
        assert response.status == 200, response
        assert alice.conference_target.startswith("sip:conf-")
        await alice.subscribe()

        # the focus connects to our MSRP peer (SIPp answered passive) and relays both ways
        await media.start(await offer_path(workdir), active=False, timeout=10)
        await alice.send("hello remote", "m1")
        event = await media.receive(timeout=10)
        assert isinstance(event, MessageReceived)
        got = cpim.parse(event.body)
        assert got.sender is not None and got.sender.uri == alice.uri
        assert got.body == b"hello remote"
        reply = cpim.build_chat_message(
            sender=cpim.NameAddr(REMOTE),
            recipient=cpim.NameAddr(alice.conference_target),
            message_id="m2",
            timestamp=NOW,
            body=b"hello alice",
        )
        await media.send(cpim.CONTENT_TYPE, cpim.serialize(reply))
        await alice.wait(lambda: len(alice.received) == 1)
        back = cpim.parse(alice.received[0].body)
        assert back.sender is not None and back.sender.uri == REMOTE

        # SIPp hangs up after -d 4000 ms: the focus marks the member departed
        result = await sipp.wait()
        assert result.ok, result.explain()
        key = rcs.normalize_user(REMOTE)
        await alice.wait(lambda: alice.statuses().get(key) is PS.DISCONNECTED)
        seen = [h.get(key) for h in alice.history]
        assert PS.CONNECTED in seen
        assert seen.index(PS.CONNECTED) < seen.index(PS.DISCONNECTED)
        (endpoint,) = alice.view.users[key].endpoints
        assert endpoint.disconnection_method is conference.DisconnectionMethod.DEPARTED
        (conf,) = focus.conferences.values()
        member = conf.member(REMOTE)
        assert member is not None and member.status is MemberStatus.DEPARTED
        dial_out = logged(workdir)
        assert f"referred-by <{alice.uri}>" in dial_out
        assert f"contribution {conf.ids.contribution_id}" in dial_out

        # the creator leaves last: the conference ends and its subscription is terminated
        await alice.leave()
        assert alice.subscription is not None
        await asyncio.wait_for(alice.subscription.terminated.wait(), 10)
        await conf.drain()  # the end's last steps (store, forget) follow the NOTIFY
        assert conf.ended and focus.conferences == {}
    finally:
        await sipp.stop()
        await focus.close()
        await alice.stop()
        await media.close()
        await peer.close()
        await msrp.close()
        await sip.stop()
