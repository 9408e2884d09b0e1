"""A slotted ``functools.partial`` with one bound first argument, for per-dialog callbacks.

Public API::

    cb = Bound(func, first)      # cb(*args, **kwargs) == func(first, *args, **kwargs)

Design notes
------------
Every group member holds about ten callbacks bound to its leg (in-dialog request handlers,
``on_ended``, MSRP ``on_event``, the conference-watch report). ``functools.partial`` makes
an argument tuple and a keyword dict for each (about 190 bytes with the object); ``Bound``
is one object with two slots (48 bytes) (docs/group-chat.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, TypeVar

__all__ = ["Bound"]

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")


class Bound(Generic[A, P, R]):
    """``func`` with its first argument fixed to ``first``."""

    __slots__ = ("func", "first")

    def __init__(self, func: Callable[Concatenate[A, P], R], first: A) -> None:
        self.func = func
        self.first = first

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(self.first, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Bound({self.func!r}, {self.first!r})"
