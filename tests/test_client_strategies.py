"""Client state of SCAFFOLD and FedDyn changes only with updates the server aggregated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from torch import nn

from fedlearn import training
from fedlearn.app import client_strategies as cs
from fedlearn.strategies.scaffold import CONTROL_KEY
from tests.strategy_helpers import arrays, task_identity  # noqa: F401 - autouse fixture


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _train_once(ctx: Context, rnd: int, commit: ConfigRecord | None = None) -> np.ndarray:
    """One SCAFFOLD client step at round ``rnd`` (server c = 0.5), told ``commit``;
    the trained weight (corrected by c - c_i)."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    c = {k: np.full(v.shape, 0.5, np.float32) for k, v in model.state_dict().items()}
    content = RecordDict(
        {"config": ConfigRecord({"lr": 0.1, "server-round": rnd}), CONTROL_KEY: arrays(**c)}
    )
    if commit is not None:
        content[cs.COMMIT_KEY] = commit
    settings = training.TrainSettings(lr=0.1, batch_size=1)
    cpu = torch.device("cpu")
    side = cs.setup(content, ctx, dict(model.named_parameters()), settings, cpu)
    x, y = torch.tensor([[1.0, -1.0]]), torch.tensor([0])
    metrics = training.train(
        model, x, y, settings, cpu, torch.Generator(), side.loss_terms, side.grad_terms
    )
    side.finish(dict(model.named_parameters()), metrics)
    return model.weight.detach().numpy().copy()


def _told(rnd: int, aggregated: bool) -> ConfigRecord:
    return ConfigRecord({"round": rnd, "aggregated": aggregated})


def test_new_state_is_pending_until_the_server_says_it_aggregated_the_update() -> None:
    ctx = _context()
    _train_once(ctx, 1)
    assert cs.SCAFFOLD_STATE not in ctx.state  # pending, tagged with its round
    assert int(ctx.state[cs.PENDING_ROUND]["round"]) == 1
    pending = ctx.state[cs.SCAFFOLD_STATE + cs.PENDING]["weight"].numpy().copy()
    cs.settle(RecordDict({cs.COMMIT_KEY: _told(1, True)}), ctx)
    np.testing.assert_array_equal(ctx.state[cs.SCAFFOLD_STATE]["weight"].numpy(), pending)
    assert cs.PENDING_ROUND not in ctx.state


@pytest.mark.parametrize("told", [_told(1, False), _told(2, True)])
def test_state_of_an_update_not_aggregated_is_dropped(told) -> None:
    ctx = _context()
    _train_once(ctx, 1)
    cs.settle(RecordDict({cs.COMMIT_KEY: told}), ctx)  # refused, or about another round
    assert cs.SCAFFOLD_STATE not in ctx.state and cs.PENDING_ROUND not in ctx.state
    assert not any(key.endswith(cs.PENDING) for key in ctx.state.keys())


@pytest.mark.parametrize("content", [RecordDict(), RecordDict({cs.COMMIT_KEY: _told(0, True)})])
def test_without_word_on_its_round_the_pending_state_waits(content) -> None:
    # No ledger, or word of an earlier round only (the round is not over yet, or a
    # resumed server redoes it).
    ctx = _context()
    _train_once(ctx, 1)
    cs.settle(content, ctx)
    assert int(ctx.state[cs.PENDING_ROUND]["round"]) == 1 and cs.SCAFFOLD_STATE not in ctx.state


def test_a_round_trains_from_the_committed_state_only() -> None:
    told, untold = _context(), _context()
    _train_once(told, 1)
    _train_once(untold, 1)
    a = _train_once(told, 2, _told(1, True))  # c_i(1) committed, then used
    b = _train_once(untold, 2, _told(1, False))  # c_i(1) dropped: round 2 starts from zeros
    c = _train_once(_context(), 2)
    np.testing.assert_array_equal(b, c)
    assert not np.allclose(a, b)


def test_a_client_whose_own_update_is_not_finite_keeps_its_state_and_fails() -> None:
    from omegaconf import OmegaConf

    from fedlearn.app import client_app
    from fedlearn.app.arrays import to_record
    from fedlearn.app.run_config import client_run_config
    from fedlearn.experiment import compose_config

    cfg = OmegaConf.to_container(compose_config(["dataset.max_samples=100"]), resolve=True)
    ctx = Context(
        1, 1, {"partition-id": 0, "num-partitions": 2}, RecordDict(), client_run_config(cfg)
    )
    ctx.state[cs.SCAFFOLD_STATE] = arrays(kept=[1.0])
    model = client_app.job_model(client_app.client_job(ctx))
    config = ConfigRecord({"server-round": 3, "lr": float("inf"), "max-steps": 1})
    content = RecordDict(
        {"arrays": to_record(model.state_dict()), "config": config, CONTROL_KEY: arrays()}
    )
    msg = Message(content, 1, "train")
    with pytest.raises(FloatingPointError, match="not finite after local training"):
        client_app.train(msg, ctx)
    assert list(ctx.state.keys()) == [cs.SCAFFOLD_STATE]
