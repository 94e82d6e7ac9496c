"""``fedlearn-compare``: tune (optionally), run every strategy on every seed, report.

Usage::

    fedlearn-compare strategy=fedavg,fedprox seed=0,1,2 [partitioner.alpha=0.1,1.0]
    fedlearn-compare ... compare.tune=8                # 8 Optuna trials per strategy
    fedlearn-compare ... compare.jobs=2                # two runs at once (joblib)
    fedlearn-compare report <folder> [--target 0.8] [--ignore runtime]
    fedlearn-compare dir=<folder> [compare.target=0.8]   # the same, Hydra-style

The sweep takes the same config groups and overrides as ``fedlearn-simulate``, and
``compare.<option>=value`` (:data:`fedlearn.compare.plan.OPTIONS`).
Every run is one run folder under the sweep folder (``hydra.sweep.dir``, default
``multirun/<date>/<time>``), laid out by :data:`fedlearn.compare.runs.LAYOUT`;
a run that raises is recorded as failed and the sweep goes on. The same command
run again continues an interrupted sweep: finished runs are reused. At the end
the report is written into the sweep folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedlearn.compare import build_report
from fedlearn.compare.plan import OPTIONS, load_plan, target_value


def report_main(argv: list[str]) -> None:
    """``fedlearn-compare report <folder> [--target T]``."""
    parser = argparse.ArgumentParser(
        prog="fedlearn-compare report", description="Rebuild a comparison from run folders."
    )
    parser.add_argument("folder", help="a sweep folder (or any folder holding run folders)")
    parser.add_argument(
        "--target",
        default=None,
        help="accuracy to reach (default: the sweep's compare.target from plan.json, else auto)",
    )
    parser.add_argument(
        "--ignore",
        default="",
        help="comma-separated settings or sections that do not separate runs,"
        " e.g. runtime (deployments of the same experiment)",
    )
    args = parser.parse_args(argv)
    ignore = tuple(k.strip() for k in args.ignore.split(",") if k.strip())
    target = target_value(args.target)
    if args.target is None:  # the report the sweep wrote, rebuilt
        target = ((load_plan(Path(args.folder)) or {}).get("options") or {}).get("target")
    if build_report(args.folder, target, ignore=ignore) is None:
        sys.exit(1)


def _usage() -> None:
    print(__doc__.split("The sweep takes")[0].replace("Usage::", "Usage:").replace("``", ""))
    print("Options (compare.<option>=value):")
    for key, text in OPTIONS.items():
        print(f"  compare.{key}: {text}")
    print()


def main(argv: list[str] | None = None) -> None:
    """``fedlearn-compare``: sweep then report, or (``report <folder>``) report only."""
    from fedlearn.compare.driver import run_sweep

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "report":
        report_main(argv[1:])
        return
    if {"-h", "--help"} & set(argv):  # this command's usage, then the config's (Hydra)
        _usage()
        from fedlearn.compare.sweep import _job

        sys.argv = [sys.argv[0], "--help"]
        _job()
        return
    dirs = [a for a in argv if a.startswith("dir=")]
    if dirs:
        target = [
            f"--target={a.partition('=')[2]}" for a in argv if a.startswith("compare.target=")
        ]
        report_main([dirs[0][len("dir=") :], *target])
        return
    root = run_sweep(argv)
    plan = load_plan(root) or {}
    build_report(root, plan.get("options", {}).get("target"))
