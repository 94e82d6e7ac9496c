"""The comparison report on synthetic run folders, statistics checked by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from fedlearn.compare import build_report
from tests.compare_helpers import write_run

# Student's t, 2 degrees of freedom: two-sided p = 1 - |t| / sqrt(2 + t^2).
T = 5 * math.sqrt(3)  # t of the paired differences -0.10, -0.08, -0.12 (sd 0.02, n 3)
P_PAIRED = 1 - T / math.sqrt(2 + T * T)  # 0.01307


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    fedavg = [[0.1, 0.5, 0.70, 0.80], [0.1, 0.5, 0.70, 0.82], [0.1, 0.5, 0.86, 0.84]]
    fedprox = [[0.1, 0.4, 0.60, 0.70], [0.1, 0.4, 0.60, 0.74], [0.1, 0.4, 0.60, 0.72]]
    for i, accs in enumerate(fedavg):
        write_run(root / f"{i}_fedavg", "FedAvg", i, accs, wall=10.0 + 2 * i)
    for i, accs in enumerate(fedprox):
        write_run(
            root / f"{3 + i}_fedprox",
            "FedProx",
            i,
            accs,
            extra={"proximal_mu": 0.01},
            sent=200,
            received=100,
        )
    write_run(
        root / "6_fedprox",
        "FedProx",
        3,
        [0.1, 0.2],
        status="failed",
        extra={"proximal_mu": 0.01},
        rounds=3,
    )
    # A Hydra job that died before the run wrote anything.
    (root / "7_fedavg" / ".hydra").mkdir(parents=True)
    (root / "7_fedavg" / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "seed": 5,
                "num_rounds": 3,
                "dataset": {"seed": 5},
                "strategy": {"_target_": "flwr.serverapp.strategy.FedAvg"},
            }
        )
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_report_statistics_by_hand(sweep: Path) -> None:
    groups = build_report(sweep, target=0.65, show=False)
    assert [g.label for g in groups] == ["FedAvg", "FedProx"]  # dataset.seed mirrors seed
    avg, prox = groups
    assert (len(avg.runs), len(avg.ok), len(prox.runs), len(prox.ok)) == (4, 3, 4, 3)
    fa = avg.stats["final_acc"]
    assert fa.mean == pytest.approx(0.82) and fa.std == pytest.approx(0.02)
    assert fa.ci_low is None  # three seeds: the per-seed values instead of an interval
    ba = avg.stats["best_acc"]  # test at the best validation round (validation = test here)
    assert ba.mean == pytest.approx((0.80 + 0.82 + 0.86) / 3)
    assert avg.stats["best_loss"].mean == pytest.approx(1 - (0.80 + 0.82 + 0.86) / 3)
    assert avg.stats["final_loss"].mean == pytest.approx(0.18)
    assert avg.stats["wall_seconds"].mean == pytest.approx(12.0)
    # Target 0.65: FedAvg reaches it at round 2 (150 bytes a round), FedProx at round 3.
    assert avg.rounds_to_target.mean == 2 and avg.reached == 3
    assert avg.sent_to_target.mean == 200 and avg.received_to_target.mean == 100
    assert prox.rounds_to_target.mean == 3 and prox.sent_to_target.mean == 600
    # Paired by seed: FedProx - FedAvg = -0.10, -0.08, -0.12.
    assert prox.vs_best.diff == pytest.approx(-0.10) and prox.vs_best.n == 3
    assert prox.vs_best.p_t == pytest.approx(P_PAIRED, rel=1e-9)
    assert prox.p_holm == pytest.approx(P_PAIRED, rel=1e-9)  # one comparison: Holm is p
    assert avg.verdict == "best" and prox.verdict == "worse than best"

    for name in (
        "report.md",
        "summary.csv",
        "runs.csv",
        "accuracy_vs_round.png",
        "accuracy_vs_bytes.png",
    ):
        assert (sweep / name).stat().st_size > 0, name
    assert not (sweep / "trials.csv").exists()
    md = (sweep / "report.md").read_text()
    assert "| 1 | FedAvg | 3/4 | 0 | 0.8200 | 0.800 / 0.820 / 0.840 |" in md
    assert "-0.1000 [" in md and "| 0.013 | - | worse than best |" in md
    assert "**Hyperparameters: untuned**" in md  # no plan.json: nothing was tuned
    assert "Centralized baseline: none recorded" in md
    assert "6_fedprox" in md and "RuntimeError: boom" in md  # failed runs are marked
    assert "7_fedavg" in md and "never started" in md
    with open(sweep / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert float(summary[0]["final_acc_mean"]) == pytest.approx(0.82)
    assert json.loads(summary[0]["final_acc_per_seed"]) == {"0": 0.8, "1": 0.82, "2": 0.84}
    with open(sweep / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_unreached_target_and_auto_target(sweep: Path) -> None:
    groups = build_report(sweep, target=0.9, show=False)
    assert all(g.rounds_to_target is None and g.reached == 0 for g in groups)
    assert "not reached" in (sweep / "report.md").read_text()
    build_report(sweep, show=False)  # auto: floor(0.9 * 0.82, 0.01) = 0.73
    assert "Target accuracy: 0.73 (auto" in (sweep / "report.md").read_text()


def test_axes_other_than_strategy(tmp_path: Path) -> None:
    for i, (mu, alpha) in enumerate([(0.01, 0.1), (0.1, 0.1), (0.01, 1.0), (0.1, 1.0)]):
        for seed in (0, 1):
            run = write_run(
                tmp_path / f"{i}{seed}",
                "FedProx",
                seed,
                [0.1, 0.5 + 0.01 * seed],
                extra={"proximal_mu": mu},
                config={"partitioner": {"alpha": alpha}},
            )
    write_run(tmp_path / "avg0", "FedAvg", 0, [0.1, 0.6])
    groups = build_report(tmp_path, show=False)
    labels = {g.label for g in groups}
    assert "FedProx strategy.proximal_mu=0.01 partitioner.alpha=0.1" in labels
    assert "FedAvg partitioner.alpha=-" in labels  # FedAvg has no proximal_mu to show
    assert len(labels) == 5
    # Strategies are ranked within each setting of the other axes: one best per block.
    assert sorted(g.block for g in groups if g.verdict == "best") == [
        "partitioner.alpha=-",
        "partitioner.alpha=0.1",
        "partitioner.alpha=1",
    ]
    md = (tmp_path / "report.md").read_text()
    assert "### partitioner.alpha=0.1" in md
    assert "axes besides the seed: strategy, strategy.proximal_mu, partitioner.alpha" in md
    ignored = build_report(tmp_path, show=False, ignore=("partitioner",))
    assert {g.label for g in ignored} == {
        "FedAvg",
        "FedProx strategy.proximal_mu=0.01",
        "FedProx strategy.proximal_mu=0.1",
    }
    assert run.exists()


def test_empty_folder_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert build_report(tmp_path, show=False) is None
    out = capsys.readouterr().out
    assert out.strip() == f"fedlearn-compare: no runs in {tmp_path}"
    with pytest.raises(ValueError, match="no such folder"):
        build_report(tmp_path / "missing")


def test_best_round_is_chosen_on_validation_and_old_folders_still_read(tmp_path: Path) -> None:
    # Test accuracy peaks at round 1, validation at round 2: "best" is round 2's test value.
    write_run(tmp_path / "new", "FedAvg", 0, [0.1, 0.9, 0.5], val=[0.1, 0.2, 0.6])
    write_run(tmp_path / "old", "FedAvg", 1, [0.1, 0.7, 0.4], legacy=True)  # "central" only
    (group,) = build_report(tmp_path, show=False)
    new, old = group.figures
    assert new.values["best_acc"] == 0.5 and new.values["final_acc"] == 0.5
    assert old.values["final_acc"] == 0.4 and old.accuracy == [0.1, 0.7, 0.4]
    assert old.values["best_acc"] is None  # no validation set: no best round to choose
    assert "central test set" in (tmp_path / "report.md").read_text()


def test_report_with_diverged_runs(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        write_run(tmp_path / f"avg{seed}", "FedAvg", seed, [0.1, 0.5, acc], chance=0.1)
    write_run(tmp_path / "yogi0", "FedYogi", 0, [0.1, 0.3, 0.2], chance=0.1, nan_last=True)
    write_run(tmp_path / "yogi1", "FedYogi", 1, [0.1, 0.3, 0.105], chance=0.1)  # at chance
    write_run(tmp_path / "yogi2", "FedYogi", 2, [0.1, 0.5, 0.6], chance=0.1)
    write_run(
        tmp_path / "yogi3",
        "FedYogi",
        3,
        [0.1, 0.2],
        status="stopped",
        rounds=2,
        error="round 2: 0 of 4 clients succeeded (first failure: non-finite values in arrays)",
    )
    avg, yogi = build_report(tmp_path, show=False)
    assert [why.split(" ")[0] for _, why in yogi.diverged] == ["non-finite", "final", "stopped:"]
    assert avg.diverged == []
    # Diverged runs that completed count at the accuracy they end with.
    assert yogi.stats["final_acc"].n == 3
    assert yogi.stats["final_acc"].mean == pytest.approx((0.2 + 0.105 + 0.6) / 3)
    assert yogi.stats["final_loss"].n == 2  # the NaN loss is left out of the loss statistics
    md = (tmp_path / "report.md").read_text()
    assert "## Diverged runs" in md and "| 2 | FedYogi | 3/4 | 3 |" in md
    assert "`yogi0` (FedYogi, seed 0): non-finite test loss in round 2" in md
    assert "`yogi1` (FedYogi, seed 1): final test accuracy 0.105 at or below chance (0.100" in md
    with open(tmp_path / "runs.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert rows["yogi3"]["diverged"].startswith("stopped") and rows["avg0"]["diverged"] == ""


DIRICHLET = {"partitioner": {"_target_": "flwr_datasets.partitioner.DirichletPartitioner"}}
IID = {"partitioner": {"_target_": "flwr_datasets.partitioner.IidPartitioner"}}


def test_references_paired_and_intervals_within_zero_one(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    block = root / "runs" / "partitioner.alpha=0.1"
    avg = [0.95, 0.97, 0.99, 1.0, 0.98]
    for seed, acc in enumerate(avg):
        write_run(block / "fedavg" / f"seed={seed}", "FedAvg", seed, [0.1, acc], config=DIRICHLET)
        write_run(
            block / "fedprox" / f"seed={seed}",
            "FedProx",
            seed,
            [0.1, acc - 0.02 * seed],
            config=DIRICHLET,
            extra={"proximal_mu": 0.1},
        )
        iid = root / "references" / "partitioner.alpha=0.1" / "iid"
        write_run(iid / "fedavg" / f"seed={seed}", "FedAvg", seed, [0.1, 1.0], config=IID)
        central = root / "references" / "partitioner.alpha=0.1" / "centralized" / f"seed={seed}"
        write_run(central, "FedAvg", seed, [0.1, 0.99], config={"num_clients": 1}, steps=16)
    avg_g, prox = build_report(root, show=False)
    assert avg_g.name == "FedAvg" and avg_g.iid is not None and prox.iid is None
    # Non-IID minus IID, per seed: -0.05, -0.03, -0.01, 0, -0.02.
    assert avg_g.vs_iid.diff == pytest.approx(-0.022) and avg_g.vs_iid.n == 5
    assert avg_g.vs_central.diff == pytest.approx(sum(avg) / 5 - 0.99)
    # FedProx - FedAvg = -0.02 * seed: paired t and Wilcoxon (5 pairs, one zero: none).
    assert prox.vs_best.diff == pytest.approx(-0.04)
    s = avg_g.stats["final_acc"]
    assert s.ci_low is not None and 0.95 <= s.ci_low <= s.mean <= s.ci_high <= 1.0
    md = (root / "report.md").read_text()
    assert f"[{s.ci_low:.4f}, {s.ci_high:.4f}]" in md
    assert "Centralized baseline (all training data on one client, the same model, 16 " in md
    assert "the federated runs took 8 on average" in md
    assert "-0.0220 [" in md  # the IID column of FedAvg


def test_accuracy_bands_span_the_seeds_and_stay_within_zero_one(tmp_path: Path) -> None:
    from fedlearn.compare.plots import curve

    root = tmp_path / "sweep"
    # Near chance at round 1: mean 0.1, std 0.17, so a mean +- std band would dip below 0.
    for seed, accs in enumerate([[0.1, 0.0, 0.5], [0.1, 0.0, 0.6], [0.1, 0.3, 0.9]]):
        write_run(root / f"{seed}_fedavg", "FedAvg", seed, accs)
    (group,) = build_report(root, show=False)
    xs, mean, low, high = curve(group, "round")
    assert xs == [0, 1, 2]
    assert mean == pytest.approx([0.1, 0.1, 2 / 3])
    assert low == pytest.approx([0.1, 0.0, 0.5]) and high == pytest.approx([0.1, 0.3, 0.9])
    assert (root / "accuracy_vs_round.png").stat().st_size > 0
