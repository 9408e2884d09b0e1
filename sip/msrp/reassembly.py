"""Reassembly of one incoming chunked MSRP message by Byte-Range (RFC 4975 §7.1.1).

# Why this shape
#
# Chunks of one Message-ID may arrive interleaved with other messages, out of
# order after a reconnect, duplicated, or with ``*`` for the end and total
# (docs/protocol-mapping.md "Interoperability rules"; rcsjta's single buffer per session is the bug
# to avoid). The buffer grows to the highest byte seen and never beyond
# ``max_size``; covered byte intervals are kept merged, so completion is exact:
# the total is known (from Byte-Range or the ``$`` chunk) and every byte of it
# has arrived.
"""

from __future__ import annotations


class Reassembly:
    """Collects the chunks of one incoming message."""

    __slots__ = ("content_type", "_buf", "_ranges", "total", "received")

    def __init__(self, content_type: str | None) -> None:
        self.content_type = content_type
        self._buf = bytearray()
        self._ranges: list[tuple[int, int]] = []
        self.total: int | None = None
        self.received = 0

    @property
    def complete(self) -> bool:
        """True when the total is known and every byte up to it arrived."""
        return self.total is not None and self.received >= self.total

    def add(
        self, start: int, body: bytes, total: int | None, flag: str, max_size: int
    ) -> str | None:
        """Place a chunk (1-based ``start``); returns an error reason or None."""
        offset = start - 1
        end = offset + len(body)
        if total is not None:
            if total > max_size:
                return "Message Too Large"
            if self.total is None:
                self.total = total
            elif total != self.total:
                return "Byte-Range total changed"
        if end > max_size or (self.total is not None and end > self.total):
            return "Message Too Large"
        if flag == "$" and self.total is None:
            self.total = end
        if len(self._buf) < end:
            self._buf.extend(bytes(end - len(self._buf)))
        self._buf[offset:end] = body
        if end > offset:
            self._merge(offset, end)
        return None

    def _merge(self, start: int, end: int) -> None:
        merged: list[tuple[int, int]] = []
        for s, e in self._ranges:
            if e < start or s > end:
                merged.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        merged.append((start, end))
        merged.sort()
        self._ranges = merged
        self.received = sum(e - s for s, e in merged)

    def result(self) -> bytes:
        """The reassembled body (only meaningful when ``complete``)."""
        return bytes(self._buf[: self.total or 0])
