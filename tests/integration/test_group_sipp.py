"""The bridge as a group-chat participant through Kamailio, against a focus played by SIPp.

SIPp (tests/sipp/uas-conf-focus-refer.xml) sits at the test bed's conference
factory address (KTB_CONF_URI): Kamailio routes ``sip:conference-factory@ims.test``
there and forwards the conference URI from its ``isfocus`` Contact as is. The
test drives the signalling adapter directly (the group use cases of bridge/chat
are built elsewhere) and records its events.

What it proves, over real SIP through a real proxy: the factory INVITE (Require,
multipart SDP + recipient-list) and its 2xx/ACK; the conference URI taken from the
Contact; the out-of-dialog SUBSCRIBE and the full then partial NOTIFY turned into
ParticipantsChanged (own entry left out); REFER add and remove in the INVITE dialog;
the leave BYE with Reason cause=200 and the un-SUBSCRIBE. SIPp speaks no MSRP:
its SDP answer points at the test's own MSRP peer, which plays the focus's media
(the bridge connects and binds, sends CPIM From = user / To = conference, and takes
a relayed message whose CPIM From is the sender).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from bridge.chat.model import Invitee, LegId, Participant, ParticipantStatus
from bridge.chat.ports import (
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    ParticipantsChanged,
    SessionAccepted,
    SignallingEvent,
)
from bridge.config import Settings
from bridge.ids import MessageId, UserUri
from bridge.signalling.wiring import start_signalling
from sip import cpim
from sip.msrp import MSRPStack
from sip.msrp.events import MessageReceived as MSRPReceived
from tests.sipp import runner
from tests.testbed_fixture import Testbed

pytestmark = pytest.mark.integration

ME = UserUri("tel:+15555550001")
BOB = UserUri("tel:+15555550013")
DAN = UserUri("tel:+15555550014")
FACTORY = "sip:conference-factory@ims.test"
E = TypeVar("E")


class Events:
    """The chat service's seat: records what the adapter reports."""

    def __init__(self) -> None:
        self.events: list[SignallingEvent] = []
        self.changed = asyncio.Event()

    async def handle_event(self, event: SignallingEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def nth(self, kind: type[E], n: int = 1, pred: Callable[[E], bool] = lambda e: True) -> E:
        async def look() -> E:
            while True:
                found = [e for e in self.events if isinstance(e, kind) and pred(e)]
                if len(found) >= n:
                    return found[n - 1]
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(look(), 15)


async def offer_path(workdir: Path, wait: float = 10.0) -> str:
    """The a=path of the bridge's SDP offer, as SIPp logged it."""
    for _ in range(int(wait / 0.05)):
        for log in workdir.glob("*_logs.log"):
            found = re.search(r"offer a=path:(msrp://\S+)", log.read_text(errors="replace"))
            if found:
                return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no SDP offer logged in {workdir}")


async def test_participant_against_a_sipp_focus(tmp_path: Path, kamailio: Testbed) -> None:
    peer = MSRPStack("127.0.0.1", 0)
    await peer.start()
    media = await peer.create_session(session_id="sippfocus1", accept_types=("message/cpim",))
    workdir = tmp_path / "focus"
    sipp = await runner.start(
        runner.command(
            "uas-conf-focus-refer.xml",
            "-key",
            "msrp_port",
            str(peer.port),
            "-key",
            "msrp_session",
            "sippfocus1",
            "-key",
            "me",
            str(ME),
            local_port=kamailio.conf_port,
            calls=2,
        ),
        workdir,
    )
    await runner.ready(kamailio.conf_port)
    settings = Settings(
        sip_port=kamailio.as_port,
        sip_outbound_proxy=f"sip:127.0.0.1:{kamailio.sip_port};transport=tcp",
        chat_invite_timeout=8.0,
    )
    side = await start_signalling(settings)
    events = Events()
    side.signalling.bind(events)
    try:
        leg = LegId("leg-sipp-group")
        await side.signalling.start_group(
            leg, ME, FACTORY, (Invitee(BOB, "Bob"),), subject="sipp group"
        )
        await media.start(await offer_path(workdir), active=False, timeout=10)
        accepted = await events.nth(SessionAccepted)
        conf = accepted.conference
        assert conf is not None and conf.startswith("sip:conf-1@127.0.0.1:")
        assert ";" not in conf

        full = await events.nth(ParticipantsChanged)
        assert full.full and full.participants == (
            Participant(BOB, ParticipantStatus.INVITED, "Bob"),
        )
        partial = await events.nth(ParticipantsChanged, 2)
        assert not partial.full
        assert partial.participants == (Participant(BOB, ParticipantStatus.CONNECTED, "Bob"),)

        # media through the test's MSRP peer (SIPp has none)
        now = datetime.now(UTC)
        await side.signalling.send_message(
            leg, OutgoingMessage(MessageId("g-sipp-1"), ME, UserUri(conf), "hi group", now)
        )
        while True:
            got = await media.receive(timeout=10)
            if isinstance(got, MSRPReceived) and got.body:
                break
        envelope = cpim.parse(got.body)
        assert envelope.sender is not None and envelope.sender.uri == ME
        assert envelope.to[0].uri == conf and envelope.body == b"hi group"
        assert (await events.nth(MessageSendResult)).ok
        relayed = cpim.build_chat_message(
            sender=cpim.NameAddr(str(BOB), "Bob"),
            recipient=cpim.NameAddr(conf),
            message_id="from-bob",
            timestamp=now,
            body=b"hello from bob",
        )
        await media.send("message/cpim", cpim.serialize(relayed))
        msg = await events.nth(MessageReceived)
        assert (msg.message.sender, msg.message.text) == (BOB, "hello from bob")

        await side.signalling.invite_participants(leg, (Invitee(DAN),))
        invited = await events.nth(ParticipantsChanged, 3)
        assert invited.participants == (Participant(DAN, ParticipantStatus.INVITED),)
        await side.signalling.remove_participant(leg, BOB)
        await asyncio.sleep(0.5)  # the 202 reports nothing; the focus's NOTIFY would
        await side.signalling.leave_group(leg)

        result = await sipp.wait()
        assert result.ok, result.explain()
        assert side.signalling.leg_count == 0
    finally:
        await sipp.stop()
        await side.close()
        await peer.close()
