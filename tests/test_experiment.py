"""End-to-end simulations on a small digits slice: every strategy, seeds, workers, resume."""

from __future__ import annotations

import json

import pytest
import torch

from fedlearn import checks, records
from fedlearn.experiment import simulate
from tests.conftest import metrics_without_timings

FLOWER_STRATEGIES = [
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "qfedavg",
]


@pytest.mark.parametrize("name", sorted(set(FLOWER_STRATEGIES) | set(checks.choices("strategy"))))
def test_two_rounds_per_strategy(name: str, tiny: list[str], tmp_path) -> None:
    result = simulate([*tiny, f"strategy={name}"], run_dir=tmp_path)
    assert result["status"] == "completed", result["error"]
    assert result["rounds_completed"] == 2
    lines = records.read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [0, 1, 2]
    assert all(m["succeeded"] == 4 and m["failed"] == 0 for m in lines[1:])
    assert 0.0 <= result["final"]["test"]["accuracy"] <= 1.0


def test_run_folder_contents(tiny: list[str], tmp_path) -> None:
    result = simulate(tiny, run_dir=tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "result.json", "model.pt"):
        assert (tmp_path / name).exists(), name
    line = records.read_metrics(tmp_path)[1]
    for key in (
        "round",
        "seconds",
        "sampled",
        "succeeded",
        "failed",
        "train",
        "evaluate",
        "validation",
        "test",
        "train_steps",
        "bytes_sent",
        "bytes_received",
    ):
        assert key in line, key
    assert line["bytes_sent"] > 0 and line["bytes_received"] > 0
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(result))
    state = torch.load(tmp_path / "model.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_default_simulation_learns_digits(tmp_path) -> None:
    # The default experiment (10 clients, 10 rounds of FedAvg) reaches about 0.94.
    result = simulate(["runtime.workers=1", "progress=false"], run_dir=tmp_path)
    assert result["final"]["test"]["accuracy"] > 0.85


def test_same_seed_same_metrics(tiny: list[str], tmp_path) -> None:
    simulate([*tiny, "seed=3"], run_dir=tmp_path / "a")
    simulate([*tiny, "seed=3"], run_dir=tmp_path / "b")
    simulate([*tiny, "seed=4"], run_dir=tmp_path / "c")
    a, b, c = (metrics_without_timings(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_workers_do_not_change_results(tmp_path) -> None:
    base = [
        "dataset.max_samples=400",
        "num_clients=6",
        "num_rounds=2",
        "progress=false",
        "strategy.fraction_train=0.5",
        "partitioner=dirichlet",
    ]
    simulate([*base, "runtime.workers=1"], run_dir=tmp_path / "w1")
    simulate([*base, "runtime.workers=2"], run_dir=tmp_path / "w2")
    assert metrics_without_timings(tmp_path / "w1") == metrics_without_timings(tmp_path / "w2")


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm"])
def test_resume_equals_uninterrupted(strategy: str, tiny: list[str], tmp_path) -> None:
    args = [*tiny, f"strategy={strategy}", "strategy.fraction_train=0.5", "num_clients=6"]
    full = simulate([*args, "num_rounds=4"], run_dir=tmp_path / "full")
    simulate([*args, "num_rounds=2"], run_dir=tmp_path / "part")
    resumed = simulate([f"resume={tmp_path / 'part'}", "num_rounds=4"])
    assert resumed["rounds_completed"] == 4
    assert resumed["final"] == full["final"]
    assert metrics_without_timings(tmp_path / "part") == metrics_without_timings(tmp_path / "full")


def test_resume_refuses_group_change(tiny: list[str], tmp_path) -> None:
    simulate(tiny, run_dir=tmp_path)
    with pytest.raises(checks.ConfigError, match="strategy of an existing run cannot change"):
        simulate([f"resume={tmp_path}", "strategy=fedprox"])


def test_resume_needs_a_run_folder(tmp_path) -> None:
    with pytest.raises(checks.ConfigError, match="resume=.*no config.yaml"):
        simulate([f"resume={tmp_path / 'nothing'}"])


def test_central_dp_runs(tiny: list[str], tmp_path) -> None:
    result = simulate([*tiny, "dp=fixed"], run_dir=tmp_path)
    assert result["status"] == "completed"
    assert result["strategy"] == "DifferentialPrivacyServerSideFixedClipping"


def test_fedprox_sends_proximal_mu(tiny: list[str], tmp_path, monkeypatch) -> None:
    from fedlearn import training

    seen = []
    original = training.train

    def spy(model, x, y, settings, *args, **kwargs):
        seen.append(settings.proximal_mu)
        return original(model, x, y, settings, *args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    overrides = [*tiny, "strategy=fedprox", "strategy.proximal_mu=0.25", "runtime.vectorize=false"]
    simulate(overrides, run_dir=tmp_path)  # vectorized: tests/test_vectorized_runs.py
    assert seen and set(seen) == {0.25}


def test_gc_is_frozen_only_during_the_run(tiny: list[str], tmp_path, monkeypatch) -> None:
    import gc

    from fedlearn.runtime.inprocess import InProcessRuntime

    seen = []
    inner = InProcessRuntime.run

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(gc.get_freeze_count())
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(InProcessRuntime, "run", spy)
    gc.unfreeze()
    simulate(tiny, tmp_path / "a")
    assert seen[0] > 0 and gc.get_freeze_count() == 0  # nothing is kept frozen afterwards
    gc.freeze()  # a caller's own freeze is left as it is
    try:
        simulate(tiny, tmp_path / "b")
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_fedadam_keeps_the_models_dtype(tiny: list[str], tmp_path) -> None:
    # Flower's FedAdam upcasts to float64 (a NumPy float64 step size); the round loop
    # casts back, so every round sends float32 bytes, as round 1 does.
    overrides = [*tiny, "strategy=fedadam", "num_rounds=3", "strategy.fraction_evaluate=0.5"]
    simulate(overrides, tmp_path)
    rounds = [m for m in records.read_metrics(tmp_path) if m["round"] > 0]
    sent = [m["bytes_sent"] for m in rounds]  # float64 would double it (from round 2 on,
    assert max(sent) < 1.01 * min(sent)  # messages also carry a few bytes of commit ledger)
    state = torch.load(tmp_path / records.MODEL)
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())


def test_a_serverapp_that_raises_fails_the_run_and_keeps_the_folder(
    tiny: list[str], tmp_path, monkeypatch
) -> None:
    from flwr.serverapp.strategy import FedAvg

    original = FedAvg.aggregate_train

    def broken(self, server_round, replies):  # noqa: ANN001, ANN202
        if server_round == 2:
            raise ArithmeticError("aggregation broke")
        return original(self, server_round, replies)

    monkeypatch.setattr(FedAvg, "aggregate_train", broken)
    with pytest.raises(records.RunFailed, match="ArithmeticError: aggregation broke"):
        simulate(tiny, run_dir=tmp_path)
    result = json.loads((tmp_path / records.RESULT).read_text())
    assert result["status"] == "failed" and result["rounds_completed"] == 1
    assert "Traceback" in (tmp_path / records.LOG).read_text()  # the details, for whoever debugs
