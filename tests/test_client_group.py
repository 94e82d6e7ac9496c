"""fedlearn's batched handler on the in-process Grid: the same replies as one message at
a time, and a client whose message is bad fails alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ConfigRecord, Message, RecordDict

from fedlearn.app import client_app
from fedlearn.app.arrays import to_record
from fedlearn.app.run_config import client_run_config
from fedlearn.data import load_dataset
from fedlearn.experiment import _plain, compose_config, node_configs, train_config
from fedlearn.models import build_model
from fedlearn.runtime.inprocess import CLIENT_EXCEPTION, InProcessGrid
from tests.conftest import TINY


def _grid(cfg: dict, vectorize: bool) -> InProcessGrid:
    nodes, run_config = node_configs(cfg), client_run_config(cfg)
    return InProcessGrid(client_app.app, nodes, run_config, vectorize=vectorize)


def _messages(cfg: dict, grid: InProcessGrid, kind: str) -> list[Message]:
    torch.manual_seed(0)
    model = build_model(cfg["model"], load_dataset(cfg["dataset"]).spec)
    config = ConfigRecord({**train_config(cfg), "server-round": 1})
    content = RecordDict({"arrays": to_record(model.state_dict()), "config": config})
    return [Message(content, node, kind) for node in grid.get_node_ids()]


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_replies_equal_one_at_a_time(kind):
    cfg = _plain(compose_config([*TINY, "partitioner=dirichlet", "partitioner.alpha=0.5"]))
    replies = {}
    for vectorize in (False, True):
        grid = _grid(cfg, vectorize)
        replies[vectorize] = list(grid.send_and_receive(_messages(cfg, grid, kind)))
    for alone, together in zip(replies[False], replies[True], strict=True):
        assert together.metadata.reply_to_message_id and together.metadata.message_id
        assert together.content.keys() == alone.content.keys()
        a, b = alone.content["metrics"], together.content["metrics"]
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
        if kind == "train":
            for key, array in alone.content["arrays"].items():
                np.testing.assert_allclose(
                    together.content["arrays"][key].numpy(), array.numpy(), atol=1e-6, rtol=0
                )


def test_a_bad_message_fails_its_client_only(caplog):
    cfg = _plain(compose_config(TINY))
    grid = _grid(cfg, vectorize=True)
    messages = _messages(cfg, grid, "train")
    bad = Message(RecordDict(), messages[1].metadata.dst_node_id, "train")
    for key, record in messages[1].content.items():
        bad.content[key] = record
    bad.content["arrays"] = to_record({"features.0.weight": np.zeros((2, 2), np.float32)})
    bad.content["arrays"]["extra"] = Array(np.zeros(1, np.float32))
    replies = list(grid.send_and_receive([messages[0], bad, *messages[2:]]))
    assert [r.has_error() for r in replies] == [False, True, False, False]
    assert replies[1].error.code == CLIENT_EXCEPTION
    assert "received arrays do not match the model's parameters" in replies[1].error.reason
    assert "client node 1001 failed" in caplog.text
