"""Tuning trials: their validation score, and the configuration each study chooses.

A trial is one run of a strategy at sampled values, on the tuning seed. Its score is
the mean **validation** accuracy over its last ``last`` rounds (all rounds when it
has fewer): averaging a few rounds keeps one lucky round from choosing (Reddi et al.
2021 report the last 100 rounds' average for the same reason). A trial that did not
complete scores 0, the lowest accuracy. The test set is never read here, so the
choice cannot depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fedlearn.compare.runs import Run, read_run

FAILED_SCORE = 0.0


def score(metrics: list[dict[str, Any]], status: str, last: int) -> float:
    """Mean validation accuracy of the last ``last`` trained rounds (0 if not completed)."""
    if status != "completed":
        return FAILED_SCORE
    trained = sorted(
        (m for m in metrics if m.get("round", 0) > 0), key=lambda m: m.get("round", 0)
    )[-max(1, last) :]
    accs = [(m.get("validation") or {}).get("accuracy") for m in trained]
    if not accs or any(not isinstance(a, int | float) or not math.isfinite(a) for a in accs):
        return FAILED_SCORE
    return sum(accs) / len(accs)


def run_score(run_dir: Path, last: int) -> float:
    """:func:`score` of a run folder."""
    run = read_run(run_dir)
    return score(run.metrics, run.status, last)


@dataclass
class Trial:
    """One tuning trial, read from its run folder."""

    run: Run
    number: int  # the sweep's job number (the order trials were asked in)
    values: dict[str, Any]  # the tuned settings
    score: float


def _job_number(path: Path) -> int:
    hydra_yaml = path / ".hydra" / "hydra.yaml"
    try:
        return int(OmegaConf.load(hydra_yaml).hydra.job.num)
    except Exception:  # noqa: BLE001 - a folder without Hydra's record sorts last
        return 1 << 30


def trials(runs: list[Run], keys: list[str], last: int) -> list[Trial]:
    """Trials (runs of one study) in the order they were asked for."""
    out = [Trial(r, _job_number(r.path), {k: r.config.get(k) for k in keys}, 0.0) for r in runs]
    for t in out:
        t.score = score(t.run.metrics, t.run.status, last)
    return sorted(out, key=lambda t: (t.number, str(t.run.path)))


def choose(study: list[Trial]) -> Trial | None:
    """The trial with the highest score; the earliest asked on a tie. None: no trial
    completed (then the strategy's defaults are used)."""
    done = [t for t in study if t.run.ok]
    return max(done, key=lambda t: t.score, default=None)


def override(key: str, value: Any) -> str:
    """``key=value`` as Hydra reads it back exactly (floats by ``repr``)."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


@dataclass
class Study:
    """The trials of one strategy in one block, and the one chosen."""

    slug: str
    strategy: str  # the strategy's folder name (its choice, or "centralized")
    keys: list[str]
    trials: list[Trial]
    best: Trial | None


def studies(runs: list[Run], spaces: dict[str, list[dict[str, Any]]], last: int) -> list[Study]:
    """Tuning runs (role ``tuning``) grouped into studies, in first-seen order."""
    out = []
    for slug, strategy in dict.fromkeys((r.slug, r.strategy) for r in runs):
        keys = [p["key"] for p in spaces.get(strategy, [])]
        members = trials([r for r in runs if (r.slug, r.strategy) == (slug, strategy)], keys, last)
        out.append(Study(slug, strategy, keys, members, choose(members)))
    return out
