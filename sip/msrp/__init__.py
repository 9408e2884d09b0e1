"""MSRP (RFC 4975) with relay support (RFC 4976): codec, sans-I/O engine, asyncio transport.

Modules:
    uri         MSRPURI, parse_uri/serialize_uri, parse_path/serialize_path, SessionId
    message     MSRPMessage, ByteRange, StatusHeader, parse_message/serialize_message
    parser      MSRPParser: byte stream -> frames (end-line found by byte search)
    reassembly  Reassembly of one chunked incoming message
    events      the engine's events (MessageReceived, MessageSent, MessageFailed, ...)
    session     MSRPSessionState: one session's sans-I/O state and its status table
    connection  MSRPConnection: the sans-I/O engine, one per TCP connection
    relay       RelayConfig, RelayBinding: RFC 4976 AUTH results
    transport   MSRPStack: listener, connector, relay AUTH (asyncio)
    tls         MSRPTLS: contexts, our fingerprint and the peer check of msrps (RFC 4975 §14)
    link        Link: one TCP connection, an asyncio.Protocol around MSRPConnection
    session_handle  MSRPSession, SendResult: the asyncio handle of one session
                (transport, link and session_handle are the only MSRP I/O)

The API the bridge uses::

    stack = MSRPStack("127.0.0.1", 0, relay=RelayConfig.from_string("msrp://r:2855;tcp"))
    await stack.start()                               # listener (passive side)
    session = await stack.create_session(accept_types=("message/cpim",))
    sdp_path = session.path_attribute                 # a=path: (Use-Path + our URI)
    await session.start(remote_path, active=True,     # connect + empty SEND, or wait for peer
                        accept_types=peer_types, max_size=peer_max)   # from the peer's SDP
    result = await session.send("message/cpim", body) # chunked; returns on the last 200
    #   raises MSRPError(status, reason, local=...): 4xx from the peer, 481 session gone,
    #   415/413 local when the peer's accept-types/max-size exclude it,
    #   408 local when a transaction timed out (the connection is then closed)
    async for event in session.messages():            # MessageReceived | ReportReceived
        ...
    session.on_event = callback                       # instead: every event (incl. ChunkReceived)
    session.on_path_change = cb                       # relay re-AUTH gave a new Use-Path
    await session.close()
    await stack.close()

``MSRPStack(host, port, *, relay=None, timeout=30.0, connect_timeout=10.0,
chunk_size=10240, window=16, max_message_size=16 MiB, sessmatch=True,
keepalive_interval=None, advertised_host=None, limits=None, tls=None)`` is built inside a
running loop; with ``tls`` (an MSRPTLS) it also listens for TLS and
``create_session(tls=True)`` gives an ``msrps://`` session.
``RelayConfig.from_string(uri, expires=None, username=None, password=None)``: with
credentials a 401 digest challenge is answered once (``sip.auth``); a 423 is retried
with the relay's Min-/Max-Expires. ``session.start(..., active=False)`` waits for
the peer's first frame and then sends an empty SEND back (both roles bind, as rcsjta
does; through a relay this makes the relay open its connection before traffic).

Sessions toward the same peer share one TCP connection; idle sessions own no
task and no timer. Defaults: chunks of 10 KiB, 16 unanswered chunks per
message, transaction timeout 30 s, session matching on the session-id only.
"""

from sip.msrp.connection import MSRPConnection
from sip.msrp.events import (
    ChunkReceived,
    MessageAborted,
    MessageFailed,
    MessageReceived,
    MessageSent,
    ReportReceived,
    SessionStatus,
)
from sip.msrp.message import ByteRange, MSRPMessage, MSRPMessageId, parse_message, serialize_message
from sip.msrp.parser import MSRPParser
from sip.msrp.relay import RelayConfig
from sip.msrp.session import MSRPSessionState
from sip.msrp.session_handle import MSRPSession, SendResult
from sip.msrp.tls import MSRPTLS
from sip.msrp.transport import MSRPStack
from sip.msrp.uri import MSRPURI, SessionId, parse_path, parse_uri

__all__ = [
    "MSRPTLS",
    "MSRPURI",
    "ByteRange",
    "ChunkReceived",
    "MSRPConnection",
    "MSRPMessage",
    "MSRPMessageId",
    "MSRPParser",
    "MSRPSession",
    "MSRPSessionState",
    "MSRPStack",
    "MessageAborted",
    "MessageFailed",
    "MessageReceived",
    "MessageSent",
    "RelayConfig",
    "ReportReceived",
    "SendResult",
    "SessionId",
    "SessionStatus",
    "parse_message",
    "parse_path",
    "parse_uri",
    "serialize_message",
]
