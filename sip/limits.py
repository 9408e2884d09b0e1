"""Input limits of the parsers, and the bounded number reader they use.

Every parser reads input from unauthenticated peers, so each one is linear in its
input and refuses what exceeds an explicit limit with ``sip.errors.CodecError``
(never ``ValueError``, ``LookupError`` or ``RecursionError``).  The limits are one
:class:`Limits` object: ``DEFAULT_LIMITS`` until the composition root calls
``configure(limits)`` once at start-up (``Settings.limit_*``, docs/hostile-input.md),
and each parser reads ``current()`` when it is called::

    configure(Limits(xml_depth=16))     # once, before any traffic
    current().xml_depth -> 16

Why a module-level setting rather than a parameter: the parsers are reached from many
places (the SIP transport, the MSRP engine, the signalling adapter's body decoding, the
focus, the codecs that call each other: CPIM -> IMDN -> XML), and threading a limits
argument through every one would touch each call site for a value that is fixed for the
life of the process.  The module constants the parsers used to hold (``sip.sdp.MAX_LINES``,
``sip.xmlutil.MAX_DEPTH``, ...) stay as the defaults.

Python's ``int()`` refuses strings of more than 4,300 digits with ``ValueError`` and is
quadratic below that, so no parser calls it on unchecked text: ``read_uint`` checks
length and ASCII-ness first (``str.isdigit`` accepts superscripts and other non-ASCII
digits that ``int()`` rejects).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the parsers accept (each one refuses more with ``CodecError``)."""

    digits: int = 20
    """Most digits of any protocol number (a 64-bit unsigned value has 20)."""
    sip_header_size: int = 65536
    """Largest SIP header section, in bytes."""
    sip_header_fields: int = 256
    """Most header fields in one SIP message."""
    sip_body_size: int = 1 << 20
    """Largest SIP body on a stream connection (a datagram is bounded by its size)."""
    sdp_lines: int = 4096
    """Most lines in one SDP body."""
    mime_header_lines: int = 256
    """Most header lines of a CPIM message, a multipart part or a message/sipfrag."""
    xml_depth: int = 32
    """Deepest element nesting in an XML body."""
    xml_elements: int = 20_000
    """Most elements in one XML body (a 1,000-member conference-info needs about 10,000)."""
    xml_attributes: int = 64
    """Most attributes on one XML element."""
    xml_attribute_length: int = 8192
    """Longest XML attribute value, in characters."""
    xml_namespaces: int = 256
    """Most namespace declarations in one XML body."""
    xml_namespace_length: int = 512
    """Longest namespace name, in characters (the ones the codecs know have under 64)."""
    msrp_header_size: int = 16384
    """Largest MSRP header block, in bytes."""
    msrp_headers: int = 64
    """Most MSRP header lines in one frame."""
    msrp_frame_size: int = 4 * 1024 * 1024 + 64 * 1024
    """Largest MSRP frame (a chunk of at most 4 MiB and its headers)."""
    msrp_message_size: int = 16 * 1024 * 1024
    """Largest MSRP message once its chunks are put together."""


DEFAULT_LIMITS = Limits()
_current = DEFAULT_LIMITS


def current() -> Limits:
    """The limits in force (``DEFAULT_LIMITS`` unless ``configure`` was called)."""
    return _current


def configure(limits: Limits) -> None:
    """Sets the limits of every parser; called once at start-up, before any traffic."""
    global _current
    _current = limits


MAX_DIGITS = DEFAULT_LIMITS.digits
"""Most digits any protocol number may have by default (a 64-bit unsigned value has 20)."""


def read_uint(text: str, max_digits: int | None = None) -> int | None:
    """The value of ``text`` when it is 1..``max_digits`` ASCII digits (by default
    ``current().digits``), else None."""
    limit = _current.digits if max_digits is None else max_digits
    if 0 < len(text) <= limit and text.isascii() and text.isdigit():
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
