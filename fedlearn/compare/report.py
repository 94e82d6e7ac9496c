"""Write the comparison: report.md, summary.csv, runs.csv, PNG plots, a rich table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fedlearn.compare.analysis import ALPHA, METRICS, Group, blocks
from fedlearn.compare.stats import Summary

SUMMARY_CSV, RUNS_CSV, REPORT_MD = "summary.csv", "runs.csv", "report.md"
PLOT_ROUND, PLOT_BYTES = "accuracy_vs_round.png", "accuracy_vs_bytes.png"


def pm(s: Summary | None, digits: int = 4, ci: bool = True) -> str:
    """``mean ± std [lo, hi]`` (the CI only when there are two or more values)."""
    if s is None:
        return "-"
    text = f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"
    if ci and s.n > 1:
        text += f" [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"
    return text


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


def target_cell(g: Group) -> str:
    n = len(g.figures)
    if g.rounds_to_target is None:
        return "not reached" if n else "-"
    return f"{pm(g.rounds_to_target, 1, ci=False)} ({g.reached}/{n} reached)"


def rows(groups: list[Group]) -> list[dict[str, object]]:
    """summary.csv rows: one per group, numbers unrounded."""
    out = []
    for g in groups:
        row: dict[str, object] = {"group": g.label, "runs": len(g.runs), "completed": len(g.ok)}
        for m in METRICS:
            s = g.stats[m]
            for part in ("mean", "std", "ci_low", "ci_high"):
                row[f"{m}_{part}"] = "" if s is None else getattr(s, part)
        row["target_reached"] = g.reached
        for name, s in (
            ("rounds_to_target", g.rounds_to_target),
            ("bytes_sent_to_target", g.sent_to_target),
            ("bytes_received_to_target", g.received_to_target),
        ):
            row[f"{name}_mean"] = "" if s is None else s.mean
        row["p_value_vs_best"] = "" if g.p_value is None else g.p_value
        row["verdict"] = g.verdict
        out.append(row)
    return out


def write_csvs(groups: list[Group], folder: Path) -> None:
    table = rows(groups)
    with open(folder / SUMMARY_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    with open(folder / RUNS_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "group",
                "seed",
                "status",
                "path",
                *METRICS,
                "rounds_to_target",
                "bytes_sent_to_target",
                "bytes_received_to_target",
                "error",
            ]
        )
        for g in groups:
            figs = iter(g.figures)
            for r in g.runs:
                fig = next(figs) if r.ok else None
                vals = [fig.values[m] if fig else "" for m in METRICS]
                tgt = [fig.target_round, fig.target_sent, fig.target_received] if fig else [""] * 3
                w.writerow(
                    [
                        g.label,
                        r.seed,
                        r.status,
                        _rel(r.path, folder),
                        *vals,
                        *["" if v is None else v for v in tgt],
                        r.error or "",
                    ]
                )


def _curve(g: Group, x_of: str) -> tuple[list[float], list[float], list[float]]:
    """Per round: x (round or mean cumulative MB), mean accuracy and its std over seeds."""
    xs, mean, std = [], [], []
    for r in sorted({r for f in g.figures for r in f.rounds}):
        pts = [
            (f.accuracy[i], f.cum_bytes[i])
            for f in g.figures
            for i, fr in enumerate(f.rounds)
            if fr == r
        ]
        acc = [p[0] for p in pts]
        m = sum(acc) / len(acc)
        mean.append(m)
        std.append(
            math.sqrt(sum((a - m) ** 2 for a in acc) / (len(acc) - 1)) if len(acc) > 1 else 0.0
        )
        xs.append(r if x_of == "round" else sum(p[1] for p in pts) / len(pts) / 1e6)
    return xs, mean, std


def _band(groups: list[Group], x_of: str, path: Path, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = blocks(groups)
    cols = min(len(names), 3)
    rows_ = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows_, cols, figsize=(6.5 * cols, 4.5 * rows_), squeeze=False, sharey=True
    )
    for ax, block in zip(axes.flat, names, strict=False):
        for g in (g for g in groups if g.block == block and g.figures):
            xs, mean, std = _curve(g, x_of)
            (line,) = ax.plot(xs, mean, label=f"{g.name} (n={len(g.figures)})")
            ax.fill_between(
                xs,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=line.get_color(),
                alpha=0.15,
            )
        if x_of == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(block or "all runs", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.suptitle("mean over seeds; band: ± 1 std", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(groups: list[Group], folder: Path) -> None:
    _band(groups, "round", folder / PLOT_ROUND, "round")
    _band(groups, "bytes", folder / PLOT_BYTES, "MB sent + received (cumulative)")


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def markdown(
    groups: list[Group],
    folder: Path,
    axes: list[str],
    target: float | None,
    target_auto: bool,
    source: str,
) -> str:
    """The report as Markdown."""
    runs = [r for g in groups for r in g.runs]
    failed = [r for r in runs if not r.ok]
    how = "auto: 90% of the best group's mean final accuracy" if target_auto else "set"
    lines = [
        f"# Strategy comparison: {folder.name}",
        "",
        f"{len(runs)} runs ({len(runs) - len(failed)} completed, {len(failed)} not) in "
        f"{len(groups)} groups. Swept axes besides the seed: "
        f"{', '.join(axes) if axes else 'none'}.",
        f"Accuracy and loss: {source} evaluation. Values are mean ± sample std over seeds, "
        "with a 95% Student-t confidence interval [low, high] when there are >= 2 seeds.",
        f"Target accuracy: {target if target is not None else '-'} ({how}).",
        "",
    ]
    for block in blocks(groups):
        if block:
            lines += ["", f"### {block}"]
        lines += [
            "",
            "| rank | strategy | runs ok | final accuracy | accuracy at best val. round "
            "| final loss | loss at best val. round | rounds to target "
            "| sent / received to target | wall s | vs best |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, g in enumerate((g for g in groups if g.block == block), 1):
            p = "" if g.p_value is None else f" (p={g.p_value:.3f})"
            mb = f"{human_bytes(g.sent_to_target)} / {human_bytes(g.received_to_target)}"
            lines.append(
                f"| {i if g.ok else '-'} | {g.name} | {len(g.ok)}/{len(g.runs)} "
                f"| {pm(g.stats['final_acc'])} "
                f"| {pm(g.stats['best_acc'])} | {pm(g.stats['final_loss'])} "
                f"| {pm(g.stats['best_loss'])} | {target_cell(g)} | {mb} "
                f"| {pm(g.stats['wall_seconds'], 1, ci=False)} | {g.verdict}{p} |"
            )
    within = " within each block of settings" if blocks(groups)[0] else ""
    lines += [
        "",
        f"Ranking: by mean final accuracy{within}. Each strategy is compared with the top one by "
        f"Welch's two-sided t-test on the per-seed final accuracies; p >= {ALPHA} is "
        "reported as within noise of the best (not a significant difference).",
        "",
        f"![accuracy vs round]({PLOT_ROUND})",
        "",
        f"![accuracy vs bytes]({PLOT_BYTES})",
        "",
    ]
    if failed:
        lines += ["## Runs that did not complete (left out of the statistics)", ""]
        lines += [
            f"- `{_rel(r.path, folder)}` ({r.group}, seed {r.seed}): {r.status}: {r.error or '-'}"
            for r in failed
        ]
        lines.append("")
    lines += [f"Data: {SUMMARY_CSV} (per group), {RUNS_CSV} (per run)."]
    return "\n".join(lines) + "\n"


def print_table(groups: list[Group], title: str) -> None:
    """The ranking as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "#",
        "strategy",
        "settings",
        "ok",
        "final acc",
        "best acc",
        "final loss",
        "to target",
        "wall s",
        "vs best",
    ):
        table.add_column(col, overflow="fold")
    rank_in_block: dict[str, int] = {}
    for g in groups:
        if rank_in_block and g.block not in rank_in_block:
            table.add_section()
        rank_in_block[g.block] = i = rank_in_block.get(g.block, 0) + 1
        p = "" if g.p_value is None or math.isnan(g.p_value) else f" p={g.p_value:.3f}"
        table.add_row(
            str(i) if g.ok else "-",  # groups without a completed run are not ranked
            g.name,
            g.block or "-",
            f"{len(g.ok)}/{len(g.runs)}",
            pm(g.stats["final_acc"]),
            pm(g.stats["best_acc"], ci=False),
            pm(g.stats["final_loss"], ci=False),
            target_cell(g),
            pm(g.stats["wall_seconds"], 1, ci=False),
            g.verdict + p,
        )
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze into 80 columns
        console = Console(width=160)
    console.print(table)
