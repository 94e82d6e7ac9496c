"""The Hydra job of every compare run, and one Hydra multirun per step of a sweep.

Each job is one run folder. A folder whose ``result.json`` is final (completed, or
stopped by the run itself) and whose ``config.yaml`` is the config asked for now is
reused, not rerun; one interrupted with a checkpoint resumes from it. So rerunning
an interrupted ``fedlearn-compare`` command redoes only what did not finish, and a
seeded Optuna sampler, told the same scores again, asks for the same trials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedlearn import records
from fedlearn.compare.tuning import run_score

log = logging.getLogger("fedlearn")

SCORE_LAST = "FEDLEARN_COMPARE_TUNE_LAST"  # set per job through hydra.job.env_set
FINAL = ("completed", "stopped")
NOT_COMPARED = ("resume", "progress", "logger")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


def stored_config(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's resolved config.yaml, or None."""
    path = run_dir / records.CONFIG
    if not path.exists():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def state(run_dir: Path, config: dict[str, Any]) -> str:
    """``done`` (reuse), ``resume`` (an interrupted run of this config with a checkpoint)
    or ``fresh`` (nothing usable: start over)."""
    stored = stored_config(run_dir)
    if stored is None or _comparable(stored) != _comparable(config):
        return "fresh"
    status = _status(run_dir)
    if status in FINAL:
        return "done"
    return "resume" if records.load_checkpoint(run_dir) is not None else "fresh"


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / records.RESULT).read_text()).get("status")
    except (OSError, ValueError, AttributeError):  # none, or damaged: no result
        return None


def clear(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` (Hydra's own files stay)."""
    for name in (records.METRICS, records.RESULT, records.MODEL, records.CONFIG):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / records.CKPT_DIR, ignore_errors=True)


def _mark_failed(run_dir: Path, seed: int, exc: BaseException) -> None:
    """Make sure a crashed job leaves a failed result.json (the run loop may not have)."""
    path = run_dir / records.RESULT
    if path.exists() and _status(run_dir) != "interrupted":
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


def run_job(cfg: DictConfig, run_dir: Path) -> float:
    """Run (or reuse, or resume) one run folder; return its tuning score."""
    from fedlearn.experiment import run

    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    how = state(run_dir, plain)
    try:
        if how == "resume":
            log.info("resuming %s", run_dir)
            run({**plain, "resume": str(run_dir)}, run_dir, [])
        elif how == "fresh":
            clear(run_dir)
            run(cfg, run_dir, [])
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the sweep
        log.error("run %s failed: %s: %s", run_dir, type(exc).__name__, exc)
        _mark_failed(run_dir, int(cfg.get("seed", 0)), exc)
    # The grid sampler draws its next point with Python's random, which a run reseeds:
    # leave it in a state that depends on this job only, run or reused.
    random.seed(int(hashlib.sha256(str(run_dir).encode()).hexdigest()[:8], 16))
    return run_score(run_dir, int(os.environ.get(SCORE_LAST, "5")))


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _job(cfg: DictConfig) -> float:
    import flwr  # noqa: F401 - its import sets its logger's level: quiet it afterwards

    logging.getLogger("flwr").setLevel(logging.WARNING)
    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir))


def quoted(text: str) -> str:
    """``text`` as one quoted Hydra override value (a block's folder name holds ``=``
    and ``,``, which Hydra would otherwise read as a sweep)."""
    return "'" + text.replace("'", "\\'") + "'"


def multirun(task: list[str], hydra_args: list[str], sweep_dir: Path, fixed: list[str]) -> None:
    """One Hydra multirun of ``task`` overrides into ``sweep_dir``.

    Every job's folder is named by its overrides that are not in ``fixed`` (the seed,
    a tuning trial's sampled values): ``sweep_dir/seed=0``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(fixed)]
    exclude = "[" + ",".join(keys) + "]"
    argv = [
        "--multirun",
        *task,
        *hydra_args,
        f"hydra.sweep.dir={quoted(str(sweep_dir))}",
        "hydra.sweep.subdir=${hydra.job.override_dirname}",
        f"hydra.job.config.override_dirname.exclude_keys={exclude}",
    ]
    saved = sys.argv
    sys.argv = ["fedlearn-compare", *argv]
    try:
        _job()
    finally:
        sys.argv = saved
