"""The delivery worker: the ``Notifier`` port over ``state.outbox`` and ``state.channels``.

Callback delivery (docs/decisions.md "Notification delivery")
-------------------------------------------------------------
One HTTP POST per notification, body ``{root: body}``, to ``notify_url``; any
2xx means delivered. The body is JSON, or XML (``rest.xmlbody``,
docs/rest-formats.md) when the subscription's ``notificationFormat`` is ``XML``
(looked up once per subscription and remembered). A scheduler task makes
*passes* when woken (a publish or wake, a lane finishing), when the next
backoff ends, and at least every ``notification_poll_interval`` seconds, so
rows written by another process or instance are found too. One pass is one
write transaction: it deletes the rows delivered since the last pass, then
claims a batch of up to ``batch_size`` rows from the head of each of up to
``notification_concurrency`` due lanes (one lane per subscription;
``state.outbox.claim_lanes``). Each batch runs as a *lane task* that POSTs its
rows one after the other over one shared keep-alive HTTP client, without
touching the store while they succeed. On a failure it records the attempt and
hands the rest of the batch back, and the scheduler returns to that lane when
its backoff ends. That keeps order per subscription, lets one failing receiver
block only its own subscriptions, and costs one transaction per batch rather
than two per notification. A lane whose claims would run out during a slow
batch extends them first.

Fairness (docs/notify-policy.md): a lane whose POST is still unanswered after
``notification_slow_after`` is set aside (it stops holding one of the
``concurrency`` slots; at most ``notification_slow_lanes`` of them), at most
``notification_destination_concurrency`` lanes of one destination (``host:port``)
run at once, and a destination failing ``notification_breaker_failures`` times
in a row is paused (circuit breaker): the lanes of a paused or full destination
are skipped by the claims (``busy``) until it frees up. Where POSTs may go at
all is the notify policy's call (``rest.notify_policy``), checked by the HTTP
client at each connect; a refused destination's notification is dropped at once.

Rows delivered (or handed out by a long poll) are not deleted one by one:
they join a list that the next transaction of this worker deletes (a pass, a
publish), at the latest ``SETTLE_DELAY`` seconds later.

``publish`` commits with *group commit*: concurrent calls share one
transaction (a caller with nobody else waiting commits inline, without a task
hop), and each returns once its row is committed. On SQLite that transaction
also claims the lanes of the rows it wrote and hands them straight to lane
tasks, so a published notification costs no scheduler pass and no re-read;
with one writer per SQLite file nobody else can add to a lane before that
commit (``state.outbox``, "Lanes and claims"). ``enqueue`` + :meth:`wake`
callers (the chat side) are served by the next pass.

Guarantees kept: a notification is durable before ``publish`` returns (or
commits with the caller's transaction); it is deleted only after its 2xx, so
a crash between the two re-sends it (at least once); delivery listeners run
once per successful POST (or hand-out).

Backoff: attempt *n* waits ``min(max, initial * 2**(n-1))`` seconds, halved
plus random jitter (:func:`backoff_delay`). A notification is tried at least
once; after a failure at or past ``created_at + max_age`` it is dropped,
logged at WARNING and counted. Every attempt is scheduled no later than that
deadline, so the last try happens at the maximum age. Responses other than
2xx (3xx included: redirects are not followed) count as failures.

Channels (OMA NotificationChannel v1.0): :meth:`DeliveryService.hand_out` waits for the channel's
queue; it is woken by :meth:`wake` for the notifications just committed here
and, on PostgreSQL, by ``state.listen.ChannelListener`` for those another
instance committed (``NOTIFY`` in the queueing transaction). Unwoken, it looks
again only every ``channel_recheck_interval`` (every poll interval while the
listener's connection is down), and those looks are reads: an idle poll writes
nothing, it claims (a write) only what it has seen queued. The items it
yields stay queued (claimed) until the caller has written its response; a
failed write hands them back, in place, for the next poll (the handler
writes with ``write_eof`` inside :meth:`hand_out`). A new poll on the
same channel answers the previous one empty. Expired channels are swept
here, with their queues and the subscriptions that target their callbackURL.
Channel items older than the maximum age are dropped as well, so an
abandoned channel cannot grow without bound.

A notification whose ``notify_url`` lies under this server's own channel URL
space but matches no live channel (it was deleted or expired) is dropped at
once: POSTing to ourselves can never succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.config import Settings
from bridge.ids import SubscriptionId, UserUri
from bridge.ports import DeliveryListener, JSONObject, Notification
from bridge.subscriptions import NotificationFormat
from rest import xmlbody
from rest.http_client import NotifyClient, NotifyError, NotifyRefused
from rest.notify_policy import NotifyPolicy
from state import channels, outbox, repository
from state.db import Database
from state.listen import ChannelListener
from state.writer import SQLiteWriter

log = logging.getLogger(__name__)

USER_AGENT = "chat-bridge notification delivery"
CLAIM_GRACE = 5.0
"""Seconds a claim outlives the HTTP timeout (a crashed owner's claim then runs out)."""
STOP_GRACE = 5.0
"""Seconds :meth:`DeliveryService.stop` waits for the scheduler and lanes to leave."""
LISTENER_GRACE = 5.0
"""Seconds :meth:`DeliveryService.stop` lets running delivery listeners finish."""
BATCH_SIZE = 32
"""Rows claimed from the head of one lane per scheduler pass."""
SETTLE_DELAY = 0.02
"""Seconds delivered rows may wait to be deleted together (a crash then re-sends them)."""
INLINE_MEMORY = 10_000
"""Inline-claimed row ids remembered until their wake comes (cleared past this)."""
_POST_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_XML_POST_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}
POLL_EXPIRY_MARGIN = 1.0
"""Seconds before its channel expires by which a long poll has answered (never under it)."""
FORMAT_CACHE_SIZE = 65536
"""Subscriptions whose ``notificationFormat`` the delivery worker remembers."""
FLUSH_CHECK = 0.05
"""Seconds between two looks at the outbox while :meth:`DeliveryService.flush` waits."""
FLUSH_HEADS = 256
"""Lane heads :meth:`DeliveryService.flush` reads to tell whether any is due."""


def backoff_delay(
    attempt: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): capped exponential, jittered."""
    base = min(maximum, initial * 2.0 ** max(0, attempt - 1))
    return base / 2.0 + base / 2.0 * rand()


@dataclass
class DeliveryStats:
    """Counters of the delivery worker since start."""

    delivered: int = 0
    handed_out: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    listener_errors: int = 0
    inline_lanes: int = 0
    """Lane batches claimed inside a chat store batch (no scheduler pass)."""
    refused: int = 0
    """Notifications dropped because the notify policy refused their destination."""
    paused: int = 0
    """Times a destination was paused by its circuit breaker."""
    slow: int = 0
    """Lanes set aside as slow (their POST outlasted ``notification_slow_after``)."""


class DeliveryCounters(Protocol):
    """What the delivery worker reports to the metrics (docs/operations.md)."""

    def queued(self, count: int) -> None:
        """``count`` notifications were committed to the outbox."""
        ...

    def delivered(self, seconds: float, channel: bool) -> None:
        """One notification was POSTed with a 2xx (``channel``: handed to a long poll),
        ``seconds`` after it was queued."""
        ...

    def retried(self) -> None:
        """A POST failed and the notification waits for its next attempt."""
        ...

    def dropped(self, reason: str, count: int = 1) -> None:
        """Notifications given up: ``expired`` (past ``notification_max_age``),
        ``refused`` (notify policy) or ``no_channel`` (its channel is gone)."""
        ...


class NoDeliveryCounters:
    """Counts nothing (the default)."""

    def queued(self, count: int) -> None:
        """Nothing."""

    def delivered(self, seconds: float, channel: bool) -> None:
        """Nothing."""

    def retried(self) -> None:
        """Nothing."""

    def dropped(self, reason: str, count: int = 1) -> None:
        """Nothing."""


class _Refused(str):
    """The error text of a POST the notify policy refused (the row is dropped, not retried)."""


@dataclass
class _Destination:
    """Fairness and circuit-breaker state of one notification destination (``host:port``)."""

    running: int = 0
    """Lane tasks POSTing there now."""
    subs: set[str] = field(default_factory=set)
    """Subscriptions seen going there (skipped by claims while it is blocked)."""
    failures: int = 0
    """Consecutive failed POSTs."""
    opens: int = 0
    """Pauses in a row (each doubles the next)."""
    paused_until: float = 0.0
    """Loop time the current pause ends (0: not paused)."""
    timer: asyncio.TimerHandle | None = None
    queue: deque[tuple[outbox.LaneBatch, float]] = field(default_factory=deque)
    """Batches claimed while it was at its limit: each starts when one of its lanes ends."""

    @property
    def paused(self) -> bool:
        return self.paused_until > 0.0


@dataclass
class _Poll:
    """The one waiting long poll of a channel in this process."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    superseded: bool = False


class DeliveryService:
    """Publishes notifications, POSTs callbacks and serves long polls (the ``Notifier`` port)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        own_channel_prefix: str | None = None,
        poll_interval: float | None = None,
        recheck_interval: float | None = None,
        concurrency: int | None = None,
        batch_size: int = BATCH_SIZE,
        clock: Callable[[], datetime] = outbox.utcnow,
        policy: NotifyPolicy | None = None,
        counters: DeliveryCounters | None = None,
    ) -> None:
        self.settings = settings
        self.counters: DeliveryCounters = counters or NoDeliveryCounters()
        """Metrics hooks: queued, delivered (with latency), retried, dropped."""
        self.database = database
        self.own_channel_prefix = own_channel_prefix
        self.poll_interval = (
            settings.notification_poll_interval if poll_interval is None else poll_interval
        )
        self.concurrency = settings.notification_concurrency if concurrency is None else concurrency
        self.policy = NotifyPolicy.from_settings(settings) if policy is None else policy
        """Where notifications may be POSTed (docs/notify-policy.md), checked at each connect."""
        self.destination_concurrency = (
            max(1, self.concurrency // 2)
            if settings.notification_destination_concurrency is None
            else settings.notification_destination_concurrency
        )
        self.slow_after = settings.notification_slow_after
        self.slow_lanes = settings.notification_slow_lanes
        self.batch_size = batch_size
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stats = DeliveryStats()
        self._listeners: list[DeliveryListener] = []
        self._wakeup = asyncio.Event()
        self._lanes: dict[str, asyncio.Task[bool]] = {}
        self._gone: set[str] = set()
        self._settled: list[int] = []
        """Rows delivered or handed out, deleted by the next transaction that comes along."""
        self._handed: set[int] = set()
        """Channel items among them: the next poll skips them (they are gone for it)."""
        self._publishing: list[tuple[outbox.Draft, asyncio.Future[Notification]]] = []
        self._publisher: asyncio.Task[None] | None = None
        self._committing = False
        self._rewake: set[str] = set()
        self._due: set[str] = set()
        """Lanes the next pass looks at (it scans every lane when ``_full``)."""
        self._full = True
        self._settle_timer: asyncio.TimerHandle | None = None
        self._polls: dict[str, _Poll] = {}
        self._http: NotifyClient | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._posts: set[asyncio.Task[str | None]] = set()
        self._write_lock = outbox.writer_lock(database)
        self._writer: SQLiteWriter | None = None
        self._inline: set[int] = set()
        """Rows a chat store batch claimed and dispatched itself (:meth:`wake` skips them)."""
        self._stopping = False
        self._draining = False
        """Shutdown under way (:meth:`drain`): long polls answer ``[]`` at once."""
        self._next_sweep = 0.0
        self._formats: dict[str, NotificationFormat] = {}
        """``notificationFormat`` of the subscriptions seen (:meth:`_load_format`)."""
        self._destinations: dict[str, _Destination] = {}
        """Destinations with running lanes or recent failures (fairness, circuit breaking)."""
        self._sub_dest: dict[str, str] = {}
        """Destination of each subscription seen in a running or held-back lane."""
        self._dest_keys: dict[str, str] = {}
        """``host:port`` of each notifyURL seen (bounded cache)."""
        self._blocked: set[str] = set()
        """Destinations paused or at their concurrency limit: their lanes are not claimed."""
        self._slow: set[str] = set()
        """Lanes set aside as slow: they no longer hold one of the ``concurrency`` slots."""
        self._in_flight: dict[str, float] = {}
        """Lanes with a POST under way, and the loop time it began."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._queued: set[str] = set()
        """Lanes whose claimed batch waits in its destination's queue."""
        self.recheck_interval = (
            settings.channel_recheck_interval if recheck_interval is None else recheck_interval
        )
        """Seconds between two safety re-checks of an idle long poll (:attr:`_recheck`)."""
        self._listener: ChannelListener | None = None
        """PostgreSQL: wakes the polls of the channels other instances queue for."""

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; on SQLite one at a time in this process.

        SQLite has one writer; concurrent writers from one process would wait
        in its busy handler (sleeps of 1 ms and up), which costs far more than
        queueing on an asyncio lock: :func:`state.outbox.writer_lock`, shared
        with every other writer of the same file that takes it. A SQLite file
        is written through this worker's own ``state.writer.SQLiteWriter``
        (statements on the loop, no driver-thread hop per statement).
        """
        if self._write_lock is None:
            async with self.database.sessions.begin() as session:
                yield session
            return
        if self.database.url.database in (None, "", ":memory:"):  # one shared connection
            async with self._write_lock, self.database.sessions.begin() as session:
                yield session
            return
        if self._writer is None:
            self._writer = SQLiteWriter(self.database.url, self._write_lock, name="delivery")
        async with self._writer.transaction() as session:
            yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        """A read; on in-memory SQLite (one shared connection) in turn with the writes."""
        if self._write_lock is not None and self.database.url.database in (None, "", ":memory:"):
            async with self._write_lock, self.database.sessions() as session:
                yield session
            return
        async with self.database.sessions() as session:
            yield session

    # --- the Notifier port ----------------------------------------------------

    async def publish(
        self,
        *,
        user: UserUri,
        subscription_id: SubscriptionId,
        notify_url: str,
        root: str,
        body: JSONObject,
    ) -> Notification:
        """Store one notification durably (own transaction) and schedule its delivery.

        Concurrent calls share one transaction (group commit); each returns
        once the transaction holding its notification has committed.
        """
        if not root:
            raise ValueError("notification root must not be empty")
        waiter: asyncio.Future[Notification] = asyncio.get_running_loop().create_future()
        draft = outbox.Draft(user, subscription_id, notify_url, root, body)
        self._publishing.append((draft, waiter))
        if not self._committing:  # no commit under way: this caller commits, no task hop
            self._committing = True
            try:
                await self._commit_batch()
            finally:
                if self._publishing:  # queued meanwhile: a task commits the rest
                    self._publisher = asyncio.create_task(
                        self._commit_rest(), name="notification-publish"
                    )
                else:
                    self._committing = False
        return await waiter

    async def _commit_rest(self) -> None:
        try:
            while self._publishing:
                await self._commit_batch()
        finally:
            self._committing = False
            self._publisher = None

    async def _commit_batch(self) -> None:
        """Commit what :meth:`publish` queued in one transaction, and dispatch it.

        On SQLite (one writer: no other transaction can add to a lane before
        this one commits) the lanes of the batch are claimed in the same
        transaction and handed straight to lane tasks: no scheduler pass, no
        re-read. Rows delivered since the last pass are deleted in that
        transaction too.
        """
        loop = asyncio.get_running_loop()
        batch, self._publishing = self._publishing, []
        single = batch[0][0] if len(batch) == 1 else None
        direct = self._direct
        settled, self._settled = (self._settled, []) if direct else ([], self._settled)
        held = loop.time() + self._claim_seconds()
        alone = False
        claimed = outbox.Claimed([], None)
        try:
            async with self._write() as session:
                now = self.clock()
                until = now + timedelta(seconds=self._claim_seconds())
                await outbox.settle(session, settled)
                if single is not None:  # one statement rather than two
                    items = [
                        await outbox.enqueue(
                            session,
                            user=single.user,
                            subscription_id=single.subscription_id,
                            notify_url=single.notify_url,
                            root=single.root,
                            body=single.body,
                            now=now,
                        )
                    ]
                else:
                    items = await outbox.enqueue_many(session, [d for d, _ in batch], now=now)
                lanes = {  # running lanes and those of a paused or full destination wait
                    n.subscription_id
                    for n in items
                    if n.channel_id is None
                    and n.subscription_id not in self._lanes
                    and not (self._blocked and self._dest_key(n.notify_url) in self._blocked)
                }
                free = self._free_slots()
                if direct and lanes and free > 0:
                    if single is not None:
                        alone = await outbox.claim_if_alone(
                            session, items[0].id, owner=self.owner, until=until
                        )
                    else:
                        claimed = await outbox.claim_lanes(
                            session,
                            owner=self.owner,
                            now=now,
                            until=until,
                            lanes=free,
                            per_lane=self.batch_size,
                            busy=self._busy(),
                            only=lanes,
                        )
        except BaseException as exc:
            self._settled[:0] = settled
            for _, waiter in batch:
                if waiter.done():
                    continue
                if isinstance(exc, Exception):
                    waiter.set_exception(exc)
                else:
                    waiter.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        self._handed.difference_update(settled)
        self.counters.queued(len(items))
        for (_, waiter), item in zip(batch, items, strict=True):
            if not waiter.done():
                waiter.set_result(item)
        if alone:
            await self._hand_to_lane(items[0], now, held)
            return
        started: set[str] = set()
        for lane in claimed.batches:
            if lane.subscription_id in self._lanes:  # cannot happen: we held the writer
                await self._release(lane.ids)
                continue
            self._start_lane(lane, held)
            started.add(lane.subscription_id)
        rest = [n for n in items if n.subscription_id not in started or n.channel_id is not None]
        if rest:
            self._wake(*rest)

    async def _hand_to_lane(self, item: Notification, now: datetime, held: float) -> None:
        sub = item.subscription_id
        if self._direct and sub not in self._lanes:
            entry = outbox.OutboxEntry(item, 0, now)
            self._start_lane(outbox.LaneBatch(sub, (entry,)), held)
            return
        # the worker stopped, or a lane started meanwhile: leave it to the scheduler
        await self._release([item.id])
        self._wake(item)

    @property
    def _direct(self) -> bool:
        return self.database.is_sqlite and self._scheduler is not None and not self._stopping

    def claim_round(self) -> _InlineRound | None:
        """``state.outbox.InlineClaims``: claim a chat batch's lanes in its transaction."""
        return _InlineRound(self) if self._direct else None

    def wake(self, *queued: Notification) -> None:
        """Wake the worker and the long polls of the channels concerned (all, if none given)."""
        if queued:  # committed by the caller (the chat store): counted as queued here
            self.counters.queued(len(queued))
        self._wake(*queued)

    def _wake(self, *queued: Notification) -> None:
        # A running lane's batch was claimed before these rows: the scheduler takes
        # them when that lane ends (``_rewake``), so a running lane needs no pass now.
        if not queued:
            self._full = True
            self._wakeup.set()
        for n in queued:
            if n.channel_id is not None:
                continue
            if n.id in self._inline:  # claimed and started by the batch that wrote it
                self._inline.discard(n.id)
                continue
            if n.subscription_id in self._lanes or n.subscription_id in self._queued:
                self._rewake.add(n.subscription_id)
            else:
                self._due.add(n.subscription_id)
                self._wakeup.set()
        if not queued:
            self._wake_polls()
            return
        for n in queued:
            if n.channel_id is not None:
                self._wake_poll(n.channel_id)

    def add_listener(self, listener: DeliveryListener) -> None:
        """Register a coroutine awaited with every delivered notification."""
        self._listeners.append(listener)

    def remove_listener(self, listener: DeliveryListener) -> None:
        """Unregister a listener (no error if absent)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def subscription_gone(self, subscription_id: str) -> None:
        """Stop POSTing a deleted subscription's claimed rows (its queue was dropped)."""
        if subscription_id in self._lanes or subscription_id in self._queued:
            self._gone.add(subscription_id)

    # --- lifetime -------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client (keep-alive, bounded per host) and start the scheduler."""
        if self._scheduler is not None:
            return
        self._stopping = False
        self._draining = False
        self._http = NotifyClient(
            limit=max(1, min(self.concurrency + self.slow_lanes, self.destination_concurrency)),
            policy=self.policy,
            timeout=self.settings.notification_http_timeout,
            keepalive_timeout=30.0,
            user_agent=USER_AGENT,
        )
        self._scheduler = asyncio.create_task(self._schedule(), name="notification-scheduler")
        if not self.database.is_sqlite:  # several instances: wake on their queueing too
            self._listener = ChannelListener(self.database, self._wake_poll, self._wake_polls)
            await self._listener.start()
        log.info("- notification delivery started as %s", self.owner)

    async def stop(self) -> None:
        """Stop the scheduler and the lanes, release claims, answer waiting polls, close HTTP.

        Store operations are never cancelled midway (a cancelled driver call can
        wedge a pooled connection): the scheduler and lanes see ``_stopping`` and
        leave between steps; only HTTP requests in flight are cancelled, and
        their claims released. Tasks still running after a grace period are
        cancelled as a last resort. Rows delivered but not deleted yet are
        deleted here.
        """
        if self._publisher is not None:  # let queued publishes commit
            await asyncio.wait([self._publisher], timeout=STOP_GRACE)
        self._stopping = True
        self._wakeup.set()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        for post in list(self._posts):
            post.cancel()
        tasks = [t for t in (self._scheduler, *self._lanes.values()) if t is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None
        self._lanes.clear()
        self._gone.clear()
        self._rewake.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for dest in self._destinations.values():
            if dest.timer is not None:
                dest.timer.cancel()
        self._destinations.clear()
        self._sub_dest.clear()
        self._blocked.clear()
        self._slow.clear()
        self._in_flight.clear()
        self._queued.clear()  # their claims were released with the rest
        if self._listener_tasks:
            await asyncio.wait(set(self._listener_tasks), timeout=LISTENER_GRACE)
            for task in list(self._listener_tasks):
                task.cancel()
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        for poll in self._polls.values():
            poll.superseded = True
            poll.event.set()
        try:
            settled, self._settled = self._settled, []
            async with self._write() as session:
                await outbox.settle(session, settled)
                released = await outbox.release_claims(session, self.owner)
            self._handed.difference_update(settled)
            if released:
                log.info("- released %d notification claims", released)
        except Exception:  # the store may already be gone at shutdown
            log.warning("x cannot settle or release notification claims", exc_info=True)
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def drain(self) -> None:
        """Answer every waiting long poll now with ``[]``, and any later one at once.

        The first step of the graceful shutdown (docs/configuration.md "Shutdown"): a poll
        answers as on its timeout, taking nothing, so what is queued stays for the next poll
        (after the restart, or on another instance). Callback delivery goes on.
        """
        self._draining = True
        for poll in self._polls.values():
            poll.superseded = True
            poll.event.set()

    async def flush(self, timeout: float) -> int:
        """Try every callback notification due now, ``timeout`` seconds at most (shutdown).

        Returns how many callback notifications are left in the outbox (in backoff, toward
        a paused destination, or not tried in time); they stay there, durable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._scheduler is not None and loop.time() < deadline:
            if not self._lanes and not self._publishing and not await self._due_now():
                break
            self._full = True
            self._wakeup.set()
            await asyncio.sleep(min(FLUSH_CHECK, max(0.0, deadline - loop.time())))
        settled, self._settled = self._settled, []
        try:
            async with self._write() as session:  # delivered rows are not left behind
                await outbox.settle(session, settled)
                left = await outbox.count_pending(session)
        except Exception:
            self._settled[:0] = settled
            log.warning("x cannot count the notifications left", exc_info=True)
            return 0
        self._handed.difference_update(settled)
        return left

    async def _due_now(self) -> bool:
        """True when a callback lane that a pass could claim has its head due now."""
        now = self.clock()
        async with self.database.sessions() as session:
            heads = await outbox.lane_heads(session, now=now, limit=FLUSH_HEADS)
        busy = self._busy()
        return any(
            h.next_attempt_at <= now and h.notification.subscription_id not in busy for h in heads
        )

    # --- callback delivery ----------------------------------------------------

    async def _schedule(self) -> None:
        """Make passes: over the lanes woken, or over every lane when a timer ran out.

        A woken pass only looks at the lanes it was woken for, so a large backlog
        elsewhere (a receiver down for hours) does not slow every wake-up; every
        lane is scanned when ``poll_interval`` or the soonest known backoff ends.
        """
        loop = asyncio.get_running_loop()
        scan_at = loop.time()  # when the next scan of every lane is due
        while not self._stopping:
            self._wakeup.clear()
            full = self._full or loop.time() >= scan_at
            lanes, self._due, self._full = self._due, set(), False
            try:
                wait = await self._pass(None if full else lanes)
                if full:
                    scan_at = loop.time() + min(wait, self.poll_interval)
                else:
                    scan_at = min(scan_at, loop.time() + wait)
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.poll_interval
                    await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("x notification scheduler pass failed")
                self._due |= lanes
                scan_at = min(scan_at, loop.time() + self.poll_interval)
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, scan_at - loop.time()))
            except TimeoutError:
                pass

    async def _pass(self, lanes: set[str] | None) -> float:
        """Delete settled rows, claim batches of due lanes and start them, in one transaction.

        ``lanes`` limits the claim to those lanes (None: every lane). Returns the
        seconds until the next known due time among them (``poll_interval`` if
        none).
        """
        if lanes is not None and not lanes and not self._settled:
            return self.poll_interval  # nothing to delete or claim (a chat batch did it)
        settled, self._settled = self._settled, []
        free = self._free_slots()
        now = self.clock()
        held = asyncio.get_running_loop().time() + self._claim_seconds()
        claimed = outbox.Claimed([], None)
        try:
            async with self._write() as session:
                await outbox.settle(session, settled)
                if free > 0 and (lanes is None or lanes):
                    claimed = await outbox.claim_lanes(
                        session,
                        owner=self.owner,
                        now=now,
                        until=now + timedelta(seconds=self._claim_seconds()),
                        lanes=free,
                        per_lane=self.batch_size,
                        busy=self._busy(),
                        only=lanes,
                    )
        except BaseException:
            self._settled[:0] = settled  # deleted by the next pass instead
            raise
        self._handed.difference_update(settled)
        for batch in claimed.batches:
            self._start_lane(batch, held)
        if lanes:  # woken for a lane that a lane task held at claim time: after that task
            self._rewake |= lanes & (
                self._lanes.keys() - {b.subscription_id for b in claimed.batches}
            )
        if lanes and len(claimed.batches) >= free:  # out of lane tasks: come back for the rest
            self._due |= lanes - {b.subscription_id for b in claimed.batches}
        if claimed.next_due is None:
            return self.poll_interval
        return max(0.0, (claimed.next_due - now).total_seconds())

    def _start_lane(self, batch: outbox.LaneBatch, held: float) -> None:
        """Run a claimed batch, unless its destination is paused or at its limit.

        At its limit, the batch waits (claimed) in the destination's queue and
        starts when one of its lanes ends; paused, it is handed back. Either
        way the destination's lanes are skipped by the claims (:meth:`_busy`)
        until it frees up.
        """
        sub = batch.subscription_id
        key = self._dest_key(batch.entries[0].notification.notify_url)
        dest = self._destinations.get(key)
        if dest is None:
            dest = self._destinations[key] = _Destination()
        dest.subs.add(sub)
        if len(self._sub_dest) >= FORMAT_CACHE_SIZE:
            self._sub_dest = {s: k for k, d in self._destinations.items() for s in d.subs}
        self._sub_dest[sub] = key
        if dest.paused:
            self._blocked.add(key)
            self._hold_back(sub, batch.ids)
            return
        if dest.running >= self.destination_concurrency:
            self._blocked.add(key)
            dest.queue.append((batch, held))
            self._queued.add(sub)
            return
        self._launch(batch, held, key, dest)

    def _launch(self, batch: outbox.LaneBatch, held: float, key: str, dest: _Destination) -> None:
        sub = batch.subscription_id
        dest.running += 1
        if dest.running >= self.destination_concurrency:
            self._blocked.add(key)
        task = asyncio.create_task(self._run_lane(batch, held, key), name=f"notify-{sub}")
        self._lanes[sub] = task
        task.add_done_callback(partial(self._lane_done, sub, len(batch.entries), key))

    def _hold_back(self, sub: str, ids: Sequence[int]) -> None:
        """Hand back (in a task) a batch whose destination is paused; its lane waits."""
        holder = asyncio.get_running_loop().create_task(self._hand_back(sub, ids))
        self._listener_tasks.add(holder)
        holder.add_done_callback(self._listener_tasks.discard)

    async def _hand_back(self, sub: str, ids: Sequence[int]) -> None:
        try:
            await self._release(ids)
        except Exception:  # the claims run out instead
            log.warning("x cannot hand back %d held notifications", len(ids), exc_info=True)
        key = self._sub_dest.get(sub)
        if key is None or key not in self._blocked:  # freed up meanwhile
            self._due.add(sub)
            self._wakeup.set()

    def _lane_done(self, sub: str, size: int, key: str, task: asyncio.Task[bool]) -> None:
        """A lane task ended: look at its lane again only if there may be more to do there."""
        self._lanes.pop(sub, None)
        self._gone.discard(sub)
        self._slow.discard(sub)
        self._in_flight.pop(sub, None)
        dest = self._destinations.get(key)
        if dest is not None:
            dest.running -= 1
            if dest.queue and not self._stopping:  # the next claimed batch of that destination
                batch, held = dest.queue.popleft()
                self._queued.discard(batch.subscription_id)
                self._launch(batch, held, key, dest)
            else:
                self._unblock(key, dest)
        again = task.cancelled() or task.exception() is not None or task.result()
        if again or sub in self._rewake or size >= self.batch_size:
            self._rewake.discard(sub)
            self._due.add(sub)
            self._wakeup.set()
        elif self._due:  # lanes that waited for a free lane task
            self._wakeup.set()
        else:
            self._settle_soon()

    # --- fairness: slots, destinations, circuit breaking ------------------------

    def _free_slots(self) -> int:
        """Lane tasks that may start now: slots not held by fast lanes, within the total cap."""
        running = len(self._lanes)
        return min(
            self.concurrency - (running - len(self._slow)),
            self.concurrency + self.slow_lanes - running,
        )

    def _busy(self) -> Collection[str]:
        """Lanes a claim skips: running ones, and those of blocked destinations."""
        if not self._blocked:
            return self._lanes.keys()
        busy = set(self._lanes)
        for key in self._blocked:
            dest = self._destinations.get(key)
            if dest is not None:
                busy |= dest.subs
        return busy

    def _held(self, sub: str) -> bool:
        key = self._sub_dest.get(sub)
        return key is not None and key in self._blocked

    def _paused(self, key: str) -> bool:
        dest = self._destinations.get(key)
        return dest is not None and dest.paused

    def _dest_key(self, url: str) -> str:
        """``host:port`` of a notifyURL: the unit of fairness and circuit breaking."""
        key = self._dest_keys.get(url)
        if key is None:
            try:
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
                key = f"{(parts.hostname or '').lower()}:{port}"
            except ValueError:
                key = url
            if len(self._dest_keys) >= FORMAT_CACHE_SIZE:
                self._dest_keys.clear()
            self._dest_keys[url] = key
        return key

    def _unblock(self, key: str, dest: _Destination) -> None:
        """Let the lanes of ``key`` be claimed again if it is neither paused nor full."""
        if dest.paused or dest.running >= self.destination_concurrency:
            return
        if key in self._blocked:
            self._blocked.discard(key)
            self._due |= dest.subs
            self._wakeup.set()
        if dest.running == 0 and dest.failures == 0:  # nothing left to remember
            del self._destinations[key]
            for sub in dest.subs:
                if self._sub_dest.get(sub) == key:
                    del self._sub_dest[sub]

    def _dest_failed(self, key: str) -> None:
        """Count a failed POST; pause the destination after too many in a row (circuit open)."""
        dest = self._destinations.get(key)
        if dest is None:
            return
        dest.failures += 1
        if dest.paused or dest.failures < self.settings.notification_breaker_failures:
            return
        pause = min(
            self.settings.notification_backoff_max,
            self.settings.notification_breaker_pause * 2.0**dest.opens,
        )
        dest.opens += 1
        loop = asyncio.get_running_loop()
        dest.paused_until = loop.time() + pause
        dest.timer = loop.call_at(dest.paused_until, self._resume, key)
        self._blocked.add(key)
        self.stats.paused += 1
        while dest.queue:  # waiting batches go back to the store
            batch, _held = dest.queue.popleft()
            self._queued.discard(batch.subscription_id)
            self._hold_back(batch.subscription_id, batch.ids)
        log.warning(
            "x notifications to %s paused for %.0f s after %d failures in a row",
            key,
            pause,
            dest.failures,
        )

    def _resume(self, key: str) -> None:
        """A pause ended: the destination's lanes are tried again (one more failure re-opens)."""
        dest = self._destinations.get(key)
        if dest is None:
            return
        dest.timer = None
        dest.paused_until = 0.0
        log.info("- notifications to %s resumed", key)
        self._unblock(key, dest)

    def _arm_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(
            max(0.05, self.slow_after / 4), self._watch
        )

    def _watch(self) -> None:
        """Set aside the lanes whose POST outlasted ``slow_after``, freeing their slots."""
        self._watchdog = None
        if not self._in_flight or self._stopping:
            return
        cutoff = asyncio.get_running_loop().time() - self.slow_after
        freed = False
        for sub, began in self._in_flight.items():
            if began <= cutoff and sub not in self._slow and len(self._slow) < self.slow_lanes:
                self._slow.add(sub)
                self.stats.slow += 1
                freed = True
        if freed:
            self._full = True
            self._wakeup.set()
        self._arm_watchdog()

    def _settle_soon(self) -> None:
        """Delete the settled rows soon, with whatever else settles meanwhile."""
        if self._settled and self._settle_timer is None:
            self._settle_timer = asyncio.get_running_loop().call_later(
                SETTLE_DELAY, self._settle_due
            )

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._settled:
            self._wakeup.set()

    def _claim_seconds(self) -> float:
        return self.settings.notification_http_timeout + CLAIM_GRACE

    async def _run_lane(self, batch: outbox.LaneBatch, held: float, key: str) -> bool:
        """POST a claimed batch in order until it is done, a row fails, or the lane goes.

        Returns True when the lane needs the scheduler again (a failure to
        reschedule, rows handed back), False when the whole batch was settled.
        """
        sub = batch.subscription_id
        ids = batch.ids
        loop = asyncio.get_running_loop()
        try:
            for index, entry in enumerate(batch.entries):
                if self._stopping or sub in self._gone or self._paused(key):
                    await self._release(ids[index:])
                    return True
                if held - loop.time() < self.settings.notification_http_timeout + 1.0:
                    held = loop.time() + self._claim_seconds()
                    if not await self._extend(ids, index):
                        log.warning("x notification lane %s: claims lost, leaving it", sub)
                        return True
                if not await self._attempt(entry, ids[index + 1 :], key):
                    return True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("x notification lane %s failed", sub)
            return True
        return False

    async def _extend(self, ids: list[int], index: int) -> bool:
        """Extend the batch's claims; False if a row still to send was taken by someone else."""
        now = self.clock()
        until = now + timedelta(seconds=self._claim_seconds())
        async with self._write() as session:
            # sent rows not deleted yet keep the lane's head held, so they are extended too
            await outbox.extend_claims(session, ids[:index], owner=self.owner, until=until)
            return await outbox.extend_claims(session, ids[index:], owner=self.owner, until=until)

    async def _release(self, ids: Sequence[int]) -> None:
        if ids:
            async with self._write() as session:
                await outbox.release(session, ids, owner=self.owner)

    async def _attempt(self, entry: outbox.OutboxEntry, rest: list[int], key: str) -> bool:
        """POST one claimed row; True once it is settled (delivered or dropped) and may go.

        False leaves the row in the outbox, rescheduled after a failure or
        handed back when ``stop()`` cancelled the request; the claims of the
        rest of the batch are released with it.
        """
        n = entry.notification
        if self._is_dead_channel_url(n.notify_url):
            self.counters.dropped("no_channel")
            self._log_drop(n, "its notification channel no longer exists")
            self._settled.append(n.id)
            return True
        post = asyncio.create_task(self._post(n))
        self._posts.add(post)
        post.add_done_callback(self._posts.discard)
        sub = n.subscription_id
        self._in_flight[sub] = asyncio.get_running_loop().time()
        if self._watchdog is None:
            self._arm_watchdog()
        try:
            error = await post
        except asyncio.CancelledError:
            self._in_flight.pop(sub, None)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # stop() cancelled the request only: not an attempt, hand the rows back
            await self._release([n.id, *rest])
            return False
        self._in_flight.pop(sub, None)
        if error is None:
            self.stats.delivered += 1
            self.counters.delivered((self.clock() - n.created_at).total_seconds(), False)
            self._settled.append(n.id)
            self._notify_listeners(n)
            dest = self._destinations.get(key)
            if dest is not None and dest.failures:
                dest.failures = dest.opens = 0
            return True
        if isinstance(error, _Refused):
            self.stats.refused += 1
            self.counters.dropped("refused")
            self._log_drop(n, error)
            self._settled.append(n.id)
            return True
        self.stats.failed_attempts += 1
        self._dest_failed(key)
        now = self.clock()
        deadline = n.created_at + timedelta(seconds=self.settings.notification_max_age)
        if now >= deadline:
            self.counters.dropped("expired")
            self._log_drop(n, f"undelivered after {entry.attempts + 1} attempts ({error})")
            self._settled.append(n.id)
            return True
        delay = backoff_delay(
            entry.attempts + 1,
            self.settings.notification_backoff_initial,
            self.settings.notification_backoff_max,
        )
        retry_at = min(now + timedelta(seconds=delay), deadline)
        async with self._write() as session:
            await outbox.record_failure(session, n.id, error=error, next_attempt_at=retry_at)
            await outbox.release(session, rest, owner=self.owner)
        self.counters.retried()
        log.info(
            "x notification %d to %s failed (%s); retry %d in %.1fs",
            n.id,
            n.notify_url,
            error,
            entry.attempts + 1,
            (retry_at - now).total_seconds(),
        )
        return False

    async def _post(self, n: Notification) -> str | None:
        """POST one notification; None on 2xx, else a short error text."""
        assert self._http is not None, "DeliveryService.start() not called"
        fmt = self._formats.get(n.subscription_id)
        if fmt is None:
            fmt = await self._load_format(n.subscription_id)
        if fmt is NotificationFormat.XML:
            data = xmlbody.render(n.root, dict(n.body))
            headers = _XML_POST_HEADERS
        else:
            data = n.encoded or json.dumps(n.document()).encode()
            headers = _POST_HEADERS
        try:
            status = await self._http.post(n.notify_url, data, headers)
        except NotifyRefused as exc:
            return _Refused(str(exc))
        except (NotifyError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= status < 300:
            log.debug("> notification %d %s to %s: %d", n.id, n.root, n.notify_url, status)
            return None
        return f"HTTP {status}"

    async def _load_format(self, subscription_id: SubscriptionId) -> NotificationFormat:
        """The subscription's ``notificationFormat`` (JSON if it is gone), remembered."""
        async with self.database.sessions() as session:
            fmt = await repository.subscription_format(session, subscription_id)
        fmt = fmt or NotificationFormat.JSON
        if len(self._formats) >= FORMAT_CACHE_SIZE:
            self._formats.clear()
        self._formats[subscription_id] = fmt  # immutable: a subscription has no update
        return fmt

    def _is_dead_channel_url(self, url: str) -> bool:
        # A live channel's callbackURL never reaches the callback path (enqueue routes it).
        return self.own_channel_prefix is not None and url.startswith(self.own_channel_prefix)

    def _log_drop(self, n: Notification, why: str) -> None:
        self.stats.dropped += 1
        log.warning(
            "x notification %d (%s for %s, subscription %s) dropped: %s",
            n.id,
            n.root,
            n.user,
            n.subscription_id,
            why,
        )

    def _notify_listeners(self, n: Notification) -> None:
        # Listeners run beside delivery, so a slow one (an IMDN over SIP) delays nothing.
        for listener in list(self._listeners):
            task = asyncio.create_task(self._run_listener(listener, n))
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

    async def _run_listener(self, listener: DeliveryListener, n: Notification) -> None:
        try:
            await listener(n)
        except Exception:
            self.stats.listener_errors += 1
            log.exception("x delivery listener failed for notification %d", n.id)

    # --- channels -------------------------------------------------------------

    @asynccontextmanager
    async def hand_out(
        self,
        channel: channels.Channel,
        timeout: float,
        *,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[list[Notification] | None]:
        """Wait for a channel's queue and lend its items to the body (OMA NotificationChannel).

        Yields the items (oldest first), ``[]`` on timeout, or None if the
        channel is gone. The items stay queued, claimed, while the body writes
        them: they leave the queue (and reach the delivery listeners) only when
        the body completes; if it raises, they are handed back for the next
        poll. A newer poll on the same channel, or the poller's connection
        closing (``client_gone``), ends the wait with ``[]`` and takes nothing.
        """
        items = await self._wait_for_items(channel, timeout, client_gone)
        if not items:
            yield items
            return
        ids = [n.id for n in items]
        try:
            yield items
        except BaseException:
            try:
                await self._release(ids)
            except Exception:  # the claims run out instead
                log.warning("x cannot hand %d channel items back", len(ids), exc_info=True)
            log.info(
                "x hand-out of %d items on channel %s failed: kept queued", len(ids), channel.id
            )
            self._wake_poll(channel.id)
            raise
        # handed out: gone for the next poll at once, deleted with the next batch of rows
        self._handed.update(ids)
        self._settled.extend(ids)
        self._settle_soon()
        self.stats.handed_out += len(items)
        now = self.clock()
        for n in items:
            self.counters.delivered((now - n.created_at).total_seconds(), True)
            self._notify_listeners(n)
        self._wake_poll(channel.id)

    async def long_poll(
        self,
        channel: channels.Channel,
        timeout: float,
        *,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> list[Notification] | None:
        """:meth:`hand_out` with nothing to write: the items leave the queue at once."""
        async with self.hand_out(channel, timeout, client_gone=client_gone) as items:
            return items

    async def _wait_for_items(
        self, channel: channels.Channel, timeout: float, client_gone: Callable[[], bool]
    ) -> list[Notification] | None:
        """Wait for the channel's items; claim them (a write) only when there are some.

        Woken (something was queued here, or announced by another instance), the
        poll claims at once; otherwise (its first look, a safety re-check) it
        first reads whether anything is there, so an idle poll writes nothing.
        """
        previous = self._polls.get(channel.id)
        if previous is not None:
            previous.superseded = True
            previous.event.set()
        poll = _Poll()
        self._polls[channel.id] = poll
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = False
        woken = False
        try:
            while True:
                poll.event.clear()
                if poll.superseded or self._draining or client_gone():
                    return []
                now = self.clock()
                if woken:
                    async with self._write() as session:
                        got = await channels.claim_channel_head(
                            session,
                            channel.id,
                            owner=self.owner,
                            now=now,
                            until=now + timedelta(seconds=self._claim_seconds()),
                            limit=channel.max_notifications,
                            gone=self._handed,
                        )
                        if not got.items and got.held_until is None and checked:
                            if not await channels.channel_alive(session, channel.id, now=now):
                                return None
                    if got.items:
                        return got.items
                else:
                    async with self._read() as session:
                        got = await channels.claim_channel_head(
                            session,
                            channel.id,
                            owner=self.owner,
                            now=now,
                            until=now,
                            limit=1,
                            gone=self._handed,
                            peek=True,
                        )
                        if not got.ready and got.held_until is None and checked:
                            if not await channels.channel_alive(session, channel.id, now=now):
                                return None
                    if got.ready:
                        woken = True
                        continue
                checked = True  # the caller has just found it alive
                to_expiry = (channel.expires_at - now).total_seconds() - POLL_EXPIRY_MARGIN
                left = min(deadline - loop.time(), to_expiry)
                if left <= 0:
                    return [] if channel.expires_at > self.clock() else None
                wait = self._recheck
                if got.held_until is not None:  # a hand-out elsewhere, or a dead owner's claim
                    wait = min(wait, max(0.0, (got.held_until - now).total_seconds()) + 0.01)
                try:
                    await asyncio.wait_for(poll.event.wait(), timeout=min(left, wait))
                    woken = True
                except TimeoutError:
                    woken = False
        finally:
            if self._polls.get(channel.id) is poll:
                del self._polls[channel.id]

    @property
    def _recheck(self) -> float:
        """Seconds an idle poll waits before it looks at the store again unwoken.

        Every queueing wakes the poll: in this process through :meth:`wake` (the
        only process on SQLite), from other instances through the PostgreSQL
        listener. Only while that listener is down does the poll look every
        ``poll_interval``; the re-check is a read either way.
        """
        if self._listener is not None and not self._listener.listening:
            return self.poll_interval
        return self.recheck_interval

    def _wake_poll(self, channel_id: str) -> None:
        if poll := self._polls.get(channel_id):
            poll.event.set()

    def _wake_polls(self) -> None:
        for poll in self._polls.values():
            poll.event.set()

    def channel_gone(self, channel_id: str) -> None:
        """Wake a waiting long poll of a deleted channel so it answers 404 at once."""
        self._wake_poll(channel_id)

    async def _sweep(self) -> None:
        now = self.clock()
        cutoff = now - timedelta(seconds=self.settings.notification_max_age)
        async with self._write() as session:
            gone = await channels.expire_channels(session, now=now)
            stale = await outbox.drop_stale_channel_items(session, cutoff)
        for channel in gone:
            log.info("- channel %s of %s expired", channel.id, channel.user)
            self.channel_gone(channel.id)
        if stale:
            self.stats.dropped += stale
            self.counters.dropped("expired", stale)
            log.warning("x %d channel notifications dropped: older than the maximum age", stale)


class _InlineRound:
    """One chat store batch's claims (``state.outbox.ClaimRound``, SQLite only).

    Inside the batch's transaction: the rows delivered since the last
    transaction are deleted, and each lane whose only rows are the batch's own
    callback rows (and that no lane task is running) is claimed whole. After
    the commit those lanes start at once; the rest is left to :meth:`wake`
    and the scheduler, as before. Rolled back: the settled rows wait for the
    next transaction, and nothing was claimed.
    """

    def __init__(self, service: DeliveryService) -> None:
        self._service = service
        self._settled: list[int] = []
        self._batches: list[outbox.LaneBatch] = []
        self._held = 0.0
        self._channels: set[str] = set()

    async def run(self, session: AsyncSession, made: Sequence[Notification]) -> None:
        svc = self._service
        self._settled, svc._settled = svc._settled, []
        await outbox.settle(session, self._settled)
        lanes: dict[SubscriptionId, list[Notification]] = {}
        for n in made:
            if n.channel_id is None:
                lanes.setdefault(n.subscription_id, []).append(n)
            else:
                self._channels.add(n.channel_id)
        free = svc._free_slots()
        if not lanes or free <= 0:
            return
        now = svc.clock()
        until = now + timedelta(seconds=svc._claim_seconds())
        self._held = asyncio.get_running_loop().time() + svc._claim_seconds()
        for sub, items in lanes.items():
            if free <= 0:
                break
            if sub in svc._lanes or sub in svc._gone or svc._held(sub):
                continue
            ids = [n.id for n in items]
            if await outbox.claim_own_rows(session, sub, ids, owner=svc.owner, until=until):
                entries = tuple(outbox.OutboxEntry(n, 0, now) for n in items)
                self._batches.append(outbox.LaneBatch(sub, entries))
                free -= 1

    def committed(self) -> None:
        svc = self._service
        for channel_id in self._channels:  # even if the unit that queued it is gone
            svc._wake_poll(channel_id)
        svc._handed.difference_update(self._settled)
        if len(svc._inline) > INLINE_MEMORY:  # ids whose wake never came (a cancelled unit)
            svc._inline.clear()
        for batch in self._batches:
            if svc._stopping or batch.subscription_id in svc._lanes:  # no await since the claim
                task = asyncio.get_running_loop().create_task(svc._release(batch.ids))
                svc._listener_tasks.add(task)
                task.add_done_callback(svc._listener_tasks.discard)
                continue
            svc._inline.update(batch.ids)
            svc.stats.inline_lanes += 1
            svc._start_lane(batch, self._held)

    def failed(self) -> None:
        self._service._settled[:0] = self._settled
        self._batches.clear()
