"""The run folder: config, per-round metrics, summary, checkpoints, final weights.

Reports and comparisons read only these files, so runs of any runtime compare.
Every file is written atomically (temp file + rename): a crash mid-write never
leaves a truncated checkpoint or summary behind.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

METRICS = "metrics.jsonl"
# Central evaluation entries of a metrics line; older run folders have one "central"
# entry, which is the test set.
EVAL_SETS = ("validation", "test")
LEGACY_TEST = "central"
RESULT = "result.json"
CONFIG = "config.yaml"
MODEL = "model.pt"
CKPT_DIR = "checkpoints"
LATEST = "latest"
LOG = "fedlearn.log"  # Hydra's job log under the console scripts (hydra.job.name)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's


class RunFailed(RuntimeError):
    """The ServerApp raised; result.json says ``status: failed`` and the folder is kept."""

    def __init__(self, run_dir: Path, error: str) -> None:
        super().__init__(f"{error} (run folder kept: {run_dir}; traceback in its {LOG})")
        self.run_dir = run_dir


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become null (JSON has neither), numpy scalars become floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(_clean(obj), indent=2) + "\n").encode())


def append_metrics(run_dir: Path, line: dict[str, Any]) -> None:
    """Append one round's line to metrics.jsonl (flushed to disk before returning)."""
    with open(run_dir / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(_clean(line)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete lines of metrics.jsonl (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return lines


def truncate_metrics(run_dir: Path, last_round: int) -> None:
    """Keep metrics.jsonl lines up to ``last_round`` (resume rewinds to its checkpoint)."""
    kept = [m for m in read_metrics(run_dir) if m.get("round", 0) <= last_round]
    atomic_write(Path(run_dir) / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())


def save_checkpoint(run_dir: Path, server_round: int, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/round-N.pt`` atomically, then point ``latest`` at it."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    path = ckpt_dir / f"round-{server_round}.pt"
    atomic_write(path, pickle.dumps({"round": server_round, **state}, protocol=5))
    atomic_write(ckpt_dir / LATEST, path.name.encode())
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The latest complete checkpoint of a run folder, or None when there is none."""
    ckpt_dir = Path(run_dir) / CKPT_DIR
    latest = ckpt_dir / LATEST
    if not latest.exists():
        return None
    with open(ckpt_dir / latest.read_text().strip(), "rb") as f:
        return pickle.load(f)


def save_model(run_dir: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """The final weights as a torch state dict (``torch.load`` reads it back)."""
    import torch  # here: the run folder's other files do not need it

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    atomic_write(Path(run_dir) / MODEL, buf.getvalue())


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Run folders (those holding a config.yaml) under ``root``, sorted."""
    yield from sorted(p.parent for p in Path(root).rglob(CONFIG) if ".hydra" not in p.parts)


def test_entry(line: dict[str, Any]) -> dict[str, Any]:
    """A metrics line's central test-set entry (``central`` in older run folders)."""
    return line.get("test") or line.get(LEGACY_TEST) or {}


@contextmanager
def run_log(run_dir: Path, flower_info: bool = False) -> Iterator[None]:
    """``fedlearn.log`` in the run folder for the length of the run.

    Under the console scripts it is Hydra's job log; from Python a handler of our
    own. With ``flower_info`` (a Flower app) Flower's INFO lines, where its
    strategies report each round, go to that file and not to the console (the
    progress display stands for them there).
    """
    path = (run_dir / LOG).resolve()
    root = logging.getLogger()
    handler = next(
        (
            h
            for h in root.handlers
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == path
        ),
        None,
    )
    ours = handler is None
    if handler is None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
    flwr = logging.getLogger("flwr")
    saved = (flwr.level, flwr.propagate, [(h, h.level) for h in flwr.handlers])
    if flower_info:
        for h, level in saved[2]:
            h.setLevel(max(level, logging.WARNING))
        flwr.setLevel(logging.INFO)
        flwr.propagate = False
        flwr.addHandler(handler)
    try:
        yield
    finally:
        if flower_info:
            flwr.removeHandler(handler)
            flwr.setLevel(saved[0])
            flwr.propagate = saved[1]
            for h, level in saved[2]:
                h.setLevel(level)
        if ours:
            root.removeHandler(handler)
            handler.close()
