"""The service log: text or JSON lines, request ids, redaction (docs/operations.md).

:func:`setup_logging` (called once by ``bridge.cli``) installs one handler on the root
logger, writing to stderr:

* ``log_format: text``: ``<asctime> <LEVEL> <logger>: <message>``, as before;
* ``log_format: json``: one JSON object per line with the stable fields ``ts`` (UTC,
  ISO 8601 with milliseconds), ``level``, ``logger``, ``msg``, then the record's extras
  (``request_id``, ``method``, ``route``, ``status``, ``duration_ms`` on access lines),
  and ``exc`` with the traceback when there is one.

Every record is scrubbed before it is written (:class:`Scrubber`): credentials never
reach the log (the password of a ``scheme://user:password@`` URL or a ``sip:user:password@``
URI, the value of SIP/MSRP ``Authorization`` headers in wire traces). With ``log_redact``,
user addresses are masked too: the user part of ``sip:``/``sips:`` URIs, ``tel:`` numbers
and ``+``-prefixed phone numbers, also percent-encoded in URLs, become ``~`` and a short
keyed hash (the same user gives the same token within one run, so lines still
correlate, but the address cannot be read back), and the bodies in the SIP/MSRP wire
traces (``bridge.trace.*``, where message text travels) are replaced by their size.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import TextIO

from bridge.config import MASK, Settings, mask_text

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "Scrubber",
    "hide_secrets",
    "redact",
    "setup_logging",
]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chat_bridge_request_id", default=None
)
"""The id of the REST request being served (set by ``rest.observability``); records
logged while it is set carry it as ``request_id``."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACE_PREFIX = "bridge.trace."

# --- credentials (always hidden) -------------------------------------------------------

_SIP_PASSWORD = re.compile(r"(?i)\b(sips?:[^:@\s;<>\"']+):[^@\s;<>\"']+@")
_AUTHORIZATION = re.compile(r"(?i)((?:proxy-)?authorization:[ \t]*[a-z]+)[^\r\n\\]*")


def hide_secrets(text: str) -> str:
    """``text`` with URL passwords (``bridge.config.mask_text``), SIP URI passwords and
    Authorization values replaced by ``bridge.config.MASK``."""
    if "@" in text:
        text = _SIP_PASSWORD.sub(rf"\1:{MASK}@", mask_text(text))
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTHORIZATION.sub(rf"\1 {MASK}", text)
    return text


# --- user addresses and message text (log_redact) --------------------------------------

_KEY = secrets.token_bytes(16)
"""Per-process key of the redaction tokens: stable within a run, unguessable across."""

_SIP_USER = re.compile(
    r"(?i)\b(sips?(?::|%3A))([^@\s<>\"',;:/]+)((?::" + re.escape(MASK) + r")?(?:@|%40))"
)
_TEL = re.compile(r"(?i)\b(tel(?::|%3A))((?:\+|%2B)?[0-9A-F\-.()*#]+)")
_PHONE = re.compile(r"(?<![\w%])(\+|%2B)\d[\d\-. ]{4,}\d")
_BODY = re.compile(r"(\r\n\r\n|\\r\\n\\r\\n|\n\n)(.+)", re.S)


def _token(value: str) -> str:
    return "~" + hashlib.blake2s(value.encode(), key=_KEY, digest_size=3).hexdigest()


def redact(text: str, *, trace: bool = False) -> str:
    """``text`` with user addresses masked; with ``trace`` also the message bodies."""
    if trace:
        text = _BODY.sub(lambda m: f"{m.group(1)}[{len(m.group(2))} characters redacted]", text)
    text = _SIP_USER.sub(lambda m: f"{m.group(1)}{_token(m.group(2))}{m.group(3)}", text)
    text = _TEL.sub(lambda m: f"{m.group(1)}{_token(m.group(2))}", text)
    return _PHONE.sub(lambda m: _token(m.group(0)), text)


class Scrubber(logging.Filter):
    """Rewrites each record's message (and traceback) without secrets, and with
    ``redact`` without user addresses and message bodies; adds ``request_id``."""

    def __init__(self, redact: bool = False) -> None:
        super().__init__()
        self.redact = redact
        self._exc = logging.Formatter()

    def _clean(self, text: str, trace: bool) -> str:
        text = hide_secrets(text)
        return redact(text, trace=trace) if self.redact else text

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = REQUEST_ID.get()
            if rid is not None:
                record.request_id = rid
        trace = record.name.startswith(TRACE_PREFIX)
        message = record.getMessage()
        clean = self._clean(message, trace)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text, False)
        return True


_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with stable field names (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in out:
                continue
            simple = isinstance(value, str | int | float | bool) or value is None
            out[key] = value if simple else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


_INSTALLED = "_chat_bridge_handler"


def setup_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Install the bridge's log handler on the root logger (replacing one installed before)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else _text())
    handler.addFilter(Scrubber(redact=settings.log_redact))
    setattr(handler, _INSTALLED, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _INSTALLED, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler


def _text() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT)
