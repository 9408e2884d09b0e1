"""One ``asyncio.Lock`` per key, created on first use and dropped when unused.

Why: docs/architecture.md "State machines".

Chat keys are ``s:<sessionId>`` for a confirmed session, ``a:<user>|<peer>``
for the implicit session of a pair (so lookup-or-create of that session is
serialized), and ``m:<user>|<messageId>`` for the status of one message.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Hold:
    """``KeyedLocks.hold`` (a class, not an ``@asynccontextmanager``: a hot path)."""

    __slots__ = ("_locks", "_key", "_lock")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._locks = locks
        self._key = key
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._key, (None, 0))
        self._lock = asyncio.Lock() if lock is None else lock
        self._locks[self._key] = (self._lock, users + 1)
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._lock is not None
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._key]
        if users <= 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)


class KeyedLocks:
    """Locks by key, reference-counted so the table holds only keys in use."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: str) -> _Hold:
        """Hold the lock of ``key`` for the duration of the block (``async with``)."""
        return _Hold(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)
