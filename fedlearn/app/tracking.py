"""A Grid wrapper that counts what a round sent and received and screens replies.

Every runtime's Grid is wrapped in :class:`TrackingGrid` by the ServerApp, so
metrics.jsonl counts clients sampled / succeeded / failed and bytes the same
way everywhere, and a reply that cannot be aggregated (NaN or Inf, arrays that
do not fit the model sent, an outlier update: :mod:`fedlearn.app.screening`)
never reaches a strategy: it becomes a Flower Error reply (counted as that
client's failure, by reason, and logged). This is the one screen of every
runtime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.serverapp.grid import Grid

from fedlearn.app.arrays import NUMPY, view
from fedlearn.app.screening import ScreenPolicy, check_reply, inconsistent
from fedlearn.runtime.base import DelegatingGrid

log = logging.getLogger("fedlearn")

# Flower's Error codes stop at a handful; fedlearn's own start here.
NON_FINITE_UPDATE = 1001
NO_REPLY = 1002
# Why a reply was refused (RoundStats.refused, metrics.jsonl "refused") -> its Error code.
REFUSALS = {
    "non-finite": NON_FINITE_UPDATE,
    "layout": 1003,
    "norm": 1004,
    "weight": 1005,
    "inconsistent": 1006,
}
# Every message to a node carries what became of its last train reply (round, aggregated):
# a client's strategy state changes only with updates the server aggregated.
COMMIT_KEY = "fedlearn-commit"


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
    refused: dict[str, int] = field(default_factory=dict)  # replies refused here, by reason


class TrackingGrid(DelegatingGrid):
    """Delegate to ``inner``; screen replies with ``policy``; record :class:`RoundStats`
    for every exchange."""

    def __init__(self, inner: Grid, policy: ScreenPolicy | None = None) -> None:
        super().__init__(inner)
        self.policy = policy or ScreenPolicy()
        self.last = RoundStats()
        # node -> (round of its last train reply, whether that reply was aggregated):
        # told to the node with every message (see fedlearn.app.client_strategies)
        self.ledger: dict[int, tuple[int, bool]] = {}
        self._settled: dict[int, tuple[int, bool]] = {}  # this round's, told once it is over
        self._trained: dict[int, bool] = {}  # the last train exchange: node -> reply accepted

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(self._tell(list(messages)))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = self._tell(list(messages))
        stats = RoundStats(sampled=len(messages))
        stats.bytes_sent = sum(payload_bytes(m.content) for m in messages if m.has_content())
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_content():
                stats.bytes_received += payload_bytes(reply.content)
        screened = [self._screen(r, s, stats) for r, s in _pairs(messages, replies)]
        ok = [i for i, r in enumerate(screened) if not r.has_error()]
        for i in inconsistent([screened[i] for i in ok]):
            why = "records differ from those of the round's other replies"
            screened[ok[i]] = _refuse(screened[ok[i]], "inconsistent", why, stats)
        stats.succeeded = sum(not r.has_error() for r in screened)
        errors = [r.error.reason for r in screened if r.has_error()]
        stats.first_error = errors[0] if errors else None
        stats.failed = stats.sampled - stats.succeeded
        if any(m.metadata.message_type == MessageType.TRAIN for m in messages):
            self._trained = {m.metadata.dst_node_id: False for m in messages}
            self._trained.update(
                {r.metadata.src_node_id: True for r in screened if not r.has_error()}
            )
        wire = getattr(self.inner, "last_wire_bytes", None)
        if wire is not None:  # a transport that measures its own traffic reports that instead
            stats.bytes_sent, stats.bytes_received = wire
        self.last = stats
        return screened

    def settle(self, server_round: int, applied: bool) -> None:
        """Record what became of the last train exchange's replies: aggregated when
        accepted here and ``applied`` (the round's aggregate was used). Clients are told
        after :meth:`publish`, once the round is over and checkpointed."""
        for node, accepted in self._trained.items():
            self._settled[node] = (server_round, applied and accepted)
        self._trained = {}

    def publish(self) -> None:
        """Tell clients, from now on, what :meth:`settle` recorded."""
        self.ledger.update(self._settled)
        self._settled = {}

    def settled(self) -> dict[int, tuple[int, bool]]:
        """This round's entries, not yet told: node -> (round, aggregated)."""
        return dict(self._settled)

    def ledger_state(self) -> dict[int, tuple[int, bool]]:
        """The ledger with this round's settled entries: what a checkpoint keeps."""
        return {**self.ledger, **self._settled}

    def _tell(self, messages: list[Message]) -> list[Message]:
        """Each message with its node's ledger entry added (a new RecordDict holding the
        same records: the content strategies share between messages is not changed)."""
        for msg in messages:
            entry = self.ledger.get(msg.metadata.dst_node_id)
            if entry is not None and msg.has_content():
                content = RecordDict(dict(msg.content))
                content[COMMIT_KEY] = ConfigRecord({"round": entry[0], "aggregated": entry[1]})
                msg.content = content
        return messages

    def _screen(self, reply: Message, sent: Message | None, stats: RoundStats) -> Message:
        """``reply``, or an Error reply saying why it cannot be aggregated."""
        if not reply.has_content():
            return reply
        bad = non_finite_key(reply.content)
        if bad is not None:
            return _refuse(reply, "non-finite", f"non-finite values in {bad}", stats)
        if sent is None or not sent.has_content():
            return reply
        train = sent.metadata.message_type == MessageType.TRAIN
        why = check_reply(reply.content, sent.content, self.policy, train)
        return reply if why is None else _refuse(reply, *why, stats)


def _pairs(
    messages: list[Message], replies: list[Message]
) -> Iterator[tuple[Message, Message | None]]:
    """Each reply with the message it answers: its node's (runtimes answer in order)."""
    by_node = {m.metadata.dst_node_id: m for m in messages}
    for k, reply in enumerate(replies):
        node = reply.metadata.src_node_id
        in_order = k < len(messages) and messages[k].metadata.dst_node_id == node
        yield reply, messages[k] if in_order else by_node.get(node)


def _refuse(reply: Message, reason: str, detail: str, stats: RoundStats) -> Message:
    """An Error reply in place of ``reply`` (logged, counted by ``reason``)."""
    log.warning("refused update from node %s (%s): %s", reply.metadata.src_node_id, reason, detail)
    stats.refused[reason] = stats.refused.get(reason, 0) + 1
    return Message(metadata=reply.metadata, error=Error(REFUSALS[reason], f"refused: {detail}"))
