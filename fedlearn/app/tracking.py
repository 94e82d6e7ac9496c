"""A Grid wrapper that counts what a round sent and received and screens replies.

Every runtime's Grid is wrapped in :class:`TrackingGrid` by the ServerApp, so
metrics.jsonl counts clients sampled / succeeded / failed and bytes the same
way everywhere, and an update holding NaN or Inf never reaches a strategy:
it becomes a Flower Error reply (counted as a failure, logged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from flwr.app import Error, Message, RecordDict
from flwr.serverapp.grid import Grid

from fedlearn.app.arrays import NUMPY, view
from fedlearn.runtime.base import DelegatingGrid

log = logging.getLogger("fedlearn")

# Flower's Error codes stop at a handful; fedlearn's own start here.
NON_FINITE_UPDATE = 1001
NO_REPLY = 1002


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's arrays plus a small estimate for its scalars."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(arr.data) for arr in record.values())
    for record in (*content.config_records.values(), *content.metric_records.values()):
        total += sum(len(str(k)) + 8 for k in record.keys())
    return total


def non_finite_arrays(content: RecordDict) -> Iterator[tuple[str, str]]:
    """(record, array) names of the arrays an update must not carry: floating-point
    ones holding NaN or Inf, and ``.npy`` payloads that cannot be read at all (a
    malformed update is refused like a NaN one, instead of failing the round).
    Integer arrays cannot hold NaN and other serializations cannot be read cheaply:
    both are passed over. The one screen of every runtime and of the gRPC transport."""
    for name, record in content.array_records.items():
        for key, arr in record.items():
            if arr.stype != NUMPY or ("float" not in arr.dtype and "complex" not in arr.dtype):
                continue
            try:
                finite = bool(np.isfinite(view(arr)).all())
            except (ValueError, TypeError):  # np.load's verdict on a malformed payload
                finite = False
            if not finite:
                yield name, key


def non_finite_key(content: RecordDict) -> str | None:
    """The first array key holding NaN or Inf, or None when all are finite."""
    for name, key in non_finite_arrays(content):
        return f"{name}/{key}"
    for record in content.metric_records.values():
        for key, value in record.items():
            vals = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in vals):
                return f"metrics/{key}"
    return None


@dataclass
class RoundStats:
    """What one ``send_and_receive`` did."""

    sampled: int = 0
    succeeded: int = 0
    failed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    first_error: str | None = None  # why the first failed client failed


class TrackingGrid(DelegatingGrid):
    """Delegate to ``inner``; record :class:`RoundStats` for every exchange."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.last = RoundStats()

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        stats = RoundStats(sampled=len(messages))
        stats.bytes_sent = sum(payload_bytes(m.content) for m in messages if m.has_content())
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        screened = []
        for reply in replies:
            if reply.has_content():
                stats.bytes_received += payload_bytes(reply.content)
                bad = non_finite_key(reply.content)
                if bad is not None:
                    node = reply.metadata.src_node_id
                    log.warning("rejected update from node %s: non-finite values in %s", node, bad)
                    reply = Message(
                        metadata=reply.metadata,
                        error=Error(NON_FINITE_UPDATE, f"non-finite values in {bad}"),
                    )
            screened.append(reply)
        stats.succeeded = sum(not r.has_error() for r in screened)
        errors = [r.error.reason for r in screened if r.has_error()]
        stats.first_error = errors[0] if errors else None
        stats.failed = stats.sampled - stats.succeeded
        wire = getattr(self.inner, "last_wire_bytes", None)
        if wire is not None:  # a transport that measures its own traffic reports that instead
            stats.bytes_sent, stats.bytes_received = wire
        self.last = stats
        return screened
