"""FedDyn: two server steps by hand and the client's regularized objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from torch import nn

from fedlearn import training
from fedlearn.app import client_strategies
from fedlearn.strategies.feddyn import ALPHA_KEY, FedDyn
from tests.strategy_helpers import (
    FakeGrid,
    arrays,
    assert_grpc_matches_inprocess,
    assert_learns,
    assert_resume_matches,
    error_reply,
    label_split_rounds,
    reply,
    simulate_small,
    task_identity,  # noqa: F401 - autouse fixture
    values,
)


def test_two_aggregation_steps_by_hand() -> None:
    s = FedDyn(alpha=0.1, fraction_train=0.5, min_train_nodes=1)
    msgs = list(s.configure_train(1, arrays(w=[1.0, 2.0]), ConfigRecord({"lr": 0.1}), FakeGrid(4)))
    assert len(msgs) == 2 and msgs[0].content["config"][ALPHA_KEY] == pytest.approx(0.1)
    new, _ = s.aggregate_train(
        1,
        [
            reply(1, arrays(w=[0.0, 2.0]), 1),
            reply(2, arrays(w=[2.0, 4.0]), 3),
            error_reply(3),
        ],
    )
    # avg = [1.5, 3.5]; |S|/m = 2/4; h = -0.1 * 0.5 * (avg - x) = [-0.025, -0.075]
    np.testing.assert_allclose(s.h["w"], [-0.025, -0.075], rtol=1e-6)
    # x = avg - h / alpha = [1.75, 4.25]
    np.testing.assert_allclose(values(new), [1.75, 4.25], rtol=1e-6)
    # Round 2: clients return x unchanged; h stays, the model keeps the correction.
    s.configure_train(2, new, ConfigRecord(), FakeGrid(4))
    new2, _ = s.aggregate_train(2, [reply(1, new, 1), reply(2, new, 3)])
    np.testing.assert_allclose(values(new2), [2.0, 5.0], rtol=1e-6)


def test_client_objective_and_state() -> None:
    alpha, lr = 0.1, 0.1
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    x0 = {k: v.clone() for k, v in model.state_dict().items()}
    plain = nn.Linear(2, 2)
    plain.load_state_dict(x0)
    data_x, data_y = torch.tensor([[1.0, -1.0]]), torch.tensor([1])
    settings = training.TrainSettings(lr=lr, batch_size=1)
    cpu = torch.device("cpu")
    training.train(plain, data_x, data_y, settings, cpu, torch.Generator())

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    g = {k: np.full(v.shape, 2.0, dtype=np.float32) for k, v in x0.items()}
    ctx.state[client_strategies.FEDDYN_STATE] = arrays(**g)
    content = RecordDict({"config": ConfigRecord({ALPHA_KEY: alpha})})
    side = client_strategies.setup(content, ctx, dict(model.named_parameters()), settings, cpu)
    metrics = training.train(
        model, data_x, data_y, settings, cpu, torch.Generator(), side.loss_terms, side.grad_terms
    )
    assert side.finish(dict(model.named_parameters()), metrics) == {}
    for k, p in model.named_parameters():
        # At theta = x the quadratic's gradient is 0; the linear term adds -g: y = y_plain + lr g
        np.testing.assert_allclose(p.detach(), plain.state_dict()[k] + lr * 2.0, atol=1e-6)
        # g <- g - alpha (y - x)
        expected = 2.0 - alpha * (p.detach() - x0[k]).numpy()
        pending = ctx.state[client_strategies.FEDDYN_STATE + client_strategies.PENDING]
        np.testing.assert_allclose(pending[k].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_in_process_runtime_with_sampling(tmp_path) -> None:
    result, lines, ckpt = simulate_small("feddyn", tmp_path)
    assert_learns(result, lines)
    assert any(np.abs(v).sum() > 0 for v in ckpt["strategy"]["h"].values())
    holders = [n for n, st in ckpt["clients"].items() if client_strategies.FEDDYN_STATE in st]
    assert 3 <= len(holders) <= 6


@pytest.mark.slow
def test_grpc_runtime_matches_in_process(tmp_path) -> None:
    assert_grpc_matches_inprocess("feddyn", tmp_path)


def test_corrects_client_drift_on_a_label_split() -> None:
    from flwr.serverapp.strategy import FedAvg

    fedavg = label_split_rounds(FedAvg(min_train_nodes=2), rounds=15, lr=1.0, steps=20)
    feddyn = label_split_rounds(FedDyn(alpha=0.01, min_train_nodes=2), rounds=15, lr=1.0, steps=20)
    assert feddyn < 0.8 * fedavg, (feddyn, fedavg)


def test_resume_equals_uninterrupted(tmp_path) -> None:
    assert_resume_matches("feddyn", tmp_path)
