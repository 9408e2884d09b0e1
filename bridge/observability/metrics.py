"""The bridge's Prometheus instruments, in one per-app registry (docs/operations.md).

One :class:`Metrics` is built by the composition root (``bridge.app``) and handed to the
parts that count, each through a small hook of its own layer: the SIP and MSRP stacks
(``sip.counters``), the chat store's commits (``state.chat_store.CommitHook``), the
delivery worker (``rest.delivery.DeliveryCounters``) and the REST middleware
(``rest.observability``). Nothing here is a module-level global: several apps in one
process (the tests) each have their own registry.

Hot path: the SIP and MSRP hooks run for every message. Label children are bound once
and cached in dicts keyed by bounded values (known methods, status classes), so a
message costs a dict lookup and a counter increment per instrument. Label values never
carry user ids, session ids or URLs; anything outside the known sets counts as ``other``.
Gauges of the store (sessions by kind and state, outbox backlog) are read when
``/metrics`` is scraped (:meth:`Metrics.scrape`), not kept up to date on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from bridge import __version__
from sip.message import Message, Request

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger(__name__)

PREFIX = "chat_bridge"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""
SCRAPE_TIMEOUT = 2.0
"""Seconds each store read of a scrape may take (the gauge keeps its last value past it)."""

SIP_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY",
        "REFER", "INFO", "UPDATE", "PRACK", "PUBLISH", "REGISTER",
    }
)  # fmt: skip
"""SIP methods counted by name; any other is counted as ``other``."""
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"
"""The ``route`` label of a REST request that matched no route."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10, 30, 60, 300, 3600)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

M = TypeVar("M", bound=MetricWrapperBase)


def _cached(metric: M) -> Callable[..., M]:
    """``metric.labels`` remembered per label tuple (callers pass bounded values only)."""
    children: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


class SipMetrics:
    """``sip.counters.SipCounters`` over the registry's SIP instruments."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = _cached(
            Counter(
                f"{PREFIX}_sip_requests",
                "SIP requests received (in) and sent (out), retransmissions included",
                ["direction", "method"],
                registry=registry,
            )
        )
        self._responses = _cached(
            Counter(
                f"{PREFIX}_sip_responses",
                "SIP responses received (in) and sent (out) by CSeq method and status class",
                ["direction", "method", "status_class"],
                registry=registry,
            )
        )
        self._retransmissions = _cached(
            Counter(
                f"{PREFIX}_sip_retransmissions",
                "SIP requests and responses sent again by the transaction timers",
                ["method"],
                registry=registry,
            )
        )
        self._timeouts = _cached(
            Counter(
                f"{PREFIX}_sip_transaction_timeouts",
                "SIP transactions ended without an answer (timers B, F, H; no ACK for a 2xx)",
                ["method"],
                registry=registry,
            )
        )

    @staticmethod
    def _method(method: str) -> str:
        return method if method in SIP_METHODS else "other"

    def _count(self, direction: str, msg: Message) -> None:
        if isinstance(msg, Request):
            self._requests(direction, self._method(msg.method)).inc()
            return
        cseq = msg.get("CSeq") or ""
        method = self._method(cseq.rpartition(" ")[2].strip())
        klass = msg.status // 100
        label = f"{klass}xx" if 1 <= klass <= 6 else "other"
        self._responses(direction, method, label).inc()

    def received(self, msg: Message) -> None:
        """A message arrived."""
        self._count("in", msg)

    def sent(self, msg: Message) -> None:
        """A message was written."""
        self._count("out", msg)

    def retransmitted(self, method: str) -> None:
        """A retransmission."""
        self._retransmissions(self._method(method)).inc()

    def timed_out(self, method: str) -> None:
        """A transaction timeout."""
        self._timeouts(self._method(method)).inc()


class MSRPMetrics:
    """``sip.counters.MSRPCounters`` over the registry's MSRP instruments."""

    ERROR_KINDS = ("framing", "broken", "rejected", "failed")

    def __init__(self, registry: CollectorRegistry) -> None:
        frames = Counter(
            f"{PREFIX}_msrp_frames",
            "MSRP frames (requests, responses, REPORTs) received (in) and sent (out)",
            ["direction"],
            registry=registry,
        )
        size = Counter(
            f"{PREFIX}_msrp_bytes",
            "Bytes of MSRP received (in) and sent (out)",
            ["direction"],
            registry=registry,
        )
        errors = Counter(
            f"{PREFIX}_msrp_errors",
            "MSRP errors: framing (connection closed), broken (transaction timeout or "
            "connection lost), rejected (a request we answered non-200), failed (a message "
            "of ours failed)",
            ["kind"],
            registry=registry,
        )
        self._frames_in, self._frames_out = frames.labels("in"), frames.labels("out")
        self._bytes_in, self._bytes_out = size.labels("in"), size.labels("out")
        self._errors = {kind: errors.labels(kind) for kind in self.ERROR_KINDS}
        self._other = errors.labels("other")

    def received(self, frames: int, size: int) -> None:
        """Bytes (and the frames they completed) arrived."""
        if frames:
            self._frames_in.inc(frames)
        self._bytes_in.inc(size)

    def sent(self, frames: int, size: int) -> None:
        """Bytes (holding frames) were written."""
        if frames:
            self._frames_out.inc(frames)
        self._bytes_out.inc(size)

    def error(self, kind: str) -> None:
        """An MSRP error of ``kind``."""
        self._errors.get(kind, self._other).inc()


class DeliveryMetrics:
    """``rest.delivery.DeliveryCounters`` over the registry's notification instruments."""

    DROP_REASONS = ("expired", "refused", "no_channel")

    def __init__(self, registry: CollectorRegistry) -> None:
        self._queued = Counter(
            f"{PREFIX}_notifications_queued",
            "Notifications committed to the outbox",
            registry=registry,
        )
        delivered = Counter(
            f"{PREFIX}_notifications_delivered",
            "Notifications delivered: POSTed with a 2xx (callback) or handed to a long poll "
            "(channel)",
            ["via"],
            registry=registry,
        )
        latency = Histogram(
            f"{PREFIX}_notification_delivery_seconds",
            "Seconds from a notification's queueing to its delivery",
            ["via"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self._retried = Counter(
            f"{PREFIX}_notifications_retried",
            "Failed notification POSTs rescheduled for another attempt",
            registry=registry,
        )
        dropped = Counter(
            f"{PREFIX}_notifications_dropped",
            "Notifications given up: expired (past notification_max_age), refused (notify "
            "policy), no_channel (their channel is gone)",
            ["reason"],
            registry=registry,
        )
        self._delivered = {via: delivered.labels(via) for via in ("callback", "channel")}
        self._latency = {via: latency.labels(via) for via in ("callback", "channel")}
        self._dropped = {reason: dropped.labels(reason) for reason in self.DROP_REASONS}
        self._dropped_other = dropped.labels("other")

    def queued(self, count: int) -> None:
        """Notifications committed."""
        self._queued.inc(count)

    def delivered(self, seconds: float, channel: bool) -> None:
        """One notification delivered ``seconds`` after it was queued."""
        via = "channel" if channel else "callback"
        self._delivered[via].inc()
        self._latency[via].observe(max(seconds, 0.0))

    def retried(self) -> None:
        """A failed POST rescheduled."""
        self._retried.inc()

    def dropped(self, reason: str, count: int = 1) -> None:
        """Notifications given up."""
        self._dropped.get(reason, self._dropped_other).inc(count)


class HttpMetrics:
    """REST requests by method, route template and status, and their latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = _cached(
            Counter(
                f"{PREFIX}_http_requests",
                "REST requests answered, by method, route template and status",
                ["method", "route", "status"],
                registry=registry,
            )
        )
        self._latency = _cached(
            Histogram(
                f"{PREFIX}_http_request_duration_seconds",
                "Seconds from a REST request's arrival to its answer, by method and route",
                ["method", "route"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered. ``route`` must be a route template (bounded), never a path."""
        if method not in HTTP_METHODS:
            method = "other"
        code = str(status) if 100 <= status <= 599 else "other"
        self._requests(method, route, code).inc()
        self._latency(method, route).observe(seconds)


SessionCounts = Callable[[], Awaitable[Mapping[tuple[str, str], int]]]
Backlog = Callable[[], Awaitable[int]]


class Metrics:
    """Every instrument of one bridge, in its own registry (module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        Gauge(f"{PREFIX}_info", "The bridge's version", ["version"], registry=registry).labels(
            __version__
        ).set(1)
        self.http = HttpMetrics(registry)
        self.sip = SipMetrics(registry)
        self.msrp = MSRPMetrics(registry)
        self.delivery = DeliveryMetrics(registry)
        self._sessions = Gauge(
            f"{PREFIX}_sessions",
            "Chat sessions not ended, by kind (confirmed, adhoc, group) and state "
            "(read from the store at scrape time)",
            ["kind", "state"],
            registry=registry,
        )
        self._backlog = Gauge(
            f"{PREFIX}_notification_outbox_backlog",
            "Notifications in the outbox not delivered yet (read at scrape time)",
            registry=registry,
        )
        self._commit_seconds = Histogram(
            f"{PREFIX}_store_commit_seconds",
            "Seconds one commit of the chat store took",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self._commit_units = Histogram(
            f"{PREFIX}_store_commit_batch_size",
            "Units of work (chat events) made durable by one commit of the chat store",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every loop_lag_interval)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._lag_last = Gauge(
            f"{PREFIX}_event_loop_lag_last_seconds",
            "The last event-loop lag sample",
            registry=registry,
        )
        self.ims_reachable = Gauge(
            f"{PREFIX}_ims_core_reachable",
            "1 when the last OPTIONS ping to the IMS core was answered, 0 otherwise "
            "(absent without sip_outbound_proxy)",
            registry=registry,
        )
        self._session_counts: SessionCounts | None = None
        self._backlog_count: Backlog | None = None
        self._session_keys: set[tuple[str, str]] = set()

    # --- hooks of the other layers ------------------------------------------------------

    def store_committed(self, seconds: float, units: int) -> None:
        """``state.chat_store.CommitHook``: one commit of the chat store."""
        self._commit_seconds.observe(seconds)
        self._commit_units.observe(units)

    def loop_lag(self, seconds: float) -> None:
        """One event-loop lag sample (``bridge.observability.looplag``)."""
        self._lag.observe(seconds)
        self._lag_last.set(seconds)

    def read_store_with(self, sessions: SessionCounts, backlog: Backlog) -> None:
        """Where :meth:`scrape` reads the session counts and the outbox backlog."""
        self._session_counts = sessions
        self._backlog_count = backlog

    # --- the scrape ---------------------------------------------------------------------

    async def scrape(self) -> bytes:
        """Refresh the store gauges (each read bounded by SCRAPE_TIMEOUT), then render."""
        if self._session_counts is not None:
            try:
                counts = await asyncio.wait_for(self._session_counts(), SCRAPE_TIMEOUT)
            except Exception as exc:  # a slow or failing store must not fail the scrape
                log.warning("x metrics: session counts not read: %r", exc)
            else:
                for key in self._session_keys - counts.keys():
                    self._sessions.labels(*key).set(0)
                for key, count in counts.items():
                    self._sessions.labels(*key).set(count)
                self._session_keys.update(counts)
        if self._backlog_count is not None:
            try:
                self._backlog.set(await asyncio.wait_for(self._backlog_count(), SCRAPE_TIMEOUT))
            except Exception as exc:
                log.warning("x metrics: outbox backlog not read: %r", exc)
        return generate_latest(self.registry)
