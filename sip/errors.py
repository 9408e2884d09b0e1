"""Errors of the protocol library.

The tree::

    ProtocolError
    ├── CodecError (also ValueError)   malformed input to any parser/codec; exact messages
    ├── SIPError                       a SIP operation failed; .status, .local
    │   ├── TransactionTimeout         no final response (timer B/F) -> .status 408
    │   └── DialogError                (sip/dialog.py) a request that does not fit its dialog
    │                                  (CSeq order, unknown dialog); .status is the answer
    ├── TransactionStateError          a transaction event its (state, event) table does
    │                                  not allow (sip/transaction_machine.py), e.g. a second
    │                                  final response from the TU
    ├── SubscriptionError              (sip/subscription.py) an event the subscription
    │                                  state table does not allow (RFC 6665)
    └── MSRPError                      an MSRP operation failed; .status, .local

DialogError and SubscriptionError live next to their state machines; the others here.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of the errors raised by ``sip``."""


MAX_ERROR_TEXT = 240
"""Most characters of a ``CodecError`` text: parsers quote the input they refuse, and a
hostile 100 KB header must not become a 100 KB log line or reason phrase (issue 13)."""


class CodecError(ProtocolError, ValueError):
    """Input that a parser or codec cannot accept; a text longer than ``MAX_ERROR_TEXT``
    is cut there, with the original length noted."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > MAX_ERROR_TEXT:
            text = args[0]
            args = (f"{text[:MAX_ERROR_TEXT]}... ({len(text)} characters)",)
        super().__init__(*args)


class SIPError(ProtocolError):
    """A SIP request failed: ``status`` is the final response code (or a local 408/503).

    ``local`` is True when the stack itself produced the failure (timeout,
    transport error) rather than the remote side.
    """

    def __init__(self, status: int, reason: str, *, local: bool = False) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.local = local


class TransactionTimeout(SIPError):
    """No final response before timer B or F fired."""

    def __init__(self, reason: str = "Request Timeout") -> None:
        super().__init__(408, reason, local=True)


class TransactionStateError(ProtocolError):
    """An event the transaction's (state, event) table does not allow."""


class MSRPError(ProtocolError):
    """An MSRP transaction failed: ``status`` is the MSRP status code (408 for timeouts)."""

    def __init__(self, status: int, reason: str, *, local: bool = False) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.local = local
