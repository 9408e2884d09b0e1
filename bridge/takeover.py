"""Takeover of a dead instance's work by a survivor (issue 10 item 4; docs/several-instances.md).

Every ``instance_takeover_interval`` seconds a running instance on PostgreSQL asks
``state.instances.Instances.dead_peers`` for the other owners with work in the
store whose liveness lock it can take (provably dead: PostgreSQL freed the lock
when their connection ended). For those it runs the same recovery as a start:
chat (``bridge.chat.recovery.recover`` with ``owners`` = the dead: their live
sessions reported ended to the apps, their unsent messages failed or requeued,
their owed IMDNs sent) and the focus's (their conferences ended), then releases
the locks (``release_dead``). Holding the locks meanwhile keeps two survivors
from recovering one dead instance twice. A round that fails is logged and tried
again at the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from bridge.chat import recovery
from bridge.chat.assembly import ChatBridge
from bridge.focus import ConferenceFocus
from state.chat_backlog import OutboxBacklog
from state.db import Database
from state.focus_store import SQLConferenceStore

log = logging.getLogger(__name__)

EndConferences = Callable[[Collection[str]], Awaitable[int]]
"""Ends the live conferences of the given owners; returns the BYEs sent."""


class DeadPeers(Protocol):
    """The liveness side (``state.instances.Instances``)."""

    async def dead_peers(self) -> frozenset[str]:
        """Other owners provably dead now; their locks are held until :meth:`release_dead`."""
        ...

    async def release_dead(self) -> None:
        """Forget the dead owners recovered and free their locks."""
        ...


class Takeover:
    """The periodic takeover task of one instance (module docstring)."""

    def __init__(
        self,
        peers: DeadPeers,
        chat: ChatBridge,
        backlog: recovery.NotificationBacklog | None,
        *,
        end_conferences: EndConferences | None = None,
    ) -> None:
        self.peers = peers
        self.chat = chat
        self.backlog = backlog
        self.end_conferences = end_conferences
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def assemble(
        cls,
        peers: DeadPeers,
        chat: ChatBridge,
        database: Database,
        focus: object,
        conferences: SQLConferenceStore,
    ) -> Takeover:
        """The takeover of the composition root: the outbox as backlog, and the focus's
        start-up recovery scoped to the dead owners (when this instance hosts a focus)."""
        end_conferences = None
        if isinstance(focus, ConferenceFocus):
            host = focus

            async def end(owners: Collection[str]) -> int:
                conferences.recover = list(owners)
                return await host.start()

            end_conferences = end
        return cls(peers, chat, OutboxBacklog(database), end_conferences=end_conferences)

    async def round(self) -> frozenset[str]:
        """One look for dead peers, and the recovery of those found; returns them."""
        dead = await self.peers.dead_peers()
        if not dead:
            return dead
        try:
            chat = self.chat
            report = await recovery.recover(
                chat.core, chat.adhoc, chat.messages, self.backlog, owners=dead
            )
            byes = 0 if self.end_conferences is None else await self.end_conferences(dead)
            log.info(
                "- took over %s: %d sessions ended, %d messages failed, %d requeued,"
                " %d conference BYEs",
                ", ".join(sorted(dead)),
                report.sessions_closed,
                report.messages_failed,
                report.messages_requeued,
                byes,
            )
        finally:
            await self.peers.release_dead()
        return dead

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.round()
            except Exception:
                log.exception("x takeover round failed; trying again in %g s", interval)

    def start(self, interval: float) -> None:
        """Start a round every ``interval`` seconds."""
        self._task = asyncio.create_task(self._run(interval), name="instance-takeover")

    async def stop(self) -> None:
        """Stop the rounds (a round running is cancelled; its locks go with ``Instances``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
