"""The conference event package of one conference (RFC 4575 §4; docs/group-chat.md item 3).

Each subscription first gets the full state (``state="full"``), then partial documents
holding only the changed ``<user>``s; ``version`` starts at 1 and grows by one per NOTIFY
of that subscription (RFC 4575 §4.6). NOTIFYs of one subscription go out one at a time, in
order (a lock per subscription), so a subscriber never sees version n+1 before n; NOTIFYs
of different subscriptions go out concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence

from sip import conference
from sip.conference import ConferenceDescription, ConferenceInfo, ConferenceState, ElementState
from sip.conference import User as ConfUser
from sip.errors import ProtocolError
from sip.subscription import ServerSubscription

log = logging.getLogger(__name__)

TERMINATE_GRACE = 2.0
"""Seconds ``terminate_all`` waits for the final NOTIFYs."""

Snapshot = Callable[[], tuple[ConferenceDescription, ConferenceState, tuple[ConfUser, ...]]]


class _Subscriber:
    __slots__ = ("sub", "version", "lock")

    def __init__(self, sub: ServerSubscription) -> None:
        self.sub = sub
        self.version = 0
        self.lock = asyncio.Lock()


class ConferenceNotifier:
    """Serves the ``conference`` subscriptions of one conference URI."""

    def __init__(self, entity: str, snapshot: Snapshot) -> None:
        self.entity = entity
        self._snapshot = snapshot
        self._subscribers: list[_Subscriber] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(self, sub: ServerSubscription) -> None:
        """Takes a new (accepted) subscription and sends it the full state."""
        subscriber = _Subscriber(sub)
        self._subscribers.append(subscriber)
        self._spawn(self._send(subscriber, None))

    def find(self, sub_dialog_id: object) -> ServerSubscription | None:
        """The live subscription whose dialog has this id (SUBSCRIBE inside an INVITE dialog)."""
        for s in self._subscribers:
            if s.sub.dialog.id == sub_dialog_id and not s.sub.terminated.is_set():
                return s.sub
        return None

    def changed(self, users: Sequence[ConfUser]) -> None:
        """Sends every subscription a partial document with ``users`` (their new state)."""
        if not users:
            return
        self._subscribers = [s for s in self._subscribers if not s.sub.terminated.is_set()]
        for subscriber in self._subscribers:
            self._spawn(self._send(subscriber, tuple(users)))

    async def _send(self, subscriber: _Subscriber, users: tuple[ConfUser, ...] | None) -> None:
        async with subscriber.lock:
            sub = subscriber.sub
            if sub.terminated.is_set():
                return
            subscriber.version += 1
            if users is None:
                description, state, everyone = self._snapshot()
                doc = ConferenceInfo(
                    entity=self.entity,
                    state=ElementState.FULL,
                    version=subscriber.version,
                    description=description,
                    conference_state=state,
                    users=everyone,
                )
            else:
                doc = ConferenceInfo(
                    entity=self.entity,
                    state=ElementState.PARTIAL,
                    version=subscriber.version,
                    users=users,
                )
            try:
                await sub.notify(conference.serialize(doc), conference.CONTENT_TYPE)
            except ProtocolError as exc:
                log.info("x NOTIFY v%d for %s failed: %s", subscriber.version, self.entity, exc)

    async def terminate_all(self) -> None:
        """Ends every subscription (``terminated;reason=noresource``, RFC 6665 §4.2.2)."""
        ends = [self._terminate(s) for s in self._subscribers]
        self._subscribers = []
        if ends:
            await asyncio.wait([asyncio.ensure_future(e) for e in ends], timeout=TERMINATE_GRACE)
        for task in list(self._tasks):
            task.cancel()

    async def _terminate(self, subscriber: _Subscriber) -> None:
        async with subscriber.lock:
            try:
                await subscriber.sub.terminate("noresource")
            except ProtocolError as exc:
                log.info("x final NOTIFY for %s failed: %s", self.entity, exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:  # a set keeps its grown table after discards: start small again
            self._tasks = set()
