"""fedlearn-compare end to end on a digits slice: untuned, tuned, resumed."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from fedlearn import experiment
from fedlearn.compare import cli
from fedlearn.compare.plan import parse

SMALL = [
    "num_rounds=2",
    "num_clients=4",
    "runtime.workers=1",
    "dataset.max_samples=400",
    "client.momentum=0.9",
    "client.lr=0.1",
    "client.max_steps=3",
    "server.checkpoint_every=0",
]
TUNED = ["strategy=fedavg,fedadam", "seed=0,1", "compare.tune=2", "compare.tune_last=1"]
UNTUNED_LR = [a for a in SMALL if not a.startswith("client.lr")]  # tuning chooses it


def _compare(monkeypatch: pytest.MonkeyPatch, root: Path, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fedlearn-compare"])  # multiruns rewrite sys.argv
    cli.main([*args, f"hydra.sweep.dir={root}"])


def _count_runs(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[Path]:
    """Record every run that really starts (reused folders do not); optionally stop
    the sweep like Ctrl-C at the ``fail_at``-th run."""
    calls: list[Path] = []
    real = experiment.run

    def counting(cfg, run_dir, overrides=None):  # noqa: ANN001, ANN202
        calls.append(Path(run_dir))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(cfg, run_dir, overrides)

    monkeypatch.setattr(experiment, "run", counting)
    return calls


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_untuned_two_strategies_two_seeds_with_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sweep"
    args = ["strategy=fedavg,scaffold", "seed=0,1", "partitioner=dirichlet", *SMALL]
    _compare(monkeypatch, root, [*args, "partitioner.alpha=1.0", "compare.target=0.05"])
    rows = {r["group"]: r for r in _rows(root / "summary.csv")}
    assert set(rows) == {"FedAvg", "Scaffold", "centralized"}
    assert all(r["completed"] == "2" for r in rows.values())
    assert all(0.0 <= float(r["final_acc_mean"]) <= 1.0 for r in rows.values())
    block = "all"  # one value of alpha: a fixed setting, not a block
    for path in (
        f"runs/{block}/fedavg/seed=0",
        f"references/{block}/centralized/seed=1",
        f"references/{block}/iid/scaffold/seed=1",
    ):
        assert json.loads((root / path / "result.json").read_text())["status"] == "completed"
    # The baseline: one client, as many optimizer steps as a federated run (4 clients x 3
    # steps x 2 rounds), over the same 2 rounds.
    central = json.loads((root / f"references/{block}/centralized/seed=0/result.json").read_text())
    fed = json.loads((root / f"runs/{block}/fedavg/seed=0/result.json").read_text())
    assert central["train_steps"] == fed["train_steps"] == 24
    assert rows["FedAvg"]["vs_iid_diff"] != "" and rows["FedAvg"]["vs_central_diff"] != ""
    md = (root / "report.md").read_text()
    assert "**Hyperparameters: untuned**" in md and "paired by seed" in md
    assert "Centralized baseline (all training data on one client, the same model, 24 " in md
    # Rebuilt with no --target: the sweep's own target (plan.json), the same report.
    assert "Target accuracy: 0.05 (set)." in md
    (root / "report.md").unlink()
    cli.main(["report", str(root)])
    assert (root / "report.md").read_text() == md
    # Rebuild from the run folders alone, with a target every run reaches (round 0 counts).
    (root / "report.md").unlink()
    cli.main(["report", str(root), "--target", "0.0"])
    assert "(2/2 reached)" in (root / "report.md").read_text()


@pytest.mark.slow
def test_failed_runs_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "sweep"
    small = [a for a in SMALL if not a.startswith(("num_clients", "num_rounds"))]
    _compare(monkeypatch, root, ["num_clients=4,0", "num_rounds=1,2", *small])
    md = (root / "report.md").read_text()
    assert "4 compared runs (2 completed, 2 not)" in md
    assert "failed: ConfigError: num_clients must be" in md  # raised before the run started
    assert "| - | FedAvg | 0/1 |" in md  # a group with no completed run is not ranked
    # Two axes: the block's folder name holds a comma, which Hydra must not take as a sweep.
    block = root / "references" / "num_clients=4,num_rounds=2" / "centralized" / "seed=0"
    assert json.loads((block / "result.json").read_text())["rounds_completed"] == 2
    assert not (root / "references" / "num_clients=0,num_rounds=1").exists()  # no steps


@pytest.mark.slow
def test_trials_in_parallel_shorter_trials_fewer_reference_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sweep"
    options = [
        "compare.tune=2",
        "compare.jobs=2",
        "compare.tune_rounds=1",
        "compare.reference_seeds=1",
    ]
    _compare(monkeypatch, root, ["seed=0,1", *options, *UNTUNED_LR])
    trial = next((root / "tuning/all/fedavg").glob("*/.hydra/hydra.yaml"))
    hydra_cfg = yaml.safe_load(trial.read_text())["hydra"]
    assert "joblib" in hydra_cfg["launcher"]["_target_"]
    assert hydra_cfg["sweeper"]["n_jobs"] == 2
    trials = _rows(root / "trials.csv")
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
    for trial in (root / "tuning").rglob("config.yaml"):
        if ".hydra" not in trial.parts:
            assert yaml.safe_load(trial.read_text())["num_rounds"] == 1
    for seed in (0, 1):
        result = json.loads((root / f"runs/all/fedavg/seed={seed}/result.json").read_text())
        assert result["status"] == "completed" and result["rounds_completed"] == 2
    assert (root / "references/all/centralized/seed=0").exists()
    assert not (root / "references/all/centralized/seed=1").exists()
    assert "ran on the first 1 seeds" in (root / "report.md").read_text()
    with pytest.raises(ValueError, match="holds another comparison"):
        _compare(monkeypatch, root, ["seed=0", "num_rounds=3", *options, *UNTUNED_LR])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tuned 2-strategy x 2-trial x 2-seed comparison, run once for the tests below."""
    root = tmp_path_factory.mktemp("tuned") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        _compare(mp, root, [*TUNED, *UNTUNED_LR])
    return root


@pytest.mark.slow
def test_tuned_compare_end_to_end(tuned: Path) -> None:
    plan = json.loads((tuned / "plan.json").read_text())
    assert plan["options"]["tune"] == 2
    assert [p["key"] for p in plan["spaces"]["fedadam"]] == ["client.lr", "strategy.eta"]
    assert [p["key"] for p in plan["spaces"]["fedavg"]] == ["client.lr"]
    trials = _rows(tuned / "trials.csv")
    studies = sorted({t["strategy"] for t in trials})
    assert studies == ["centralized", "fedadam", "fedavg"] and len(trials) == 6
    # Trial k tries the same client lr in every study, whatever else it tunes.
    lrs = {
        s: [json.loads(t["values"])["client.lr"] for t in trials if t["strategy"] == s]
        for s in studies
    }
    assert lrs["fedavg"] == lrs["fedadam"] == lrs["centralized"]
    chosen = {}
    for strategy in studies:
        mine = [t for t in trials if t["strategy"] == strategy]
        done = [t for t in mine if t["status"] == "completed"]
        best = max(done, key=lambda t: float(t["score"]))  # the first of equal scores
        assert [t["chosen"] for t in mine].count("True") == 1 and best["chosen"] == "True"
        chosen[strategy] = json.loads(best["values"])
    # The chosen values run on every seed, the centralized baseline's too.
    for strategy, folder in (
        ("fedadam", "runs/all/fedadam"),
        ("centralized", "references/all/centralized"),
    ):
        for seed in (0, 1):
            cfg = yaml.safe_load((tuned / folder / f"seed={seed}" / "config.yaml").read_text())
            assert cfg["client"]["lr"] == chosen[strategy]["client.lr"] and cfg["seed"] == seed
    cfg = yaml.safe_load((tuned / "runs/all/fedadam/seed=0/config.yaml").read_text())
    assert cfg["strategy"]["eta"] == chosen["fedadam"]["strategy.eta"]
    trial = yaml.safe_load(next((tuned / "tuning/all/fedavg").glob("*/config.yaml")).read_text())
    assert trial["seed"] == 1000  # trials run on the tuning seed, not an evaluation seed
    md = (tuned / "report.md").read_text()
    assert "**Hyperparameters: tuned** with an equal budget: 2 trials per strategy" in md
    assert "random draws shared across strategies" in md
    assert "## Tuning" in md and (tuned / "tuning_scores.png").stat().st_size > 0
    assert "strategy.eta=" in md and "(chosen)" in md


@pytest.mark.slow
def test_tuning_never_reads_the_test_set(
    tuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tuned, root)
    before = _rows(root / "trials.csv")
    # Turn every trial's test accuracy upside down: a choice that read it would change.
    for metrics in (root / "tuning").rglob("metrics.jsonl"):
        lines = [json.loads(x) for x in metrics.read_text().splitlines()]
        for line in lines:
            if line.get("test"):
                line["test"]["accuracy"] = 1.0 - line["test"]["accuracy"]
        metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    calls = _count_runs(monkeypatch)
    _compare(monkeypatch, root, [*TUNED, *UNTUNED_LR])
    assert calls == []  # every trial and run was reused, none redone
    after = _rows(root / "trials.csv")
    assert [(t["strategy"], t["values"], t["score"], t["chosen"]) for t in after] == [
        (t["strategy"], t["values"], t["score"], t["chosen"]) for t in before
    ]


@pytest.mark.slow
def test_interrupted_tuning_sweep_resumes_without_redoing_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sweep"
    args = ["strategy=fedavg", "seed=0", "compare.tune=3", *UNTUNED_LR]
    first = _count_runs(monkeypatch, fail_at=3)  # Ctrl-C as the third trial starts
    with pytest.raises(KeyboardInterrupt):
        _compare(monkeypatch, root, args)
    done = [p for p in first[:2] if (p / "result.json").exists()]
    assert len(done) == 2
    kept = {p: (p / "result.json").read_text() for p in done}
    again = _count_runs(monkeypatch)
    _compare(monkeypatch, root, args)
    assert not set(again) & set(done)  # the two finished trials were not redone
    assert first[2] in again  # the interrupted one was
    # 3 trials + 1 run of fedavg, then the baseline's 3 trials + 1 run: 8, 2 of them reused.
    assert len(again) == 6
    assert all((p / "result.json").read_text() == text for p, text in kept.items())
    trials = _rows(root / "trials.csv")
    assert len([t for t in trials if t["strategy"] == "fedavg"]) == 3


def test_option_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="compare.target"):
        parse(["compare.target=2"])
    with pytest.raises(ValueError, match="allowed: compare.jobs"):
        parse(["compare.nope=1"])
    with pytest.raises(ValueError, match="compare.tune=x: give an integer >= 0"):
        parse(["compare.tune=x"])
    with pytest.raises(ValueError, match="compare.sampler=cma; allowed: tpe, random, grid"):
        parse(["compare.sampler=cma"])
    with pytest.raises(ValueError, match="drop the sweep strategy.eta=0.1,1"):
        parse(["strategy=fedadam", "strategy.eta=0.1,1", "compare.tune=4"])
    with pytest.raises(ValueError, match="a range to search is what compare.tune does"):
        parse(["client.lr=interval(0.01,0.1)"])
    sweep = parse(
        [
            "-m",
            "strategy=fedavg,fedadam",
            "seed=0,1",
            "partitioner.alpha=0.1,1",
            "num_rounds=3",
            "hydra/launcher=joblib",
        ]
    )
    assert sweep.strategies == ["fedavg", "fedadam"] and sweep.seeds == [0, 1]
    assert [b.slug for b in sweep.blocks] == ["partitioner.alpha=0.1", "partitioner.alpha=1"]
    assert sweep.fixed == ["num_rounds=3", "progress=false"]
    assert sweep.hydra == ["hydra/launcher=joblib"]
