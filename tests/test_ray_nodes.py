"""Each reply's Ray node is moved from the message into the run folder's ray-nodes.jsonl."""

from __future__ import annotations

import json
import sys
import types

from flwr.app import ConfigRecord, Context, Error, Message, Metadata, MetricRecord, RecordDict

from fedlearn.runtime import ray_nodes
from fedlearn.runtime.base import DelegatingGrid


def message(kind: str = "train", content: RecordDict | None = None) -> Message:
    meta = Metadata(1, "m1", 0, 7, "", "", 0.0, 60.0, kind)
    return Message(metadata=meta, content=content or RecordDict())


class FakeGrid(DelegatingGrid):
    """Flower's Grid as the engine's: replies made afresh for every call."""

    def __init__(self, replies) -> None:
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):
        return self.replies()


def test_mod_tags_replies_with_the_ray_node(monkeypatch):
    fake = types.SimpleNamespace(
        get_runtime_context=lambda: types.SimpleNamespace(get_node_id=lambda: "abc123"),
        util=types.SimpleNamespace(get_node_ip_address=lambda: "10.0.0.7"),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    context = Context(1, 7, {"partition-id": 3}, RecordDict(), {})
    metrics = RecordDict({"metrics": MetricRecord({"loss": 1.0})})
    sent = message(content=RecordDict({"config": ConfigRecord({"server-round": 4})}))
    reply = ray_nodes.tag_ray_node(sent, context, lambda m, c: Message(metrics, reply_to=m))
    assert dict(reply.content[ray_nodes.RECORD]) == {
        "round": 4,
        "partition": 3,
        "ray_node": "abc123",
        "ip": "10.0.0.7",
    }
    failed = ray_nodes.tag_ray_node(
        message(), context, lambda m, c: Message(Error(1, "boom"), reply_to=m)
    )
    assert not failed.has_content()


def test_grid_moves_the_record_into_the_run_folder(tmp_path):
    def replies() -> list[Message]:
        where = ConfigRecord({"round": 2, "partition": 0, "ray_node": "n1", "ip": "10.0.0.1"})
        tagged = RecordDict({"metrics": MetricRecord({"a": 1.0}), ray_nodes.RECORD: where})
        plain = RecordDict({"metrics": MetricRecord({"a": 2.0})})
        error = Message(Error(1, "boom"), reply_to=message())
        return [message(content=tagged), message("evaluate", plain), error]

    grid = ray_nodes.NodeRecordingGrid(FakeGrid(replies), tmp_path)
    replies = grid.send_and_receive([])
    assert [list(r.content.keys()) if r.has_content() else None for r in replies] == [
        ["metrics"],
        ["metrics"],
        None,
    ]
    assert ray_nodes.read_nodes(tmp_path) == [
        {"round": 2, "type": "train", "partition": 0, "ray_node": "n1", "ip": "10.0.0.1"}
    ]
    grid.send_and_receive([])  # the next round appends
    lines = (tmp_path / ray_nodes.NODES_FILE).read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["ip"] == "10.0.0.1"


def test_replies_come_back_in_the_order_sent():
    sent = [message(content=RecordDict({"config": ConfigRecord({"k": k})})) for k in range(3)]

    class Finishing(DelegatingGrid):  # the engine: replies as the nodes finish
        def __init__(self) -> None:
            pass

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            for k, msg in enumerate(messages):
                msg.metadata.__dict__["_message_id"] = f"id-{k}"
            done = [Message(RecordDict({"metrics": MetricRecord({"k": k})}), reply_to=m)
                    for k, m in enumerate(messages)]  # fmt: skip
            return [done[2], done[0], done[1]]

    replies = ray_nodes.NodeRecordingGrid(Finishing(), "/nonexistent").send_and_receive(sent)
    assert [r.content["metrics"]["k"] for r in replies] == [0, 1, 2]
