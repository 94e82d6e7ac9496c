"""Read run folders and group them by every swept setting except the seed.

A run folder is what every runtime writes (``config.yaml``, ``metrics.jsonl``,
``result.json``); reports read nothing else, so runs of any runtime compare. A
Hydra job folder that died before writing ``config.yaml`` is still found through
its ``.hydra/config.yaml`` and reported as failed.

A sweep folder made by ``fedlearn-compare`` says what each run is for by where it
lies (:data:`LAYOUT`); in any other folder every run is a compared one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fedlearn import records

# Settings that never make runs different experiments.
IGNORED = ("seed", "resume", "progress", "logger")

RUNS, TUNING, REFERENCES = "runs", "tuning", "references"
CENTRAL, IID = "centralized", "iid"
LAYOUT = {
    RUNS: "runs/<block>/<strategy>/seed=<s>: the compared runs",
    TUNING: "tuning/<block>/<strategy>/<sampled values>: tuning trials (tune seed)",
    REFERENCES: "references/<block>/centralized/seed=<s> and references/<block>/iid/<strategy>/"
    "seed=<s>: the centralized baseline and the IID run of each strategy",
}


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    config: dict[str, Any]  # flattened: dotted keys -> scalar values
    result: dict[str, Any]
    metrics: list[dict[str, Any]]
    status: str  # completed | stopped | failed | incomplete
    error: str | None = None
    role: str = RUNS  # RUNS, TUNING, CENTRAL or IID (from the folder layout)
    slug: str = ""  # the block folder of a compare sweep ("" elsewhere)
    strategy: str = ""  # the strategy folder name of a compare sweep
    group: str = ""  # strategy and every swept setting but the seed
    block: str = ""  # the swept settings that are not the strategy's (ranked separately)
    series: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.result.get("seed"))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become their JSON text."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore
    except Exception:  # noqa: BLE001 - a damaged config still lists the run as failed
        return {}


def find_run_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a run's ``config.yaml`` or a Hydra job's ``.hydra/``."""
    found = {p.parent for p in root.rglob(records.CONFIG) if ".hydra" not in p.parts}
    found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    return sorted(found)


def place(root: Path, path: Path) -> tuple[str, str, str]:
    """``(role, block slug, strategy folder)`` of a run folder from its place in a
    compare sweep (:data:`LAYOUT`); ``(RUNS, "", "")`` for any other layout."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return RUNS, "", ""
    if len(parts) >= 4 and parts[0] in (RUNS, TUNING):
        return parts[0], parts[1], parts[2]
    if len(parts) >= 4 and parts[0] == REFERENCES and parts[2] in (CENTRAL, IID):
        return parts[2], parts[1], parts[3] if parts[2] == IID else CENTRAL
    return RUNS, "", ""


def read_run(path: Path, root: Path | None = None) -> Run:
    """One run folder; a missing or unfinished result makes the run failed/incomplete.
    With the sweep's ``root``, the run's role comes from its place in it."""
    cfg_path = path / records.CONFIG
    config = _load_yaml(cfg_path if cfg_path.exists() else path / ".hydra" / "config.yaml")
    config.pop("hydra", None)
    result: dict[str, Any] = {}
    res_path = path / records.RESULT
    if res_path.exists():
        try:
            result = json.loads(res_path.read_text())
        except json.JSONDecodeError:
            result = {}
    metrics = records.read_metrics(path)
    if not result:
        status, error = ("incomplete", "no result.json (still running, or killed)")
        if not cfg_path.exists():
            status, error = "failed", "the run never started (no config.yaml)"
    else:
        status, error = str(result.get("status", "failed")), result.get("error")
    role, slug, strategy = place(root, path) if root is not None else (RUNS, "", "")
    return Run(path, flatten(config), result, metrics, status, error, role, slug, strategy)


def _seed_like(runs: list[Run], key: str) -> bool:
    """A key that equals the seed in every run (e.g. ``dataset.seed: ${seed}``)."""
    return all(r.config.get(key) == r.seed for r in runs)


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(key == i or key.startswith(f"{i}.") for i in (*IGNORED, "hydra", *ignore))


def swept_keys(runs: list[Run], ignore: tuple[str, ...] = ()) -> list[str]:
    """Settings whose values differ between runs: the sweep's axes, seed excluded.

    ``ignore`` names more settings (or whole sections) that never separate runs, such
    as ``runtime.address`` when comparing deployments.
    """
    keys = sorted({k for r in runs for k in r.config})
    out = []
    for k in keys:
        if _ignored(k, ignore):
            continue
        values = {json.dumps(r.config.get(k), sort_keys=True) for r in runs}
        if len(values) > 1 and not _seed_like(runs, k):
            out.append(k)
    return out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def label_runs(runs: list[Run], ignore: tuple[str, ...] = ()) -> list[str]:
    """Give each run its group and block labels; return the axes as the report names them.

    The group label starts with the strategy's class name, then ``key=value`` for
    every other axis. A strategy's own settings (``strategy.proximal_mu``) appear
    only when they vary between runs of that strategy. The block label holds the
    axes that are not the strategy's (``partitioner.alpha=0.1``): strategies are
    ranked against each other within a block.
    """
    swept = swept_keys(runs, ignore)
    shown: set[str] = set()
    for run in runs:
        target = str(run.config.get("strategy._target_") or run.result.get("strategy") or "?")
        same = [
            r
            for r in runs
            if r.config.get("strategy._target_") == run.config.get("strategy._target_")
        ]
        strategy_parts, block_parts = [target.rsplit(".", 1)[-1]], []
        for k in swept:
            if k == "strategy._target_":
                continue
            if k.startswith("strategy."):
                if len({_short(r.config.get(k)) for r in same}) > 1:
                    strategy_parts.append(f"{k}={_short(run.config.get(k))}")
                    shown.add(k)
            else:
                block_parts.append(f"{k}={_short(run.config.get(k))}")
        run.block = " ".join(block_parts)
        run.group = " ".join(strategy_parts + block_parts)
    axes = ["strategy"] if "strategy._target_" in swept else []
    return axes + sorted(shown) + [k for k in swept if not k.startswith("strategy.")]
