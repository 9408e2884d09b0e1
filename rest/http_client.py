"""A lean HTTP/1.1 client for notification callbacks (RFC 9110, RFC 9112).

Why not aiohttp.ClientSession
-----------------------------
Delivery makes one kind of request only: a POST of a small JSON body to an
app's ``notifyURL``, whose answer matters only by its status code (any 2xx
delivers; 3xx is a failure, redirects are never followed). The general client
costs about 5 % of the bridge's CPU per chat message for that (request and
response objects, timer objects, connector bookkeeping, cookie and redirect
machinery). This module does exactly the one exchange, over
``asyncio.Protocol`` connections, with a sans-I/O response parser.

Shape
-----
:class:`ResponseParser` is sans-I/O: bytes in, one final :class:`Response`
out (interim 1xx responses skipped), :class:`NotifyError` on anything
malformed or over the size caps. :class:`NotifyClient` keeps one pool per
origin (scheme, host, port) of keep-alive connections, at most ``limit`` of
them (idle, busy and connecting together); callers beyond that wait in FIFO
order, and a released connection (or its slot) goes to the oldest waiter.
Idle connections live ``keepalive_timeout`` seconds (less when the server's
``Keep-Alive: timeout=N`` says so), the most recently used is reused first
(it is the least likely to have been closed by the server). A connection is
kept only when the response allows it (RFC 9112 §9.3: HTTP/1.1 without
``Connection: close``, HTTP/1.0 only with ``keep-alive``) and its body was
delimited (not read until close). Every error or timeout aborts the connection.

Retrying a POST
---------------
POST is not idempotent (RFC 9110 §9.2.2) and RFC 9112 §9.3.1 forbids retrying
it automatically unless the client can tell the request was never applied.
The one case retried (once, on a fresh connection) is the keep-alive race: a
*reused* idle connection that the peer closed (EOF or reset) before a single
byte of the response arrived. A server that closes an idle connection does so
without reading what we wrote, so the request was not processed. A server
that crashed while processing it looks the same from here, and would get the
notification twice; delivery is at least once anyway (receivers deduplicate),
so that rare duplicate is preferable to failing every request that meets an
expired keep-alive connection. A fresh connection, or a response that had
begun, is never retried.

Where it connects
-----------------
With a :class:`~rest.notify_policy.NotifyPolicy` (the delivery worker always
passes one), a new connection resolves the host, checks every address it
resolves to, and connects to a checked address itself, so a name that
resolves elsewhere at connect time (DNS rebinding) is caught; refusals raise
:class:`NotifyRefused` (docs/notify-policy.md). User-info in a URL is never
turned into credentials.

Deliberate limits
-----------------
Line folding (obs-fold) in a response is refused rather than unfolded, so is
``Transfer-Encoding`` in an HTTP/1.0 response, a ``101`` answer and more than
``MAX_INTERIM`` 1xx responses. Headers (and chunked trailers) are capped at
``max_header_size`` bytes, the body at ``max_body_size``. Each ``post`` is
bounded as a whole (pool wait, connect, TLS handshake, exchange) by
``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import cast
from urllib.parse import quote, urlsplit

from rest.notify_policy import Address, NotifyPolicy, PolicyError

__all__ = [
    "USER_AGENT",
    "ClientStats",
    "NotifyClient",
    "NotifyError",
    "NotifyRefused",
    "Response",
    "ResponseParser",
]

log = logging.getLogger(__name__)

USER_AGENT = "chat-bridge notification delivery"
MAX_HEADER_SIZE = 64 * 1024
MAX_BODY_SIZE = 1024 * 1024
MAX_INTERIM = 16
MAX_CHUNK_LINE = 1024
CLOSE_GRACE = 1.0  # seconds close() waits for transports to finish closing

_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [\t \x21-\x7e\x80-\xff]*)?")
# field-line = field-name ":" OWS field-value OWS; possessive: no backtracking on long lines
_FIELD_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]++):[ \t]*+([^\x00-\x08\x0a-\x1f\x7f]*+)")
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]++:")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_STR_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STR_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"


class NotifyError(Exception):
    """A POST failed: no connection, timeout, malformed or oversized response, or closed client."""


class NotifyRefused(NotifyError):
    """The notify policy refuses the destination (docs/notify-policy.md): retrying cannot help."""


class _StaleConnection(NotifyError):
    """The peer closed the connection before any byte of the response arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    """A final HTTP response (RFC 9112 §4): status, lower-cased headers, body, reusability."""

    status: int
    version: int  # minor version of HTTP/1.x
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


# --- sans-I/O response parser -------------------------------------------------

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


def _parse_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    """Field lines (RFC 9112 §5) to (lower-case name, value) pairs; NotifyError if malformed."""
    fields = []
    match = _FIELD_LINE.fullmatch
    for line in lines:
        field = match(line)
        if field is None:
            if line[:1] in (b" ", b"\t"):
                raise NotifyError("malformed response: folded header line")
            if _FIELD_NAME.match(line) is not None:
                raise NotifyError("malformed response: control character in header value")
            raise NotifyError("malformed response: bad header line")
        name, value = field.groups()
        fields.append((name.decode("ascii").lower(), value.rstrip(b" \t").decode("latin-1")))
    return fields


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


class ResponseParser:
    """Parses one HTTP/1.x response from arbitrary chunks (RFC 9112 §4-§7); sans-I/O."""

    __slots__ = (
        "_buf",
        "_state",
        "_scan",
        "_remaining",
        "_body",
        "_status",
        "_version",
        "_headers",
        "_keep_alive",
        "_interim",
        "_max_header",
        "_max_body",
        "received",
        "extra",
    )

    def __init__(
        self, *, max_header_size: int = MAX_HEADER_SIZE, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._scan = 0
        self._remaining = 0
        self._body = bytearray()
        self._status = 0
        self._version = 1
        self._headers: tuple[tuple[str, str], ...] = ()
        self._keep_alive = False
        self._interim = 0
        self._max_header = max_header_size
        self._max_body = max_body_size
        self.received = 0  # bytes seen so far (0: nothing of a response arrived)
        self.extra = False  # bytes arrived after the final response

    def feed(self, data: bytes) -> Response | None:
        """Consume ``data``; the final response once complete, else None."""
        self.received += len(data)
        if self._state == _DONE:
            self.extra = self.extra or bool(data)
            return None
        self._buf += data
        return self._advance()

    def feed_eof(self) -> Response:
        """The peer closed: the final response if the close ends it, else NotifyError."""
        if self._state == _UNTIL_CLOSE:
            self._body += self._buf
            self._buf.clear()
            self._state = _DONE
            return self._response()
        if self.received == 0:
            raise _StaleConnection("connection closed before any response")
        if self._state == _DONE:
            raise NotifyError("response already complete")
        raise NotifyError("connection closed mid-response")

    def _response(self) -> Response:
        return Response(
            self._status, self._version, self._headers, bytes(self._body), self._keep_alive
        )

    def _advance(self) -> Response | None:
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                if not self._parse_head():
                    return None
            elif state == _LENGTH:
                if len(buf) < self._remaining:
                    return None
                self._body += buf[: self._remaining]
                del buf[: self._remaining]
                return self._finish()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        raise NotifyError("malformed response: chunk size line too long")
                    return None
                size = bytes(buf[:end]).split(b";", 1)[0].rstrip(b" \t")
                del buf[: end + 2]
                if _HEX.fullmatch(size) is None:
                    raise NotifyError("malformed response: bad chunk size")
                n = int(size, 16)
                if n == 0:
                    self._state = _TRAILERS
                    self._scan = 0
                elif len(self._body) + n > self._max_body:
                    raise NotifyError(f"response body exceeds {self._max_body} bytes")
                else:
                    self._remaining = n
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                take = min(self._remaining, len(buf))
                self._body += buf[:take]
                del buf[:take]
                self._remaining -= take
                if self._remaining:
                    return None
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return None
                if buf[:2] != b"\r\n":
                    raise NotifyError("malformed response: chunk not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    return self._finish()
                end = self._find_blank_line()
                if end < 0:
                    return None
                _parse_fields(bytes(buf[:end]).split(b"\r\n"))  # validated, then dropped
                del buf[: end + 4]
                return self._finish()
            elif state == _UNTIL_CLOSE:
                self._body += buf
                buf.clear()
                if len(self._body) > self._max_body:
                    raise NotifyError(f"response body exceeds {self._max_body} bytes")
                return None
            else:  # pragma: no cover - _DONE returns from feed()
                return None

    def _find_blank_line(self) -> int:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(buf) > self._max_header:
                raise NotifyError(f"response header section exceeds {self._max_header} bytes")
            self._scan = max(0, len(buf) - 3)
        elif end > self._max_header:
            raise NotifyError(f"response header section exceeds {self._max_header} bytes")
        return end

    def _finish(self) -> Response:
        self._state = _DONE
        self.extra = bool(self._buf)
        self._buf.clear()
        return self._response()

    def _parse_head(self) -> bool:
        """Parse a status line and header section; False if more bytes are needed."""
        buf = self._buf
        while buf[:2] == b"\r\n":  # tolerate empty lines before a status line
            del buf[:2]
        end = self._find_blank_line()
        if end < 0:
            if len(buf) >= 5 and not buf.startswith(b"HTTP/"):
                raise NotifyError("malformed response: no HTTP status line")
            return False
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        self._scan = 0
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise NotifyError("malformed response: bad status line")
        status = int(match.group(2))
        headers = _parse_fields(lines[1:])
        if status < 200:
            if status == 101 or status < 100:
                raise NotifyError(f"unexpected status {status}")
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise NotifyError("too many interim responses")
            return True  # skip 1xx (RFC 9110 §15.2), parse the next head
        version = int(match.group(1))
        self._status, self._version, self._headers = status, version, tuple(headers)
        self._frame(headers)
        return True

    def _frame(self, headers: list[tuple[str, str]]) -> None:
        """Choose the body framing and reusability (RFC 9112 §6.3, §9.3)."""
        connection: list[str] = []
        lengths: list[str] = []
        codings: list[str] = []
        for name, value in headers:
            if name == "content-length":
                lengths += [v.strip() for v in value.split(",")]
            elif name == "transfer-encoding":
                codings += _tokens(value)
            elif name == "connection":
                connection += _tokens(value)
        if self._version == 0:
            keep = "keep-alive" in connection
        else:
            keep = "close" not in connection
        if self._status in (204, 304):
            self._keep_alive = keep
            self._state = _LENGTH
            self._remaining = 0
            return
        if codings:
            if self._version == 0:
                raise NotifyError("malformed response: Transfer-Encoding in HTTP/1.0")
            if codings[-1] == "chunked":
                self._keep_alive = keep and not lengths
                self._state = _CHUNK_SIZE
            else:
                self._keep_alive = False
                self._state = _UNTIL_CLOSE
            return
        if lengths:
            if any(not (v.isascii() and v.isdigit()) for v in lengths) or len(set(lengths)) != 1:
                raise NotifyError("malformed response: bad Content-Length")
            n = int(lengths[0])
            if n > self._max_body:
                raise NotifyError(f"response body exceeds {self._max_body} bytes")
            self._keep_alive = keep
            self._state = _LENGTH
            self._remaining = n
            return
        self._keep_alive = False
        self._state = _UNTIL_CLOSE


# --- request targets ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """A parsed notify URL: its origin and the request line plus Host.

    User-info in the URL is ignored: credentials are never taken from a
    notifyURL (docs/notify-policy.md; RFC 9110 §4.2.4 deprecates them).
    """

    origin: tuple[str, str, int]  # scheme, host (no brackets, lower case), port
    head: str  # "POST <target> HTTP/1.1\r\nHost: ...\r\n"


def _parse_target(url: str) -> _Target:
    """Split an absolute http(s) URL (RFC 9110 §4.2) into origin and request head."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("not an absolute http(s) URL")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    except ValueError as exc:  # UnicodeError included
        raise NotifyError(f"invalid URL {url!r}: {exc}") from None
    default = 443 if parts.scheme == "https" else 80
    port = default if port is None else port
    authority = f"[{host}]" if ":" in host else host
    if port != default:
        authority = f"{authority}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    target = quote(target, safe=_TARGET_SAFE)  # spaces, controls, non-ASCII: percent-encoded
    head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n"
    return _Target((parts.scheme, host, port), head)


def _encode_head(target: _Target, headers: Iterable[tuple[str, str]], agent: str) -> bytes:
    """The POST head up to Content-Length (RFC 9112 §3, §5); ValueError on a bad caller header."""
    lines = [target.head]
    send_agent = True
    for name, value in headers:
        if _STR_TOKEN.fullmatch(name) is None or _STR_BAD_VALUE.search(value) is not None:
            raise ValueError(f"invalid header {name!r}")
        lower = name.lower()
        if lower in _OWN_HEADERS:
            raise ValueError(f"header {name!r} is set by the client")
        send_agent = send_agent and lower != "user-agent"
        lines.append(f"{name}: {value}\r\n")
    if send_agent:
        lines.append(f"User-Agent: {agent}\r\n")
    return "".join(lines).encode("latin-1")


@lru_cache(maxsize=1024)
def _request_head(
    url: str, headers: tuple[tuple[str, str], ...], agent: str
) -> tuple[tuple[str, str, int], bytes]:
    """Origin and encoded head of a POST to ``url``, cached: delivery repeats both."""
    target = _parse_target(url)
    return target.origin, _encode_head(target, headers, agent)


def _encode_request(head: bytes, body: bytes) -> bytes:
    """Complete a head from :func:`_request_head` with Content-Length and the body."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


def _keepalive_hint(response: Response) -> float | None:
    """The server's idle timeout from ``Keep-Alive: timeout=N``, if it sent one."""
    value = response.header("keep-alive")
    if value is None:
        return None
    for param in value.split(","):
        key, _, number = param.partition("=")
        if key.strip().lower() == "timeout":
            try:
                return max(float(number.strip()), 0.0)
            except ValueError:
                return None
    return None


# --- connections and pools ----------------------------------------------------


def _same(conn: _Connection) -> _Connection:
    return conn


def _ip(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: at most one exchange at a time, no pipelining."""

    def __init__(self, lost: asyncio.Future[None], registry: set[_Connection]) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.expires = 0.0
        self.lost = lost
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def send(self, request: bytes, parser: ResponseParser) -> asyncio.Future[Response]:
        """Write ``request``; the future resolves to the final response."""
        assert self.transport is not None
        waiter = self.lost.get_loop().create_future()
        if self.closed or self.transport.is_closing():  # nothing was sent: safe to retry
            waiter.set_exception(_StaleConnection("connection closed before the request"))
            return waiter
        self.parser, self.waiter = parser, waiter
        self.transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes while idle: the peer is out of step, never reuse
            log.debug("x unsolicited bytes on an idle connection, closing it")
            self.abort()
            return
        try:
            response = parser.feed(data)
        except NotifyError as exc:
            self.fail(exc)
            return
        if response is not None:
            self._resolve(response)

    def eof_received(self) -> bool:
        self.closed = True
        parser = self.parser
        if parser is not None:
            try:
                response = parser.feed_eof()
            except NotifyError as exc:
                self.fail(exc)
            else:
                self._resolve(response)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if parser is not None:
            why = f": {exc}" if exc is not None else ""
            if parser.received == 0:
                self.fail(_StaleConnection(f"connection lost before any response{why}"))
            else:
                self.fail(NotifyError(f"connection lost mid-response{why}"))
        self._registry.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def _resolve(self, response: Response) -> None:
        waiter = self.waiter
        self.parser = self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def fail(self, exc: NotifyError) -> None:
        """End the exchange in progress (if any) with ``exc`` and abort the connection."""
        waiter = self.waiter
        self.parser = self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once (errors, timeouts, protocol violations)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully (idle expiry, shutdown)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one origin: at most ``limit``; waiters served FIFO."""

    def __init__(self, client: NotifyClient, origin: tuple[str, str, int]) -> None:
        self.client = client
        self.origin = origin
        self.label = f"{origin[0]}://{origin[1]}:{origin[2]}"
        self.ssl = client._ssl_context() if origin[0] == "https" else None
        self.idle: deque[_Connection] = deque()
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.count = 0  # idle + busy + connecting
        self.sweeper: asyncio.TimerHandle | None = None

    async def request(self, data: bytes) -> Response:
        """Send one request over a pooled or new connection; the stale-retry rule applies."""
        client = self.client
        conn = self._take_idle()
        if conn is None:
            if self.count < client.limit:
                self.count += 1  # our slot: connect below
            else:
                conn = await self._wait()
        try:
            if conn is not None and conn.closed:
                conn.abort()
                conn = None
            if conn is None:
                conn = await self._connect()
                reused = False
            else:
                client.stats.reused += 1
                reused = True
            parser = client._parser()
            try:
                response = await conn.send(data, parser)
            except _StaleConnection:
                if not reused:
                    raise
                conn.abort()
                conn = None
                client.stats.retried += 1
                log.debug("- %s closed an idle connection under us, retrying once", self.label)
                conn = await self._connect()
                parser = client._parser()
                response = await conn.send(data, parser)
        except BaseException:
            if conn is not None:
                conn.abort()
            self._free_slot()
            raise
        self._release(conn, response, parser.extra)
        return response

    def _take_idle(self) -> _Connection | None:
        idle = self.idle
        if not idle:
            return None
        now = self.client._loop().time()
        while idle:
            conn = idle.pop()  # most recently used first
            if not conn.closed and conn.expires > now:
                return conn
            conn.close()
            self.count -= 1
        return None

    async def _wait(self) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.client._loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just before the cancellation: give back
                if handed is None:
                    self._free_slot()
                else:
                    self._park(handed)
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise

    async def _connect(self) -> _Connection:
        client = self.client
        if client.closed:
            raise NotifyError("client closed")
        loop = client._loop()
        host, port = self.origin[1], self.origin[2]
        policy = client.policy
        if policy is None:
            conn = _Connection(loop.create_future(), client._connections)
            try:
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=self.ssl,
                    server_hostname=host if self.ssl is not None else None,
                )
            except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError)
                raise NotifyError(f"cannot connect to {self.label}: {exc}") from None
        else:
            conn = await self._connect_checked(policy)
        client.stats.opened += 1
        log.debug("- connection to %s opened", self.label)
        if client.closed:
            conn.abort()
            raise NotifyError("client closed")
        return conn

    async def _connect_checked(self, policy: NotifyPolicy) -> _Connection:
        """Resolve, check every address, connect to a checked one (docs/notify-policy.md).

        The connection goes to the very address that was checked (no second
        look-up), so a name that resolves elsewhere the next time (DNS
        rebinding) cannot slip past. A connection that turns out to reach this
        host itself is checked again (:meth:`NotifyPolicy.check_connected`).
        """
        client = self.client
        loop = client._loop()
        host, port = self.origin[1], self.origin[2]
        try:
            addresses = await policy.resolve(host, port)
        except OSError as exc:
            raise NotifyError(f"cannot resolve {host}: {exc}") from None
        try:
            for address in addresses:
                policy.check_address(host, address, port)
        except PolicyError as exc:
            raise NotifyRefused(f"notifyURL refused: {exc}") from None
        failure: Exception | None = None
        for address in addresses:
            conn = _Connection(loop.create_future(), client._connections)
            try:
                transport, _ = await loop.create_connection(
                    partial(_same, conn),
                    str(address),
                    port,
                    ssl=self.ssl,
                    server_hostname=host if self.ssl is not None else None,
                )
            except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError)
                failure = exc
                continue
            try:
                local = transport.get_extra_info("sockname")
                peer = transport.get_extra_info("peername")
                if local and peer:
                    policy.check_connected(host, _ip(str(local[0])), _ip(str(peer[0])), port)
            except PolicyError as exc:
                conn.abort()
                raise NotifyRefused(f"notifyURL refused: {exc}") from None
            return conn
        raise NotifyError(f"cannot connect to {self.label}: {failure}")

    def _release(self, conn: _Connection, response: Response, extra: bool) -> None:
        """Keep ``conn`` if the response allows (RFC 9112 §9.3), else close it."""
        client = self.client
        keepalive = client.keepalive_timeout
        hint = _keepalive_hint(response)
        if hint is not None:
            keepalive = min(keepalive, max(hint - 1.0, hint / 2))
        if (
            response.keep_alive
            and not extra
            and not conn.closed
            and not client.closed
            and keepalive > 0
        ):
            conn.expires = client._loop().time() + keepalive
            self._park(conn)
        else:
            conn.close()
            self._free_slot()

    def _park(self, conn: _Connection) -> None:
        """Hand a reusable connection to the oldest waiter, else keep it idle."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)
        sweeper = self.sweeper
        if sweeper is None or conn.expires < sweeper.when():
            if sweeper is not None:
                sweeper.cancel()
            self.sweeper = self.client._loop().call_at(conn.expires, self._sweep)

    def _free_slot(self) -> None:
        """A connection is gone: its slot goes to the oldest waiter (who connects)."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.count -= 1
        if self.count == 0:
            self.client._forget(self)

    def _sweep(self) -> None:
        """Close the idle connections whose keep-alive time is over."""
        self.sweeper = None
        now = self.client._loop().time()
        expired = [c for c in self.idle if c.closed or c.expires <= now]
        if expired:
            self.idle = deque(c for c in self.idle if not (c.closed or c.expires <= now))
            log.debug("- closing %d idle connection(s) to %s", len(expired), self.label)
            for conn in expired:
                conn.close()
                self._free_slot()
        if self.idle and self.sweeper is None:
            first = min(c.expires for c in self.idle)
            self.sweeper = self.client._loop().call_at(first, self._sweep)

    def shutdown(self) -> None:
        """Fail every waiter and close the idle connections (the client is closing)."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(NotifyError("client closed"))
        for conn in self.idle:
            conn.close()
        self.idle.clear()


# --- the client -----------------------------------------------------------------


@dataclass(slots=True)
class ClientStats:
    """Counters for tests and metrics: connections opened, reuses, stale retries."""

    opened: int = 0
    reused: int = 0
    retried: int = 0


_NO_HEADERS: Mapping[str, str] = {}


class NotifyClient:
    """POSTs notifications over pooled keep-alive HTTP/1.1 connections (RFC 9112 §9)."""

    def __init__(
        self,
        *,
        limit: int = 10,
        timeout: float = 10.0,
        keepalive_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
        max_header_size: int = MAX_HEADER_SIZE,
        max_body_size: int = MAX_BODY_SIZE,
        policy: NotifyPolicy | None = None,
    ) -> None:
        if limit < 1 or timeout <= 0 or keepalive_timeout < 0:
            raise ValueError("limit >= 1, timeout > 0 and keepalive_timeout >= 0 required")
        self.limit = limit
        self.timeout = timeout
        self.keepalive_timeout = keepalive_timeout
        self.user_agent = user_agent
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.stats = ClientStats()
        self.closed = False
        self.policy = policy
        """The notifyURL policy checked at each connect (None: connect anywhere)."""
        self._ssl = ssl_context
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._connections: set[_Connection] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str] = _NO_HEADERS) -> int:
        """POST ``body`` to ``url``; the final status (RFC 9110 §15), redirects not followed.

        Raises NotifyError on an invalid URL, connection failure, timeout, or a
        malformed or oversized response; ValueError on an invalid caller header.
        """
        if self.closed:
            raise NotifyError("client closed")
        origin, head = _request_head(url, tuple(headers.items()), self.user_agent)
        data = _encode_request(head, body)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, origin)
        try:
            async with asyncio.timeout(self.timeout):
                response = await pool.request(data)
        except TimeoutError:
            raise NotifyError(f"no response within {self.timeout:g} s") from None
        return response.status

    async def close(self) -> None:
        """Close every connection and fail every waiting or running post; idempotent."""
        self.closed = True
        for pool in list(self._pools.values()):
            pool.shutdown()
        connections = list(self._connections)
        for conn in connections:
            if conn.waiter is not None:
                conn.fail(NotifyError("client closed"))
            else:
                conn.close()
        pending = [c.lost for c in connections if not c.lost.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=CLOSE_GRACE)
            if late:  # a TLS peer that does not answer close_notify
                for conn in connections:
                    conn.abort()
                await asyncio.wait(late, timeout=CLOSE_GRACE)

    async def __aenter__(self) -> NotifyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._event_loop
        if loop is None:
            loop = self._event_loop = asyncio.get_running_loop()
        return loop

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _parser(self) -> ResponseParser:
        return ResponseParser(
            max_header_size=self.max_header_size, max_body_size=self.max_body_size
        )

    def _forget(self, pool: _Pool) -> None:
        if self._pools.get(pool.origin) is pool:
            del self._pools[pool.origin]
