"""Shared test settings: a small digits slice, few clients, few rounds, one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# ``fedlearn-simulate`` as a subprocess of this interpreter (no console script needed).
SIMULATE = [sys.executable, "-c", "from fedlearn.cli import simulate; simulate()"]

# 400 digits, 4 clients, 2 rounds, 3 local steps: each run takes about a second.
TINY = [
    "dataset.max_samples=400",
    "num_clients=4",
    "num_rounds=2",
    "client.max_steps=3",
    "runtime.workers=1",
    "progress=false",
]


def metrics_without_timings(run_dir: Path) -> list[dict]:
    """metrics.jsonl with the wall-clock fields removed, for exact comparisons."""
    lines = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("seconds", None)
    return lines


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
