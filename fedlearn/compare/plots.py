"""The comparison's PNG plots: accuracy curves with bands over seeds, tuning scores."""

from __future__ import annotations

import math
from pathlib import Path

from fedlearn.compare.analysis import Group, blocks
from fedlearn.compare.references import Central
from fedlearn.compare.tuning import Study

PLOT_ROUND, PLOT_BYTES = "accuracy_vs_round.png", "accuracy_vs_bytes.png"
PLOT_TUNING = "tuning_scores.png"


def _pyplot():  # noqa: ANN202 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve(g: Group, x_of: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per round: x (round or mean cumulative MB), and the mean, lowest and highest test
    accuracy over the group's seeds. The band is the seeds' own range: with a few seeds
    a mean +- std band claims more than they show, and leaves [0, 1] near chance."""
    xs, mean, low, high = [], [], [], []
    for r in sorted({r for f in g.figures for r in f.rounds}):
        pts = [
            (f.accuracy[i], f.cum_bytes[i])
            for f in g.figures
            for i, fr in enumerate(f.rounds)
            if fr == r
        ]
        acc = [p[0] for p in pts]
        mean.append(sum(acc) / len(acc))
        low.append(min(acc))
        high.append(max(acc))
        xs.append(r if x_of == "round" else sum(p[1] for p in pts) / len(pts) / 1e6)
    return xs, mean, low, high


def _grid(n: int):  # noqa: ANN202 - a figure and its axes
    plt = _pyplot()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    return plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False, sharey=True)


def _finish(fig, axes, used: int, ylabel: str, title: str, path: Path) -> None:  # noqa: ANN001
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def bands(groups: list[Group], centrals: list[Central], x_of: str, path: Path) -> None:
    """Test accuracy per round (or per MB) per block, one line and band per group; the
    centralized baseline dashed (per round only: it sends no bytes worth comparing)."""
    from matplotlib.ticker import MaxNLocator

    names = blocks(groups)
    fig, axes = _grid(len(names))
    for ax, block in zip(axes.flat, names, strict=False):
        for g in (g for g in groups if g.block == block and g.figures):
            xs, mean, low, high = curve(g, x_of)
            (line,) = ax.plot(xs, mean, label=f"{g.name} (n={len(g.figures)})")
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
        central = next((c.group for c in centrals if c.block == block), None)
        if x_of == "round" and central is not None and central.figures:
            xs, mean, _, _ = curve(central, "round")
            ax.plot(xs, mean, "k--", label=f"centralized (n={len(central.figures)})")
        if x_of == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(block or "all runs", fontsize=10)
        ax.set_xlabel("round" if x_of == "round" else "MB sent + received (cumulative)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", transform=ax.transAxes)
    title = "mean over seeds; band: lowest to highest seed"
    _finish(fig, axes, len(names), "test accuracy", title, path)


def tuning(studies: list[Study], block_of: dict[str, str], path: Path) -> None:
    """Every trial's validation score, per block and strategy; the chosen one starred."""
    slugs = list(dict.fromkeys(s.slug for s in studies))
    fig, axes = _grid(len(slugs))
    for ax, slug in zip(axes.flat, slugs, strict=False):
        mine = [s for s in studies if s.slug == slug]
        for x, study in enumerate(mine):
            scores = [t.score for t in study.trials]
            ax.scatter([x] * len(scores), scores, s=14, alpha=0.6)
            if study.best is not None:
                ax.scatter([x], [study.best.score], marker="*", s=120, color="k", zorder=3)
        ax.set_xticks(range(len(mine)), [s.strategy for s in mine], rotation=45, ha="right")
        ax.set_title(block_of.get(slug, slug) or "all runs", fontsize=10)
        ax.grid(alpha=0.3)
    ylabel = "trial score (validation accuracy)"
    _finish(fig, axes, len(slugs), ylabel, "tuning trials; star: the chosen one", path)
