"""``fedlearn-compare``: a Hydra multirun of experiments, then the report.

Usage::

    fedlearn-compare strategy=fedavg,fedprox seed=0,1,2 [compare.target=0.8]
    fedlearn-compare ... hydra/launcher=joblib      # jobs in parallel processes
    fedlearn-compare report <folder> [--target 0.8] [--ignore runtime]
    fedlearn-compare dir=<folder> [compare.target=0.8]   # the same, Hydra-style

The sweep takes the same config groups and overrides as ``fedlearn-simulate``
(it always runs as ``--multirun``; ``progress=false`` unless given). Each job is
one run folder under Hydra's sweep folder; a job that raises is recorded as a
failed run (``result.json`` with its error) and the sweep goes on. At the end a
Hydra callback (:class:`ReportCallback`, added to ``hydra.callbacks``) writes
the report into the sweep folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fedlearn import records
from fedlearn.compare import build_report

log = logging.getLogger("fedlearn")

OPTIONS = {"target"}  # compare.<option>=value on the sweep command line
CALLBACK = "hydra.callbacks.fedlearn_compare"


class ReportCallback(Callback):
    """Builds the report in the sweep folder when the multirun ends."""

    def __init__(self, target: float | None = None) -> None:
        self.target = target
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = str(config.hydra.sweep.dir)  # resolved once: ${now:...} is cached

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        build_report(Path(self.sweep_dir or str(config.hydra.sweep.dir)), self.target)


def _mark_failed(run_dir: Path, seed: int, exc: BaseException) -> None:
    """Make sure a crashed job leaves a failed result.json (the run loop may not have)."""
    path = run_dir / records.RESULT
    if path.exists():
        return
    records.write_json(
        path,
        {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "seed": seed,
            "rounds_completed": 0,
        },
    )


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _job(cfg: DictConfig) -> None:
    from fedlearn.experiment import run

    logging.getLogger("flwr").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        run(cfg, run_dir, list(hc.overrides.task))
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the sweep
        log.error("run %s failed: %s: %s", run_dir, type(exc).__name__, exc)
        _mark_failed(run_dir, int(cfg.get("seed", 0)), exc)


def _target(value: str | None) -> float | None:
    if value is None or value in ("null", "auto", ""):
        return None
    try:
        target = float(value)
    except ValueError:
        target = -1.0
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"compare.target={value}: give an accuracy in [0, 1] or auto")
    return target


def report_main(argv: list[str]) -> None:
    """``fedlearn-compare report <folder> [--target T]``."""
    parser = argparse.ArgumentParser(
        prog="fedlearn-compare report", description="Rebuild a comparison from run folders."
    )
    parser.add_argument("folder", help="a sweep folder (or any folder holding run folders)")
    parser.add_argument("--target", default=None, help="accuracy to reach (default: auto)")
    parser.add_argument(
        "--ignore",
        default="",
        help="comma-separated settings or sections that do not separate runs,"
        " e.g. runtime (deployments of the same experiment)",
    )
    args = parser.parse_args(argv)
    ignore = tuple(k.strip() for k in args.ignore.split(",") if k.strip())
    if build_report(args.folder, _target(args.target), ignore=ignore) is None:
        sys.exit(1)


def sweep_argv(argv: list[str]) -> list[str]:
    """Hydra's command line for the sweep: multirun, our callback, compare.* options out."""
    options: dict[str, str] = {}
    hydra_args = []
    for arg in argv:
        if arg.startswith("compare."):
            key, _, value = arg[len("compare.") :].partition("=")
            if key not in OPTIONS:
                raise ValueError(
                    f"unknown option compare.{key}; allowed: "
                    + ", ".join(f"compare.{o}" for o in sorted(OPTIONS))
                )
            options[key] = value
        elif arg not in ("-m", "--multirun"):
            hydra_args.append(arg)
    target = _target(options.get("target"))
    if not any(a.startswith("progress=") for a in hydra_args):
        hydra_args.append("progress=false")  # live bars from parallel jobs would interleave
    return [
        "--multirun",
        *hydra_args,
        f"+{CALLBACK}._target_=fedlearn.compare.cli.ReportCallback",
        f"+{CALLBACK}.target={'null' if target is None else target}",
    ]


def main(argv: list[str] | None = None) -> None:
    """``fedlearn-compare``: sweep then report, or (``report <folder>``) report only."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "report":
        report_main(argv[1:])
        return
    if {"-h", "--help"} & set(argv):  # this command's usage, then the config's (Hydra)
        usage = __doc__.split("The sweep takes")[0].replace("Usage::", "Usage:")
        print(usage.replace("``", "").strip() + "\n")
    dirs = [a for a in argv if a.startswith("dir=")]
    if dirs:
        target = [
            f"--target={a.partition('=')[2]}" for a in argv if a.startswith("compare.target=")
        ]
        report_main([dirs[0][len("dir=") :], *target])
        return
    sys.argv = [sys.argv[0], *sweep_argv(argv)]
    _job()
