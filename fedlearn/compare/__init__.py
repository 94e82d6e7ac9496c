"""Compare aggregation strategies: sweep strategies x seeds (x any axis), then report.

``fedlearn-compare strategy=fedavg,fedprox seed=0,1,2 [hydra/launcher=joblib]``
runs the grid as a Hydra multirun and writes the report into the sweep folder;
``fedlearn-compare report <folder>`` rebuilds it from run folders alone (any
runtime's, gRPC deployments included). See :mod:`fedlearn.compare.cli`.
"""

from __future__ import annotations

from pathlib import Path

from fedlearn.compare.analysis import Group, auto_target, build_groups, rank
from fedlearn.compare.runs import find_run_dirs, label_runs, read_run


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
        different experiments; the seed always is one.

    Returns
    -------
    list of Group or None
        The ranked groups; None (after one printed line) when there are no runs.
    """
    from fedlearn.compare import report

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"dir={folder}: no such folder; give a sweep or run folder")
    runs = [read_run(p) for p in find_run_dirs(folder)]
    if not runs:
        print(f"fedlearn-compare: no runs in {folder}")
        return None
    axes = label_runs(runs, tuple(ignore))
    target_auto = target is None
    if target_auto:
        target = auto_target(runs)
    groups = rank(build_groups(runs, target))
    sources = {f.source for g in groups for f in g.figures}
    source = "central test set" if sources == {"test"} else " / ".join(sorted(sources)) or "no"
    report.write_csvs(groups, folder)
    report.plots(groups, folder)
    text = report.markdown(groups, folder, axes, target, target_auto, source)
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
