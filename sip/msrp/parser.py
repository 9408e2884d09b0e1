"""Incremental MSRP stream parser: bytes in, frames out (RFC 4975 §9).

# Why this shape
#
# MSRP has no length header: a frame ends at ``CRLF -------<tid><flag> CRLF``
# where tid is the transaction id of its start line. The parser therefore
# reads the start line, then searches the buffer for that exact end-line by
# byte search, resuming where the previous search stopped, so payloads (UTF-8,
# binary, or containing other end-lines) are never split into lines
# (docs/protocol-mapping.md "Interoperability rules"). Any split of a TCP byte
# stream yields the same frames.
#
# Two kinds of failure are kept apart:
# - framing errors (garbage where a start line must be, an over-long start
#   line, a frame exceeding ``max_frame_size``) make the stream unusable:
#   ``feed`` raises CodecError and the connection must be closed;
# - a well-delimited frame with bad contents (unknown header syntax, bad
#   Byte-Range, missing From-Path) becomes a ``MalformedFrame`` so that the
#   engine can answer 400 and carry on.
# ``max_frame_size`` bounds the memory one connection can pin.
#
# With nothing buffered (the usual case: a read holds whole frames), frames are
# cut straight from the received bytes and only an incomplete tail is copied
# into the buffer; the start line is parsed once and handed to the frame parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current
from sip.msrp.message import (
    CONTINUATION_FLAGS,
    END_LINE_PREFIX,
    MSRPMessage,
    StartLine,
    TransactionId,
    parse_after_start_line,
    parse_start_line,
)
from sip.msrp.uri import MSRPURI, parse_path

MAX_START_LINE = 512
DEFAULT_MAX_FRAME_SIZE = DEFAULT_LIMITS.msrp_frame_size
"""Largest frame accepted by default (msrplib sends chunks of up to 4 MiB); the one in force
is ``sip.limits.current().msrp_frame_size``."""

_FLAGS = frozenset(ord(c) for c in CONTINUATION_FLAGS)
_MSRP = b"MSRP "


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A delimited frame whose contents failed to parse; paths are best effort."""

    transaction_id: TransactionId
    method: str | None
    error: CodecError
    to_path: tuple[MSRPURI, ...] | None
    from_path: tuple[MSRPURI, ...] | None
    failure_report: str


def _salvage(
    frame: bytes, tid: TransactionId, method: str | None, err: CodecError
) -> MalformedFrame:
    paths: dict[str, tuple[MSRPURI, ...] | None] = {"to-path": None, "from-path": None}
    failure_report = "yes"
    head = frame.split(b"\r\n\r\n", 1)[0]
    if len(head) > current().msrp_header_size:  # too big to read twice: no paths, no report
        return MalformedFrame(tid, method, err, None, None, "no")
    for raw in head.split(b"\r\n")[1:]:
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        key = name.strip().lower()
        if key in paths and paths[key] is None:
            try:
                paths[key] = parse_path(value)
            except CodecError:
                pass
        elif key == "failure-report" and value.strip() in ("no", "partial"):
            failure_report = value.strip()
    return MalformedFrame(tid, method, err, paths["to-path"], paths["from-path"], failure_report)


class MSRPParser:
    """Splits an MSRP byte stream into frames (RFC 4975 §9); ``feed`` raises CodecError."""

    __slots__ = (
        "_buf",
        "_offset",
        "_tid",
        "_start",
        "_line_end",
        "_tail",
        "_search",
        "_failed",
        "max_frame",
    )

    def __init__(self, *, max_frame_size: int | None = None) -> None:
        self._buf = bytearray()
        self._offset = 0
        self._tid: TransactionId | None = None
        self._start: StartLine = (TransactionId(""), None, None, None)
        self._line_end = 0
        self._tail = b""
        self._search = 0
        self._failed = False
        self.max_frame = current().msrp_frame_size if max_frame_size is None else max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf) - self._offset

    def feed(self, data: bytes) -> list[MSRPMessage | MalformedFrame]:
        """Add received bytes; return the frames they complete, in order."""
        if self._failed:
            raise CodecError("MSRP stream unusable after an earlier framing error")
        try:
            return self._feed(data)
        except CodecError:
            self._failed = True
            raise

    def _feed(self, data: bytes) -> list[MSRPMessage | MalformedFrame]:
        # Fast path: with nothing buffered, frames are cut straight out of ``data``
        # and only an incomplete tail is copied into the buffer.
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += data
        else:
            buf = data if type(data) is bytes else bytes(data)
        out: list[MSRPMessage | MalformedFrame] = []
        size = len(buf)
        try:
            while True:
                start = self._offset
                if self._tid is None:
                    avail = size - start
                    if avail == 0:
                        break
                    if not buf.startswith(_MSRP, start):
                        probe = bytes(buf[start : start + len(_MSRP)])
                        if not _MSRP.startswith(probe):
                            raise CodecError("invalid MSRP frame start")
                    line_end = buf.find(b"\r\n", start, start + MAX_START_LINE)
                    if line_end < 0:
                        if avail >= MAX_START_LINE:
                            raise CodecError("MSRP start line too long")
                        break
                    self._start = parse_start_line(bytes(buf[start:line_end]))
                    self._line_end = line_end - start
                    tid = self._tid = self._start[0]
                    self._tail = b"\r\n" + END_LINE_PREFIX + tid.encode()
                    self._search = line_end
                tail = self._tail
                idx = buf.find(tail, self._search)
                if idx < 0:
                    self._search = max(self._search, size - len(tail) + 1)
                    if size - start > self.max_frame:
                        raise CodecError("MSRP frame too large")
                    break
                stop = idx + len(tail) + 3
                if stop > size:
                    self._search = idx
                    break
                if buf[idx + len(tail)] not in _FLAGS or buf[stop - 2 : stop] != b"\r\n":
                    # text that only looks like the end-line: the rest is searched for
                    # whole end-lines, with no Python step per lookalike
                    end = self._find_end(buf, size, stop - idx - 3, idx + 1)
                    if end < 0:
                        self._search = max(idx + 1, size - len(tail) - 2)
                        if size - start > self.max_frame:
                            raise CodecError("MSRP frame too large")
                        break
                    self._search = end
                    continue
                if stop - start > self.max_frame:
                    raise CodecError("MSRP frame too large")
                frame = bytes(buf[start:stop])
                first = self._start
                self._offset = stop
                self._tid = None
                try:
                    out.append(parse_after_start_line(frame, self._line_end, first))
                except CodecError as err:
                    out.append(_salvage(frame, first[0], first[1], err))
        finally:
            self._compact(buf, size)
        return out

    def _find_end(self, buf: bytes | bytearray, size: int, tail: int, pos: int) -> int:
        """Where the first whole end-line (``CRLF -------tid flag CRLF``, RFC 4975 §7.1) of
        the current frame starts in ``buf`` at or after ``pos``, or -1 (``tail``: the length
        of its part before the flag).

        One search per flag, over windows that double in size, each bounded by the
        earliest end-line found so far: linear in the bytes searched, whichever flag
        ends the frame.
        """
        end_line = self._tail
        ends = (end_line + b"$\r\n", end_line + b"+\r\n", end_line + b"#\r\n")
        width = tail + 3
        window = 4096
        while True:
            high = min(size, pos + window + width - 1)
            found = -1
            limit = high
            for end in ends:
                at = buf.find(end, pos, limit)
                if at >= 0:
                    found = at
                    limit = at + width - 1
            if found >= 0 or high >= size:
                return found
            pos = high - width + 1
            window *= 2

    def _compact(self, buf: bytes | bytearray, size: int) -> None:
        """Drops consumed bytes; keeps the incomplete tail of a fast-path ``data``."""
        offset = self._offset
        if buf is not self._buf:
            self._buf = bytearray(buf[offset:]) if offset < size else bytearray()
        elif not offset or (offset <= 65536 and offset < size):
            return
        else:
            del self._buf[:offset]
        self._search -= offset
        self._offset = 0
