"""Client state kept by the server and carried in the messages (the Ray runtime's way).

Exercised over the in-process Grid, whose node ids a test can change at will: a
"restart" gives every node a new id, as Flower's Ray engine does.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.app.tracking import TrackingGrid
from fedlearn.runtime.base import ModdedClientApp
from fedlearn.runtime.carry import MARK, PREFIX, StateCarryingGrid, carry_state
from fedlearn.runtime.inprocess import InProcessGrid

NODES = [{"partition-id": i, "num-partitions": 3} for i in range(3)]


def _app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        assert not any(k.startswith(PREFIX) or k == MARK for k in msg.content)
        n = int(context.state["count"]["n"]) + 1 if "count" in context.state else 1
        context.state["count"] = MetricRecord({"n": n})
        reply = {"arrays": ArrayRecord(), "metrics": MetricRecord({"n": n})}  # fits the model sent
        return Message(RecordDict(reply), reply_to=msg)

    return app


def _grid(first_id: int) -> tuple[StateCarryingGrid, InProcessGrid]:
    inner = InProcessGrid(ModdedClientApp(_app(), [carry_state]), NODES, {})
    inner.contexts = {first_id + i: ctx for i, ctx in enumerate(inner.contexts.values())}
    for node, ctx in inner.contexts.items():
        ctx.node_id = node
    return StateCarryingGrid(inner), inner


def _round(grid) -> list[int]:
    content = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"lr": 0.1})})
    msgs = [Message(content, node, "train") for node in grid.get_node_ids()]
    return [int(r.content["metrics"]["n"]) for r in grid.send_and_receive(msgs)]


def test_state_is_carried_kept_on_the_server_and_restored_after_a_restart() -> None:
    grid, inner = _grid(first_id=10)
    assert _round(grid) == [1, 1, 1] and _round(grid) == [2, 2, 2]
    # The nodes' own Contexts stay empty: the state travels in the messages only.
    assert all(len(ctx.state) == 0 for ctx in inner.contexts.values())
    saved = grid.client_states()
    assert sorted(saved) == ["partition-0", "partition-1", "partition-2"]
    # A restart: new node ids, nothing in the nodes; the saved states come back.
    grid, _ = _grid(first_id=500)
    grid.load_client_states(saved)
    assert _round(grid) == [3, 3, 3]


def test_reserved_records_are_not_counted_as_traffic() -> None:
    plain = TrackingGrid(InProcessGrid(_app(), NODES, {}))
    carried, _ = _grid(first_id=10)
    carried = TrackingGrid(carried)
    for _ in range(2):  # the second round carries a state both ways
        _round(plain), _round(carried)
    assert (carried.last.bytes_sent, carried.last.bytes_received) == (
        plain.last.bytes_sent,
        plain.last.bytes_received,
    )


def test_an_error_reply_keeps_the_previous_state() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        context.state["x"] = MetricRecord({"v": float(msg.content["config"]["v"])})
        if msg.content["config"]["v"] > 1:
            raise RuntimeError("crash after touching the state")
        return Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=msg)

    grid = StateCarryingGrid(InProcessGrid(ModdedClientApp(app, [carry_state]), NODES[:1], {}))
    for v in (1, 2):
        content = RecordDict({"config": ConfigRecord({"v": v})})
        (reply,) = grid.send_and_receive([Message(content, grid.get_node_ids()[0], "train")])
    assert reply.has_error()
    assert grid.client_states()["partition-0"]["x"]["v"] == 1.0


def test_node_ids_are_listed_in_partition_order_whatever_the_ids() -> None:
    # Flower's engine draws random node ids; strategies sample from this list.
    grid, inner = _grid(first_id=10)
    shuffled = {5: inner.contexts[11], 13: inner.contexts[12], 20: inner.contexts[10]}
    for node, ctx in shuffled.items():
        ctx.node_id = node
    inner.contexts = shuffled
    assert list(inner.get_node_ids()) == [5, 13, 20]  # partitions 1, 2, 0
    assert grid.get_node_ids() == [20, 5, 13]
