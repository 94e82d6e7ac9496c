"""Per-run figures, per-group statistics over seeds, and the ranking."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fedlearn import records
from fedlearn.compare.runs import Run
from fedlearn.compare.stats import Summary, summarize, welch

ALPHA = 0.05  # significance level of the ranking's Welch tests
METRICS = ("final_acc", "best_acc", "final_loss", "best_loss", "wall_seconds")


@dataclass
class RunFigures:
    """What the report needs from one run."""

    source: str  # "test" (central test set) or "federated" (no central evaluation)
    rounds: list[int]
    accuracy: list[float]
    loss: list[float]
    cum_bytes: list[float]  # bytes sent + received up to each round
    values: dict[str, float | None] = field(default_factory=dict)  # METRICS
    target_round: int | None = None
    target_sent: int | None = None
    target_received: int | None = None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(float(x)) else None


def run_figures(run: Run, target: float | None) -> RunFigures:
    """Accuracy/loss per round on the test set (federated evaluation when the run had no
    central evaluation); "best" is the test value at the round of best validation."""
    lines = sorted(run.metrics, key=lambda m: m.get("round", 0))
    central = any(_num(records.test_entry(m).get("accuracy")) is not None for m in lines)
    rounds, acc, loss, cum, val = [], [], [], [], []
    sent = received = 0
    target_round = target_sent = target_received = None
    for m in lines:
        sent += int(m.get("bytes_sent") or 0)
        received += int(m.get("bytes_received") or 0)
        ev = records.test_entry(m) if central else (m.get("evaluate") or {})
        a = _num(ev.get("accuracy" if central else "eval_acc"))
        if a is None:
            continue
        rounds.append(int(m.get("round", 0)))
        acc.append(a)
        lo = _num(ev.get("loss" if central else "eval_loss"))
        loss.append(math.nan if lo is None else lo)
        v = _num((m.get("validation") or {}).get("accuracy"))
        val.append(-math.inf if v is None else v)
        cum.append(float(sent + received))
        if target is not None and target_round is None and a >= target:
            target_round, target_sent, target_received = rounds[-1], sent, received
    trained = [i for i, r in enumerate(rounds) if r > 0] or list(range(len(rounds)))
    chosen = max(trained, key=lambda i: val[i], default=None)  # first of equal maxima
    if chosen is not None and val[chosen] == -math.inf:
        chosen = None  # no validation set: no best round (choosing on test is not allowed)
    values = {
        "final_acc": acc[-1] if acc else None,
        "best_acc": acc[chosen] if chosen is not None else None,
        "final_loss": loss[-1] if loss and not math.isnan(loss[-1]) else None,
        "best_loss": loss[chosen] if chosen is not None and not math.isnan(loss[chosen]) else None,
        "wall_seconds": _num(run.result.get("wall_seconds")),
    }
    return RunFigures(
        "test" if central else "federated",
        rounds,
        acc,
        loss,
        cum,
        values,
        target_round,
        target_sent,
        target_received,
    )


@dataclass
class Group:
    """Runs that differ only by seed, and their statistics over the completed ones."""

    label: str
    block: str  # swept settings other than the strategy's; ranking is within a block
    runs: list[Run]
    figures: list[RunFigures]  # of the completed runs, same order as ``ok``
    stats: dict[str, Summary | None]
    reached: int  # completed runs that reached the target
    rounds_to_target: Summary | None
    sent_to_target: Summary | None
    received_to_target: Summary | None
    p_value: float | None = None  # Welch vs the top group's final accuracy
    verdict: str = ""

    @property
    def name(self) -> str:
        """The label without the block part (the strategy and its varied settings)."""
        if self.block and self.label.endswith(self.block):
            return self.label[: -len(self.block)].strip()
        return self.label

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def values(self, metric: str) -> list[float]:
        return [f.values[metric] for f in self.figures if f.values.get(metric) is not None]


def build_groups(runs: list[Run], target: float | None) -> list[Group]:
    """Group labelled runs; statistics over each group's completed runs."""
    labels = list(dict.fromkeys(r.group for r in runs))
    groups = []
    for label in labels:
        members = [r for r in runs if r.group == label]
        figs = [run_figures(r, target) for r in members if r.ok]
        stats = {
            m: summarize([f.values[m] for f in figs if f.values[m] is not None]) for m in METRICS
        }
        hit = [f for f in figs if f.target_round is not None]
        groups.append(
            Group(
                label,
                members[0].block,
                members,
                figs,
                stats,
                len(hit),
                summarize([f.target_round for f in hit]),
                summarize([f.target_sent for f in hit]),
                summarize([f.target_received for f in hit]),
            )
        )
    return groups


def auto_target(runs: list[Run]) -> float | None:
    """Default target: 90% of the best group's mean final accuracy, floored to 0.01."""
    groups = build_groups(runs, None)
    means = [g.stats["final_acc"].mean for g in groups if g.stats["final_acc"] is not None]
    return math.floor(0.9 * max(means) * 100) / 100 if means else None


def blocks(groups: list[Group]) -> list[str]:
    """Block labels in first-seen order."""
    return list(dict.fromkeys(g.block for g in groups))


def rank(groups: list[Group], metric: str = "final_acc") -> list[Group]:
    """Within each block, sort by mean ``metric`` (higher first) and test each group
    against the block's top one.

    Welch's two-sided t-test on per-seed values; ``p >= ALPHA`` means the gap to the
    top group is within seed-to-seed noise. Groups without completed runs go last.
    """
    out: list[Group] = []
    for block in blocks(groups):
        members = [g for g in groups if g.block == block]
        scored = [g for g in members if g.stats[metric] is not None]
        scored.sort(key=lambda g: -g.stats[metric].mean)  # type: ignore[union-attr]
        rest = [g for g in members if g.stats[metric] is None]
        for g in rest:
            g.verdict = "no completed run"
        if scored:
            top = scored[0]
            top.verdict = "best"
            for g in scored[1:]:
                test = welch(top.values(metric), g.values(metric))
                if test is None:
                    g.p_value, g.verdict = None, "untested (needs >= 2 seeds each)"
                    continue
                g.p_value = test[2]
                g.verdict = "within noise of best" if g.p_value >= ALPHA else "worse than best"
        out += scored + rest
    return out
