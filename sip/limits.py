"""Input limits shared by the parsers, and the bounded number reader they use.

Every parser reads input from unauthenticated peers, so each one is linear in its
input and refuses what exceeds an explicit limit with ``sip.errors.CodecError``
(never ``ValueError``, ``LookupError`` or ``RecursionError``).  The limits are module
constants of the parser they belong to (``sip.message.MAX_HEADER_FIELDS``,
``sip.xmlutil.MAX_ELEMENTS``, ...); this module holds the one every parser shares:
how many digits a number may have.  Python's ``int()`` refuses strings of more than
4,300 digits with ``ValueError`` and is quadratic below that, so no parser calls it on
unchecked text: ``read_uint`` checks length and ASCII-ness first (``str.isdigit``
accepts superscripts and other non-ASCII digits that ``int()`` rejects).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

T = TypeVar("T")

MAX_DIGITS = 20
"""Most digits any protocol number may have (a 64-bit unsigned value has 20)."""


def read_uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of ``text`` when it is 1..``max_digits`` ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


CACHED_LENGTH = 512
"""Longest text whose parse a memoising parser keeps: a cache keeps its keys alive, so
without this bound 4,096 distinct 60 KB header values would pin a quarter gigabyte."""


def short_cache(maxsize: int) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """``functools.lru_cache`` for a ``str -> value`` parser, applied only to texts of at
    most ``CACHED_LENGTH`` characters (longer ones are parsed every time)."""

    def wrap(func: Callable[[str], T]) -> Callable[[str], T]:
        cached = lru_cache(maxsize=maxsize)(func)

        @wraps(func)
        def parse(text: str) -> T:
            return cached(text) if len(text) <= CACHED_LENGTH else func(text)

        return parse

    return wrap
