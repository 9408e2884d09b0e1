"""A lazy one-bit event for the many per-dialog objects of the stack.

Public API::

    flag = Flag()                 # is_set() / set() / clear() / await wait(), as asyncio.Event
    await wait_any(flag_a, flag_b)  # returns once either is set (one Future, no tasks)
    waiter = when_any(callback, flag_a, flag_b)   # callback() soon after either is set;
                                                  # waiter.cancel() stops it (no task either)

Design notes
------------
``asyncio.Event`` allocates its waiter deque (about 600 bytes) when it is built; a group
member holds several (INVITE session ended/confirmed, subscription terminated, ...) that
are almost never awaited. ``Flag`` has the same interface (duck-typed) but creates a
Future only for a coroutine that actually waits, and is slotted. ``wait_any`` waits on
several flags with one Future instead of one task per flag (``asyncio.wait`` over
``Event.wait()`` tasks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Flag", "wait_any", "when_any"]


class Flag:
    """Set/clear/wait like ``asyncio.Event``; the waiters list exists only while waited on."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def __repr__(self) -> str:
        return f"<Flag {'set' if self._value else 'unset'}>"

    def is_set(self) -> bool:
        """True once set (until cleared)."""
        return self._value

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(True)

    def clear(self) -> None:
        """Unsets the flag; later ``wait`` calls block again."""
        self._value = False

    def _add(self, fut: asyncio.Future[bool]) -> None:
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)

    def _remove(self, fut: asyncio.Future[bool]) -> None:
        if self._waiters is not None:
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass
            if not self._waiters:
                self._waiters = None

    async def wait(self) -> bool:
        """Returns True once the flag is set (at once when it already is)."""
        if self._value:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(fut)
        try:
            return await fut
        finally:
            self._remove(fut)


def when_any(callback: Callable[[], None], *flags: Flag) -> asyncio.Future[bool]:
    """Calls ``callback`` (from the event loop, soon) once any of ``flags`` is set; cancel
    the returned Future to stop waiting. Nothing but the Future lives while it waits."""
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def done(_fut: asyncio.Future[bool]) -> None:
        for flag in flags:
            flag._remove(fut)
        if not fut.cancelled():
            callback()

    fut.add_done_callback(done)
    if any(flag.is_set() for flag in flags):
        fut.set_result(True)
    else:
        for flag in flags:
            flag._add(fut)
    return fut


async def wait_any(*flags: Flag) -> None:
    """Returns once any of ``flags`` is set (at once when one already is)."""
    if any(flag.is_set() for flag in flags):
        return
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    for flag in flags:
        flag._add(fut)
    try:
        await fut
    finally:
        for flag in flags:
            flag._remove(fut)
