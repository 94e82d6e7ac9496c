"""Where each client ran on a Ray cluster: ``ray-nodes.jsonl`` in the run folder.

A node's work runs in whichever Ray actor is free, on whichever machine of the
cluster, so where a client ran can only be seen there. :func:`tag_ray_node`
(a Flower mod on the node) adds the Ray node's id and IP address to each reply
as a reserved record; :class:`NodeRecordingGrid` (around the engine's Grid, on
the server: :func:`recording_nodes`) takes the record out before anything else
sees the reply and writes one line per reply::

    {"round": 1, "type": "train", "partition": 0, "ray_node": "5e3c...", "ip": "10.0.0.7"}

(``round`` is -1 and ``partition`` -1 for messages without them.)

The record travels in the message, not through a shared file system (a
cluster's machines have none in common), and it is taken out below fedlearn's
byte counting and the strategy, so metrics do not change.

Where clients run must not change a run's results either: Flower's engine
returns a round's replies in the order they finish, and a strategy adds them up
in that order (float sums: the model then differs in its last bits from run to
run). The grid hands them on in the order the messages were sent, as fedlearn's
other runtimes do, so a run on a cluster equals a run on one machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import ServerApp
from flwr.serverapp.grid import Grid

from fedlearn.runtime.base import DelegatingGrid

RECORD = "fedlearn.ray-node"
NODES_FILE = "ray-nodes.jsonl"


def tag_ray_node(msg: Message, context: Context, call_next):  # noqa: ANN001, ANN201
    """Flower mod: add this Ray node's id and IP address to the reply, with the round
    (the ``server-round`` Flower's strategies send) and the node's partition."""
    reply = call_next(msg, context)
    if reply.has_content():
        import ray

        rounds = [c["server-round"] for c in msg.content.config_records.values()
                  if "server-round" in c]  # fmt: skip
        where = ConfigRecord(
            {
                "round": int(rounds[0]) if rounds else -1,
                "partition": int(context.node_config.get("partition-id", -1)),
                "ray_node": ray.get_runtime_context().get_node_id(),
                "ip": ray.util.get_node_ip_address(),
            }
        )
        reply.content[RECORD] = where
    return reply


class NodeRecordingGrid(DelegatingGrid):
    """A Grid wrapper that moves each reply's Ray node record into ``run_dir/ray-nodes.jsonl``,
    and returns ``send_and_receive``'s replies in the order the messages were sent."""

    def __init__(self, inner: Grid, run_dir: Path) -> None:
        super().__init__(inner)
        self.path = Path(run_dir) / NODES_FILE

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._record(list(self.inner.pull_messages(message_ids)))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Replies in the order the messages were sent (the engine's: as they finish)."""
        sent = list(messages)  # the engine gives each its message id
        replies = self._record(list(self.inner.send_and_receive(sent, timeout=timeout)))
        order = {m.metadata.message_id: i for i, m in enumerate(sent)}
        return sorted(replies, key=lambda r: order.get(r.metadata.reply_to_message_id, len(sent)))

    def _record(self, replies: list[Message]) -> list[Message]:
        lines = []
        for reply in replies:
            if not reply.has_content() or RECORD not in reply.content:
                continue  # an error reply, or a node without the mod
            where = dict(reply.content.pop(RECORD))
            line = {"round": where.pop("round"), "type": reply.metadata.message_type, **where}
            lines.append(json.dumps(line) + "\n")
        if lines:
            with open(self.path, "a") as out:
                out.writelines(lines)
        return replies


def recording_nodes(server_app: ServerApp, run_dir: Path) -> ServerApp:
    """``server_app`` run on a :class:`NodeRecordingGrid` over the engine's Grid."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server_app(NodeRecordingGrid(grid, run_dir), context)

    return app


def read_nodes(run_dir: Path) -> list[dict]:
    """The lines of a run's ``ray-nodes.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / NODES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
