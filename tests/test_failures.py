"""Client failures: a crash or a NaN update costs that client the round, not the run."""

from __future__ import annotations

import json

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from omegaconf import OmegaConf

from fedlearn import records
from fedlearn.app import client_app as fedlearn_client
from fedlearn.app.run_config import client_run_config
from fedlearn.app.server_app import run_rounds
from fedlearn.experiment import build_setup, compose_config, node_configs
from fedlearn.runtime.inprocess import InProcessGrid
from tests.conftest import TINY


def _app(misbehave) -> ClientApp:
    """fedlearn's ClientApp, except where ``misbehave(partition, reply)`` steps in."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = fedlearn_client.train(msg, context)
        return misbehave(int(context.node_config["partition-id"]), reply)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return fedlearn_client.evaluate(msg, context)

    return app


def _run(tmp_path, misbehave, extra=(), workers=1):
    cfg = OmegaConf.to_container(compose_config([*TINY, *extra]), resolve=True)
    setup = build_setup(cfg, tmp_path)
    grid = InProcessGrid(
        _app(misbehave), node_configs(cfg), client_run_config(cfg), workers=workers
    )
    try:
        return run_rounds(setup, grid)
    finally:
        grid.close()


def crash_partition_1(partition: int, reply: Message) -> Message:
    if partition == 1:
        raise RuntimeError("simulated client crash")
    return reply


def test_crashing_client_is_tolerated(tmp_path) -> None:
    result = _run(tmp_path, crash_partition_1)
    assert result["status"] == "completed"
    lines = records.read_metrics(tmp_path)[1:]
    assert [(m["succeeded"], m["failed"]) for m in lines] == [(3, 1), (3, 1)]


def test_crashing_client_in_a_worker_process(tmp_path) -> None:
    result = _run(tmp_path, crash_partition_1, workers=2)
    assert result["status"] == "completed"
    assert all(m["failed"] == 1 for m in records.read_metrics(tmp_path)[1:])


def nan_from_partition_2(partition: int, reply: Message) -> Message:
    if partition != 2:
        return reply
    arrays = reply.content["arrays"].to_numpy_ndarrays()
    arrays[0] = np.full_like(arrays[0], np.nan)
    keys = list(reply.content["arrays"].keys())
    content = RecordDict(
        {
            "arrays": ArrayRecord(dict(zip(keys, arrays, strict=True))),
            "metrics": reply.content["metrics"],
        }
    )
    return Message(content=content, reply_to=_original(reply))


def _original(reply: Message) -> Message:
    # A reply's reply: rebuild the instruction it answers from its metadata.
    msg = Message(RecordDict(), reply.metadata.src_node_id, reply.metadata.message_type)
    msg.metadata.__dict__["_message_id"] = reply.metadata.reply_to_message_id
    msg.metadata.__dict__["_run_id"] = reply.metadata.run_id
    return msg


def test_nan_update_is_rejected_and_counted(tmp_path) -> None:
    result = _run(tmp_path, nan_from_partition_2)
    assert result["status"] == "completed"
    assert np.isfinite(result["final"]["loss"])
    assert all(m["failed"] == 1 for m in records.read_metrics(tmp_path)[1:])


def test_too_few_successes_stop_cleanly(tmp_path) -> None:
    def crash_most(partition: int, reply: Message) -> Message:
        if partition > 0:
            raise RuntimeError("down")
        return reply

    result = _run(tmp_path, crash_most)  # FedAvg needs min_train_nodes=2
    assert result["status"] == "stopped"
    assert "1 of 4 clients succeeded" in result["error"]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "stopped" and (tmp_path / "model.pt").exists()
    assert [m["round"] for m in records.read_metrics(tmp_path)] == [0]
