"""One tracked run, resumed, shared by the tests of every logger (each reads back its own).

The run logs 3 rounds with checkpoints every 2; its ``latest`` checkpoint is then
set back to round 2, as if the process had died after round 3 was logged but
before it was saved, and the run is resumed to 4 rounds: round 3 runs again and
must not be logged twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fedlearn import records
from fedlearn.experiment import simulate
from tests.conftest import TINY


@dataclass
class TrackedRun:
    run_dir: Path
    mlflow_uri: str
    lines: list[dict]  # metrics.jsonl after the resume: rounds 0..4


def rewind_to(run_dir: Path, server_round: int) -> None:
    """Point the run folder's ``latest`` checkpoint back at ``round-N.pt``."""
    records.atomic_write(
        run_dir / records.CKPT_DIR / records.LATEST, f"round-{server_round}.pt".encode()
    )


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    tmp = tmp_path_factory.mktemp("tracked")
    run_dir = tmp / "run"
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:  # W&B's own folders (artifact staging, cache)
        for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            mp.setenv(var, str(tmp / "wandb-home"))
        args = [
            *TINY,
            "logger=[tensorboard,mlflow,wandb]",
            f"logger.mlflow.tracking_uri={uri}",
            "num_rounds=3",
            "server.checkpoint_every=2",
        ]
        first = simulate(args, run_dir=run_dir)
        assert first["status"] == "completed" and first["rounds_completed"] == 3
        rewind_to(run_dir, 2)
        resumed = simulate([f"resume={run_dir}", "num_rounds=4"])
        import wandb

        wandb.teardown()  # its service and threads: not left to the rest of the session
    assert resumed["status"] == "completed" and resumed["rounds_completed"] == 4
    lines = records.read_metrics(run_dir)
    assert [m["round"] for m in lines] == [0, 1, 2, 3, 4]
    return TrackedRun(run_dir, uri, lines)


def check_rounds(got: dict[int, dict[str, float]], lines: list[dict], rel: float = 1e-9) -> None:
    """``got`` (step -> metric -> value, read back from a tracker) holds every metric of
    every metrics.jsonl line at its round. Round 3 ran twice: its ``seconds`` differ."""
    import math

    from fedlearn.loggers.base import flatten_metrics

    assert sorted(got) == [m["round"] for m in lines]
    for line in lines:
        want = flatten_metrics(line)
        assert set(got[line["round"]]) == set(want), line["round"]
        for key, value in want.items():
            if key != "seconds":
                assert math.isclose(got[line["round"]][key], value, rel_tol=rel), (key, line)
