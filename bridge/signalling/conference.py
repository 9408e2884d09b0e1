"""The conference-event subscription of one group leg (RFC 4575, RFC 6665).

What it notifies: docs/protocol-mapping.md N12 and "Group chat".

Public API::

    watch = ConferenceWatch(sip_stack, user, report=cb, spawn=adapter_spawn)
    leg.watch = watch         # the adapter starts it once the leg is up:
    watch.start(conference)   # SUBSCRIBE Event: conference at the conference URI
    watch.stop(unsubscribe=True)
    cb(participants, full)    # the changed members, the user's own entry left out

Why it looks like this
----------------------
docs/group-chat.md (wire contract 3): the focus answers the SUBSCRIBE, NOTIFYs
the full state, then partial documents whose ``version`` grows by one per
NOTIFY. ``sip.conference_view.ConferenceView`` folds them and says what
changed; a version gap (or a partial document before any full one) asks for a
resync, which here is a new subscription (the first NOTIFY of a subscription
carries the full state, RFC 4575 §4.4). The subscription refreshes itself
(``sip.subscription.ClientSubscription``); when it ends (a failed refresh, a
``terminated`` NOTIFY) the watch subscribes again, except after
``reason=noresource`` (RFC 6665 §4.1.3: the conference is gone; its BYE follows,
contract 9). A refused SUBSCRIBE is logged and retried with a doubling backoff
(``RETRY_FIRST`` to ``RETRY_MAX`` seconds): the leg stays up (N15).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from functools import lru_cache
from typing import Any

from bridge.chat.model import Participant, ParticipantStatus
from bridge.ids import UserUri
from sip import conference, rcs
from sip.callback import Bound
from sip.conference_view import ConferenceView, participant_status
from sip.errors import CodecError, ProtocolError
from sip.flag import Flag, when_any
from sip.message import Request
from sip.stack import SipStack
from sip.subscription import ClientSubscription

log = logging.getLogger(__name__)

EVENT = "conference"
ACCEPT = conference.CONTENT_TYPE
EXPIRES = 600
"""Seconds asked for in each SUBSCRIBE (the stack refreshes before they run out)."""
RETRY_FIRST = 1.0
RETRY_MAX = 60.0
UNSUBSCRIBE_WAIT = 2.0
"""Seconds ``stop(unsubscribe=True)`` waits for the final NOTIFY."""
CHAIRMAN = "chairman"

Report = Callable[[tuple[Participant, ...], bool], None]
Spawn = Callable[[Coroutine[Any, Any, object]], None]


SHARED_PARTICIPANTS = 8192
"""Recent distinct participants whose one copy the members' sessions share: the members of
a group are told the same changes (docs/group-chat.md, "Memory")."""


def _key(entity: str) -> str:
    try:
        return sys.intern(rcs.normalize_user(entity))
    except ValueError:
        return entity


@lru_cache(maxsize=SHARED_PARTICIPANTS)
def _shared(participant: Participant) -> Participant:
    """The first equal participant of the recent ones (frozen values: sharing is safe)."""
    return participant


def participant_of(user: conference.User) -> Participant | None:
    """The REST participant a conference-info ``<user>`` stands for (RFC 4575)."""
    status = participant_status(user)
    if status is None or user.entity is None:
        return None
    return _shared(
        Participant(
            address=UserUri(_key(user.entity)),
            status=ParticipantStatus(status.value),
            name=user.display_text,
            is_originator=CHAIRMAN in user.roles,
        )
    )


class ConferenceWatch:
    """Subscribes to one conference for one user and reports member changes."""

    __slots__ = (
        "sip",
        "user",
        "report",
        "spawn",
        "view",
        "conference",
        "subscription",
        "stopped",
        "subscribes",
        "_resync",
        "_task",
        "_wake",
    )

    def __init__(self, sip: SipStack, user: UserUri, *, report: Report, spawn: Spawn) -> None:
        self.sip = sip
        self.user = user
        self.report = report
        self.spawn = spawn
        self.view = ConferenceView(normalize=_key)
        self.conference: str | None = None
        self.subscription: ClientSubscription | None = None
        self.stopped = False
        self.subscribes = 0
        """SUBSCRIBEs that got a 2xx (tests, diagnostics)."""
        self._resync = Flag()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[bool] | None = None
        """Set while a subscription runs: calls ``_over`` when it ends or needs a resync
        (no task waits meanwhile)."""

    def start(self, conference_uri: str) -> None:
        """Subscribe at ``conference_uri`` in the background (once)."""
        if self.conference is not None or self.stopped:
            return
        self.conference = conference_uri
        self._task = asyncio.get_running_loop().create_task(self._subscribe())

    def stop(self, unsubscribe: bool) -> None:
        """Stop the subscription loop; with ``unsubscribe`` send Expires: 0 (RFC 6665 §4.1.2.3)."""
        if self.stopped:
            return
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        sub, self.subscription = self.subscription, None
        if sub is None:
            return
        if unsubscribe and not sub.terminated.is_set():
            self.spawn(self._unsubscribe(sub))
        else:
            sub.close()

    @staticmethod
    async def _unsubscribe(sub: ClientSubscription) -> None:
        try:
            await sub.unsubscribe(notify_timeout=UNSUBSCRIBE_WAIT)
        except ProtocolError as exc:
            log.info("x un-SUBSCRIBE failed: %s", exc)
        finally:
            sub.close()

    async def _subscribe(self) -> None:
        """SUBSCRIBE until one is accepted (doubling backoff), then wait without a task."""
        assert self.conference is not None
        delay = RETRY_FIRST
        while not self.stopped:
            self._resync.clear()
            try:
                sub = await self.sip.subscribe(
                    self.conference,
                    EVENT,
                    sender=str(self.user),
                    accept=ACCEPT,
                    expires=EXPIRES,
                    on_notify=self._on_notify,
                )
            except ProtocolError as exc:
                log.warning(
                    "x SUBSCRIBE %s for %s failed (%s): retry in %.0f s",
                    self.conference,
                    self.user,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.subscribes += 1
            self.subscription = sub
            self._wake = when_any(Bound(self._over, sub), sub.terminated, self._resync)
            self._task = None  # done: a finished task is not kept either
            return

    def _over(self, sub: ClientSubscription) -> None:
        """The subscription ended or a version gap asks for a resync: subscribe again."""
        self._wake = None
        if self.stopped:
            return
        self.subscription = None
        self.view = self.view.reset()
        if sub.terminated.is_set() and sub.reason == "noresource":
            log.info("- conference %s is gone: no new SUBSCRIBE", self.conference)
            return
        if not sub.terminated.is_set():
            self.spawn(self._unsubscribe(sub))  # resync: this one is replaced
        log.info("- conference %s: subscribing again (%s)", self.conference, sub.reason)
        self._task = asyncio.get_running_loop().create_task(self._subscribe())

    def _on_notify(self, request: Request) -> None:
        if self.stopped or not request.body:
            return
        try:
            doc = conference.parse(request.body)
        except CodecError as exc:
            log.warning("x conference NOTIFY for %s dropped: %s", self.user, exc)
            return
        view, update = self.view.apply(doc)
        if update.resync_needed:
            log.info("x conference %s: version gap at %s, resync", self.conference, doc.version)
            self._resync.set()
            return
        if not update.applied:
            return
        self.view = view
        changed = []
        for change in update.changes:
            if change.user.yourown or change.entity == self.user:
                continue
            participant = participant_of(change.user)
            if participant is not None:
                changed.append(participant)
        if changed:
            self.report(tuple(changed), doc.state is conference.ElementState.FULL)
