"""The delivery worker: implements the ``Notifier`` port over ``state.outbox``.

Callback delivery (DECISIONS.md "Notification delivery", oma-chat-api.md §5)
---------------------------------------------------------------------------
One HTTP POST per notification, body ``{root: body}``, to ``notify_url``; any
2xx means delivered. A scheduler task looks for the heads of the outbox lanes
(one lane per subscription) when woken, when a lane finishes, and at least
every ``poll_interval`` seconds, so rows written by another process or
instance are found too. Each due head starts a *lane task* (at most
``concurrency`` at a time) that claims the head, posts it, deletes it on 2xx
and moves on to the next row of the same subscription; on failure it records
the attempt and leaves, and the scheduler comes back when the backoff ends.
That keeps order per subscription and lets one failing receiver block only
its own subscriptions.

Backoff: attempt *n* waits ``min(max, initial * 2**(n-1))`` seconds, halved
plus random jitter (:func:`backoff_delay`). A notification is tried at least
once; after a failure at or past ``created_at + max_age`` it is dropped,
logged at WARNING and counted. Every attempt is scheduled no later than that
deadline, so the last try happens at the maximum age. Responses other than
2xx (3xx included: redirects are not followed) count as failures.

Channels (§10): :meth:`DeliveryService.long_poll` waits for the channel's
queue; it is woken by :meth:`wake` for the notifications just committed, and
re-checks the store every ``poll_interval`` so another instance's writes are
seen too. A new poll on the same channel answers the previous one empty.
Expired channels are swept here, with their queues and the subscriptions that
target their callbackURL. Channel items older than the maximum age are
dropped as well, so an abandoned channel cannot grow without bound.

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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.config import Settings
from bridge.ids import SubscriptionId, UserUri
from bridge.ports import DeliveryListener, JSONObject, Notification
from state import outbox
from state.db import Database

log = logging.getLogger(__name__)

USER_AGENT = "chat-bridge notification delivery"
CLAIM_GRACE = 5.0
"""Seconds a claim outlives the HTTP timeout (a crashed owner's claim then runs out)."""
STOP_GRACE = 5.0
"""Seconds :meth:`DeliveryService.stop` waits for the scheduler and lanes to leave."""
LISTENER_GRACE = 5.0
"""Seconds :meth:`DeliveryService.stop` lets running delivery listeners finish."""


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
        poll_interval: float = 1.0,
        concurrency: int = 32,
        clock: Callable[[], datetime] = outbox.utcnow,
    ) -> None:
        self.settings = settings
        self.database = database
        self.own_channel_prefix = own_channel_prefix
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stats = DeliveryStats()
        self._listeners: list[DeliveryListener] = []
        self._wakeup = asyncio.Event()
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._polls: dict[str, _Poll] = {}
        self._http: aiohttp.ClientSession | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._posts: set[asyncio.Task[str | None]] = set()
        self._write_lock = asyncio.Lock() if database.is_sqlite else None
        self._stopping = False
        self._next_sweep = 0.0

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; on SQLite one at a time in this process.

        SQLite has one writer; concurrent writers from one process would wait
        in its busy handler (sleeps of 1 ms and up), which costs far more than
        queueing on an asyncio lock.
        """
        if self._write_lock is None:
            async with self.database.sessions.begin() as session:
                yield session
            return
        async with self._write_lock, self.database.sessions.begin() as session:
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
        """Store one notification durably (own transaction) and schedule its delivery."""
        async with self._write() as session:
            item = await outbox.enqueue(
                session,
                user=user,
                subscription_id=subscription_id,
                notify_url=notify_url,
                root=root,
                body=body,
                now=self.clock(),
            )
        self.wake(item)
        return item

    def wake(self, *queued: Notification) -> None:
        """Wake the worker and the long polls of the channels concerned (all, if none given)."""
        # A running lane reads its next row itself, and wakes the scheduler when it ends.
        if not queued or any(
            n.channel_id is None and n.subscription_id not in self._lanes for n in queued
        ):
            self._wakeup.set()
        if not queued:
            for poll in self._polls.values():
                poll.event.set()
            return
        for n in queued:
            waiting = self._polls.get(n.channel_id) if n.channel_id is not None else None
            if waiting is not None:
                waiting.event.set()

    def add_listener(self, listener: DeliveryListener) -> None:
        """Register a coroutine awaited with every delivered notification."""
        self._listeners.append(listener)

    def remove_listener(self, listener: DeliveryListener) -> None:
        """Unregister a listener (no error if absent)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- lifetime -------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and start the scheduler."""
        if self._scheduler is not None:
            return
        self._stopping = False
        timeout = aiohttp.ClientTimeout(total=self.settings.notification_http_timeout)
        self._http = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, raise_for_status=False
        )
        self._scheduler = asyncio.create_task(self._schedule(), name="notification-scheduler")
        log.info("- notification delivery started as %s", self.owner)

    async def stop(self) -> None:
        """Stop the scheduler and the lanes, release claims, answer waiting polls, close HTTP.

        Store operations are never cancelled midway (a cancelled driver call can
        wedge a pooled connection): the scheduler and lanes see ``_stopping`` and
        leave between steps; only HTTP requests in flight are cancelled, and
        their claims released. Tasks still running after a grace period are
        cancelled as a last resort.
        """
        self._stopping = True
        self._wakeup.set()
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
        if self._listener_tasks:
            await asyncio.wait(set(self._listener_tasks), timeout=LISTENER_GRACE)
            for task in list(self._listener_tasks):
                task.cancel()
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        for poll in self._polls.values():
            poll.superseded = True
            poll.event.set()
        try:
            async with self._write() as session:
                released = await outbox.release_claims(session, self.owner)
            if released:
                log.info("- released %d notification claims", released)
        except Exception:  # the store may already be gone at shutdown
            log.warning("x cannot release notification claims", exc_info=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- callback delivery ----------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wakeup.clear()
            wait = self.poll_interval
            try:
                wait = min(wait, await self._start_due_lanes())
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.poll_interval
                    await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("x notification scheduler pass failed")
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, wait))
            except TimeoutError:
                pass

    async def _start_due_lanes(self) -> float:
        """Start a lane task for every due head; return seconds until the next known due time."""
        free = self.concurrency - len(self._lanes)
        if free <= 0:
            return self.poll_interval
        now = self.clock()
        async with self.database.sessions() as session:
            heads = await outbox.lane_heads(session, now=now, limit=free + len(self._lanes))
        wait = self.poll_interval
        for entry in heads:
            sub = entry.notification.subscription_id
            if sub in self._lanes:
                continue
            if entry.next_attempt_at > now:
                wait = min(wait, (entry.next_attempt_at - now).total_seconds())
                break  # sorted by due time: nothing after this one is due
            if free <= 0:
                break
            free -= 1
            task = asyncio.create_task(self._run_lane(sub, entry), name=f"notify-{sub}")
            self._lanes[sub] = task
            task.add_done_callback(partial(self._lane_done, sub))
        return wait

    def _lane_done(self, sub: str, _task: asyncio.Task[None]) -> None:
        self._lanes.pop(sub, None)
        self._wakeup.set()

    def _claim_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.notification_http_timeout + CLAIM_GRACE)

    async def _run_lane(self, sub: str, entry: outbox.OutboxEntry) -> None:
        """Deliver a lane's rows in order until it is empty, not due, failing or stopped."""
        try:
            now = self.clock()
            async with self._write() as session:
                claimed = await outbox.claim(
                    session,
                    entry.notification.id,
                    owner=self.owner,
                    now=now,
                    until=self._claim_until(now),
                )
            current: outbox.OutboxEntry | None = entry if claimed else None
            while current is not None and not self._stopping:
                if not await self._attempt(current):
                    return
                # settled: remove it and claim the next row of the lane, in one transaction
                now = self.clock()
                async with self._write() as session:
                    current = await outbox.settle_and_claim_next(
                        session,
                        current.notification.id,
                        sub,
                        owner=self.owner,
                        now=now,
                        until=self._claim_until(now),
                    )
                if current is None:
                    return
            if current is not None:  # stopping: hand the claimed row back untouched
                async with self._write() as session:
                    await outbox.release_claim(session, current.notification.id, owner=self.owner)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("x notification lane %s failed", sub)

    async def _attempt(self, entry: outbox.OutboxEntry) -> bool:
        """POST one claimed row; True once it is settled (delivered or dropped) and may go.

        False leaves the row in the outbox, rescheduled after a failure or
        handed back when ``stop()`` cancelled the request.
        """
        n = entry.notification
        if self._is_dead_channel_url(n.notify_url):
            self._log_drop(n, "its notification channel no longer exists")
            return True
        post = asyncio.create_task(self._post(n))
        self._posts.add(post)
        post.add_done_callback(self._posts.discard)
        try:
            error = await post
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # stop() cancelled the request only: not an attempt, hand the row back
            async with self._write() as session:
                await outbox.release_claim(session, n.id, owner=self.owner)
            return False
        if error is None:
            self.stats.delivered += 1
            self._notify_listeners(n)
            return True
        self.stats.failed_attempts += 1
        now = self.clock()
        deadline = n.created_at + timedelta(seconds=self.settings.notification_max_age)
        if now >= deadline:
            self._log_drop(n, f"undelivered after {entry.attempts + 1} attempts ({error})")
            return True
        delay = backoff_delay(
            entry.attempts + 1,
            self.settings.notification_backoff_initial,
            self.settings.notification_backoff_max,
        )
        retry_at = min(now + timedelta(seconds=delay), deadline)
        async with self._write() as session:
            await outbox.record_failure(session, n.id, error=error, next_attempt_at=retry_at)
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
        data = json.dumps(n.document()).encode()
        try:
            async with self._http.post(
                n.notify_url,
                data=data,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    log.debug(
                        "> notification %d %s to %s: %d", n.id, n.root, n.notify_url, resp.status
                    )
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

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

    async def long_poll(
        self,
        channel: outbox.Channel,
        timeout: float,
        *,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> list[Notification] | None:
        """Wait for a channel's queue: items (oldest first), ``[]`` on timeout, None if it is gone.

        oma-chat-api.md §10. Handed-out items leave the queue; a newer poll on
        the same channel, or the poller's connection closing (``client_gone``),
        ends this one with ``[]`` and takes nothing.
        """
        previous = self._polls.get(channel.id)
        if previous is not None:
            previous.superseded = True
            previous.event.set()
        poll = _Poll()
        self._polls[channel.id] = poll
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                poll.event.clear()
                if poll.superseded or client_gone():
                    return []
                now = self.clock()
                async with self._write() as session:
                    if not await outbox.channel_alive(session, channel.id, now=now):
                        return None
                    items = await outbox.take_from_channel(
                        session, channel.id, limit=channel.max_notifications
                    )
                if items:
                    self.stats.handed_out += len(items)
                    for n in items:
                        self._notify_listeners(n)
                    return items
                left = min(deadline - loop.time(), (channel.expires_at - now).total_seconds())
                if left <= 0:
                    return [] if channel.expires_at > self.clock() else None
                try:
                    await asyncio.wait_for(poll.event.wait(), timeout=min(left, self.poll_interval))
                except TimeoutError:
                    pass
        finally:
            if self._polls.get(channel.id) is poll:
                del self._polls[channel.id]

    def channel_gone(self, channel_id: str) -> None:
        """Wake a waiting long poll of a deleted channel so it answers 404 at once."""
        if poll := self._polls.get(channel_id):
            poll.event.set()

    async def _sweep(self) -> None:
        now = self.clock()
        cutoff = now - timedelta(seconds=self.settings.notification_max_age)
        async with self._write() as session:
            gone = await outbox.expire_channels(session, now=now)
            stale = await outbox.drop_stale_channel_items(session, cutoff)
        for channel in gone:
            log.info("- channel %s of %s expired", channel.id, channel.user)
            self.channel_gone(channel.id)
        if stale:
            self.stats.dropped += stale
            log.warning("x %d channel notifications dropped: older than the maximum age", stale)
