"""A member's leg and how it comes up: the focus's dial-out to one member and the MSRP
bind (docs/group-chat.md "Wire contract", items 2, 6, 7 and 9; RFC 4579 §5.4, RFC 5366 §4).

``FocusContext`` is what every conference of one focus shares; ``Leg`` is a member's SIP/MSRP
side; ``dialog_record`` is what the store keeps of a dialog (RFC 3261 §12.2.1.1).

``dial_out`` sends the INVITE (From = the conference URI, ``Contact: …;isfocus``,
``Referred-By``, the conference's Contribution-/Conversation-ID, SDP offer + the current
participant list as ``recipient-list-history``), waits at most ``invite_timeout`` for the
final answer (then CANCEL, RFC 3261 §9.1, and the member fails with cause 408), and on a 2xx
hooks the dialog into the conference and binds the MSRP session. ``bind`` is shared with
the creator's leg. Every status change goes through ``Conference.apply``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from bridge.focus import wire
from bridge.focus.members import Member, MemberEvent, MemberStatus
from bridge.focus.store import ConferenceStore, DialogRecord
from sip import rcs, sdp
from sip.callback import Bound
from sip.dialog import Dialog
from sip.errors import CodecError, MSRPError, ProtocolError, SIPError
from sip.msrp import MSRPSession, MSRPStack
from sip.stack import SipStack
from sip.subscription import ServerSubscription
from sip.usage import InviteSession, OutgoingInvite

if TYPE_CHECKING:
    from bridge.focus.conference import Conference

log = logging.getLogger(__name__)

GONE = 'SIP;cause=410;text="Gone"'
"""The Reason of the focus's BYEs when a conference ends (docs/group-chat.md item 9)."""
BOOTED = 'SIP;cause=200;text="Call completed"'
"""The Reason of the BYE to a removed member (docs/group-chat.md item 7)."""


@dataclass
class FocusContext:
    """What every conference of one focus shares."""

    sip: SipStack
    msrp: MSRPStack
    profile: rcs.Profile
    store: ConferenceStore
    clock: Callable[[], datetime]
    max_size: int
    invite_timeout: float
    bind_timeout: float


@dataclass(slots=True)
class Leg:
    """A member's SIP/MSRP side: the INVITE dialog and the MSRP session."""

    member: Member
    session: InviteSession | None = None
    msrp: MSRPSession | None = None
    call: OutgoingInvite | None = None
    """The dial-out INVITE until its 2xx made ``session`` (then None)."""
    subscription: ServerSubscription | None = field(default=None, repr=False)

    async def close_msrp(self) -> None:
        """Closes the member's MSRP session, if it has one (idempotent)."""
        if self.msrp is not None:
            await self.msrp.close()


def dialog_record(dialog: Dialog) -> DialogRecord:
    """What the store keeps of a dialog to BYE it after a restart (RFC 3261 §12.2.1.1)."""
    return DialogRecord(
        call_id=dialog.id.call_id,
        local_tag=dialog.id.local_tag,
        remote_tag=dialog.id.remote_tag,
        local_uri=f"<{dialog.local.uri}>",
        remote_uri=f"<{dialog.remote.uri}>",
        remote_target=str(dialog.remote_target),
        route_set=tuple(dialog.route_set),
        local_cseq=dialog.local_cseq,
        is_uac=dialog.is_uac,
    )


async def dial_out(conf: Conference, leg: Leg) -> None:
    """Invites ``leg.member`` into ``conf``; ends with the member connected or gone."""
    ctx, member = conf.ctx, leg.member
    try:
        leg.msrp = await ctx.msrp.create_session(accept_types=wire.ACCEPT_TYPES)
    except (MSRPError, OSError) as exc:
        fail(conf, leg, 500, f"MSRP: {exc}")
        return
    sdp_body = wire.offer(ctx.msrp.advertised_host, ctx.msrp.port, leg.msrp.path_attribute)
    others = [(g.member.uri, g.member.display_name) for g in conf.legs.values() if g.member.active]
    body, content_type = wire.dialout_body(sdp_body, wire.participant_list(others))
    headers = [
        *rcs.session_headers(ctx.profile, conf.ids),
        ("Referred-By", f"<{member.referred_by}>"),
    ]
    if conf.subject:
        headers.append(("Subject", conf.subject))
    sender = f'"{conf.subject}" <{conf.uri}>' if conf.subject else f"<{conf.uri}>"
    call = leg.call = ctx.sip.invite(
        member.uri,
        sender=sender,
        body=body,
        content_type=content_type,
        headers=headers,
        contact=conf.contact,
        handlers=conf.handlers(leg),
    )
    try:
        response = await asyncio.wait_for(call.response(), ctx.invite_timeout)
    except TimeoutError:
        conf.spawn(call.cancel())
        fail(conf, leg, 408, "no answer")
        return
    except (SIPError, ProtocolError) as exc:
        fail(conf, leg, getattr(exc, "status", 500) or 500, str(exc))
        return
    if member.status is not MemberStatus.DIALING_OUT or conf.ended:
        if call.session is not None:
            await call.session.bye([("Reason", GONE if conf.ended else BOOTED)])
        await leg.close_msrp()
        return
    if not response.is_success:
        if response.status == 603:
            await leg.close_msrp()
            conf.apply(leg, MemberEvent.DECLINE)
        else:
            fail(conf, leg, response.status, response.reason)
        return
    session = call.session
    assert session is not None
    leg.session = session
    leg.call = None  # the dialog is up: the INVITE, its answer and transaction can go
    # a refresh re-INVITE is answered with the SDP alone (RFC 3264 §8), so the session keeps
    # that, not the multipart offer with the participant list (docs/group-chat.md "Memory")
    session.local_body, session.content_type = sdp_body, sdp.CONTENT_TYPE
    conf.hook(leg)
    try:
        answered = wire.parse_offer(response.body, response.get("Content-Type"))
        active = sdp.offerer_active(answered.media)
    except CodecError as exc:
        await session.bye()
        fail(conf, leg, 488, f"unusable SDP answer: {exc}")
        return
    conf.apply(leg, MemberEvent.CONNECT)
    await bind(conf, leg, active, " ".join(answered.media.path))


def fail(conf: Conference, leg: Leg, cause: int, why: str) -> None:
    """Marks a dialling or connected member failed with ``cause``; closes its MSRP session."""
    log.info("x dial-out of %s in %s failed: %d %s", leg.member.key, conf.uri, cause, why)
    conf.spawn(leg.close_msrp())
    if leg.member.status in (MemberStatus.DIALING_OUT, MemberStatus.CONNECTED):
        conf.apply(leg, MemberEvent.FAIL, cause=cause)


async def bind(
    conf: Conference, leg: Leg, active: bool, remote_path: str, fingerprint: str | None = None
) -> None:
    """Binds the leg's MSRP session (RFC 4975 §5.4; an msrps peer checked against its SDP
    ``fingerprint``, RFC 4975 §14); a failure BYEs and fails the member."""
    assert leg.msrp is not None
    leg.msrp.on_event = Bound(conf.on_msrp, leg)
    try:
        await leg.msrp.start(
            remote_path, active, timeout=conf.ctx.bind_timeout, fingerprint=fingerprint
        )
    except (MSRPError, OSError, ValueError) as exc:
        if leg.member.status is MemberStatus.CONNECTED:
            if leg.session is not None:
                conf.spawn(leg.session.bye())
            fail(conf, leg, 500, f"MSRP bind: {exc}")
