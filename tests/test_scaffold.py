"""SCAFFOLD: one aggregation step by hand, the client side, and a short simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.serverapp.exception import InconsistentMessageReplies
from torch import nn

from fedlearn import training
from fedlearn.app import client_strategies
from fedlearn.strategies.scaffold import CONTROL_KEY, DELTA_KEY, Scaffold
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


def _configured(server_lr: float = 1.0, fraction: float = 0.5) -> Scaffold:
    s = Scaffold(server_learning_rate=server_lr, fraction_train=fraction, min_train_nodes=1)
    msgs = list(s.configure_train(1, arrays(w=[1.0, 2.0]), ConfigRecord({"lr": 0.1}), FakeGrid(4)))
    assert len(msgs) == 2  # client sampling: half of 4 nodes
    assert all(len(m.content[CONTROL_KEY]) == 0 for m in msgs)  # c = 0 before any update
    return s


def _replies() -> list:
    # weights 1:3 -> avg y = 0.25*[0,2] + 0.75*[2,4] = [1.5, 3.5]
    return [
        reply(1, arrays(w=[0.0, 2.0]), 1, **{DELTA_KEY: arrays(w=[1.0, 1.0])}),
        reply(2, arrays(w=[2.0, 4.0]), 3, **{DELTA_KEY: arrays(w=[3.0, -1.0])}),
        error_reply(3),  # a failed client contributes nothing
    ]


def test_one_aggregation_step_by_hand() -> None:
    s = _configured()
    new, metrics = s.aggregate_train(1, _replies())
    np.testing.assert_allclose(values(new), [1.5, 3.5])
    # c += (1/N) * sum of deltas with N = 4 connected nodes: [4, 0] / 4
    np.testing.assert_allclose(s.control["w"], [1.0, 0.0])
    assert metrics["train_loss"] == pytest.approx(1.0)
    msgs = list(s.configure_train(2, new, ConfigRecord(), FakeGrid(4)))
    np.testing.assert_allclose(values(msgs[0].content[CONTROL_KEY]), [1.0, 0.0])


def test_server_learning_rate() -> None:
    s = _configured(server_lr=0.5)
    new, _ = s.aggregate_train(1, _replies())
    np.testing.assert_allclose(values(new), [1.0 + 0.5 * 0.5, 2.0 + 0.5 * 1.5])  # x + lr(avg - x)


def test_reply_without_delta_is_refused() -> None:
    s = _configured()
    with pytest.raises(InconsistentMessageReplies, match=DELTA_KEY):
        s.aggregate_train(1, [reply(1, arrays(w=[0.0, 0.0]), 1)])


def test_state_pickles_as_plain_attributes() -> None:
    import pickle

    s = _configured()
    s.aggregate_train(1, _replies())
    restored = pickle.loads(pickle.dumps(vars(s)))
    np.testing.assert_allclose(restored["control"]["w"], [1.0, 0.0])


def _one_step(model: nn.Module, side: client_strategies.ClientSide, lr: float) -> dict:
    x, y = torch.tensor([[1.0, -1.0]]), torch.tensor([0])
    settings = training.TrainSettings(lr=lr, batch_size=1, local_epochs=1)
    return training.train(
        model,
        x,
        y,
        settings,
        torch.device("cpu"),
        torch.Generator(),
        side.loss_terms,
        side.grad_terms,
    )


def test_client_correction_and_control_update() -> None:
    lr = 0.1
    torch.manual_seed(0)
    base = nn.Linear(2, 2)
    x0 = {k: v.clone() for k, v in base.state_dict().items()}
    plain = nn.Linear(2, 2)
    plain.load_state_dict(x0)
    _one_step(plain, client_strategies.ClientSide(), lr)

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    c = {k: np.full(v.shape, 0.5, dtype=np.float32) for k, v in x0.items()}
    content = RecordDict({"config": ConfigRecord({"lr": lr}), CONTROL_KEY: arrays(**c)})
    settings = training.TrainSettings(lr=lr)
    params = dict(base.named_parameters())
    side = client_strategies.setup(content, ctx, params, settings, torch.device("cpu"))
    metrics = _one_step(base, side, lr)
    extra = side.finish(dict(base.named_parameters()), metrics)
    # One SGD step with gradient + (c - c_i) = + 0.5: y = y_plain - lr * 0.5
    for k, p in base.named_parameters():
        np.testing.assert_allclose(p.detach(), plain.state_dict()[k] - lr * 0.5, atol=1e-6)
        # c_i+ = c_i - c + (x - y) / (K lr) = 0 - 0.5 + (grad + 0.5) = grad; dc = c_i+ - 0
        x_minus_y = (x0[k] - p.detach()).numpy()
        expected = -0.5 + x_minus_y / lr
        np.testing.assert_allclose(extra[DELTA_KEY][k].numpy(), expected, atol=1e-5)
        pending = ctx.state["scaffold-ci" + client_strategies.PENDING]  # until aggregated
        np.testing.assert_allclose(pending[k].numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_in_process_runtime_with_sampling(tmp_path) -> None:
    result, lines, ckpt = simulate_small("scaffold", tmp_path / "w1")
    assert_learns(result, lines)
    control = ckpt["strategy"]["control"]
    assert control and any(np.abs(v).sum() > 0 for v in control.values())
    # Only clients that were sampled at least once hold a c_i (3 of 6 a round).
    holders = [n for n, st in ckpt["clients"].items() if "scaffold-ci" in st]
    assert 3 <= len(holders) <= 6
    assert set(ckpt["clients"][holders[0]]["scaffold-ci"].keys()) == set(control)
    # Client state survives worker processes: same run with 2 workers, same numbers.
    result2, _, _ = simulate_small("scaffold", tmp_path / "w2", "runtime.workers=2")
    assert result2["final"] == result["final"]


@pytest.mark.slow
def test_grpc_runtime_matches_in_process(tmp_path) -> None:
    assert_grpc_matches_inprocess("scaffold", tmp_path)


def test_corrects_client_drift_on_a_label_split() -> None:
    from flwr.serverapp.strategy import FedAvg

    fedavg = label_split_rounds(FedAvg(min_train_nodes=2), rounds=15, lr=1.0, steps=20)
    scaffold = label_split_rounds(Scaffold(min_train_nodes=2), rounds=15, lr=1.0, steps=20)
    assert scaffold < 0.8 * fedavg, (scaffold, fedavg)


def test_resume_equals_uninterrupted(tmp_path) -> None:
    assert_resume_matches("scaffold", tmp_path)
