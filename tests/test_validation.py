"""The central validation set: carved before partitioning, the same on server and clients."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedlearn.app import client_app
from fedlearn.app.central import eval_sets
from fedlearn.app.run_config import client_run_config
from fedlearn.data import FederatedData, load_dataset
from fedlearn.data import digits as digits_module
from fedlearn.data.partition import client_indices, local_split
from fedlearn.data.validation import carve, carve_indices, class_quotas
from fedlearn.experiment import compose_config


def test_carve_indices_by_hand() -> None:
    labels = np.array([0] * 10 + [1] * 20 + [2] * 5)
    keep, val = carve_indices(labels, 0.2, seed=3)
    # Stratified: round(0.2 * n_c) of each class: 2, 4, 1.
    assert np.bincount(labels[val]).tolist() == [2, 4, 1]
    assert sorted([*keep, *val]) == list(range(35)) and not set(keep) & set(val)
    assert list(keep) == sorted(keep) and list(val) == sorted(val)
    again = carve_indices(labels, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (keep, val), strict=True))
    assert not np.array_equal(carve_indices(labels, 0.2, seed=4)[1], val)
    # Largest remainder: 0.5 of [3, 3, 3] is 4.5 -> 5 in all, the lower classes first.
    assert class_quotas(np.array([3, 3, 3]), 0.5).tolist() == [2, 2, 1]
    assert class_quotas(np.array([10, 1]), 0.1).tolist() == [1, 0]


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def _cfg(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(list(overrides)), resolve=True)


def test_digits_validation_is_disjoint_from_partitions_and_test() -> None:
    cfg = _cfg("num_clients=5", "partitioner=dirichlet", "partitioner.alpha=1.0")
    raw = digits_module.load()  # the loader alone: no validation set
    data = load_dataset(cfg["dataset"])
    keep, val = carve_indices(raw.train_y.numpy(), 0.1, 0)
    assert torch.equal(data.val_x, raw.train_x[val])
    assert torch.equal(data.train_x, raw.train_x[keep])
    assert len(data.val_y) == round(0.1 * len(raw.train_y)) and torch.equal(data.test_x, raw.test_x)
    # Partitioners see only what remains: every remaining sample once, no validation sample.
    parts = client_indices(cfg["dataset"], cfg["partitioner"], 5, int(cfg["seed"]))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(data.train_y)))
    val_rows, test_rows = _rows(data.val_x), _rows(data.test_x)
    assert len(val_rows) == len(data.val_y) and not val_rows & test_rows
    assert not val_rows & _rows(data.train_x)


def test_clients_rebuild_the_same_carving_from_run_config() -> None:
    cfg = _cfg("num_clients=4", "dataset.val_fraction=0.2", "dataset.val_seed=7")
    run_config = client_run_config(cfg)
    assert run_config["dataset.val_fraction"] == 0.2 and run_config["dataset.val_seed"] == 7
    server_val = _rows(eval_sets(cfg["dataset"], None)["validation"][0])
    data = load_dataset(cfg["dataset"])
    parts = client_indices(cfg["dataset"], cfg["partitioner"], 4, 0)
    client_rows: set[bytes] = set()
    for k in range(4):
        node = {"partition-id": k, "num-partitions": 4}
        job = client_app._job(json.dumps(run_config, sort_keys=True), json.dumps(node))
        tr, ev, _ = local_split(data, parts[k], 0.2)
        assert torch.equal(job.train_x, data.train_x[tr])
        assert torch.equal(job.eval_x, data.train_x[ev])
        client_rows |= _rows(job.train_x) | _rows(job.eval_x)
    assert len(server_val) == round(0.2 * 1438) and not server_val & client_rows
    # A deployed client with its own data (no partition id) trains on the remainder too.
    own = client_app._job(json.dumps(run_config, sort_keys=True), json.dumps({}))
    assert not _rows(own.train_x) & server_val


def test_fraction_zero_and_bad_fractions() -> None:
    assert load_dataset({**_cfg()["dataset"], "val_fraction": 0.0}).val_x is None
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match=r"dataset.val_fraction must be in \[0, 1\)"):
            load_dataset({**_cfg()["dataset"], "val_fraction": bad})
    with pytest.raises(ValueError, match="leaves 0 validation"):
        load_dataset({**_cfg()["dataset"], "max_samples": 10, "val_fraction": 0.01})


def test_natural_clients_need_a_carving_loader() -> None:
    y = torch.arange(6) % 2
    data = FederatedData(
        torch.zeros(6, 1), y, torch.zeros(2, 1), y[:2], None, np.arange(6), np.arange(2)
    )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="natural clients but no val_fraction argument"):
        carve(data, 0.1, 0, "my.loader")
    assert carve(data, 0.0, 0) is data
