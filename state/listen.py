"""PostgreSQL ``LISTEN`` for the Notification Channels of several instances (issue 10).

The transaction that queues an item for a channel also runs ``pg_notify`` on
:data:`CHANNEL_EVENTS` with the channel id (``state.outbox``), so the
notification is sent when, and only if, that transaction commits
(PostgreSQL ``NOTIFY``). Each instance holds one connection that listens on
it (:class:`ChannelListener`) and wakes its local long poll of that channel:
a poll on any instance answers as soon as any instance queued for it
(docs/several-instances.md "Channels across instances").

A notification sent while the listening connection is down is lost, so the
listener re-establishes the connection (every :data:`RETRY` seconds until it
succeeds) and then calls ``on_reconnect``: the caller re-checks every poll
once. :attr:`ChannelListener.listening` tells the polls whether they may rely
on it (they re-check more often while it is false).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from state.db import Database

log = logging.getLogger(__name__)

CHANNEL_EVENTS = "chat_bridge_channel_items"
"""The PostgreSQL notification channel; the payload is the Notification Channel's id."""
RETRY = 1.0
"""Seconds between two attempts to re-establish a lost listening connection."""


class ChannelListener:
    """One ``LISTEN`` connection; calls ``on_item(channel_id)`` for each notification."""

    def __init__(
        self,
        database: Database,
        on_item: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self.database = database
        self.on_item = on_item
        self.on_reconnect = on_reconnect
        self.reconnects = 0
        """Times the connection was re-established after a loss (tests, logs)."""
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closing = False

    @property
    def listening(self) -> bool:
        """True while the ``LISTEN`` connection is up (no notification can be missed)."""
        return self._driver is not None and not self._lost.is_set()

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend process id of the listening connection (tests)."""
        return None if self._driver is None else int(self._driver.get_server_pid())

    async def start(self) -> None:
        """Connect and listen, then keep the connection up (a failed first try is retried)."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("x channel listener cannot connect (%s); retrying", exc)
            self._lost.set()
        self._task = asyncio.create_task(self._keep(), name="channel-listener")

    async def _connect(self) -> None:
        conn = await self.database.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            self._lost.clear()
            driver.add_termination_listener(self._terminated)
            await driver.add_listener(CHANNEL_EVENTS, self._notified)
        except BaseException:
            await self._discard(conn)
            raise
        self._conn, self._driver = conn, driver

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.on_item(payload)

    def _terminated(self, _conn: object) -> None:
        self._lost.set()

    async def _keep(self) -> None:
        """Re-establish the connection whenever it is lost, then wake every poll once."""
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            log.warning("x channel listener connection lost; re-establishing it")
            conn, self._conn, self._driver = self._conn, None, None
            if conn is not None:
                await self._discard(conn)
            while not self._closing:
                try:
                    await self._connect()
                except Exception as exc:
                    log.warning("x channel listener cannot reconnect (%s); retrying", exc)
                    self._lost.set()
                    await asyncio.sleep(RETRY)
                    continue
                break
            if self._closing:
                return
            self.reconnects += 1
            log.info("- channel listener listening again")
            self.on_reconnect()  # what was queued meanwhile was not announced

    @staticmethod
    async def _discard(conn: AsyncConnection) -> None:
        try:
            await conn.invalidate()
            await conn.close()
        except Exception:  # broken already
            log.debug("closing the channel listener connection", exc_info=True)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        self._closing = True
        self._lost.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:  # not back to the pool: it still listens
            await self._discard(conn)
