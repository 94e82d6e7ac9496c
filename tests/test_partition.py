"""Partitioning: flwr-datasets' partitioners over a seeded shuffle; the natural fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr_datasets.partitioner import IidPartitioner, NaturalIdPartitioner

from fedlearn.data import DataSpec, FederatedData
from fedlearn.data.partition import _iid, _natural, local_split, partition_indices

NATURAL = {
    "_target_": "flwr_datasets.partitioner.NaturalIdPartitioner",
    "partition_by": "client_id",
}


def _data(n: int = 200, ids: np.ndarray | None = None) -> FederatedData:
    x = torch.zeros(n, 1, 8, 8)
    y = torch.arange(n) % 10
    test_ids = None if ids is None else np.unique(ids)
    n_test = 0 if test_ids is None else len(test_ids)
    return FederatedData(
        x, y, x[:n_test], y[:n_test], DataSpec((1, 8, 8), 10, "image"), ids, test_ids
    )


def test_natural_fast_path_matches_flower() -> None:
    import datasets

    ids = np.random.default_rng(0).integers(0, 37, size=2_000)
    ours = _natural(ids, 30)
    part = NaturalIdPartitioner(partition_by="client_id")
    part.dataset = datasets.Dataset.from_dict({"client_id": ids, "idx": np.arange(len(ids))})
    theirs = [np.sort(np.asarray(part.load_partition(k)["idx"])) for k in range(30)]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("n", [1, 7, 20, 199])
def test_iid_fast_path_matches_flower(n: int) -> None:
    import datasets

    order = np.random.default_rng(n).permutation(199)
    part = IidPartitioner(num_partitions=n)
    part.dataset = datasets.Dataset.from_dict({"idx": order})
    theirs = [np.sort(np.asarray(part.load_partition(k)["idx"])) for k in range(n)]
    assert all(np.array_equal(a, b) for a, b in zip(_iid(order, n), theirs, strict=True))


def test_natural_needs_natural_clients() -> None:
    with pytest.raises(
        ValueError, match="partitioner=natural needs a dataset with natural clients"
    ):
        partition_indices(_data(), NATURAL, 4, 0)


def test_more_clients_than_natural_ids_is_refused() -> None:
    ids = np.repeat(np.arange(5), 40)
    with pytest.raises(ValueError, match="num_clients=6 but the dataset has 5 natural clients"):
        partition_indices(_data(ids=ids), NATURAL, 6, 0)


def test_iid_is_seeded_disjoint_and_complete() -> None:
    iid = {"_target_": "flwr_datasets.partitioner.IidPartitioner"}
    a = partition_indices(_data(), iid, 4, seed=1)
    b = partition_indices(_data(), iid, 4, seed=1)
    c = partition_indices(_data(), iid, 4, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(200))


def test_iid_with_too_many_clients_names_the_empty_client() -> None:
    iid = {"_target_": "flwr_datasets.partitioner.IidPartitioner"}
    with pytest.raises(
        ValueError, match="partitioner=iid leaves client 50 with 1 sample.*use at most 100 clients$"
    ):
        partition_indices(_data(), iid, 150, seed=0)


def test_local_split_holds_out_the_tail() -> None:
    train, held, from_test = local_split(_data(), np.arange(10), 0.2)
    assert train.tolist() == list(range(8)) and held.tolist() == [8, 9] and not from_test


def test_library_partitions_are_the_librarys_own() -> None:
    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner

    data = _data(300)
    cfg = {
        "_target_": "flwr_datasets.partitioner.DirichletPartitioner",
        "partition_by": "label",
        "alpha": 0.5,
        "min_partition_size": 2,
    }
    got = partition_indices(data, cfg, 5, seed=3)
    order = np.random.default_rng(3).permutation(300)
    part = DirichletPartitioner(5, "label", 0.5, min_partition_size=2, seed=3)
    part.dataset = datasets.Dataset.from_dict({"label": data.train_y.numpy()[order], "idx": order})
    want = [sorted(part.load_partition(k)["idx"]) for k in range(5)]
    assert [g.tolist() for g in got] == want


def test_a_config_and_its_run_config_copy_share_one_load_and_partition() -> None:
    # A client's run config drops None values (fedlearn.app.run_config): the server's
    # copy of the same config must find the same cached data and partitions.
    from fedlearn.data import load_dataset
    from fedlearn.data.partition import client_indices

    server = {"_target_": "fedlearn.data.digits.load", "max_samples": None, "seed": 0}
    client = {"_target_": "fedlearn.data.digits.load", "seed": 0}
    assert load_dataset(server) is load_dataset(client)
    iid = {"_target_": "flwr_datasets.partitioner.IidPartitioner"}
    assert client_indices(server, iid, 4, 0) is client_indices(client, iid, 4, 0)
