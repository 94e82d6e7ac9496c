"""The comparison as Markdown (report.md) and as a rich table on the terminal."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from fedlearn.compare.analysis import ALPHA, CHANCE_MARGIN, Group, blocks
from fedlearn.compare.plots import PLOT_BYTES, PLOT_ROUND, PLOT_TUNING
from fedlearn.compare.references import Central
from fedlearn.compare.stats import BOOTSTRAP_MIN, WILCOXON_MIN
from fedlearn.compare.tables import (
    RUNS_CSV,
    SUMMARY_CSV,
    TRIALS_CSV,
    delta,
    human_bytes,
    mean_ci,
    per_seed,
    pm,
    pval,
    rel,
)
from fedlearn.compare.tuning import Study

REPORT_MD = "report.md"


def target_cell(g: Group) -> str:
    n = len(g.figures)
    if g.rounds_to_target is None:
        return "not reached" if n else "-"
    return f"{g.rounds_to_target.mean:.1f} ({g.reached}/{n} reached)"


def _how_tuned(plan: dict[str, Any] | None, studies: list[Study]) -> list[str]:
    """The budget paragraph: tuned how, or untuned."""
    opts = (plan or {}).get("options", {})
    if not opts.get("tune"):
        where = (
            "" if plan else " (no plan.json here: a folder not made by fedlearn-compare's tuning)"
        )
        return [
            f"**Hyperparameters: untuned**{where}. Every strategy runs at its"
            " `conf/strategy/*.yaml` defaults and the command line's settings, which may suit"
            " some strategies better than others.",
        ]
    sampler = opts.get("sampler", "tpe")
    how = {
        "tpe": f"Optuna's TPE sampler, seed {opts.get('tune_seed')} (its first 10 trials are"
        " seeded random draws)",
        "random": f"Optuna's random sampler, seed {opts.get('tune_seed')}",
        "grid": "Optuna's grid sampler over each space's grid",
    }[sampler]
    if sampler != "grid":
        how += (
            "; random draws shared across strategies (trial k tries the same value of a"
            " setting wherever its range is the same)"
            if opts.get("draws") == "shared"
            else "; random draws from one stream per strategy, so strategies that tune"
            " different numbers of settings tried different client learning rates"
        )
    n_trials = sum(len(s.trials) for s in studies)
    rounds = opts.get("tune_rounds")
    length = f"{rounds} rounds" if rounds else "as long as an evaluation run"
    seconds = sum(t.run.result.get("wall_seconds") or 0.0 for s in studies for t in s.trials)
    return [
        f"**Hyperparameters: tuned** with an equal budget: {opts['tune']} trials per strategy"
        f" and block ({how}), the centralized baseline included; {n_trials} trial runs in all,"
        f" {seconds / 60:.1f} minutes of run time. Each trial is one run"
        f" ({length}) on tuning seed {opts.get('tune_seed')}, scored on the **validation**"
        f" set: its mean validation accuracy over the last {opts.get('tune_last')} rounds"
        " (a trial that did not complete scores 0). The best trial's values then run on every"
        " seed below and are compared on the **test** set, which tuning never reads. Search"
        " spaces: `fedlearn/conf/search/`.",
    ]


def _ranking(groups: list[Group], block: str) -> list[str]:
    lines = [
        "| rank | strategy | runs ok | diverged | final test acc. | per seed "
        "| Δ vs best [95% CI] | paired t p (Holm) | Wilcoxon p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, g in enumerate((g for g in groups if g.block == block), 1):
        lines.append(
            f"| {i if g.ok else '-'} | {g.name} | {len(g.ok)}/{len(g.runs)} | {len(g.diverged)} "
            f"| {mean_ci(g.stats['final_acc'])} | {per_seed(g)} | {delta(g.vs_best)} "
            f"| {pval(g.p_holm)} | {pval(g.p_wilcoxon_holm)} | {g.verdict} |"
        )
    return lines


def _costs(groups: list[Group], block: str) -> list[str]:
    lines = [
        "| strategy | test acc. at best val. round | final test loss | IID, same settings "
        "| non-IID − IID [95% CI] | − centralized [95% CI] | rounds to target "
        "| MB sent / received to target | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in (g for g in groups if g.block == block):
        iid = f"{mean_ci(g.iid.stats['final_acc'])} ({per_seed(g.iid)})" if g.iid else "-"
        mb = f"{human_bytes(g.sent_to_target)} / {human_bytes(g.received_to_target)}"
        lines.append(
            f"| {g.name} | {mean_ci(g.stats['best_acc'])} | {pm(g.stats['final_loss'])} "
            f"| {iid} | {delta(g.vs_iid)} | {delta(g.vs_central)} | {target_cell(g)} | {mb} "
            f"| {pm(g.stats['wall_seconds'], 1)} |"
        )
    return lines


def _central(centrals: list[Central], groups: list[Group], block: str) -> list[str]:
    central = next((c.group for c in centrals if c.block == block), None)
    if central is None:
        return ["Centralized baseline: none recorded for this block."]
    fed = [v for g in groups if g.block == block for v in g.values("train_steps")]
    steps = central.stats["train_steps"]
    fed_text = f"{sum(fed) / len(fed):,.0f}" if fed else "-"
    return [
        f"Centralized baseline (all training data on one client, the same model, "
        f"{steps.mean if steps else 0:,.0f} optimizer steps per run; the federated runs took"
        f" {fed_text} on average): final test accuracy {mean_ci(central.stats['final_acc'])}"
        f" (per seed {per_seed(central)}), {len(central.ok)}/{len(central.runs)} runs completed.",
    ]


def _values(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _tuning(studies: list[Study], block_of: dict[str, str], folder: Path) -> list[str]:
    if not studies:
        return []
    lines = [
        "## Tuning",
        "",
        "| block | strategy | trials ok | chosen values | its score "
        "| scores (min / median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for s in studies:
        scores = [t.score for t in s.trials]
        spread = "-"
        if scores:
            spread = f"{min(scores):.4f} / {statistics.median(scores):.4f} / {max(scores):.4f}"
        chosen = _values(s.best.values) if s.best else "defaults (none completed)"
        ok = sum(t.run.ok for t in s.trials)
        best = f"{s.best.score:.4f}" if s.best else "-"
        lines.append(
            f"| {block_of.get(s.slug, s.slug) or 'all'} | {s.strategy} | {ok}/{len(s.trials)} "
            f"| {chosen} | {best} | {spread} |"
        )
    lines += [
        "",
        f"![tuning scores]({PLOT_TUNING})",
        "",
        "Every trial:",
        "",
        "| block | strategy | trial | values | validation score | status | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in studies:
        for t in s.trials:
            values = _values(t.values)
            mark = " (chosen)" if t is s.best else ""
            lines.append(
                f"| {block_of.get(s.slug, s.slug) or 'all'} | {s.strategy} | {t.number}{mark} "
                f"| {values} | {t.score:.4f} | {t.run.status} | `{rel(t.run.path, folder)}` |"
            )
    return lines + [""]


def markdown(
    groups: list[Group],
    centrals: list[Central],
    studies: list[Study],
    plan: dict[str, Any] | None,
    folder: Path,
    axes: list[str],
    target: float | None,
    target_auto: bool,
    source: str,
) -> str:
    """The report as Markdown."""
    runs = [r for g in groups for r in g.runs]
    failed = [r for r in runs if not r.ok]
    diverged = [(g, r, why) for g in groups for r, why in g.diverged]
    how = "auto: 90% of the best group's mean final accuracy" if target_auto else "set"
    block_of = {r.slug: r.block for r in runs if r.slug}
    lines = [
        f"# Strategy comparison: {folder.name}",
        "",
        *_how_tuned(plan, studies),
        "",
        f"{len(runs)} compared runs ({len(runs) - len(failed)} completed, {len(failed)} not) in"
        f" {len(groups)} groups. Swept axes besides the seed: {', '.join(axes) or 'none'}.",
        f"Accuracy and loss: {source} evaluation, final round. Per seed: the values in seed"
        f" order. An interval next to a mean is a 95% bootstrap percentile interval of the mean"
        f" (from {BOOTSTRAP_MIN} seeds on; with fewer, read the per-seed values): it never leaves"
        " [0, 1].",
        f"Target accuracy: {target if target is not None else '-'} ({how}).",
    ]
    first = ((plan or {}).get("options") or {}).get("reference_seeds")
    if first:
        lines.append(f"References (IID runs, centralized baseline) ran on the first {first} seeds.")
    for block in blocks(groups):
        lines += ["", f"### {block}" if block else "### all runs", ""]
        lines += _ranking(groups, block) + [""] + _costs(groups, block) + [""]
        lines += _central(centrals, groups, block)
    lines += [
        "",
        f"Ranking: by mean final test accuracy within each block. Runs with the same seed share"
        " their partition, initial model and client sampling across strategies, so each"
        " strategy is compared with the block's best **paired by seed**: Δ is the mean"
        " per-seed difference with its Student-t 95% interval, tested by the paired t-test and,"
        f" from {WILCOXON_MIN} seeds on, the Wilcoxon signed-rank test (with fewer its exact"
        " p-value cannot go below 0.05). The p-values of a block are Holm-Bonferroni corrected"
        f" together; a corrected p >= {ALPHA} is reported as within noise of the best. Diverged"
        " runs count in the statistics at the accuracy they end with.",
        "",
        f"![accuracy vs round]({PLOT_ROUND})",
        "",
        f"![accuracy vs bytes]({PLOT_BYTES})",
        "",
    ]
    lines += _tuning(studies, block_of, folder)
    if diverged:
        lines += [
            "## Diverged runs",
            "",
            "A run diverged when its last round has a non-finite loss, its final test accuracy is"
            f" within {CHANCE_MARGIN} of chance (always predicting the most frequent class), or"
            " it stopped because clients sent non-finite updates.",
            "",
        ]
        lines += [
            f"- `{rel(r.path, folder)}` ({g.label}, seed {r.seed}): {why}" for g, r, why in diverged
        ]
        lines.append("")
    if failed:
        lines += ["## Runs that did not complete (left out of the statistics)", ""]
        lines += [
            f"- `{rel(r.path, folder)}` ({r.group}, seed {r.seed}): {r.status}: {r.error or '-'}"
            for r in failed
        ]
        lines.append("")
    trials_csv = f", {TRIALS_CSV} (per tuning trial)" if studies else ""
    lines += [f"Data: {SUMMARY_CSV} (per group), {RUNS_CSV} (per run){trials_csv}."]
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
        "diverged",
        "final test acc",
        "per seed",
        "Δ vs best",
        "p (Holm)",
        "vs best",
    ):
        table.add_column(col, overflow="fold")
    rank_in_block: dict[str, int] = {}
    for g in groups:
        if rank_in_block and g.block not in rank_in_block:
            table.add_section()
        rank_in_block[g.block] = i = rank_in_block.get(g.block, 0) + 1
        table.add_row(
            str(i) if g.ok else "-",  # groups without a completed run are not ranked
            g.name,
            g.block or "-",
            f"{len(g.ok)}/{len(g.runs)}",
            str(len(g.diverged)),
            mean_ci(g.stats["final_acc"]),
            per_seed(g),
            delta(g.vs_best),
            pval(g.p_holm),
            g.verdict,
        )
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze into 80 columns
        console = Console(width=160)
    console.print(table)
