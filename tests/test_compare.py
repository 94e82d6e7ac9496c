"""The comparison report on synthetic run folders, statistics checked by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from fedlearn.compare import build_report
from fedlearn.compare.stats import summarize, t_cdf, t_quantile, welch

# Closed forms of Student's t for small df (no tables, no SciPy):
#   df=2 quantile: t = (2p - 1) / sqrt(2 p (1 - p))
#   df=4 CDF:      F = 1/2 + 3/8 * u * (1 - t^2 / (12 * (1 + t^2 / 4))),  u = t / sqrt(1 + t^2/4)
T2_975 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)  # 4.302652...


def _t4_cdf(t: float) -> float:
    w = 1 + t * t / 4
    return 0.5 + 3 / 8 * t / math.sqrt(w) * (1 - t * t / (12 * w))


def test_t_distribution_against_closed_forms() -> None:
    assert t_quantile(0.975, 2) == pytest.approx(T2_975, rel=1e-10)
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)  # Cauchy
    for t in (-2.0, 0.3, 1.7, 6.0):
        assert t_cdf(t, 4) == pytest.approx(_t4_cdf(t), abs=1e-12)


def test_summary_and_welch_by_hand() -> None:
    s = summarize([0.80, 0.82, 0.84])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.82), pytest.approx(0.02))
    assert s.half_width == pytest.approx(T2_975 * 0.02 / math.sqrt(3))
    one = summarize([0.5])
    assert one.std == 0.0 and math.isnan(one.ci_low)
    t, df, p = welch([0.80, 0.82, 0.84], [0.70, 0.74, 0.72])
    # equal variances 0.0004, n=3: t = 0.1 / sqrt(2 * 0.0004 / 3), df = 4
    assert t == pytest.approx(0.1 / math.sqrt(0.0008 / 3))
    assert df == pytest.approx(4.0)
    assert p == pytest.approx(2 * (1 - _t4_cdf(t)), rel=1e-9)
    assert welch([0.5], [0.4, 0.3]) is None


def write_run(
    folder: Path,
    strategy: str,
    seed: int,
    accs: list[float],
    wall: float = 10.0,
    status: str = "completed",
    extra: dict | None = None,
    sent: int = 100,
    received: int = 50,
    rounds: int | None = None,
    val: list[float] | None = None,
    legacy: bool = False,
) -> Path:
    """A run folder as the contract describes: round 0 then one line per round.

    ``val``: validation accuracies (default: the test ones); ``legacy``: the format
    before the validation set, one ``central`` entry holding the test set."""
    folder.mkdir(parents=True)
    config = {
        "seed": seed,
        "num_rounds": rounds or len(accs) - 1,
        "dataset": {"seed": seed},
        "strategy": {"_target_": f"flwr.serverapp.strategy.{strategy}", **(extra or {})},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    val = accs if val is None else val

    def central(r: int) -> dict:
        test = {"loss": 1 - accs[r], "accuracy": accs[r]}
        if legacy:
            return {"central": test}
        return {"validation": {"loss": 1 - val[r], "accuracy": val[r]}, "test": test}

    lines = [{"round": 0, **central(0)}]
    for r, a in enumerate(accs[1:], 1):
        lines.append(
            {
                "round": r,
                "seconds": 1.0,
                "sampled": 4,
                "succeeded": 4,
                "failed": 0,
                "train": {"train_loss": 1.0},
                "evaluate": {"eval_loss": 1, "eval_acc": a},
                **central(r),
                "bytes_sent": sent,
                "bytes_received": received,
            }
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    result = {
        "status": status,
        "rounds_completed": len(accs) - 1,
        "num_rounds": len(accs) - 1,
        "final": {k: lines[-1][k] for k in ("validation", "test", "central") if k in lines[-1]},
        "best": {},
        "wall_seconds": wall,
        "strategy": strategy,
        "seed": seed,
        "error": None if status == "completed" else "RuntimeError: boom",
        "bytes_sent": 0,
        "bytes_received": 0,
    }
    (folder / "result.json").write_text(json.dumps(result))
    return folder


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
    assert fa.ci_low == pytest.approx(0.82 - T2_975 * 0.02 / math.sqrt(3))
    ba = avg.stats["best_acc"]  # best over rounds >= 1: 0.80, 0.82, 0.86
    assert ba.mean == pytest.approx((0.80 + 0.82 + 0.86) / 3)
    assert avg.stats["best_loss"].mean == pytest.approx(1 - (0.80 + 0.82 + 0.86) / 3)
    assert avg.stats["final_loss"].mean == pytest.approx(0.18)
    assert avg.stats["wall_seconds"].mean == pytest.approx(12.0)
    # Target 0.65: FedAvg reaches it at round 2 (150 bytes a round), FedProx at round 3.
    assert avg.rounds_to_target.mean == 2 and avg.reached == 3
    assert avg.sent_to_target.mean == 200 and avg.received_to_target.mean == 100
    assert prox.rounds_to_target.mean == 3 and prox.sent_to_target.mean == 600
    t = 0.1 / math.sqrt(0.0008 / 3)
    assert prox.p_value == pytest.approx(2 * (1 - _t4_cdf(t)), rel=1e-9)
    assert avg.verdict == "best" and prox.verdict == "worse than best"

    for name in (
        "report.md",
        "summary.csv",
        "runs.csv",
        "accuracy_vs_round.png",
        "accuracy_vs_bytes.png",
    ):
        assert (sweep / name).stat().st_size > 0, name
    md = (sweep / "report.md").read_text()
    assert "0.8200 ± 0.0200" in md and "Welch" in md
    assert "6_fedprox" in md and "RuntimeError: boom" in md  # failed runs are marked
    assert "7_fedavg" in md and "never started" in md
    with open(sweep / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert float(summary[0]["final_acc_mean"]) == pytest.approx(0.82)
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
            )
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            cfg["partitioner"] = {"alpha": alpha}
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
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
    ignored = build_report(tmp_path, show=False, ignore=("partitioner",))
    assert {g.label for g in ignored} == {
        "FedAvg",
        "FedProx strategy.proximal_mu=0.01",
        "FedProx strategy.proximal_mu=0.1",
    }
    build_report(tmp_path, show=False)
    assert "axes besides the seed: strategy, strategy.proximal_mu, partitioner.alpha" in md


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
