"""Compare aggregation strategies: tune (optionally), run strategies x seeds, report.

``fedlearn-compare strategy=fedavg,fedprox seed=0,1,2 [compare.tune=8]`` tunes
each strategy with the same budget on the validation set, runs the chosen
configurations on every seed, runs the references (centralized baseline, IID
runs) and writes the report into the sweep folder; ``fedlearn-compare report
<folder>`` rebuilds it from run folders alone (any runtime's, gRPC deployments
included). See :mod:`fedlearn.compare.cli`.
"""

from __future__ import annotations

from pathlib import Path

from fedlearn.compare.analysis import Group, auto_target, build_groups, rank
from fedlearn.compare.runs import CENTRAL, IID, RUNS, TUNING, find_run_dirs, label_runs, read_run


def _index(items: list[str], item: str) -> int:
    return items.index(item) if item in items else len(items)


def build_report(
    folder: str | Path,
    target: float | None = None,
    show: bool = True,
    ignore: tuple[str, ...] = (),
) -> list[Group] | None:
    """Read every run under ``folder``; write report.md, CSVs and plots there.

    Parameters
    ----------
    folder : path
        A sweep folder (or any folder holding run folders, at any depth).
    target : float, optional
        Accuracy for "rounds to reach"; None: 90% of the best group's mean final
        accuracy.
    show : bool
        Also print the ranking as a table.
    ignore : tuple of str
        Settings (or sections, e.g. ``runtime``) whose differences do not make runs
        different experiments; the seed always is one, and so are tuned settings.

    Returns
    -------
    list of Group or None
        The ranked groups; None (after one printed line) when there are no runs.
    """
    from fedlearn.compare import plots, report, tables
    from fedlearn.compare.plan import load_plan
    from fedlearn.compare.references import attach
    from fedlearn.compare.tuning import studies as tuning_studies

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"dir={folder}: no such folder; give a sweep or run folder")
    plan = load_plan(folder)
    runs = [read_run(p, folder) for p in find_run_dirs(folder)]
    compared = [r for r in runs if r.role == RUNS]
    if not compared:
        print(f"fedlearn-compare: no runs in {folder}")
        return None
    spaces = (plan or {}).get("spaces", {})
    tuned = tuple(sorted({p["key"] for space in spaces.values() for p in space}))
    axes = label_runs(compared, tuple(ignore) + tuned)
    target_auto = target is None
    if target_auto:
        target = auto_target(compared)
    groups = rank(build_groups(compared, target))
    centrals = attach(groups, [r for r in runs if r.role in (CENTRAL, IID)], compared, target)
    last = int((plan or {}).get("options", {}).get("tune_last", 5))
    studies = tuning_studies([r for r in runs if r.role == TUNING], spaces, last)
    # The command's order: blocks, then strategies, the baseline last.
    slugs = [b["slug"] for b in (plan or {}).get("blocks", [])]
    names = [*(plan or {}).get("strategies", []), CENTRAL]
    studies.sort(key=lambda s: (_index(slugs, s.slug), _index(names, s.strategy)))
    sources = {f.source for g in groups for f in g.figures}
    source = "central test set" if sources == {"test"} else " / ".join(sorted(sources)) or "no"
    tables.write_csvs(groups, centrals, studies, folder)
    plots.bands(groups, centrals, "round", folder / plots.PLOT_ROUND)
    plots.bands(groups, centrals, "bytes", folder / plots.PLOT_BYTES)
    block_of = {r.slug: r.block for r in compared if r.slug}
    if studies:
        plots.tuning(studies, block_of, folder / plots.PLOT_TUNING)
    text = report.markdown(
        groups, centrals, studies, plan, folder, axes, target, target_auto, source
    )
    (folder / report.REPORT_MD).write_text(text)
    if show:
        report.print_table(groups, f"fedlearn-compare: {folder}")
        print(f"report: {folder / report.REPORT_MD}")
    return groups


def main() -> None:
    """Console entry point (``fedlearn-compare``)."""
    from fedlearn.compare.cli import main as cli_main

    cli_main()


__all__ = ["build_report", "main"]
