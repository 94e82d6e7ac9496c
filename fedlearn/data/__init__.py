"""Datasets: a loader returns central train/test tensors plus what a model needs.

A dataset loader is a plain function named by ``_target_`` in
``conf/dataset/<name>.yaml``; it returns :class:`FederatedData`. Partitioning
is separate (:mod:`fedlearn.data.partition`): a partitioner maps train samples
to clients. Datasets with a natural partition (one Shakespeare role per client)
set ``train_ids``/``test_ids`` and are split with flwr-datasets'
``NaturalIdPartitioner``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DataSpec:
    """What a model must know about the data.

    Attributes
    ----------
    input_shape : tuple[int, ...]
        Shape of one sample: ``(C, H, W)`` for images, ``(seq_len,)`` for text.
    num_classes : int
        Number of classes, or vocabulary size for next-token tasks.
    kind : str
        ``"image"`` or ``"text"``; models list the kinds they accept.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    kind: str


@dataclass
class FederatedData:
    """Central data of a dataset.

    ``train_ids``/``test_ids`` hold a natural client id per sample (or ``None``
    when the dataset has no natural partition). For natural partitions client
    ``k`` trains on the train samples with id ``k`` and evaluates on the test
    samples with id ``k``; otherwise a client evaluates on a held-out slice of
    its own partition.

    ``val_x``/``val_y`` are the central validation set, carved from the
    training data before partitioning (:mod:`fedlearn.data.validation`); the
    ``train_*`` tensors hold only what remains. ``None`` without one.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    spec: DataSpec
    train_ids: np.ndarray | None = None
    test_ids: np.ndarray | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_ids: np.ndarray | None = None


def without_none(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` less its None values, as the clients' run config leaves them out
    (:mod:`fedlearn.app.run_config`: the callee's default applies). Cache keys built
    from it are the same for the server's copy of a config and a client's: an
    in-process run loads its data and partitions it once, not twice."""
    return {k: v for k, v in cfg.items() if v is not None}


def _key(cfg: dict[str, Any]) -> str:
    return json.dumps(without_none(cfg), sort_keys=True, default=str)


@lru_cache(maxsize=4)
def _load_cached(key: str) -> FederatedData:
    from fedlearn.data import validation
    from fedlearn.targets import call, check, locate

    raw = json.loads(key)
    check(raw, "dataset")  # before anything (the validation carving too) imports the loader
    cfg, carve = validation.settings(raw)
    loader, kwargs = locate(cfg, "dataset")
    data = call(loader, "dataset", **kwargs)
    if not isinstance(data, FederatedData):
        raise TypeError(f"dataset loader must return FederatedData, got {type(data).__name__}")
    return carve(data)


def load_dataset(cfg: dict[str, Any]) -> FederatedData:
    """Load (once per process) the dataset a plain ``{_target_: ..., ...}`` dict names.

    Raises
    ------
    fedlearn.targets.NotAllowed
        When the loader is not on this process's allow-list (:mod:`fedlearn.targets`)
        or a setting is not a plain scalar; nothing is imported or called then.
    """
    return _load_cached(_key(cfg))
