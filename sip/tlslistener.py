"""A TLS listener that logs the handshakes it refuses (SIP RFC 3261 §26.2, MSRP RFC 4975 §14).

Public API::

    await TLSListener.start(protocol_factory, host, port, context, name="SIP")
        .sockets             the listening sockets (``getsockname()`` gives the port)
        .refused             handshakes refused so far
        .is_serving() -> bool
        .close()             stop accepting
        await .wait_closed()

Design notes
------------
``loop.create_server(ssl=...)`` runs the handshake before the protocol exists and drops a
failed one silently: asyncio and uvloop report the ``ssl.SSLError`` (an ``OSError``) only
in debug mode. Here the listener accepts plain sockets itself (``loop.sock_accept``) and
hands each one to ``loop.connect_accepted_socket(ssl=context)``, which returns after the
handshake or raises its error. The TLS transport is the loop's own (asyncio's or
uvloop's), so the cost per message is unchanged, and no byte is read before it owns the
socket (``loop.start_tls`` on an accepted connection races the client's first bytes
under uvloop).

Before that the listener waits for the client's first bytes (its ClientHello, peeked, not
read): a connection closed without a byte (a TCP health check, a port scan) is not a TLS
peer and is logged at DEBUG only. Every handshake that fails after it is one WARNING line
naming the peer and the reason: a client certificate that does not verify or is missing
under ``sip_tls_verify_client`` (``sip.tls.describe_refusal``), an alert from a client
that refuses our certificate (OpenSSL clients send ``TLSV1_ALERT_UNKNOWN_CA``), a client
that closes mid-handshake (what asyncio and uvloop clients do when they refuse our
certificate), a client that does not speak TLS, a handshake past its timeout. Lines are
rate-limited per peer address (``sip.ratelog.RateLimitedLog``): a flood gives one line
per address and a count.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from sip.ratelog import RateLimitedLog
from sip.tls import describe_refusal

__all__ = ["TLSListener"]

log = logging.getLogger(__name__)

_BACKLOG = 100
_HANDSHAKE_TIMEOUT = 60.0
"""Seconds for the whole handshake by default (asyncio's and uvloop's default)."""
_PAUSE_ON_ERROR = 1.0
"""Seconds without accepting after an accept error such as EMFILE (as asyncio does)."""


class TLSListener:
    """Listening sockets whose accepted connections are handed to the loop's TLS."""

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        *,
        name: str,
        logger: logging.Logger,
        handshake_timeout: float | None = None,
    ) -> None:
        self.sockets = sockets
        self.name = name
        """What is served, for the log lines: ``SIP``, ``MSRP``."""
        self.refused = 0
        self._factory = protocol_factory
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._log = RateLimitedLog(logger, logging.WARNING, f"refused {name} TLS handshakes")
        self._serving = True
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None,
        port: int,
        context: ssl.SSLContext,
        *,
        name: str,
        logger: logging.Logger | None = None,
        handshake_timeout: float | None = None,
    ) -> TLSListener:
        """Bind every address of ``host`` on ``port`` (0: a free port) and start accepting;
        ``logger`` gets the refusals (default: this module's). Raises OSError."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, address in dict.fromkeys((i[0], i[4][:2]) for i in infos):
                sock = socket.create_server(address, family=family, backlog=_BACKLOG)
                sock.setblocking(False)
                sockets.append(sock)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        listener = cls(
            sockets,
            protocol_factory,
            context,
            name=name,
            logger=logger or log,
            handshake_timeout=handshake_timeout,
        )
        for sock in sockets:
            task = loop.create_task(listener._accept(sock))
            task.add_done_callback(_closer(sock))  # also when cancelled before it ran
            listener._accepting.append(task)
        return listener

    def is_serving(self) -> bool:
        """Accepting connections (not closed)."""
        return self._serving

    def close(self) -> None:
        """Stop accepting; the sockets close as their accept tasks end. Connections already
        made are the caller's to close; one whose handshake ends after this is closed."""
        self._serving = False
        for task in self._accepting:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the listening sockets are closed."""
        if self._accepting:
            await asyncio.wait(self._accepting)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: pause, as asyncio does
                log.error("%s TLS listener: accept failed (%s), pausing", self.name, exc)
                await asyncio.sleep(_PAUSE_ON_ERROR)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handshake(conn, address))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _client_hello(self, conn: socket.socket) -> bool:
        """Wait for the client's first bytes (its ClientHello) without reading them; False
        when it closes (or times out) before sending any."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(conn, ready)
        try:
            await asyncio.wait_for(readable, self._handshake_timeout or _HANDSHAKE_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(conn)
        try:
            return bool(conn.recv(1, socket.MSG_PEEK))
        except OSError:
            return False

    async def _handshake(self, conn: socket.socket, address: tuple[str, int]) -> None:
        host, port = str(address[0]), int(address[1])
        try:
            hello = await self._client_hello(conn)
        except BaseException:  # cancelled (the loop closing): the socket is still ours
            conn.close()
            raise
        if not hello:
            log.debug("%s TLS peer %s:%d: closed before its handshake", self.name, host, port)
            conn.close()
            return
        try:  # from here the loop's transport owns (and closes) ``conn``
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError, or closed, reset or timed out mid-handshake
            self.refused += 1
            self._log.log(
                "%s TLS peer %s:%d (inbound) refused: %s",
                self.name,
                host,
                port,
                _reason(exc),
                key=host,
            )
            return
        if not self._serving:
            transport.close()


def _closer(sock: socket.socket) -> Callable[[asyncio.Task[None]], None]:
    return lambda _task: sock.close()


def _reason(exc: OSError) -> str:
    """Why an inbound handshake failed. A client that refuses our certificate sends an alert
    (OpenSSL: ``TLSV1_ALERT_UNKNOWN_CA``), or, as asyncio's and uvloop's do, just closes."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "closed the connection during the TLS handshake (did it refuse our certificate?)"
    return describe_refusal(exc)
