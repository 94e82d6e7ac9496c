"""Search spaces: what each strategy tunes, over which range, and where it comes from.

``fedlearn/conf/search/client.yaml`` holds what every strategy tunes (the client
learning rate); ``conf/search/<strategy>.yaml`` what that strategy adds (server
learning rates, server momentum, ``proximal_mu``, FedDyn's ``alpha``, trimming
fractions). A strategy without a file tunes the client learning rate only, and
so does the centralized baseline. Each entry is an override key with ``low`` and
``high`` (``log: true`` samples log-uniformly) or ``choices``, a ``grid`` for
``compare.sampler=grid``, and the ``source`` of the range. ``compare.search=<dir>``
reads the files from another folder instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SEARCH_DIR = Path(__file__).resolve().parent.parent / "conf" / "search"
COMMON = "client"


@dataclass(frozen=True)
class Param:
    """One tuned setting."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    grid: tuple[Any, ...] | None = None
    source: str = ""

    def sweep(self, sampler: str) -> str:
        """The Hydra sweep the Optuna sweeper reads (a distribution, or the grid)."""
        if sampler == "grid" or self.choices is not None:
            values = self.grid if sampler == "grid" and self.grid else self.choices
            return f"choice({','.join(repr(v) for v in values or ())})"
        interval = f"interval({self.low!r}, {self.high!r})"
        return f"tag(log, {interval})" if self.log else interval

    def describe(self) -> str:
        """The range as a short text: ``[0.001, 3.16] log`` or ``{a, b}``."""
        if self.choices is not None:
            return "{" + ", ".join(str(v) for v in self.choices) + "}"
        return f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _param(key: str, node: dict[str, Any], where: Path) -> Param:
    choices, grid = node.get("choices"), node.get("grid")
    low, high = node.get("low"), node.get("high")
    if choices is None and not (isinstance(low, int | float) and isinstance(high, int | float)):
        raise ValueError(f"{where}: {key} needs low and high, or choices")
    if choices is None and not low < high:
        raise ValueError(f"{where}: {key} needs low < high, got {low} and {high}")
    if choices is None and node.get("log") and low <= 0:
        raise ValueError(f"{where}: {key} is log-scaled and needs low > 0, got {low}")
    return Param(
        key,
        None if low is None else float(low),
        None if high is None else float(high),
        bool(node.get("log", False)),
        None if choices is None else tuple(choices),
        None if grid is None else tuple(grid),
        str(node.get("source", "")),
    )


def _read(path: Path) -> list[Param]:
    if not path.exists():
        return []
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a search space maps setting keys to ranges")
    return [_param(str(k), dict(v), path) for k, v in tree.items()]


def load_space(strategy: str, folder: str | Path | None = None) -> list[Param]:
    """The search space of strategy choice ``strategy`` (e.g. ``fedadam``)."""
    root = Path(folder) if folder else SEARCH_DIR
    if not root.is_dir():
        raise ValueError(f"compare.search={folder}: no such folder of search-space YAMLs")
    common = _read(root / f"{COMMON}.yaml")
    own = _read(root / f"{strategy}.yaml") if strategy != COMMON else []
    keys = [p.key for p in own]
    return [p for p in common if p.key not in keys] + own


def check_grid(space: list[Param], strategy: str) -> None:
    """Every parameter of a grid search needs a grid (or choices)."""
    for p in space:
        if not p.grid and p.choices is None:
            raise ValueError(
                f"compare.sampler=grid: {p.key} of strategy={strategy} has no grid in its"
                " search space; add one or use compare.sampler=tpe"
            )
