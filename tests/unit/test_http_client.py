"""The notification HTTP client: parser, request encoding, pool, TLS (RFC 9110, RFC 9112)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from rest.http_client import (
    USER_AGENT,
    NotifyClient,
    NotifyError,
    Response,
    ResponseParser,
    _encode_head,
    _encode_request,
    _parse_target,
    _request_head,
)

HOST = "127.0.0.1"


# --- parser -----------------------------------------------------------------------


def parse(data: bytes, **limits: int) -> Response:
    parser = ResponseParser(**limits)
    response = parser.feed(data)
    return response if response is not None else parser.feed_eof()


def test_content_length_response() -> None:
    r = parse(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello")
    assert (r.status, r.version, r.body, r.keep_alive) == (201, 1, b"hello", True)
    assert r.header("x-a") == "b"
    assert r.header("missing") is None


def test_chunked_response_with_extensions_and_trailers() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=v\r\nhello\r\n1 \r\n \r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    r = parse(data)
    assert (r.status, r.body, r.keep_alive) == (200, b"hello ", True)


def test_body_until_close_is_not_reusable() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome") is None
    assert parser.feed(b" body") is None
    r = parser.feed_eof()
    assert (r.body, r.keep_alive) == (b"some body", False)


def test_interim_responses_are_skipped() -> None:
    r = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 204 \r\n\r\n"
    )
    assert (r.status, r.body, r.keep_alive) == (204, b"", True)


def test_204_and_304_have_no_body() -> None:
    parser = ResponseParser()
    r = parser.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n")
    assert r is not None and r.body == b""
    assert parser.feed(b"abc") is None and parser.extra  # bytes past the end: never reuse
    assert parse(b"HTTP/1.1 304 Not Modified\r\n\r\n").status == 304


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n", False),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n", False),
    ],
)
def test_keep_alive_rules(head: bytes, keep: bool) -> None:
    body = b"2\r\nok\r\n0\r\n\r\n" if b"chunked" in head else b"ok"
    if b"chunked" not in head:
        head += b"Content-Length: 2\r\n"
    r = parse(head + b"\r\n" + body)
    assert (r.body, r.keep_alive) == (b"ok", keep)


def test_extra_bytes_after_response_are_flagged() -> None:
    parser = ResponseParser()
    r = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert r is not None and parser.extra


def test_leading_empty_lines_are_tolerated() -> None:
    assert parse(b"\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").status == 202


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 OK\r\n\r\n", "bad status line"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/2 200\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", "folded header line"),
        (b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", "closed mid-response"),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "not followed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n", "mid-response"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected status 101"),
        (b"HTTP/1.1 099 Odd\r\n\r\n", "unexpected status 99"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 17, "too many interim"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9999999\r\n\r\n", "exceeds 1048576"),
        (b"", "before any response"),
    ],
)
def test_malformed_responses_raise_notify_error(data: bytes, why: str) -> None:
    with pytest.raises(NotifyError, match=why):
        parse(data)


def test_garbage_is_refused_before_the_header_section_ends() -> None:
    with pytest.raises(NotifyError, match="no HTTP status line"):
        ResponseParser().feed(b"SSH-2.0-OpenSSH")


def test_size_caps() -> None:
    with pytest.raises(NotifyError, match="header section exceeds 100"):
        parse(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200 + b"\r\n\r\n", max_header_size=100)
    with pytest.raises(NotifyError, match="header section exceeds 100"):  # no end in sight
        ResponseParser(max_header_size=100).feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"
    with pytest.raises(NotifyError, match="body exceeds 10"):
        parse(chunked, max_body_size=10)
    with pytest.raises(NotifyError, match="body exceeds 10"):
        parse(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11, max_body_size=10)
    with pytest.raises(NotifyError, match="chunk size line too long"):
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 2000)
    trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " + b"t" * 200
    with pytest.raises(NotifyError, match="header section exceeds 100"):
        parse(trailers, max_header_size=100)


# --- parser properties (hypothesis) -----------------------------------------------

_names = st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True)
_values = st.from_regex(r"[!-~]([ !-~]{0,20}[!-~])?", fullmatch=True)


@st.composite
def valid_responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, str]:
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    body = draw(st.binary(max_size=600))
    headers = draw(st.lists(st.tuples(_names, _values), max_size=5))
    head = b"".join(b"HTTP/1.1 100 Continue\r\n\r\n" for _ in range(draw(st.integers(0, 2))))
    head += b"HTTP/1.1 %d %s\r\n" % (status, draw(st.sampled_from([b"OK", b"", b"Some Reason"])))
    head += b"".join(f"{n}: {v}\r\n".encode() for n, v in headers)
    if framing == "length":
        payload = b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"Transfer-Encoding: chunked\r\n\r\n"
        payload += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
        payload += b"0\r\nX-Done: 1\r\n\r\n" if draw(st.booleans()) else b"0\r\n\r\n"
    else:
        payload = b"\r\n" + body
    return head + payload, status, body, framing


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(valid_responses(), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_of_a_valid_response_parses_the_same(
    case: tuple[bytes, int, bytes, str], cuts: list[int]
) -> None:
    data, status, body, framing = case
    parser = ResponseParser()
    results = [r for chunk in split(data, cuts) if (r := parser.feed(chunk)) is not None]
    if framing == "close":
        assert results == []
        results.append(parser.feed_eof())
    assert len(results) == 1
    assert (results[0].status, results[0].body) == (status, body)
    assert results[0].keep_alive == (framing != "close")
    assert not parser.extra


def feed_all(chunks: list[bytes]) -> Response | None:
    parser = ResponseParser(max_header_size=512, max_body_size=512)
    try:
        for chunk in chunks:
            response = parser.feed(chunk)
            if response is not None:
                return response
        return parser.feed_eof()
    except NotifyError:
        return None


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_gives_notify_error_or_a_response(chunks: list[bytes]) -> None:
    feed_all(chunks)  # anything but NotifyError propagates and fails the test


@given(valid_responses(), st.data())
def test_mutated_responses_give_notify_error_or_a_response(
    case: tuple[bytes, int, bytes, str], data: st.DataObject
) -> None:
    raw = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        byte = data.draw(st.sampled_from([0, 9, 10, 13, 32, 58, 59, 48, 102, 255]))
        if action == "flip":
            raw[at] = byte
        elif action == "drop":
            del raw[at]
        elif action == "insert":
            raw.insert(at, byte)
        else:
            del raw[at:]
        if not raw:
            break
    feed_all(split(bytes(raw), data.draw(st.lists(st.integers(0, 5000), max_size=6))))


# --- request encoding ---------------------------------------------------------------


def test_target_parsing() -> None:
    t = _parse_target("http://[::1]:8080/a b/é?q=1&r=%2F#frag")
    assert t.origin == ("http", "::1", 8080)
    assert t.head == "POST /a%20b/%C3%A9?q=1&r=%2F HTTP/1.1\r\nHost: [::1]:8080\r\n"
    t = _parse_target("https://Example.COM")
    assert t.origin == ("https", "example.com", 443)
    assert t.head == "POST / HTTP/1.1\r\nHost: example.com\r\n"
    assert _parse_target("http://h:80/p").head.endswith("Host: h\r\n")
    assert _parse_target("https://h:80/p").head.endswith("Host: h:80\r\n")
    assert _parse_target("http://bücher.example/").origin[1] == "xn--bcher-kva.example"
    # user-info is never turned into credentials (docs/notify-policy.md)
    assert _parse_target("http://u%40x:p%3A@h/").head == "POST / HTTP/1.1\r\nHost: h\r\n"


@pytest.mark.parametrize(
    "url", ["ftp://h/", "http://", "/relative", "http://h:99999/", "http://h:x/", "mailto:a@b"]
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(NotifyError, match="invalid URL"):
        _parse_target(url)


def test_request_encoding() -> None:
    origin, head = _request_head(
        "http://u:p@h:81/cb?x", (("Content-Type", "application/json"),), "ua/1"
    )
    assert origin == ("http", "h", 81)
    assert _encode_request(head, b"{}") == (
        b"POST /cb?x HTTP/1.1\r\nHost: h:81\r\nContent-Type: application/json\r\n"
        b"User-Agent: ua/1\r\nContent-Length: 2\r\n\r\n{}"
    )
    target = _parse_target("http://u:p@h:81/cb?x")
    head = _encode_head(target, [("user-agent", "mine"), ("Authorization", "Bearer t")], "x")
    assert b"User-Agent: x" not in head and b"Basic" not in head and b"user-agent: mine" in head


@pytest.mark.parametrize(
    "headers",
    [{"X": "a\r\nEvil: 1"}, {"Bad Name": "v"}, {"Host": "other"}, {"content-length": "1"}],
)
async def test_bad_caller_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        _encode_head(_parse_target("http://h/"), headers.items(), "ua")
    async with NotifyClient() as client:
        with pytest.raises(ValueError):
            await client.post("http://h/", b"", headers)


def test_client_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        NotifyClient(limit=0)
    with pytest.raises(ValueError):
        NotifyClient(timeout=0)


# --- against an aiohttp server --------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AppServer:
    """An aiohttp server on 127.0.0.1:0 that records peers and requests."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.peers: set[object] = set()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _record(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        self.requests.append((request.path_qs, dict(request.headers), await request.read()))
        return await self.handler(request)

    async def __aenter__(self) -> AppServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0, ssl_context=self.ssl_context)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"{'https' if self.ssl_context else 'http'}://{HOST}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def no_content(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


@pytest.fixture
async def client() -> AsyncIterator[NotifyClient]:
    async with NotifyClient(limit=4, timeout=5.0) as c:
        yield c


async def test_keep_alive_reuse_and_request_shape(client: NotifyClient) -> None:
    async with AppServer(no_content) as server:
        for i in range(20):
            status = await client.post(
                f"{server.url}/cb/x?i={i}", b'{"n":%d}' % i, {"Content-Type": "application/json"}
            )
            assert status == 204
        assert len(server.peers) == 1
        assert (client.stats.opened, client.stats.reused, client.stats.retried) == (1, 19, 0)
        path, headers, body = server.requests[3]
        assert (path, body) == ("/cb/x?i=3", b'{"n":3}')
        assert headers["Host"] == server.url.removeprefix("http://")
        assert headers["User-Agent"] == USER_AGENT
        assert headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == "7"


async def test_connection_close_is_honoured(client: NotifyClient) -> None:
    async def closing(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=200, text="ok")
        response.force_close()
        return response

    async with AppServer(closing) as server:
        for _ in range(5):
            assert await client.post(server.url, b"x") == 200
        assert len(server.peers) == 5
        assert client.stats.opened == 5


async def test_chunked_responses_keep_the_connection(client: NotifyClient) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=202)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one", b"two", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async with AppServer(chunked) as server:
        for _ in range(3):
            assert await client.post(server.url, b"x") == 202
        assert len(server.peers) == 1


async def test_statuses_are_returned_and_redirects_not_followed(client: NotifyClient) -> None:
    async def by_path(request: web.Request) -> web.StreamResponse:
        code = int(request.path.strip("/") or 200)
        headers = {"Location": "/200"} if 300 <= code < 400 else {}
        return web.Response(status=code, text="body", headers=headers)

    async with AppServer(by_path) as server:
        for code in (301, 302, 307, 308, 400, 404, 410, 500, 503):
            assert await client.post(f"{server.url}/{code}", b"x") == code
        assert [path for path, _, _ in server.requests] == [
            f"/{c}" for c in (301, 302, 307, 308, 400, 404, 410, 500, 503)
        ]
        assert len(server.peers) == 1


async def test_large_body_is_refused_and_the_connection_dropped(client: NotifyClient) -> None:
    async def by_path(request: web.Request) -> web.StreamResponse:
        if request.path == "/big":
            return web.Response(body=b"x" * (2 * 1024 * 1024))
        return web.Response(status=204)

    async with AppServer(by_path) as server:
        with pytest.raises(NotifyError, match="body exceeds 1048576"):
            await client.post(f"{server.url}/big", b"x")
        assert await client.post(f"{server.url}/ok", b"x") == 204
        assert client.stats.opened == 2


async def test_pool_limit_under_50_concurrent_posts() -> None:
    in_flight = peak = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return web.Response(status=204)

    async with AppServer(slow) as server, NotifyClient(limit=4, timeout=10) as client:
        statuses = await asyncio.gather(*(client.post(server.url, b"x") for _ in range(50)))
        assert statuses == [204] * 50
        assert peak == 4
        assert len(server.peers) == 4 and client.stats.opened == 4
        assert client.stats.reused == 46


async def test_waiters_are_served_in_fifo_order() -> None:
    async with AppServer(no_content) as server, NotifyClient(limit=1) as client:
        await asyncio.gather(*(client.post(server.url, b"%d" % i) for i in range(10)))
        assert [body for _, _, body in server.requests] == [b"%d" % i for i in range(10)]


async def test_idle_connections_expire() -> None:
    async with AppServer(no_content) as server, NotifyClient(keepalive_timeout=0.1) as client:
        assert await client.post(server.url, b"x") == 204
        assert client._connections
        for _ in range(100):
            if not client._connections:
                break
            await asyncio.sleep(0.02)
        assert not client._connections and not client._pools
        assert await client.post(server.url, b"x") == 204
        assert client.stats.opened == 2


# --- raw servers for the edge cases ------------------------------------------------------

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """An asyncio stream server on 127.0.0.1:0 running ``handler`` per connection."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.connections = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        self.url = f"http://{HOST}:{self.server.sockets[0].getsockname()[1]}/cb"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def test_stale_idle_connection_is_retried_once() -> None:
    requests: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        requests.append(n)
        if n == 1:  # answer once, then drop the next request unanswered (keep-alive race)
            writer.write(NO_CONTENT)
            await read_request(reader)
            requests.append(n)
            writer.transport.abort()
            return
        writer.write(NO_CONTENT)
        await reader.read()

    async with RawServer(handler) as server, NotifyClient() as client:
        assert await client.post(server.url, b"a") == 204
        assert await client.post(server.url, b"b") == 204
        assert requests == [1, 1, 2]
        assert (client.stats.opened, client.stats.retried) == (2, 1)


async def test_idle_connection_closed_by_server_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(NO_CONTENT)
        await writer.drain()

    async with RawServer(handler) as server, NotifyClient() as client:
        assert await client.post(server.url, b"a") == 204
        for _ in range(100):  # the client sees the FIN while the connection is idle
            if not client._connections:
                break
            await asyncio.sleep(0.01)
        assert await client.post(server.url, b"b") == 204
        assert (client.stats.opened, client.stats.reused, client.stats.retried) == (2, 0, 0)


async def test_close_mid_response_is_an_error_without_retry() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async with RawServer(handler) as server, NotifyClient() as client:
        assert await client.post(server.url, b"a") == 200
        with pytest.raises(NotifyError, match="mid-response"):
            await client.post(server.url, b"b")
        assert server.connections == 1 and client.stats.retried == 0


async def test_reset_mid_response_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.transport.abort()

    async with RawServer(handler) as server, NotifyClient() as client:
        with pytest.raises(NotifyError, match="mid-response"):
            await client.post(server.url, b"x")


async def test_fresh_connection_closed_without_response_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with RawServer(handler) as server, NotifyClient() as client:
        with pytest.raises(NotifyError, match="before any response"):
            await client.post(server.url, b"x")
        assert server.connections == 1 and client.stats.retried == 0


async def test_freed_slots_go_to_waiters() -> None:
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(await answer(response)) as server, NotifyClient(limit=2) as client:
        statuses = await asyncio.gather(*(client.post(server.url, b"x") for _ in range(6)))
        assert statuses == [200] * 6
        assert server.connections == 6 and not client._pools


async def answer(response: bytes) -> RawHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(response)

    return handler


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (b"HTTP/1.1 OK\r\n\r\n", "bad status line"),
        (b"SIP/2.0 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "bad header line"),
    ],
)
async def test_malformed_response_is_an_error(response: bytes, why: str) -> None:
    async with RawServer(await answer(response)) as server, NotifyClient() as client:
        with pytest.raises(NotifyError, match=why):
            await client.post(server.url, b"x")
        assert not client._pools  # the connection was dropped, its slot freed


async def test_slow_server_times_out_and_the_connection_is_closed() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await reader.read()  # until the client closes
        closed.set()

    async with RawServer(handler) as server, NotifyClient(timeout=0.2) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(NotifyError, match="no response within 0.2 s"):
            await client.post(server.url, b"x")
        assert asyncio.get_running_loop().time() - started < 2
        await asyncio.wait_for(closed.wait(), 2)
        assert not client._pools


async def test_interim_100_continue_then_204() -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT
    async with RawServer(await answer(response)) as server, NotifyClient() as client:
        assert await client.post(server.url, b"x") == 204
        assert await client.post(server.url, b"x") == 204
        assert server.connections == 1


@pytest.mark.parametrize(
    ("response", "connections"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 2),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 1),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 2),
        (b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=0\r\nContent-Length: 2\r\n\r\nok", 2),
    ],
)
async def test_reuse_follows_the_response(response: bytes, connections: int) -> None:
    async with RawServer(await answer(response)) as server, NotifyClient() as client:
        assert await client.post(server.url, b"x") == 200
        assert await client.post(server.url, b"x") == 200
        assert server.connections == connections


async def test_keep_alive_timeout_hint_shortens_the_idle_time() -> None:
    response = b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=1, max=100\r\n\r\n"
    async with RawServer(await answer(response)) as server, NotifyClient() as client:
        assert await client.post(server.url, b"x") == 204
        (pool,) = client._pools.values()
        (conn,) = pool.idle
        assert 0.4 < conn.expires - asyncio.get_running_loop().time() <= 0.5


async def test_body_delimited_by_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nthe body")

    async with RawServer(handler) as server, NotifyClient() as client:
        assert await client.post(server.url, b"x") == 200
        assert await client.post(server.url, b"x") == 200
        assert server.connections == 2


async def test_unsolicited_bytes_on_an_idle_connection_drop_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(NO_CONTENT)
        await asyncio.sleep(0.02)
        writer.write(NO_CONTENT)  # an answer to nothing
        await reader.read()

    async with RawServer(handler) as server, NotifyClient() as client:
        assert await client.post(server.url, b"x") == 204
        for _ in range(100):
            if not client._connections:
                break
            await asyncio.sleep(0.01)
        assert await client.post(server.url, b"x") == 204
        assert (server.connections, client.stats.retried) == (2, 0)


async def test_close_fails_running_and_waiting_posts() -> None:
    got = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        got.set()
        await reader.read()

    async with RawServer(handler) as server:
        client = NotifyClient(limit=1)
        posts = [asyncio.create_task(client.post(server.url, b"x")) for _ in range(3)]
        await asyncio.wait_for(got.wait(), 2)
        await client.close()
        for post in posts:
            with pytest.raises(NotifyError, match="client closed"):
                await post
        with pytest.raises(NotifyError, match="client closed"):
            await client.post(server.url, b"x")
        assert not client._connections
        await client.close()  # idempotent


async def test_cancelled_waiter_leaves_the_pool_consistent() -> None:
    async with AppServer(no_content) as server, NotifyClient(limit=1) as client:
        first = asyncio.create_task(client.post(server.url, b"1"))
        waiting = asyncio.create_task(client.post(server.url, b"2"))
        await asyncio.sleep(0)
        waiting.cancel()
        assert await first == 204
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await client.post(server.url, b"3") == 204
        assert client.stats.opened == 1


async def test_cancelled_post_drops_its_connection() -> None:
    got = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        got.set()
        await reader.read()

    async with RawServer(handler) as server, NotifyClient(limit=1) as client:
        post = asyncio.create_task(client.post(server.url, b"x"))
        await asyncio.wait_for(got.wait(), 2)
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
        assert not client._pools
        for _ in range(100):
            if not client._connections:
                break
            await asyncio.sleep(0.01)
        assert not client._connections


async def test_a_server_that_speaks_first_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await reader.read()

    async with RawServer(handler) as server, NotifyClient() as client:
        with pytest.raises(NotifyError):
            await client.post(server.url, b"x")
        assert not client._pools


async def test_a_connection_handed_to_a_cancelled_waiter_is_given_back() -> None:
    async with AppServer(no_content) as server, NotifyClient(limit=1) as client:
        assert await client.post(server.url, b"x") == 204
        (pool,) = client._pools.values()
        conn = pool.idle.pop()  # as if busy: the pool is full
        waiting = asyncio.create_task(pool._wait())
        await asyncio.sleep(0)
        pool._park(conn)  # handed over, then cancelled before the waiter runs
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert list(pool.idle) == [conn] and pool.count == 1 and not pool.waiters
        assert await client.post(server.url, b"x") == 204
        assert client.stats.opened == 1


async def test_a_slot_handed_to_a_cancelled_waiter_is_given_back() -> None:
    async with AppServer(no_content) as server, NotifyClient(limit=1) as client:
        assert await client.post(server.url, b"x") == 204
        (pool,) = client._pools.values()
        pool.idle.pop().abort()  # as if a busy connection failed
        waiting = asyncio.create_task(pool._wait())
        await asyncio.sleep(0)
        pool._free_slot()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.count == 0 and not client._pools
        assert await client.post(server.url, b"x") == 204


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    async with NotifyClient() as client:
        with pytest.raises(NotifyError, match="cannot connect"):
            await client.post(f"http://{HOST}:{port}/", b"x")
        assert not client._pools


# --- TLS -------------------------------------------------------------------------------


def make_cert(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
        + ["-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


Certs = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "good": make_cert(directory, "localhost", f"IP:{HOST},DNS:localhost"),
        "wrong": make_cert(directory, "elsewhere", "DNS:elsewhere.invalid"),
    }


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


async def test_tls_with_a_trusted_self_signed_certificate(
    certs: Certs,
) -> None:
    trust = ssl.create_default_context(cafile=str(certs["good"][0]))
    async with AppServer(no_content, server_context(certs["good"])) as server:
        assert server.url.startswith("https://")
        async with NotifyClient(ssl_context=trust) as client:
            for _ in range(3):
                assert await client.post(f"{server.url}/cb", b"x") == 204
            assert client.stats.opened == 1 and len(server.peers) == 1
        assert server.requests[0][1]["Host"] == server.url.removeprefix("https://")


@pytest.mark.parametrize(("cert", "why"), [("good", "self-signed"), ("wrong", "match")])
async def test_tls_certificate_is_verified(certs: Certs, cert: str, why: str) -> None:
    trust = None if cert == "good" else ssl.create_default_context(cafile=str(certs[cert][0]))
    async with AppServer(no_content, server_context(certs[cert])) as server:
        async with NotifyClient(ssl_context=trust) as client:
            with pytest.raises(NotifyError, match=why):
                await client.post(server.url, b"x")


def test_keep_alive_on_uvloop() -> None:
    # the bridge serves on uvloop (bridge.cli): its transports are not asyncio.Transport
    import uvloop

    async def run() -> None:
        async with NotifyClient(limit=2, timeout=5.0) as c, AppServer(no_content) as server:
            for _ in range(3):
                assert await c.post(server.url, b"{}") == 204
            assert (c.stats.opened, c.stats.reused) == (1, 2)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
