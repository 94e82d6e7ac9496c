"""Per-run figures, divergence, per-group statistics over seeds, and the paired ranking."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fedlearn import records
from fedlearn.compare.runs import Run
from fedlearn.compare.stats import Paired, Summary, holm, paired, summarize

ALPHA = 0.05  # family-wise level of the Holm-corrected comparisons within a block
CHANCE_MARGIN = 0.01  # a final test accuracy within this of chance counts as diverged
METRICS = ("final_acc", "best_acc", "final_loss", "best_loss", "wall_seconds", "train_steps")


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
        "train_steps": _num(run.result.get("train_steps")) or None,
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


def divergence(run: Run) -> str | None:
    """Why a run counts as diverged, or None: a non-finite loss in its last round (JSON
    records NaN as null), the final test accuracy within ``CHANCE_MARGIN`` of chance
    (the most frequent class's share, recorded at round 0), or a stop because clients
    sent non-finite updates."""
    if run.status == "stopped" and "non-finite" in (run.error or ""):
        return "stopped: clients sent non-finite updates"
    if not run.ok:
        return None
    lines = sorted(run.metrics, key=lambda m: m.get("round", 0))
    trained = [m for m in lines if m.get("round", 0) > 0]
    if not trained:
        return None
    last = trained[-1]
    for name, entry in (
        ("test", records.test_entry(last)),
        ("validation", last.get("validation")),
        ("train", {"loss": (last.get("train") or {}).get("train_loss", 0.0)}),
    ):
        if entry and "loss" in entry and _num(entry["loss"]) is None:
            return f"non-finite {name} loss in round {last['round']}"
    chance = _num(records.test_entry(lines[0]).get("chance")) if lines else None
    acc = _num(records.test_entry(last).get("accuracy"))
    if chance is not None and acc is not None and acc <= chance + CHANCE_MARGIN:
        return (
            f"final test accuracy {acc:.3f} at or below chance ({chance:.3f}: most frequent class)"
        )
    return None


@dataclass
class Group:
    """Runs that differ only by seed, their statistics over the completed ones, and how
    they compare with the block's best and with the references."""

    label: str
    block: str  # swept settings other than the strategy's; ranking is within a block
    runs: list[Run]
    figures: list[RunFigures]  # of the completed runs, same order as ``ok``
    stats: dict[str, Summary | None]
    reached: int  # completed runs that reached the target
    rounds_to_target: Summary | None
    sent_to_target: Summary | None
    received_to_target: Summary | None
    diverged: list[tuple[Run, str]] = field(default_factory=list)
    vs_best: Paired | None = None  # this minus the block's best, paired by seed
    p_holm: float | None = None  # paired t-test's p, Holm-corrected within the block
    p_wilcoxon_holm: float | None = None
    verdict: str = ""
    iid: Group | None = None  # the same configuration on an IID partition
    vs_iid: Paired | None = None  # this minus IID, paired by seed
    vs_central: Paired | None = None  # this minus the centralized baseline, by seed

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

    def by_seed(self, metric: str = "final_acc") -> dict[Any, float]:
        """Completed runs' ``metric`` keyed by seed."""
        out = {}
        for run, fig in zip(self.ok, self.figures, strict=True):
            if fig.values.get(metric) is not None:
                out[run.seed] = fig.values[metric]
        return out


def make_group(label: str, block: str, members: list[Run], target: float | None) -> Group:
    """A group's figures and statistics (completed runs; diverged ones included)."""
    figs = [run_figures(r, target) for r in members if r.ok]
    stats = {m: summarize([f.values[m] for f in figs]) for m in METRICS}
    hit = [f for f in figs if f.target_round is not None]
    diverged = [(r, why) for r in members if (why := divergence(r)) is not None]
    return Group(
        label,
        block,
        members,
        figs,
        stats,
        len(hit),
        summarize([f.target_round for f in hit]),
        summarize([f.target_sent for f in hit]),
        summarize([f.target_received for f in hit]),
        diverged,
    )


def build_groups(runs: list[Run], target: float | None) -> list[Group]:
    """Group labelled runs; statistics over each group's completed runs."""
    labels = list(dict.fromkeys(r.group for r in runs))
    out = []
    for label in labels:
        members = [r for r in runs if r.group == label]
        out.append(make_group(label, members[0].block, members, target))
    return out


def auto_target(runs: list[Run]) -> float | None:
    """Default target: 90% of the best group's mean final accuracy, floored to 0.01."""
    groups = build_groups(runs, None)
    means = [g.stats["final_acc"].mean for g in groups if g.stats["final_acc"] is not None]
    return math.floor(0.9 * max(means) * 100) / 100 if means else None


def blocks(groups: list[Group]) -> list[str]:
    """Block labels in first-seen order."""
    return list(dict.fromkeys(g.block for g in groups))


def compare_paired(a: Group, b: Group | None, metric: str = "final_acc") -> Paired | None:
    """``a - b`` on ``metric`` over the seeds both completed (None: fewer than 2)."""
    if b is None:
        return None
    x, y = a.by_seed(metric), b.by_seed(metric)
    common = [s for s in x if s in y]
    return paired([x[s] for s in common], [y[s] for s in common])


def rank(groups: list[Group], metric: str = "final_acc") -> list[Group]:
    """Within each block, sort by mean ``metric`` (higher first) and compare each group
    with the block's top one, paired by seed.

    The paired t-tests of a block (and its Wilcoxon tests) are Holm-corrected together;
    a corrected ``p >= ALPHA`` means the gap to the top group is within seed-to-seed
    noise. Groups without completed runs go last, unranked.
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
            top, others = scored[0], scored[1:]
            top.verdict = "best"
            for g in others:
                g.vs_best = compare_paired(g, top, metric)
            tests = [g.vs_best for g in others]
            p_t = holm([t.p_t if t else None for t in tests])
            p_w = holm([t.p_wilcoxon if t else None for t in tests])
            for g, pt, pw in zip(others, p_t, p_w, strict=True):
                g.p_holm, g.p_wilcoxon_holm = pt, pw
                if pt is None:
                    g.verdict = "untested (needs >= 2 seeds in common)"
                else:
                    g.verdict = "within noise of best" if pt >= ALPHA else "worse than best"
        out += scored + rest
    return out
