"""A slotted ``functools.partial`` with one bound first argument, for per-dialog callbacks.

Public API::

    cb = Bound(func, first)      # cb(*args, **kwargs) == func(first, *args, **kwargs)

Design notes
------------
Every group member holds about ten callbacks bound to its leg (in-dialog request handlers,
``on_ended``, MSRP ``on_event``, the conference-watch report). ``functools.partial`` makes
an argument tuple and a keyword dict for each, and holds a bound-method object when given
``obj.method`` (about 300 bytes in all); ``Bound`` is one object with three slots that
keeps the method's function and object apart (docs/group-chat.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Concatenate, Generic, ParamSpec, TypeVar, cast

__all__ = ["Bound"]

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")
_NONE = object()


class Bound(Generic[A, P, R]):
    """``func`` with its first argument fixed to ``first``."""

    __slots__ = ("_func", "_self", "first")

    def __init__(self, func: Callable[Concatenate[A, P], R], first: A) -> None:
        if isinstance(func, MethodType):  # keep no bound-method object: rebuilt per call
            self._func: Callable[..., R] = func.__func__
            self._self: object = func.__self__
        else:
            self._func, self._self = func, _NONE
        self.first = first

    @property
    def func(self) -> Callable[..., R]:
        """The callable, as given."""
        if self._self is _NONE:
            return self._func
        return cast("Callable[..., R]", MethodType(self._func, self._self))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._self is _NONE:
            return self._func(self.first, *args, **kwargs)
        return self._func(self._self, self.first, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Bound({self.func!r}, {self.first!r})"
