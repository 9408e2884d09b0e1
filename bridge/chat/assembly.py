"""The one place the chat service is assembled (composition: every part built and wired here).

:func:`build_chat` builds the shared runtime (``bridge.chat.core.ChatCore``)
and hands it, with the other parts each one needs, to the parts that do the
work; it binds the event router as the signalling port's sink. Who calls whom::

    rest.chat_service ──► ChatBridge.confirmed   ConfirmedChat   (confirmed.py)  R3-R5
                      ──► ChatBridge.messages    Messages        (messages.py)   R6-R7b
                                 └─ adhoc ─────► AdhocChat       (implicit.py)   adhoc target
                      ──► ChatBridge.groups      GroupChat       (groups.py)     R8-R15
                                 ├─ confirmed (promote ends the 1-1)
                                 └─ messages  (reports on received messages)
    SignallingPort ──► ChatBridge.events         SignallingRouter (events.py)
                           ├─► OneToOneInbound  (inbound.py)  ── adhoc
                           └─► GroupInbound     (group_inbound.py)
    Notifier ──► Messages.on_delivered (the "delivered" IMDN)

Every part receives the same ``ChatCore``: units of work, the transitions,
the locks, the timers and the leg cache live there once. :class:`ChatBridge`
holds the parts (callers use them directly: ``chat.confirmed.create_session``,
``chat.groups.create``) and runs the lifetime: restart recovery
(``bridge.chat.recovery``), the delivery listener and the retention sweep, and
the end of the live sessions at a graceful shutdown (``bridge.chat.shutdown``).
Its callers: ``rest.chat_service.build_chat_service`` (the app), the test
world (``tests/fakes/chat_world.py``) and ``bench/chat_core_bench.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.chat import recovery
from bridge.chat.confirmed import ConfirmedChat
from bridge.chat.core import ChatCore, utcnow
from bridge.chat.events import SignallingRouter
from bridge.chat.group_inbound import GroupInbound
from bridge.chat.groups import GroupChat
from bridge.chat.implicit import AdhocChat
from bridge.chat.inbound import OneToOneInbound
from bridge.chat.messages import Messages
from bridge.chat.model import LegId
from bridge.chat.notifications import ChatUrls
from bridge.chat.ports import SignallingPort
from bridge.chat.shutdown import ShutdownReport, end_live_sessions
from bridge.chat.store import ChatStore
from bridge.config import Settings
from bridge.ports import Notifier

log = logging.getLogger(__name__)

PURGE_INTERVAL = 3600.0
"""Seconds between two retention sweeps (one also runs at start, in recovery)."""


@dataclass(frozen=True, eq=False)
class ChatBridge:
    """The assembled chat service: its parts, and its start and stop (module docstring)."""

    core: ChatCore
    confirmed: ConfirmedChat
    adhoc: AdhocChat
    messages: Messages
    groups: GroupChat
    inbound: OneToOneInbound
    group_inbound: GroupInbound
    events: SignallingRouter
    """The ``SignallingEvents`` sink bound to the signalling port."""

    async def start(
        self,
        backlog: recovery.NotificationBacklog | None = None,
        owners: Collection[str] | None = None,
    ) -> recovery.RecoveryReport:
        """Recover from the previous run (of ``owners``: ``recovery.recover``) and listen for
        delivered notifications."""
        report = await recovery.recover(self.core, self.adhoc, self.messages, backlog, owners)
        self.core.notifier.add_listener(self.messages.on_delivered)
        self.core.arm("purge", PURGE_INTERVAL, self._purge)
        recovery.OwedRetry(self.core).start()
        return report

    async def _purge(self) -> None:
        """Drop messages and ended sessions past their retention; run again later."""
        core = self.core
        retention = timedelta(days=core.settings.chat_message_retention_days)
        async with core.unit() as work:
            count = await work.tx.purge_expired(now=work.now, ended_before=work.now - retention)
        if count:
            log.info("- purged %d chat messages and sessions past retention", count)
        core.arm("purge", PURGE_INTERVAL, self._purge)

    async def shutdown(self, legs: Iterable[LegId]) -> ShutdownReport:
        """End the live sessions of ``legs`` and tell their apps (``bridge.chat.shutdown``):
        the graceful shutdown's step before :meth:`stop`."""
        return await end_live_sessions(self.core, legs)

    async def settle(self, timeout: float) -> int:
        """Let the background work (IMDNs, timers that fired) finish, ``timeout`` seconds at
        most; how many tasks still run (:meth:`stop` cancels them)."""
        return await self.core.settle(timeout)

    async def stop(self) -> None:
        """Stop listening, cancel every timer and background task, close the store."""
        self.core.notifier.remove_listener(self.messages.on_delivered)
        await self.core.forget_taken_reports()
        await self.core.close()
        await self.core.store.close()


def build_chat(
    *,
    settings: Settings,
    store: ChatStore,
    notifier: Notifier,
    signalling: SignallingPort,
    urls: ChatUrls,
    clock: Callable[[], datetime] = utcnow,
) -> ChatBridge:
    """Build the chat service's parts over one ``ChatCore``; bind its router to ``signalling``."""
    core = ChatCore(
        settings=settings,
        store=store,
        notifier=notifier,
        signalling=signalling,
        urls=urls,
        clock=clock,
    )
    confirmed = ConfirmedChat(core)
    adhoc_chat = AdhocChat(core)
    messages = Messages(core, adhoc_chat)
    inbound = OneToOneInbound(core, adhoc_chat)
    group_inbound = GroupInbound(core)
    events = SignallingRouter(core, inbound, group_inbound)
    chat = ChatBridge(
        core=core,
        confirmed=confirmed,
        adhoc=adhoc_chat,
        messages=messages,
        groups=GroupChat(core, confirmed, messages),
        inbound=inbound,
        group_inbound=group_inbound,
        events=events,
    )
    signalling.bind(events)
    return chat
