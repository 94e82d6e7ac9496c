"""fedlearn-compare end to end: a 2-strategy x 2-seed sweep on a small digits slice."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from fedlearn.compare import cli

SMALL = [
    "num_rounds=2",
    "num_clients=4",
    "runtime.workers=1",
    "dataset.max_samples=400",
    "client.momentum=0.9",
    "client.lr=0.1",
]


def _sweep(monkeypatch: pytest.MonkeyPatch, sweep_dir: Path, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fedlearn-compare"])  # main() rewrites sys.argv
    cli.main([*args, f"hydra.sweep.dir={sweep_dir}"])


@pytest.mark.slow
def test_two_strategies_two_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "sweep"
    _sweep(monkeypatch, sweep, ["strategy=fedavg,scaffold", "seed=0,1", *SMALL])
    with open(sweep / "summary.csv") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"FedAvg", "Scaffold"}
    assert all(r["completed"] == "2" for r in rows.values())
    assert all(0.0 <= float(r["final_acc_mean"]) <= 1.0 for r in rows.values())
    assert "Welch" in (sweep / "report.md").read_text()
    assert (sweep / "accuracy_vs_bytes.png").exists()
    # Rebuild from the run folders alone, with a target every run reaches (round 0 counts).
    (sweep / "report.md").unlink()
    cli.main(["report", str(sweep), "--target", "0.0"])
    assert "(2/2 reached)" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_failed_run_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "sweep"
    small = [a for a in SMALL if not a.startswith(("num_clients", "num_rounds"))]
    _sweep(monkeypatch, sweep, ["num_clients=4,0", "num_rounds=1", *small])
    md = (sweep / "report.md").read_text()
    assert "1 completed, 1 not" in md
    assert "failed: ConfigError: num_clients must be" in md  # raised before the run started
    assert "| - | FedAvg | 0/1 |" in md  # a group with no completed run is not ranked


def test_option_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="compare.target"):
        cli.sweep_argv(["compare.target=2"])
    with pytest.raises(ValueError, match="allowed: compare.target"):
        cli.sweep_argv(["compare.nope=1"])
    argv = cli.sweep_argv(["-m", "strategy=fedavg", "compare.target=0.5"])
    assert argv[0] == "--multirun" and argv.count("--multirun") == 1 and "-m" not in argv
    assert "progress=false" in argv and f"+{cli.CALLBACK}.target=0.5" in argv
