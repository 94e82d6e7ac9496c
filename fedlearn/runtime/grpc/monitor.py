"""Live metrics of a gRPC deployment, for Prometheus (``runtime.metrics_address``).

``fedlearn-server`` serves them at ``http://<metrics_address>/metrics`` when the
setting is given (default: off). A scrape reads the grid as it is at that moment
(clients connected, bytes each way); three hooks count what happens between
scrapes: an exchange starting (the round and its phase), an exchange's replies
(failed ones by reason) and a stream refused (by reason).

Metrics (all prefixed ``fedlearn_``): ``clients_connected``, ``round``,
``round_phase`` (waiting, train, evaluate, query, server, finished: ``server``
is the time between exchanges, when the server aggregates and evaluates),
``round_seconds`` (a histogram of whole rounds), ``sent_bytes_total`` /
``received_bytes_total`` (gRPC frames), ``replies_total{phase}``,
``replies_failed_total{phase,reason}`` and ``refusals_total{reason}``.
Refusals are the streams fedlearn's server ends; a frame larger than gRPC's own
limit (``chunk_mb`` + 1 MiB) is refused by gRPC before fedlearn sees it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
from flwr.app import Message
from flwr.common.constant import ErrorCode

from fedlearn.app.tracking import NO_REPLY, NON_FINITE_UPDATE
from fedlearn.runtime.grpc.settings import log

if TYPE_CHECKING:
    from fedlearn.runtime.grpc.grid import GrpcGrid

PHASES = ("waiting", "train", "evaluate", "query", "server", "finished")
# Why a reply failed, by the code of its Flower Error (others: error_<code>).
FAILURES = {
    ErrorCode.NODE_UNAVAILABLE: "disconnected",
    NO_REPLY: "timeout",
    NON_FINITE_UPDATE: "non_finite",
    ErrorCode.CLIENT_APP_RAISED_EXCEPTION: "wrong_reply",  # the grid's: another type
}
# Why a stream was refused, by the status code it was ended with.
REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "unauthenticated",
    grpc.StatusCode.INVALID_ARGUMENT: "protocol",
    grpc.StatusCode.FAILED_PRECONDITION: "protocol",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "size",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.ALREADY_EXISTS: "duplicate",  # a second stream of a connected identity
}


class Monitor:
    """The server's and grid's hooks; this one records nothing (metrics are off)."""

    port: int | None = None

    def exchange_started(self, messages: list[Message]) -> None:
        """The grid sends ``messages`` and waits for their replies."""

    def exchange_done(self, replies: list[Message]) -> None:
        """The replies (Flower Error replies for the failed ones) are all in."""

    def refused(self, code: grpc.StatusCode) -> None:
        """A client's stream was ended with status ``code``."""

    def finished(self) -> None:
        """The run is over."""

    def close(self) -> None:
        """Stop serving."""


class PrometheusMonitor(Monitor):
    """Count and serve the deployment's metrics on ``address`` (``host:port``; port 0:
    a free one, see :attr:`port`)."""

    def __init__(self, grid: GrpcGrid, address: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
        from prometheus_client.exposition import start_http_server

        from fedlearn.runtime.inprocess import CLIENT_EXCEPTION  # (imports torch)

        self.failures = {**FAILURES, CLIENT_EXCEPTION: "client_error"}  # a ClientApp raised
        self.grid = grid
        # A registry of its own: several servers in one process (tests) never collide.
        self.registry = reg = CollectorRegistry()
        gauge = Gauge("fedlearn_clients_connected", "Clients connected", registry=reg)
        gauge.set_function(lambda: len(grid.get_node_ids()))
        self._round = Gauge("fedlearn_round", "Current round", registry=reg)
        self._phase = Enum(
            "fedlearn_round_phase", "Phase of the current round", states=list(PHASES), registry=reg
        )
        self._seconds = Histogram(
            "fedlearn_round_seconds",
            "Seconds per round, from its first exchange to the next round's",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=reg,
        )
        self._replies = Counter("fedlearn_replies", "Replies", ["phase"], registry=reg)
        self._failed = Counter(
            "fedlearn_replies_failed", "Failed replies", ["phase", "reason"], registry=reg
        )
        self._refusals = Counter("fedlearn_refusals", "Streams refused", ["reason"], registry=reg)
        reg.register(_Bytes(grid))
        self._lock = threading.Lock()
        self._current: tuple[int, float] | None = None  # (round, when it started)
        host, _, port = address.rpartition(":")
        try:
            self._httpd, _ = start_http_server(int(port), host or "0.0.0.0", registry=reg)
        except OSError as err:
            raise ValueError(
                f"runtime.metrics_address={address}: cannot listen there ({err.strerror})"
            ) from None
        self.port = int(self._httpd.server_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", host or "0.0.0.0", self.port)

    def exchange_started(self, messages: list[Message]) -> None:
        if not messages:
            return
        self._phase.state(_phase(messages[0]))
        rnd = _round(messages[0])
        if rnd is None:
            return
        with self._lock:
            if self._current is None or self._current[0] != rnd:
                self._end_round()
                self._current = (rnd, time.monotonic())
        self._round.set(rnd)

    def exchange_done(self, replies: list[Message]) -> None:
        for reply in replies:
            phase = _phase(reply)
            self._replies.labels(phase).inc()
            if reply.has_error():
                code = reply.error.code
                self._failed.labels(phase, self.failures.get(code, f"error_{code}")).inc()
        self._phase.state("server")

    def refused(self, code: grpc.StatusCode) -> None:
        self._refusals.labels(REFUSALS.get(code, code.name.lower())).inc()

    def finished(self) -> None:
        with self._lock:
            self._end_round()
            self._current = None
        self._phase.state("finished")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _end_round(self) -> None:
        """The current round is over (the caller holds the lock)."""
        if self._current is not None:
            self._seconds.observe(time.monotonic() - self._current[1])


class _Bytes:
    """The grid's byte counters, read when scraped."""

    def __init__(self, grid: GrpcGrid) -> None:
        self.grid = grid

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(
            "fedlearn_sent_bytes", "Bytes of gRPC frames sent", value=self.grid.bytes_sent
        )
        yield CounterMetricFamily(
            "fedlearn_received_bytes",
            "Bytes of gRPC frames received",
            value=self.grid.bytes_received,
        )


def _phase(message: Message) -> str:
    kind = message.metadata.message_type.split(".")[0]
    return kind if kind in PHASES else "query"


def _round(message: Message) -> int | None:
    """The round a message belongs to: Flower's strategies put it in their config
    record (``server-round``); other apps may use the group id."""
    records = message.content.config_records.values() if message.has_content() else ()
    for record in records:
        value = record.get("server-round")
        if isinstance(value, int):
            return value
    group = message.metadata.group_id
    return int(group) if group.isdigit() else None


def serve(grid: GrpcGrid, address: str | None) -> Monitor:
    """A :class:`PrometheusMonitor` on ``address``, or the silent :class:`Monitor`."""
    return PrometheusMonitor(grid, address) if address else Monitor()
