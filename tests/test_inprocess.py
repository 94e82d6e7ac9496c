"""The in-process Grid: Context kept across rounds, content copied per client, errors as replies."""

from __future__ import annotations

import subprocess

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
