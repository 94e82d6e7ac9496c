"""FedNova: the normalizing vector and one aggregation step by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp.strategy import FedAvg

from fedlearn.strategies.fednova import FedNova, normalizing_norm
from tests.strategy_helpers import (
    FakeGrid,
    arrays,
    assert_grpc_matches_inprocess,
    assert_learns,
    error_reply,
    reply,
    simulate_small,
    task_identity,  # noqa: F401 - autouse fixture
    values,
)


def test_normalizing_norm() -> None:
    assert normalizing_norm(3) == 3.0  # plain SGD: a_i = tau_i
    assert normalizing_norm(3, momentum=0.5) == pytest.approx(1 + 1.5 + 1.75)
    assert normalizing_norm(2, lr_mu=0.1) == pytest.approx(1 * 0.9 + 1)  # prox decay
    assert normalizing_norm(0) == 0.0


def _run(config: dict, steps: tuple[int, int]) -> tuple[FedNova, np.ndarray]:
    s = FedNova(fraction_train=0.5, min_train_nodes=1)
    msgs = list(s.configure_train(1, arrays(w=[1.0, 1.0]), ConfigRecord(config), FakeGrid(4)))
    assert len(msgs) == 2
    new, metrics = s.aggregate_train(
        1,
        [
            reply(1, arrays(w=[0.0, 1.0]), 1, steps=steps[0]),
            reply(2, arrays(w=[1.0, -1.0]), 3, steps=steps[1]),
            error_reply(3),
        ],
    )
    assert metrics["num-steps"] == pytest.approx(0.25 * steps[0] + 0.75 * steps[1])
    return s, values(new)


def test_one_step_with_unequal_local_steps_by_hand() -> None:
    # p = [0.25, 0.75], a = [1, 4], tau_eff = 0.25 + 3 = 3.25
    # d = 0.25*[1, 0]/1 + 0.75*[0, 2]/4 = [0.25, 0.375]; x - tau_eff * d
    _, new = _run({"lr": 0.1}, (1, 4))
    np.testing.assert_allclose(new, [1 - 3.25 * 0.25, 1 - 3.25 * 0.375])


def test_momentum_enters_the_norm() -> None:
    # rho = 0.5: a = [1, 1 + 1.5 + 1.75 + 1.875 = 6.125]; tau_eff = 0.25 + 0.75 * 6.125
    _, new = _run({"lr": 0.1, "momentum": 0.5}, (1, 4))
    tau_eff = 0.25 + 0.75 * 6.125
    np.testing.assert_allclose(new, [1 - tau_eff * 0.25, 1 - tau_eff * 0.75 * 2 / 6.125], rtol=1e-6)


def test_equal_steps_is_fedavg() -> None:
    _, new = _run({"lr": 0.1}, (3, 3))
    avg = FedAvg(min_train_nodes=1)
    ref, _ = avg.aggregate_train(
        1,
        [
            reply(1, arrays(w=[0.0, 1.0]), 1, steps=3),
            reply(2, arrays(w=[1.0, -1.0]), 3, steps=3),
        ],
    )
    np.testing.assert_allclose(new, values(ref), rtol=1e-6)


@pytest.mark.slow
def test_in_process_runtime_with_sampling(tmp_path) -> None:
    result, lines, _ = simulate_small("fednova", tmp_path)
    assert_learns(result, lines)


@pytest.mark.slow
def test_grpc_runtime_matches_in_process(tmp_path) -> None:
    assert_grpc_matches_inprocess("fednova", tmp_path)
