"""``GrpcGrid``: Flower's Grid over the clients connected to fedlearn's server.

The strategy's thread calls the Grid; the gRPC server's event loop owns the
streams. They meet here, under one lock:

- ``push_messages`` serializes each message (a model shared by many messages
  once) and hands it to the destination's stream at once
  (``loop.call_soon_threadsafe``): there is no polling interval.
- The event loop calls :meth:`deliver` as soon as a reply is whole, and
  :meth:`unregister` as soon as a stream ends; both wake the strategy's
  thread through a condition variable.
- ``send_and_receive`` returns one reply per sent message, in the order sent.
  A message whose client disconnected, timed out or replied with a message of
  another type gets a Flower Error reply, so the strategy counts it as a
  failure and aggregates the rest. What a reply holds is screened by the
  ServerApp's :class:`~fedlearn.app.tracking.TrackingGrid`, as on every runtime.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

from fedlearn.app.tracking import NO_REPLY
from fedlearn.runtime import set_server_identity
from fedlearn.runtime.grpc.monitor import Monitor
from fedlearn.runtime.grpc.serde import message_parts
from fedlearn.runtime.grpc.settings import log


@dataclass(eq=False)
class Session:
    """One connected client stream (owned by the event loop)."""

    node_id: int
    identity: str
    node_config: dict[str, Any]
    outq: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    peer: str = ""
    last_seen: float = field(default_factory=time.monotonic)
    closed: bool = False
    outstanding: int = 0  # messages sent to it awaiting its reply (the grid's lock)

    def send(self, item: tuple) -> None:
        """Queue an item for the stream's writer, from any thread."""
        self.loop.call_soon_threadsafe(self.outq.put_nowait, item)

    def order(self) -> tuple:
        """Sort key: partition id first, so nodes list in the in-process runtime's order."""
        pid = self.node_config.get("partition-id")
        return (0, int(pid), self.identity) if isinstance(pid, int) else (1, 0, self.identity)


@dataclass
class _Pending:
    message: Message
    session: Session


class GrpcGrid(Grid):
    """A Flower Grid whose nodes are the connected gRPC clients.

    Parameters
    ----------
    run_config : dict
        Flat scalars sent to every client at registration.
    round_timeout : float, optional
        Upper bound on any ``send_and_receive`` wait.
    max_message_bytes : int, optional
        Largest reply accepted; by default twice the largest message sent, plus 1 MiB.
    """

    def __init__(
        self,
        run_config: dict[str, Any],
        round_timeout: float | None = None,
        run_id: int = 1,
        max_message_bytes: int | None = None,
    ) -> None:
        self.run_config = dict(run_config)
        self.round_timeout = round_timeout
        self.max_message_bytes = max_message_bytes  # None: derived (message_limit)
        self.largest_sent = 0  # bytes of the largest message sent to a client so far
        self.held_bytes = 0  # bytes held for incomplete replies, all streams (event loop's)
        self._benched: dict[int, tuple[int, float]] = {}  # node -> (timeouts, until when)
        self._run: Run = Run.create_empty(run_id)
        self._cond = threading.Condition()
        self._sessions: dict[int, Session] = {}  # nodes that said Ready: sampled
        self._claims: dict[int, Session] = {}  # the one live stream of each node
        self._pending: dict[str, _Pending] = {}
        self._replies: dict[str, Message] = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.refused = 0  # replies refused here (wrong type, stray)
        self.last_wire_bytes: tuple[int, int] | None = None
        self.monitor = Monitor()  # counts for Prometheus when the server serves them
        self.set_run(Run.create_empty(run_id))

    # ----- Flower's Grid -----
    def set_run(self, run: Run) -> None:
        """Set the run this grid serves (and the process's Flower task identity)."""
        self._run = run
        set_server_identity(run.run_id)  # a SuperLink would; Flower's Message() reads it

    @property
    def run(self) -> Run:
        """The current run."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new instruction message (Flower's deprecated helper, kept for old code)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Connected node ids, ordered by partition id then identity; a node that let a
        message time out is left out for a while (:meth:`_bench`)."""
        now = time.monotonic()
        with self._cond:
            live = [
                s for s in self._sessions.values() if self._benched.get(s.node_id, (0, 0))[1] <= now
            ]
            return [s.node_id for s in sorted(live, key=Session.order)]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Send each message to its node's stream now; return the message ids."""
        cache: dict[tuple[str, int], list[bytes]] = {}
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            with self._cond:
                session = self._sessions.get(msg.metadata.dst_node_id)
                if session is None:
                    self._fail(mid, msg, ErrorCode.NODE_UNAVAILABLE, "node is not connected")
                    ids.append(mid)
                    continue
                self._pending[mid] = _Pending(msg, session)
                session.outstanding += 1
            parts = message_parts(msg, cache)
            self.largest_sent = max(self.largest_sent, sum(len(p) for p in parts))
            session.send(("msg", parts))
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Replies that have arrived for ``message_ids`` (each returned once)."""
        with self._cond:
            return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send, wait (without polling) for every reply, return them in the order sent."""
        messages = list(messages)
        self.monitor.exchange_started(messages)
        before = (self.bytes_sent, self.bytes_received)
        ids = self.push_messages(messages)
        limits = [t for t in (timeout, self.round_timeout) if t is not None]
        deadline = time.monotonic() + min(limits) if limits else None
        with self._cond:
            while not all(m in self._replies for m in ids):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            for mid in ids:
                if mid not in self._replies and mid in self._pending:
                    pending = self._take(mid)
                    waited = min(limits)
                    self._bench(pending.session.node_id, waited)
                    self._fail(mid, pending.message, NO_REPLY, f"no reply within {waited} s")
            replies = [self._replies.pop(m) for m in ids]
        # Frames that crossed the wire during this exchange (fedlearn's TrackingGrid reads it).
        self.last_wire_bytes = (self.bytes_sent - before[0], self.bytes_received - before[1])
        self.monitor.exchange_done(replies)
        return replies

    # ----- called by the server -----
    def wait_for_nodes(self, count: int, timeout: float) -> int:
        """Block until ``count`` nodes are connected or ``timeout`` passes; return the count."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._sessions) < count and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return len(self._sessions)

    def claim(self, session: Session, stale_after: float) -> str | None:
        """Let ``session`` stand for its node, or say why not (in one line).

        A node has one stream. A second connection with the same identity (a leaked
        token, a copied certificate, a second process under one name) is refused
        while the first stream is alive; one whose stream has said nothing for
        ``stale_after`` seconds (a client that died without closing it) is closed
        and the newcomer takes its place.
        """
        with self._cond:
            old = self._claims.get(session.node_id)
            if old is not None and not old.closed:
                silent = time.monotonic() - old.last_seen
                if silent < stale_after:
                    return (
                        f"node {session.node_id} ({session.identity}) is already connected"
                        f" from {old.peer}; a second connection with its identity is refused"
                    )
            self._claims[session.node_id] = session
        if old is not None and not old.closed:
            log.info(
                "node %d (%s): its old stream is silent; a new one takes its place",
                old.node_id,
                old.identity,
            )
            self.unregister(old, "replaced by a new connection")
            old.send(("close", "replaced by a new connection"))
        return None

    def register(self, session: Session) -> None:
        """Add a connected node (its stream said Ready) unless another stream replaced it."""
        with self._cond:
            if self._claims.get(session.node_id) is not session or session.closed:
                return
            self._sessions[session.node_id] = session
            self._cond.notify_all()

    def unregister(self, session: Session, reason: str) -> None:
        """Drop a node whose stream ended; its pending messages get Error replies now."""
        with self._cond:
            if session.closed:
                return
            session.closed = True
            if self._sessions.get(session.node_id) is session:
                del self._sessions[session.node_id]
            if self._claims.get(session.node_id) is session:
                del self._claims[session.node_id]
            lost = [m for m, p in self._pending.items() if p.session is session]
            for mid in lost:
                self._fail(
                    mid,
                    self._take(mid).message,
                    ErrorCode.NODE_UNAVAILABLE,
                    f"client disconnected: {reason}",
                )
            self._cond.notify_all()
        if lost:
            log.warning(
                "node %d (%s) dropped from %d pending message(s): %s",
                session.node_id,
                session.identity,
                len(lost),
                reason,
            )

    def deliver(self, session: Session, reply: Message) -> str | None:
        """Hand a client's reply to the waiting strategy; return why it was refused, if it was."""
        mid = reply.metadata.reply_to_message_id
        with self._cond:
            pending = self._pending.get(mid)
            if pending is None or pending.session is not session:
                self.refused += 1
                return f"reply to unknown or expired message {mid!r} ignored"
            sent = self._take(mid).message
            self._benched.pop(session.node_id, None)  # it answers in time again
            if reply.metadata.message_type != sent.metadata.message_type:
                self.refused += 1
                why = (
                    f"reply of type {reply.metadata.message_type!r} to a"
                    f" {sent.metadata.message_type!r} message"
                )
                self._fail(mid, sent, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, why)
                self._cond.notify_all()
                return why
            # The stream's authenticated node is the source, whatever the client wrote.
            reply.metadata.__dict__["_src_node_id"] = session.node_id
            self._replies[mid] = reply
            self._cond.notify_all()
            return None

    def finish(self, reason: str) -> list[Session]:
        """Tell every connected client that the run is over."""
        with self._cond:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.send(("finish", reason))
        return sessions

    def note_refused(self) -> None:
        """Count a reply the server dropped before it reached the grid."""
        with self._cond:
            self.refused += 1

    def message_limit(self) -> int:
        """Largest reply accepted now: ``max_message_bytes``, or twice the largest message
        sent so far plus 1 MiB (a reply carries the model back, SCAFFOLD's correction too)."""
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        return 2 * self.largest_sent + (1 << 20)

    def _take(self, mid: str) -> _Pending:
        """Remove a pending message (caller holds the lock)."""
        pending = self._pending.pop(mid)
        pending.session.outstanding -= 1
        return pending

    def _bench(self, node: int, waited: float) -> None:
        """Leave out of sampling for a while a node that let a message time out (caller
        holds the lock): for as long as it was waited for, doubling with each timeout in
        a row (up to 8 times), until it answers a message in time. A node that streams
        part of a reply and then only heartbeats costs one round timeout, not every round."""
        strikes = self._benched.get(node, (0, 0.0))[0] + 1
        pause = waited * 2 ** min(strikes - 1, 3)
        self._benched[node] = (strikes, time.monotonic() + pause)
        log.warning("node %d: no reply within %.1f s; not sampled for %.0f s", node, waited, pause)

    def _fail(self, mid: str, sent: Message, code: int, reason: str) -> None:
        """Store an Error reply for ``sent`` (caller holds the lock)."""
        reply = Message(Error(code=code, reason=reason), reply_to=sent)
        reply.metadata.__dict__["_src_node_id"] = sent.metadata.dst_node_id
        self._replies[mid] = reply
