"""The central validation set: carved from the training data before it is partitioned.

fedlearn keeps three kinds of held-out data apart: each client's own evaluation
slice, this validation set, and the dataset's test set. Whatever chooses (tuning,
the best round) reads validation; the test set is only reported.

The carving is a pure function of the loaded training data and two dataset
settings, ``dataset.val_fraction`` and ``dataset.val_seed``; it runs inside
:func:`fedlearn.data.load_dataset`, so the server and every client (any runtime:
they all call it with the same ``dataset`` settings, which travel in
``run_config``) hold the same validation set, and partitioners only ever see the
remainder.

- Datasets without natural clients: a seeded, class-stratified random sample of
  ``val_fraction`` of the training samples (``val_seed`` is separate from the
  experiment seed, so every run of a study is validated on the same samples).
- Datasets with natural clients: the loader carves it, because only it knows the
  samples' order and overlap (Shakespeare's windows overlap by 79 characters, so
  a random sample would leak). A loader that accepts a ``val_fraction`` argument
  receives it and returns ``val_x``/``val_y`` itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from hydra.utils import get_method

from fedlearn.data import FederatedData

FRACTION, SEED = "val_fraction", "val_seed"


def _fraction(value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"dataset.{FRACTION} must be in [0, 1) (0: none), got {value}")
    return fraction


def _takes_fraction(target: str) -> bool:
    try:
        return FRACTION in inspect.signature(get_method(target)).parameters
    except Exception:  # noqa: BLE001 - an unknown target fails later, with Hydra's own error
        return False


Carve = Callable[[FederatedData], FederatedData]


def settings(cfg: dict[str, Any]) -> tuple[dict[str, Any], Carve]:
    """Split a dataset config into the loader's own arguments and the carving to apply.

    Returns
    -------
    (loader_cfg, carve)
        ``loader_cfg`` for ``instantiate``; ``carve(data)`` returns the data with its
        validation set (unchanged when the loader carved it, or the fraction is 0).
    """
    cfg = dict(cfg)
    fraction = _fraction(cfg.get(FRACTION, 0.0))
    seed = int(cfg.pop(SEED, 0))
    if _takes_fraction(str(cfg.get("_target_", ""))):
        cfg[FRACTION] = fraction
        return cfg, lambda data: data
    cfg.pop(FRACTION, None)
    return cfg, lambda data: carve(data, fraction, seed, str(cfg.get("_target_")))


def class_quotas(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Validation samples per class: ``fraction`` of each class, by largest remainder, so
    the total is ``fraction`` of all samples rounded half up (ties: lower class first)."""
    exact = np.asarray(counts, dtype=np.float64) * fraction
    quotas = np.floor(exact).astype(np.int64)
    extra = int(np.floor(fraction * int(np.sum(counts)) + 0.5)) - int(quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:extra]] += 1
    return quotas


def carve_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples that stay for training and of the validation samples.

    Class-stratified (:func:`class_quotas`): each class's validation samples are the
    first of a permutation seeded with ``seed``. Both index arrays are sorted, so the
    remaining data keep their original order.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    by_class = order[np.argsort(labels[order], kind="stable")]  # shuffled within each class
    _, counts = np.unique(labels, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    quotas = class_quotas(counts, fraction)
    val = [by_class[a : a + q] for a, q in zip(starts, quotas, strict=True)]
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[val_idx] = False
    return np.flatnonzero(keep), val_idx


def carve(data: FederatedData, fraction: float, seed: int, target: str = "") -> FederatedData:
    """``data`` with ``fraction`` of its training samples moved to ``val_x``/``val_y``."""
    if fraction == 0.0 or data.val_x is not None:
        return data
    if data.train_ids is not None:
        raise ValueError(
            f"dataset.{FRACTION}={fraction}: the loader {target} has natural clients but no"
            f" {FRACTION} argument to carve a validation set; set dataset.{FRACTION}=0"
        )
    train_idx, val_idx = carve_indices(data.train_y.numpy(), fraction, seed)
    if len(val_idx) == 0 or len(train_idx) < 2:
        raise ValueError(
            f"dataset.{FRACTION}={fraction} leaves {len(val_idx)} validation and"
            f" {len(train_idx)} training samples of {len(data.train_y)}; allowed: a fraction"
            " that leaves at least 1 and 2"
        )
    tr, va = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return replace(
        data,
        train_x=data.train_x[tr],
        train_y=data.train_y[tr],
        val_x=data.train_x[va],
        val_y=data.train_y[va],
    )
