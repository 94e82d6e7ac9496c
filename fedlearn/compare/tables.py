"""The comparison as CSV files and the number formats the report shares with them.

summary.csv: one row per group; runs.csv: one row per run (compared runs and
references); trials.csv: one row per tuning trial.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fedlearn.compare.analysis import METRICS, Group, divergence
from fedlearn.compare.references import Central
from fedlearn.compare.runs import Run
from fedlearn.compare.stats import Paired, Summary
from fedlearn.compare.tuning import Study

SUMMARY_CSV, RUNS_CSV, TRIALS_CSV = "summary.csv", "runs.csv", "trials.csv"


def mean_ci(s: Summary | None, digits: int = 4) -> str:
    """``mean [low, high]`` (bootstrap interval) or the mean alone when seeds are few."""
    if s is None:
        return "-"
    text = f"{s.mean:.{digits}f}"
    if s.ci_low is not None:
        text += f" [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"
    return text


def pm(s: Summary | None, digits: int = 4) -> str:
    """``mean ± std``."""
    return "-" if s is None else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def per_seed(g: Group | None, metric: str = "final_acc", digits: int = 3) -> str:
    """A group's per-seed values in seed order: ``0.812 / 0.790``."""
    if g is None:
        return "-"
    values = g.by_seed(metric)
    order = sorted(values, key=lambda s: (str(type(s)), s))
    return " / ".join(f"{values[s]:.{digits}f}" for s in order) or "-"


def delta(p: Paired | None, digits: int = 4) -> str:
    """Mean paired difference with its 95% interval."""
    if p is None:
        return "-"
    return f"{p.diff:+.{digits}f} [{p.ci_low:+.{digits}f}, {p.ci_high:+.{digits}f}]"


def pval(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def human_bytes(s: Summary | None) -> str:
    """Mean byte count with a unit (B, kB, MB, GB: powers of 1000)."""
    if s is None:
        return "-"
    value = s.mean
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"


def rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def summary_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """summary.csv rows: one per group, numbers unrounded."""
    out = []
    for g in groups:
        row: dict[str, Any] = {"group": g.label, "block": g.block, "runs": len(g.runs)}
        row.update({"completed": len(g.ok), "diverged": len(g.diverged)})
        for m in METRICS:
            s = g.stats[m]
            for part in ("mean", "std", "ci_low", "ci_high"):
                row[f"{m}_{part}"] = (
                    "" if s is None or getattr(s, part) is None else getattr(s, part)
                )
        row["final_acc_per_seed"] = json.dumps({str(k): v for k, v in g.by_seed().items()})
        for name, p in (("vs_best", g.vs_best), ("vs_iid", g.vs_iid), ("vs_central", g.vs_central)):
            for part in ("diff", "ci_low", "ci_high", "p_t", "p_wilcoxon"):
                value = None if p is None else getattr(p, part)
                row[f"{name}_{part}"] = "" if value is None else value
        row["p_holm"] = "" if g.p_holm is None else g.p_holm
        row["p_wilcoxon_holm"] = "" if g.p_wilcoxon_holm is None else g.p_wilcoxon_holm
        row["verdict"] = g.verdict
        row["target_reached"] = g.reached
        row["rounds_to_target_mean"] = "" if g.rounds_to_target is None else g.rounds_to_target.mean
        out.append(row)
    return out


def run_rows(runs: list[Run], folder: Path) -> list[dict[str, Any]]:
    """runs.csv rows: every compared and reference run."""
    from fedlearn.compare.analysis import run_figures

    out = []
    for r in runs:
        fig = run_figures(r, None) if r.ok else None
        row: dict[str, Any] = {"role": r.role, "block": r.block or r.slug, "group": r.group}
        row.update({"seed": r.seed, "status": r.status, "path": rel(r.path, folder)})
        for m in METRICS:
            value = fig.values.get(m) if fig else None
            row[m] = "" if value is None else value
        row["diverged"] = divergence(r) or ""
        row["error"] = r.error or ""
        out.append(row)
    return out


def trial_rows(studies: list[Study], folder: Path) -> list[dict[str, Any]]:
    """trials.csv rows: every tuning trial with its values and validation score."""
    out = []
    for study in studies:
        for t in study.trials:
            out.append(
                {
                    "block": study.slug,
                    "strategy": study.strategy,
                    "trial": t.number,
                    "values": json.dumps(t.values),
                    "score": t.score,
                    "status": t.run.status,
                    "chosen": t is study.best,
                    "path": rel(t.run.path, folder),
                }
            )
    return out


def write_csvs(
    groups: list[Group], centrals: list[Central], studies: list[Study], folder: Path
) -> None:
    """summary.csv, runs.csv and (when tuned) trials.csv in ``folder``."""
    _write(folder / SUMMARY_CSV, summary_rows(groups + [c.group for c in centrals]))
    runs = [r for g in groups for r in g.runs]
    runs += [r for g in groups if g.iid for r in g.iid.runs]
    runs += [r for c in centrals for r in c.group.runs]
    _write(folder / RUNS_CSV, run_rows(runs, folder))
    _write(folder / TRIALS_CSV, trial_rows(studies, folder))
