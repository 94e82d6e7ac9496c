"""Runs with the same seed share partition, initial model and client sampling across
strategies: what makes the comparison's paired statistics valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from fedlearn.app import server_app
from fedlearn.app.arrays import to_state_dict
from fedlearn.data.partition import client_indices
from fedlearn.experiment import compose_config, simulate
from fedlearn.runtime import inprocess

BASE = [
    "dataset.max_samples=400",
    "num_clients=6",
    "num_rounds=3",
    "strategy.fraction_train=0.5",
    "strategy.fraction_evaluate=0.5",
    "partitioner=dirichlet",
    "partitioner.alpha=0.5",
    "client.max_steps=2",
    "runtime.workers=1",
    "progress=false",
]


def _record(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Spy on what each run starts from and which nodes each round samples."""
    seen: dict[str, list] = {"initial": [], "sampled": []}
    run_rounds = server_app.run_rounds
    send = inprocess.InProcessGrid.send_and_receive

    def spy_rounds(setup, grid):  # noqa: ANN001, ANN202
        state = to_state_dict(setup.initial_arrays)
        seen["initial"].append({k: v.clone() for k, v in state.items()})
        seen["sampled"].append([])
        return run_rounds(setup, grid)

    def spy_send(self, messages, *, timeout=None):  # noqa: ANN001, ANN202
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        seen["sampled"][-1].append((kind, sorted(m.metadata.dst_node_id for m in messages)))
        return send(self, messages, timeout=timeout)

    monkeypatch.setattr(server_app, "run_rounds", spy_rounds)
    monkeypatch.setattr(inprocess.InProcessGrid, "send_and_receive", spy_send)
    return seen


@pytest.mark.slow
def test_same_seed_same_partition_model_and_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _record(monkeypatch)
    strategies = ["fedavg", "fedadam", "scaffold", "fedprox"]
    for name in strategies:
        simulate([*BASE, f"strategy={name}", "seed=3"], run_dir=tmp_path / name)
    simulate([*BASE, "strategy=fedavg", "seed=4"], run_dir=tmp_path / "other")
    initial, sampled = seen["initial"], seen["sampled"]
    for state, rounds in zip(initial[1:4], sampled[1:4], strict=True):
        assert all(np.array_equal(state[k], initial[0][k]) for k in state)
        assert rounds == sampled[0]  # the same nodes, train and evaluate, every round
    assert len(sampled[0]) == 6 and all(len(nodes) == 3 for _, nodes in sampled[0])
    assert not all(np.array_equal(initial[4][k], initial[0][k]) for k in initial[0])
    assert sampled[4] != sampled[0]  # another seed samples other clients
    parts = [
        client_indices(c["dataset"], c["partitioner"], 6, 3)
        for c in (
            OmegaConf.to_container(compose_config([*BASE, f"strategy={s}"]), resolve=True)
            for s in strategies
        )
    ]
    assert all(np.array_equal(a, b) for p in parts[1:] for a, b in zip(p, parts[0], strict=True))
