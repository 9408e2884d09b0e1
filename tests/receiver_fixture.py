"""The ``receiver`` fixture (pytest plugin): a started local notification receiver.

One :class:`~tests.unit.test_delivery_support.Receiver` per test on 127.0.0.1 (port 0),
stopped after it; delivery, channel and chat tests point callback URLs at it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.test_delivery_support import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Yield a started :class:`Receiver`; stop it after the test."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
