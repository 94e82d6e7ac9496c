"""Synthetic run folders for the comparison's tests (numbers chosen to check by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def write_run(
    folder: Path,
    strategy: str,
    seed: int,
    accs: list[float],
    wall: float = 10.0,
    status: str = "completed",
    extra: dict | None = None,
    sent: int = 100,
    received: int = 50,
    rounds: int | None = None,
    val: list[float] | None = None,
    legacy: bool = False,
    chance: float | None = None,
    nan_last: bool = False,
    config: dict[str, Any] | None = None,
    steps: int = 8,
    job_num: int | None = None,
    error: str = "RuntimeError: boom",
) -> Path:
    """A run folder as the contract describes: round 0 then one line per round.

    ``val``: validation accuracies (default: the test ones); ``legacy``: the format
    before the validation set, one ``central`` entry holding the test set; ``chance``:
    the test set's chance accuracy recorded at round 0; ``nan_last``: the last round's
    losses are NaN (JSON null); ``config``: more top-level settings; ``job_num``: the
    Hydra job number (a tuning trial's order)."""
    folder.mkdir(parents=True)
    cfg = {
        "seed": seed,
        "num_rounds": rounds or len(accs) - 1,
        "dataset": {"seed": seed},
        "strategy": {"_target_": f"flwr.serverapp.strategy.{strategy}", **(extra or {})},
        **(config or {}),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    if job_num is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"job": {"num": job_num}}})
        )
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    val = accs if val is None else val
    last = len(accs) - 1

    def central(r: int) -> dict:
        loss = None if nan_last and r == last else 1 - accs[r]
        test = {"loss": loss, "accuracy": accs[r]}
        if r == 0 and chance is not None:
            test["chance"] = chance
        if legacy:
            return {"central": test}
        v_loss = None if nan_last and r == last else 1 - val[r]
        return {"validation": {"loss": v_loss, "accuracy": val[r]}, "test": test}

    lines = [{"round": 0, **central(0)}]
    for r, a in enumerate(accs[1:], 1):
        lines.append(
            {
                "round": r,
                "seconds": 1.0,
                "sampled": 4,
                "succeeded": 4,
                "failed": 0,
                "train": {"train_loss": None if nan_last and r == last else 1.0},
                "train_steps": steps,
                "evaluate": {"eval_loss": 1, "eval_acc": a},
                **central(r),
                "bytes_sent": sent,
                "bytes_received": received,
            }
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    result = {
        "status": status,
        "rounds_completed": len(accs) - 1,
        "num_rounds": len(accs) - 1,
        "final": {k: lines[-1][k] for k in ("validation", "test", "central") if k in lines[-1]},
        "best": {},
        "wall_seconds": wall,
        "strategy": strategy,
        "seed": seed,
        "error": None if status == "completed" else error,
        "bytes_sent": 0,
        "bytes_received": 0,
        "train_steps": steps * (len(accs) - 1),
    }
    (folder / "result.json").write_text(json.dumps(result))
    return folder
