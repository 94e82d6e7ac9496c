"""The in-process Grid's batched path: a ClientApp's batched handler, shares per worker,
one-at-a-time fallback, and the refusals of runtime.vectorize."""

from __future__ import annotations

import os

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.runtime import batched
from fedlearn.runtime.inprocess import CLIENT_EXCEPTION, InProcessGrid


class Handler:
    """Replies ``{"n": partition, "pid": process, "together": group length}``; node 2
    is refused unless forced; fails the whole group when it holds partition 3."""

    def refusal(self, context: Context, forced: bool) -> str | None:
        if context.node_config["partition-id"] == 2 and not forced:
            return "partition 2 is slower together"
        return None

    def run(self, messages, contexts, group_size):
        parts = [c.node_config["partition-id"] for c in contexts]
        if 3 in parts:
            raise RuntimeError("the group failed")
        for c in contexts:
            c.state["seen"] = MetricRecord({"together": len(messages)})
        return [
            None
            if msg.metadata.message_type == "query"
            else Message(
                RecordDict(
                    {"m": MetricRecord({"n": p, "pid": os.getpid(), "together": len(parts)})}
                ),
                reply_to=msg,
            )
            for msg, p in zip(messages, parts, strict=True)
        ]


def _app() -> ClientApp:
    app = ClientApp()

    def alone(msg: Message, context: Context) -> Message:
        if context.node_config["partition-id"] == 3:
            raise RuntimeError("client 3 failed")
        metrics = {"n": context.node_config["partition-id"], "pid": os.getpid(), "together": 0}
        return Message(RecordDict({"m": MetricRecord(metrics)}), reply_to=msg)

    app.train()(alone)
    app.query()(alone)
    return batched.offer(app, Handler())


def _grid(nodes: int, **kwargs) -> InProcessGrid:
    configs = [{"partition-id": i, "num-partitions": nodes} for i in range(nodes)]
    return InProcessGrid(_app(), configs, {}, **kwargs)


def _messages(grid: InProcessGrid, kind: str = "train") -> list[Message]:
    content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({})})
    return [Message(content, node, kind) for node in grid.get_node_ids()]


@pytest.mark.parametrize("workers", [1, 2])
def test_batched_nodes_go_together_others_alone_failures_one_at_a_time(workers):
    grid = _grid(6, workers=workers)
    try:
        replies = list(grid.send_and_receive(_messages(grid)))
        metrics = [r.content["m"] if not r.has_error() else None for r in replies]
        assert [m["n"] for m in metrics if m] == [0, 1, 2, 4, 5]
        assert metrics[2]["together"] == 0  # refused under auto: alone
        assert replies[3].has_error() and replies[3].error.code == CLIENT_EXCEPTION
        assert "client 3 failed" in replies[3].error.reason
        if workers == 1:  # one group of 0, 1, 3, 4, 5: it failed, all ran alone
            assert all(m["together"] == 0 for m in metrics if m)
            assert "seen" not in grid.contexts[1000].state
        else:  # shares 0, 1 | 3, 4, 5: the first ran together, in a worker
            assert [metrics[i]["together"] for i in (0, 1, 4, 5)] == [2, 2, 0, 0]
            assert metrics[0]["pid"] != os.getpid()
            assert int(grid.contexts[1000].state["seen"]["together"]) == 2
    finally:
        grid.close()


def test_messages_the_handler_does_not_take_run_alone():
    grid = _grid(2, workers=1)
    replies = list(grid.send_and_receive(_messages(grid, "query")))
    assert [r.content["m"]["together"] for r in replies] == [0, 0]


def test_forced_vectorize_uses_the_handler_for_every_node():
    grid = _grid(3, workers=1, vectorize=True)
    assert grid.batched_nodes == set(grid.get_node_ids())
    replies = list(grid.send_and_receive(_messages(grid)))
    assert [r.content["m"]["together"] for r in replies] == [3, 3, 3]


def test_vectorize_false_never_uses_the_handler():
    grid = _grid(3, workers=1, vectorize=False)
    assert grid.batched_nodes == set()


def test_refusals_are_one_line():
    class Refusing(Handler):
        def refusal(self, context, forced):
            return "model=X has dropout"

    configs = [{"partition-id": 0, "num-partitions": 1}]
    app = batched.offer(ClientApp(), Refusing())
    with pytest.raises(
        ValueError, match=r"^runtime.vectorize=true: model=X has dropout; use auto or false$"
    ):
        InProcessGrid(app, configs, {}, vectorize=True)
    with pytest.raises(
        ValueError, match="^runtime.vectorize=true: this ClientApp has no batched handler$"
    ):
        InProcessGrid(ClientApp(), configs, {}, vectorize="true")
    with pytest.raises(ValueError, match="^runtime.vectorize=maybe: allowed: auto, true, false$"):
        InProcessGrid(app, configs, {}, vectorize="maybe")
    with pytest.raises(ValueError, match="^runtime.group_size must be >= 1 or null, got 0$"):
        InProcessGrid(app, configs, {}, group_size=0)
