"""A UDP relay on 127.0.0.1 that drops chosen datagrams: a real lost packet for SIP tests.

``client -> relay -> server`` and back; datagrams from the client whose 0-based index is
in ``drop`` are discarded (and counted), everything else is forwarded unchanged.
"""

from __future__ import annotations

import asyncio
from typing import cast


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, upstream: bool) -> None:
        self.relay = relay
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.upstream:
            self.relay.from_client(data, addr)
        else:
            self.relay.from_server(data)


class LossyRelay:
    """Forwards UDP between one client and ``server``; drops client datagrams in ``drop``."""

    def __init__(self, server: tuple[str, int], drop: set[int]) -> None:
        self.server = server
        self.drop = drop
        self.seen = 0
        self.dropped: list[bytes] = []
        self.forwarded: list[bytes] = []
        self._client: tuple[str, int] | None = None
        self._front: _Side | None = None
        self._back: _Side | None = None

    async def start(self) -> int:
        """Binds both sockets; returns the port the client should send to."""
        loop = asyncio.get_running_loop()
        _, self._front = await loop.create_datagram_endpoint(
            lambda: _Side(self, True), local_addr=("127.0.0.1", 0)
        )
        _, self._back = await loop.create_datagram_endpoint(
            lambda: _Side(self, False), local_addr=("127.0.0.1", 0)
        )
        assert self._front.transport is not None
        return int(self._front.transport.get_extra_info("sockname")[1])

    def from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        self._client = addr
        index = self.seen
        self.seen += 1
        if index in self.drop:
            self.dropped.append(data)
            return
        self.forwarded.append(data)
        assert self._back is not None and self._back.transport is not None
        self._back.transport.sendto(data, self.server)

    def from_server(self, data: bytes) -> None:
        if self._client is not None and self._front is not None and self._front.transport:
            self._front.transport.sendto(data, self._client)

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()
