"""sip.callback.Bound: a slotted partial with one bound first argument."""

from __future__ import annotations

import sys
from functools import partial

from sip.callback import Bound


def _join(first: str, second: str, *, sep: str = "-") -> str:
    return f"{first}{sep}{second}"


def test_bound_passes_first_then_the_call_arguments() -> None:
    cb = Bound(_join, "leg")
    assert cb("x") == "leg-x"
    assert cb("x", sep="+") == "leg+x"
    assert cb.first == "leg" and cb.func is _join
    assert "leg" in repr(cb)


class _Leg:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_event(self, name: str, value: int) -> None:
        self.seen.append((name, value))


def test_bound_method_keeps_its_object() -> None:
    leg = _Leg()
    cb = Bound(leg.on_event, "ended")
    cb(7)
    cb(value=8)
    assert leg.seen == [("ended", 7), ("ended", 8)]
    assert cb.func == leg.on_event


def test_bound_is_smaller_than_partial() -> None:
    cb = Bound(_join, "leg")
    assert not hasattr(cb, "__dict__")
    p = partial(_join, "leg")
    assert sys.getsizeof(cb) < sys.getsizeof(p) + sys.getsizeof(p.args) + sys.getsizeof(p.keywords)
