"""W&B offline files, read back with wandb's own reader of its .wandb log (``wandb leet
inspect --json``): every round once across the run and its resume, config, status, files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.loggers.conftest import TrackedRun, check_rounds

pytestmark = pytest.mark.slow


def _records(run_folder: Path) -> list[dict]:
    """The records of one ``offline-run-*`` folder, as wandb itself decodes them."""
    (log,) = run_folder.glob("run-*.wandb")
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", str(log), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_offline_files_hold_every_round_once(tracked_run: TrackedRun) -> None:
    folders = sorted((tracked_run.run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # the run and its resume: one W&B run, synced together
    runs = [_records(f) for f in folders]
    ids = {r["run"]["run_id"] for recs in runs for r in recs if r["type"] == "run"}
    saved = json.loads((tracked_run.run_dir / "loggers.json").read_text())["wandb"]["run"]["id"]
    assert ids == {saved}
    got: dict[int, dict[str, float]] = {}
    for recs in runs:
        for r in recs:
            if r["type"] == "history":
                step = int(r["history"]["step"].get("num", 0))  # proto3 JSON omits a 0
                assert step not in got, f"step {step} logged twice"
                got[step] = {k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
    check_rounds(got, tracked_run.lines)
    first_run = next(r["run"] for r in runs[0] if r["type"] == "run")
    assert first_run["config"]["update"]["client"]["lr"] == 0.1
    assert "strategy=FedAvg" in first_run["tags"] and "seed=0" in first_run["tags"]
    for recs in runs:
        updates = [r["summary"]["update"] for r in recs if r["type"] == "summary"]
        assert [u["status"] for u in updates if "status" in u] == ["completed"]
        assert [r["exit"]["exit_code"] for r in recs if r["type"] == "exit"] == [0]
        artifacts = {r["artifact"]["type"] for r in recs if r["type"] == "artifact"}
        assert artifacts == {"model", "run-record"}
