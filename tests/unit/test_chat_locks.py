"""bridge.chat.locks: one lock per key, dropped when nobody holds or waits for it."""

from __future__ import annotations

import asyncio

import pytest

from bridge.chat.locks import KeyedLocks


async def test_one_key_is_serialized_and_its_lock_dropped_after() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(name: str) -> None:
        async with locks.hold("k"):
            order.append(f"{name}+")
            await asyncio.sleep(0.001)
            order.append(f"{name}-")

    await asyncio.gather(work("a"), work("b"), work("c"))
    assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]
    assert len(locks) == 0


async def test_other_keys_do_not_wait() -> None:
    locks = KeyedLocks()
    async with locks.hold("x"):
        await asyncio.wait_for(_enter(locks, "y"), 0.5)  # would hang if "y" shared "x"'s lock
        assert len(locks) == 1


async def _enter(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        pass


async def test_a_waiter_cancelled_before_it_got_the_lock_leaves_no_trace() -> None:
    locks = KeyedLocks()
    async with locks.hold("k"):
        waiter = asyncio.ensure_future(_enter(locks, "k"))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0


async def test_an_error_in_the_block_releases_the_lock() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    await asyncio.wait_for(_enter(locks, "k"), 0.5)
