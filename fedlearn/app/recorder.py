"""The run folder of any Flower ServerApp, from what its Grid sees.

fedlearn's own ServerApp writes its run folder itself (:mod:`.server_app`). A
Flower app's ServerApp runs its own loop (``strategy.start``), so
:func:`recorded` wraps it: the app gets a :class:`RoundRecorder` over the
runtime's Grid (through :class:`~fedlearn.app.tracking.TrackingGrid`, so
updates holding NaN/Inf are refused as for fedlearn's app), which groups the
messages by round and writes one ``metrics.jsonl`` line per round when the next
round starts, when the app returns, or when it stops between two exchanges.

A message's round is its ``group_id`` (what Flower's legacy strategies set),
else the ``server-round`` its ConfigRecord carries (what Flower's Message-API
strategies send); messages with neither start a new round when a train message
follows an evaluate one. A line holds clients sampled / succeeded / failed,
bytes both ways, seconds, and the metrics in the replies (averaged, weighted by
``num-examples`` when every reply has it, Flower's convention). ``result.json``
says how the run ended: ``completed``, ``failed`` (the ServerApp raised) or
``interrupted``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedlearn import records
from fedlearn.app.tracking import TrackingGrid, payload_bytes
from fedlearn.runtime.base import DelegatingGrid

WEIGHT = "num-examples"
ROUND = "server-round"  # the ConfigRecord key of Flower's Message-API strategies


def round_of(msg: Message) -> str:
    """The round ``msg`` belongs to: its group_id, else its config's ``server-round``."""
    if msg.metadata.group_id:
        return str(msg.metadata.group_id)
    if msg.has_content():
        for record in msg.content.config_records.values():
            if ROUND in record:
                return str(record[ROUND])
    return ""


@dataclass
class AppRecord:
    """A Flower app's run: where its lines go and how it ended (``ServerSetup``'s twin).

    Attributes
    ----------
    run_dir : Path
        The run folder.
    name : str
        The app's name (its ``[project] name``).
    run_config : dict
        The run config the app runs with, recorded in result.json.
    num_rounds : int, optional
        Rounds the app will run (its ``num-server-rounds``), for the progress display.
    on_round : callable, optional
        Called with each metrics line.
    """

    run_dir: Path
    name: str
    run_config: dict[str, Any] = field(default_factory=dict)
    num_rounds: int | None = None
    on_round: Callable[[dict[str, Any]], None] | None = None
    result: dict[str, Any] = field(default_factory=dict)


def mean_metrics(replies: list[Message]) -> dict[str, Any]:
    """The metrics of ``replies`` averaged, weighted by ``num-examples`` when every
    reply has it (then summed itself); plain means otherwise."""
    rows = []
    for reply in replies:
        row: dict[str, float] = {}
        for record in reply.content.metric_records.values():
            row.update({k: v for k, v in record.items() if isinstance(v, int | float)})
        rows.append(row)
    if not rows:
        return {}
    weighted = all(isinstance(r.get(WEIGHT), int | float) for r in rows)
    weights = [float(r[WEIGHT]) if weighted else 1.0 for r in rows]
    out: dict[str, Any] = {}
    for key in sorted({k for r in rows for k in r}):
        pairs = [(r[key], w) for r, w in zip(rows, weights, strict=True) if key in r]
        total = sum(w for _, w in pairs)
        if weighted and key == WEIGHT:
            out[key] = sum(v for v, _ in pairs)
        elif total > 0:
            out[key] = sum(v * w for v, w in pairs) / total
    return out


@dataclass
class _Round:
    group: str
    started: float = field(default_factory=time.perf_counter)
    sent: dict[str, int] = field(default_factory=dict)  # messages per category
    ok: dict[str, list[Message]] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0

    def add(self, messages: list[Message], replies: list[Message], wire: tuple[int, int]) -> None:
        for msg in messages:
            kind = msg.metadata.message_type.split(".")[0]
            self.sent[kind] = self.sent.get(kind, 0) + 1
        for reply in replies:
            if not reply.has_error():
                kind = reply.metadata.message_type.split(".")[0]
                self.ok.setdefault(kind, []).append(reply)
        self.bytes_sent += wire[0]
        self.bytes_received += wire[1]

    def line(self, number: int) -> dict[str, Any]:
        train, evaluate = self.ok.get("train", []), self.ok.get("evaluate", [])
        line: dict[str, Any] = {
            "round": number,
            "sampled": self.sent.get("train", 0),
            "succeeded": len(train),
            "failed": self.sent.get("train", 0) - len(train),
            "train": mean_metrics(train),
            "evaluate": mean_metrics(evaluate),
            "eval_failed": self.sent.get("evaluate", 0) - len(evaluate),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": time.perf_counter() - self.started,
        }
        if not self.group.isdigit():
            line["group"] = self.group
        return line


class RoundRecorder(DelegatingGrid):
    """Delegate to the runtime's Grid; write one metrics line per message group."""

    def __init__(self, inner: Grid, record: AppRecord) -> None:
        self.tracking = TrackingGrid(inner)
        super().__init__(self.tracking)
        self.record = record
        self.rounds = 0
        self._open: _Round | None = None
        self._busy = False  # an exchange is under way: the open round is not whole
        self._lock = threading.Lock()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        sent = sum(payload_bytes(m.content) for m in messages if m.has_content())
        self._round(messages).add(messages, [], (sent, 0))
        return self.tracking.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.tracking.pull_messages(message_ids))
        got = sum(payload_bytes(r.content) for r in replies if r.has_content())
        if self._open is not None:
            self._open.add([], replies, (0, got))
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        current = self._round(messages)
        self._busy = True
        replies = list(self.tracking.send_and_receive(messages, timeout=timeout))
        self._busy = False
        last = self.tracking.last
        current.add(messages, replies, (last.bytes_sent, last.bytes_received))
        return replies

    def _round(self, messages: list[Message]) -> _Round:
        """The open round, after closing the previous one if these messages start one."""
        current = self._open
        if not messages:
            return current or self._start("")
        group = round_of(messages[0])
        train = messages[0].metadata.message_type.split(".")[0] == "train"
        unnamed_next = group == "" and train and "evaluate" in (current.sent if current else {})
        if current is None or group != current.group or unnamed_next:
            return self._start(group)
        return current

    def _start(self, group: str) -> _Round:
        self.close_round()
        self._open = _Round(group)
        return self._open

    def close_round(self) -> None:
        """Write the open round's line (a round is over when the next starts, or at the end)."""
        with self._lock:
            current, self._open = self._open, None
            if current is None or not (current.sent or current.ok):
                return
            self.rounds += 1
            number = int(current.group) if current.group.isdigit() else self.rounds
            line = current.line(number)
            records.append_metrics(self.record.run_dir, line)
        if self.record.on_round is not None:
            self.record.on_round(line)

    def stop(self) -> None:
        """The app stopped (raised, or Ctrl-C): keep the open round's line unless one of
        its exchanges was cut short (its counts would not be whole)."""
        if self._busy:
            self._open = None
        self.close_round()


def finish(record: AppRecord, status: str, error: str | None, wall: float) -> dict[str, Any]:
    """Write result.json from the run folder's lines; the summary written."""
    if record.result:  # already written (a Ctrl-C seen by both the app and the runtime)
        return record.result
    lines = [m for m in records.read_metrics(record.run_dir) if m.get("round", 0) > 0]
    evaluated = [m["evaluate"] for m in lines if m.get("evaluate")]
    record.result = {
        "status": status,
        "app": record.name,
        "rounds_completed": max((m["round"] for m in lines), default=0),
        "num_rounds": record.num_rounds,
        "final": {},  # central evaluation happens inside the app, out of fedlearn's sight
        "best": {},
        "final_evaluate": evaluated[-1] if evaluated else {},
        "wall_seconds": wall,
        "round_seconds": sum(m.get("seconds", 0.0) for m in lines),
        "error": error,
        "bytes_sent": sum(m.get("bytes_sent", 0) for m in lines),
        "bytes_received": sum(m.get("bytes_received", 0) for m in lines),
        "run_config": record.run_config,
    }
    records.write_json(record.run_dir / records.RESULT, record.result)
    return record.result


def recorded(server_app: ServerApp, record: AppRecord) -> ServerApp:
    """``server_app`` writing ``record``'s run folder from what its Grid sees."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        t0 = time.perf_counter()
        recorder = RoundRecorder(grid, record)
        status, error = "completed", None
        try:
            server_app(recorder, context)
            recorder.close_round()
        except KeyboardInterrupt:
            recorder.stop()
            status = "interrupted"
            raise
        except BaseException as exc:
            recorder.stop()
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            finish(record, status, error, time.perf_counter() - t0)

    return app
