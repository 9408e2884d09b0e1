"""sip.flag: the lazy asyncio.Event look-alike, wait_any and when_any."""

from __future__ import annotations

import asyncio

from sip.flag import Flag, wait_any, when_any


async def test_flag_behaves_like_an_event() -> None:
    flag = Flag()
    assert not flag.is_set() and flag._waiters is None
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert flag._waiters is not None and not waiter.done()
    flag.set()
    flag.clear()  # cleared before the waiter ran: it still wakes, as with asyncio.Event
    assert await waiter is True
    assert flag._waiters is None
    flag.set()
    assert await asyncio.wait_for(flag.wait(), 1) is True


async def test_cancelled_wait_leaves_no_waiter() -> None:
    flag = Flag()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert flag._waiters is None


async def test_wait_any_returns_on_either_flag() -> None:
    a, b = Flag(), Flag()
    task = asyncio.ensure_future(wait_any(a, b))
    await asyncio.sleep(0)
    b.set()
    await asyncio.wait_for(task, 1)
    assert a._waiters is None and b._waiters is None
    await asyncio.wait_for(wait_any(a, b), 1)  # already set


async def test_when_any_calls_back_once_and_can_be_cancelled() -> None:
    a, b = Flag(), Flag()
    calls: list[str] = []
    when_any(lambda: calls.append("x"), a, b)
    a.set()
    assert calls == []  # from the loop, not inside set()
    await asyncio.sleep(0)
    b.set()
    await asyncio.sleep(0)
    assert calls == ["x"] and a._waiters is None and b._waiters is None
    c = Flag()
    waiter = when_any(lambda: calls.append("y"), c)
    waiter.cancel()
    c.set()
    await asyncio.sleep(0)
    assert calls == ["x"] and c._waiters is None
    when_any(lambda: calls.append("z"), c)  # already set: soon
    await asyncio.sleep(0)
    assert calls == ["x", "z"]
