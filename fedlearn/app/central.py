"""Central evaluation on the server: the validation set and the test set, every round.

Each metrics.jsonl line gets ``validation`` and ``test`` entries (``loss``,
``accuracy``); round 0's also carry ``chance``, the accuracy of always predicting
the set's most frequent class (what a diverged or untrained model scores).
Validation is there to choose with (tuning, best round); test only to report.
Run folders written before the validation set existed hold one ``central``
entry: the test set (:func:`fedlearn.records.test_entry` reads both).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedlearn import training
from fedlearn.app.arrays import to_state_dict
from fedlearn.data import load_dataset

EvaluateFn = Callable[[int, ArrayRecord], dict[str, dict[str, float]]]


def spread(n: int, cap: int | None) -> np.ndarray:
    """``cap`` indices of ``range(n)`` evenly spread over it (all when ``cap`` is None or
    larger): a capped Shakespeare set then holds every role's windows, not the first roles'."""
    if cap is None or cap >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, cap).round().astype(np.int64)


def chance(y: torch.Tensor) -> float:
    """Share of the most frequent class: the accuracy of a constant prediction."""
    return float(torch.bincount(y).max()) / len(y) if len(y) else float("nan")


def eval_sets(dataset: dict[str, Any], cap: int | None) -> dict[str, tuple[torch.Tensor, ...]]:
    """The central sets a server evaluates on: validation (if the dataset has one), test."""
    data = load_dataset(dataset)
    pairs = {"validation": (data.val_x, data.val_y), "test": (data.test_x, data.test_y)}
    out = {}
    for name, (x, y) in pairs.items():
        if x is not None:
            idx = torch.from_numpy(spread(len(y), cap))
            out[name] = (x[idx], y[idx])
    return out


def central_evaluation(
    dataset: dict[str, Any], model: torch.nn.Module, device: str, cap: int | None = None
) -> EvaluateFn:
    """``evaluate_fn(round, arrays)`` for the ServerApp.

    Parameters
    ----------
    dataset : dict
        The run's ``dataset`` settings (validation carving included).
    model : torch.nn.Module
        A model of the run's architecture (copied; weights come with each call).
    device : str
        Where to evaluate (``auto``: CUDA when available).
    cap : int, optional
        At most this many samples of each set, evenly spread over it.
    """
    sets = eval_sets(dataset, cap)
    baseline = {name: chance(y) for name, (_, y) in sets.items()}
    dev = training.resolve_device(device)
    model = copy.deepcopy(model)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> dict[str, dict[str, float]]:
        model.load_state_dict(to_state_dict(arrays))
        out = {}
        for name, (x, y) in sets.items():
            res = training.evaluate(model, x, y, dev)
            out[name] = {"loss": res["loss"], "accuracy": res["accuracy"]}
            if server_round == 0:
                out[name]["chance"] = baseline[name]
        return out

    return evaluate_fn
