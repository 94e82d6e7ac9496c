"""Whole runs: vectorized clients against one at a time, for every strategy with a client
side; run to run; for any group size and number of workers."""

from __future__ import annotations

import math
import subprocess

import pytest
import torch

from fedlearn import records
from fedlearn.experiment import simulate
from fedlearn.vectorized import engine
from tests.conftest import SIMULATE, TINY, metrics_without_timings
from tests.text_model_helpers import shakespeare_run

# Six clients of unequal size (Dirichlet label skew) with max_steps cutting the larger
# ones: each client takes its own number of steps.
RUN = [
    *TINY,
    "num_clients=6",
    "num_rounds=3",
    "client.local_epochs=2",
    "client.max_steps=5",
    "partitioner=dirichlet",
    "partitioner.alpha=0.5",
]
# Measured on these runs: metrics within 8.2e-8 (relative), final weights within 1.1e-7.
RTOL = 1e-6
WEIGHTS_ATOL = 1e-6
STRATEGIES = {
    "fedavg": [],
    "fedprox": ["strategy.proximal_mu=0.1"],
    "scaffold": [],
    "feddyn": ["strategy.alpha=0.1"],
    "fednova": [],
    "qfedavg": [],
}


def _close(a: object, b: object, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9), f"{path}: {a} vs {b}"
    else:
        assert a == b, path


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Group sizes that engine.train_group was called with (the run is in this process)."""
    sizes: list[int] = []
    real = engine.train_group

    def spy(model, tasks, settings, device):
        sizes.append(len(tasks))
        return real(model, tasks, settings, device)

    monkeypatch.setattr(engine, "train_group", spy)
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_vectorized_equals_one_at_a_time(strategy, tmp_path, counted):
    args = [*RUN, f"strategy={strategy}", *STRATEGIES[strategy]]
    alone = simulate([*args, "runtime.vectorize=false"], run_dir=tmp_path / "alone")
    assert not counted
    together = simulate([*args, "runtime.vectorize=true"], run_dir=tmp_path / "together")
    assert together["status"] == alone["status"] == "completed"
    assert counted and max(counted) > 2  # rounds trained together, not one at a time
    lines = [metrics_without_timings(tmp_path / d) for d in ("alone", "together")]
    steps = {m["train"]["num-steps"] for m in lines[0] if m["round"]}
    assert any(s != round(s) for s in steps)  # clients took unequal numbers of steps
    for a, b in zip(*lines, strict=True):
        _close(a, b)
    final = [records.load_checkpoint(tmp_path / d)["arrays"] for d in ("alone", "together")]
    for k in final[0]:
        a, b = (torch.from_numpy(f[k].numpy()) for f in final)
        torch.testing.assert_close(a, b, atol=WEIGHTS_ATOL, rtol=0)


@pytest.mark.slow
def test_same_seed_same_metrics_whatever_group_size_or_workers(tmp_path, counted):
    args = [*RUN, "strategy=fedprox", "runtime.vectorize=true"]
    simulate(args, run_dir=tmp_path / "a")
    simulate(args, run_dir=tmp_path / "b")
    counted.clear()
    simulate([*args, "runtime.group_size=2"], run_dir=tmp_path / "pairs")
    assert counted and max(counted) == 2  # six clients a round, never more than two at once
    simulate([*args, "runtime.workers=2", "runtime.group_size=3"], run_dir=tmp_path / "workers")
    first = metrics_without_timings(tmp_path / "a")
    for other in ("b", "pairs", "workers"):
        assert metrics_without_timings(tmp_path / other) == first, other


@pytest.mark.slow
def test_vectorize_true_with_dropout_stops_in_one_line(tmp_path):
    overrides = [
        *shakespeare_run(tmp_path, num_clients=2),
        "num_rounds=1",
        "model=lstm",
        "model.hidden=8",
        "model.dropout=0.5",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(
        [*SIMULATE, *overrides, "runtime.vectorize=true"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "fedlearn: error: runtime.vectorize=true: model=LSTM has dropout at lstm (p=0.5):"
        " the sequential path draws each client's masks from torch's RNG in turn, which one"
        " vectorized step cannot reproduce; use auto or false"
    )
    auto = simulate(overrides[:-1], run_dir=tmp_path / "auto")  # auto: one at a time
    assert auto["status"] == "completed"


@pytest.mark.slow
def test_transformer_vectorized_equals_one_at_a_time(tmp_path):
    """Text data (uint8 characters), a model buffer (the causal mask) and attention."""
    args = [
        *shakespeare_run(tmp_path, num_clients=3),
        "num_rounds=2",
        "model=transformer",
        "model.width=16",
        "model.heads=2",
        "model.layers=1",
        "client.max_steps=3",
        "runtime.workers=1",
        "progress=false",
    ]
    simulate([*args, "runtime.vectorize=false"], run_dir=tmp_path / "alone")
    simulate([*args, "runtime.vectorize=true"], run_dir=tmp_path / "together")
    lines = [metrics_without_timings(tmp_path / d) for d in ("alone", "together")]
    for a, b in zip(*lines, strict=True):
        _close(a, b)
