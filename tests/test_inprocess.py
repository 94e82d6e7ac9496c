"""The in-process Grid: Context kept across rounds, content copied per client, errors as replies."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.runtime.inprocess import CLIENT_EXCEPTION, FIRST_NODE_ID, InProcessGrid
from tests.conftest import SIMULATE


def _counting_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        seen = int(context.state["count"]["n"]) if "count" in context.state else 0
        context.state["count"] = MetricRecord({"n": seen + 1})
        msg.content["config"]["mutated"] = True  # must not leak to other clients
        if context.node_config["partition-id"] == 2:
            raise RuntimeError("boom")
        return Message(RecordDict({"metrics": MetricRecord({"n": seen + 1})}), reply_to=msg)

    return app


def _messages(grid: InProcessGrid) -> list[Message]:
    shared = RecordDict({"arrays": ArrayRecord(), "config": ConfigRecord({"lr": 0.1})})
    return [Message(shared, node, "train") for node in grid.get_node_ids()]


@pytest.mark.parametrize("workers", [1, 2])
def test_context_persists_content_is_copied_errors_become_replies(workers: int) -> None:
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    grid = InProcessGrid(_counting_app(), nodes, {"seed": 0}, workers=workers)
    try:
        for expected in (1, 2):
            msgs = _messages(grid)
            replies = list(grid.send_and_receive(msgs))
            assert "mutated" not in msgs[0].content["config"]
            assert [r.metadata.src_node_id for r in replies] == [
                FIRST_NODE_ID + i for i in range(3)
            ]
            assert [r.content["metrics"]["n"] for r in replies[:2]] == [expected, expected]
            assert replies[2].has_error() and replies[2].error.code == CLIENT_EXCEPTION
            assert "boom" in replies[2].error.reason
            assert all(r.metadata.reply_to_message_id for r in replies)
        assert int(grid.client_states()[str(FIRST_NODE_ID)]["count"]["n"]) == 2
    finally:
        grid.close()


def _stuck_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:  # noqa: ARG001
        time.sleep(120)  # a client that would hold a waiting shutdown for minutes
        return Message(RecordDict(), reply_to=msg)

    return app


def test_close_without_waiting_stops_workers_mid_client_at_once() -> None:
    # An interrupted run must not wait for (or hang on) what its workers are doing.
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(_stuck_app(), nodes, {"seed": 0}, workers=2)
    raised: list[BaseException] = []

    def run_round() -> None:
        try:
            grid.send_and_receive(_messages(grid))
        except BaseException as exc:  # noqa: BLE001 - what the round ended with, checked below
            raised.append(exc)

    round_ = threading.Thread(target=run_round, daemon=True)
    round_.start()
    deadline = time.monotonic() + 30
    while not (grid._pool and len(grid._pool._processes) == 2):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    workers = list(grid._pool._processes.values())
    time.sleep(0.5)  # both are inside their client now
    t0 = time.monotonic()
    grid.close(wait=False)
    assert time.monotonic() - t0 < 10
    assert not any(w.is_alive() for w in workers)
    round_.join(timeout=10)  # the round ends too (its pool is broken), instead of waiting
    assert not round_.is_alive() and isinstance(raised[0], BrokenProcessPool)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="runtime.workers must be >= 1"):
        InProcessGrid(_counting_app(), [{}], {}, workers=0)


@pytest.mark.slow
def test_cli_multirun_gives_one_folder_per_combination(tmp_path) -> None:
    proc = subprocess.run(
        [
            *SIMULATE,
            "-m",
            "strategy=fedavg,fedadam",
            "seed=0,1",
            "num_rounds=1",
            "dataset.max_samples=300",
            "num_clients=4",
            "runtime.workers=1",
            "progress=false",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(tmp_path.glob("*/result.json"))) == 4
