"""Aggregation strategies Flower does not ship, each one subclass deep from a Flower strategy.

Shared here: conversions between Flower's ``ArrayRecord`` and plain ``{name: ndarray}``
dicts, the form in which strategies keep their server state (plain attributes pickle
cleanly for checkpoints).
"""

from __future__ import annotations

import numpy as np

from fedlearn.app.arrays import to_numpy, to_record

__all__ = ["NDArrays", "num_nodes", "to_numpy", "to_record"]

NDArrays = dict[str, np.ndarray]


def num_nodes(grid: object) -> int:
    """How many nodes the grid has connected now (the ``N`` in ``|S| / N``)."""
    return len(list(grid.get_node_ids()))  # type: ignore[attr-defined]


def positive(setting: str, value: float) -> float:
    """``value`` if > 0, else a one-line ValueError naming ``strategy.<setting>``."""
    if not value > 0:
        raise ValueError(f"strategy.{setting}={value}: must be > 0")
    return float(value)
