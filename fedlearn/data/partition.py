"""Map train samples to clients with flwr-datasets' partitioners.

A partitioner YAML names a flwr-datasets partitioner by ``_target_``; the
number of partitions and the seed are injected here from the experiment, so
one ``num_clients`` and one ``seed`` drive every partitioner.
"""

from __future__ import annotations

import inspect
import json
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from fedlearn.data import FederatedData, load_dataset, without_none
from fedlearn.targets import call, locate

LABEL = "label"
NATURAL_ID = "client_id"
IID = {
    "flwr_datasets.partitioner.IidPartitioner",
    "flwr_datasets.partitioner.iid_partitioner.IidPartitioner",
}


def _natural(ids: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """NaturalIdPartitioner's partitions (partition k = the k-th smallest id), computed
    with one argsort: its per-partition ``load_partition`` took 143 s for 810 Shakespeare
    roles, this takes milliseconds and gives the same indices (a test checks)."""
    natural = np.unique(ids)[:num_clients]
    order = np.argsort(ids, kind="stable")
    ranked = ids[order]
    lo = np.searchsorted(ranked, natural, "left")
    hi = np.searchsorted(ranked, natural, "right")
    return [np.sort(order[a:b]) for a, b in zip(lo, hi, strict=True)]


def _iid(order: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """IidPartitioner's partitions of the shuffled table: ``Dataset.shard(n, k,
    contiguous=True)`` is ``np.array_split``. Computed here because importing
    flwr-datasets (``datasets``, pandas, matplotlib) costs 0.7 s of start-up;
    a test checks the indices are the library's."""
    return [np.sort(chunk) for chunk in np.array_split(order, num_clients)]


def _build(cfg: dict[str, Any], num_partitions: int, seed: int) -> Any:
    cls, cfg = locate(cfg, "partitioner")  # an allowed class, plain settings
    params = inspect.signature(cls).parameters
    if "num_partitions" in params:
        cfg["num_partitions"] = num_partitions
    if "seed" in params:
        cfg["seed"] = seed
    return call(cls, "partitioner", **cfg)


def partition_indices(
    data: FederatedData, partitioner: dict[str, Any], num_clients: int, seed: int
) -> list[np.ndarray]:
    """Indices of ``data``'s train samples for each of ``num_clients`` clients.

    Raises
    ------
    ValueError
        In one line naming the setting, when the partitioner cannot give every
        client at least one sample.
    """
    name = partitioner["_target_"].rsplit(".", 1)[-1].removesuffix("Partitioner").lower()
    natural = data.train_ids is not None
    if natural:
        ids = np.asarray(data.train_ids)
        available = len(np.unique(ids))
        if num_clients > available:
            raise ValueError(
                f"num_clients={num_clients} but the dataset has {available} natural clients;"
                f" allowed: 1..{available}"
            )
    if partitioner["_target_"].endswith("NaturalIdPartitioner"):
        if not natural:
            raise ValueError(
                "partitioner=natural needs a dataset with natural clients (e.g. shakespeare);"
                " use iid, dirichlet, shard or pathological for this one"
            )
        return _natural(ids, num_clients)
    # Shuffle once with the seed: IidPartitioner shards contiguously.
    order = np.random.default_rng(seed).permutation(len(data.train_y))
    if partitioner["_target_"] in IID and len(partitioner) == 1:
        out = _iid(order, num_clients)
    else:
        out = _library_partitions(data, partitioner, order, num_clients, seed, name)
    for k, idx in enumerate(out):
        if len(idx) < 2:
            raise ValueError(
                f"partitioner={name} leaves client {k} with {len(idx)} sample(s) of"
                f" {len(order)} (num_clients={num_clients}); each client needs at least 2:"
                f" {_remedy(name, len(order))}"
            )
    return out


def _remedy(name: str, samples: int) -> str:
    """What to change when a partitioner leaves a client (nearly) empty."""
    fewer = f"use at most {samples // 2} clients" if name == "iid" else "use fewer clients"
    more = {
        "dirichlet": " or a larger partitioner.alpha",
        "shard": " or more partitioner.num_shards_per_partition",
        "pathological": " or more partitioner.num_classes_per_partition",
    }
    return fewer + more.get(name, "")


def _library_partitions(
    data: FederatedData,
    partitioner: dict[str, Any],
    order: np.ndarray,
    num_clients: int,
    seed: int,
    name: str,
) -> list[np.ndarray]:
    import datasets  # imported here: 0.4 s of start-up that only these partitioners need

    columns = {LABEL: data.train_y.numpy()[order], "idx": order}
    if data.train_ids is not None:
        columns[NATURAL_ID] = np.asarray(data.train_ids)[order]
    table = datasets.Dataset.from_dict(columns)
    part = _build(partitioner, num_clients, seed)
    part.dataset = table
    try:
        with warnings.catch_warnings():
            # flwr-datasets warns on every retry of a hard Dirichlet draw (the error says
            # enough), and pyarrow about its own deprecations inside flwr-datasets.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # With NaturalIdPartitioner: one partition per id, the first num_clients kept.
            # The column through Arrow: np.asarray on the Dataset's own column object
            # reads it a row at a time (9 s for Fashion-MNIST's 54,000 rows).
            out = [
                np.sort(np.asarray(part.load_partition(k).with_format("arrow")["idx"]))
                for k in range(num_clients)
            ]
    except ValueError as err:  # flwr-datasets' own explanation, on one line
        raise ValueError(f"partitioner={name} with num_clients={num_clients}: {err}") from None
    return out


@lru_cache(maxsize=4)
def _cached(key: str) -> list[np.ndarray]:
    spec = json.loads(key)
    data = load_dataset(spec["dataset"])
    return partition_indices(data, spec["partitioner"], spec["num_clients"], spec["seed"])


def client_indices(
    dataset: dict[str, Any], partitioner: dict[str, Any], num_clients: int, seed: int
) -> list[np.ndarray]:
    """All clients' train indices, computed once per process and config."""
    key = json.dumps(
        {
            "dataset": without_none(dataset),
            "partitioner": without_none(partitioner),
            "num_clients": num_clients,
            "seed": seed,
        },
        sort_keys=True,
        default=str,
    )
    return _cached(key)


def local_split(
    data: FederatedData, train_idx: np.ndarray, eval_fraction: float
) -> tuple[np.ndarray, np.ndarray, bool]:
    """A client's (train, eval) indices and where its eval indices point.

    Natural datasets evaluate each client on its own test samples (returned as
    indices into ``data.test_*``);
    others hold out the last ``eval_fraction`` of the client's partition.

    Returns
    -------
    (train_idx, eval_idx, eval_from_test)
        ``eval_from_test`` is True when ``eval_idx`` indexes the test tensors.
    """
    if data.train_ids is not None and data.test_ids is not None:
        natural_id = data.train_ids[train_idx[0]]
        return train_idx, np.flatnonzero(np.asarray(data.test_ids) == natural_id), True
    n_eval = int(len(train_idx) * eval_fraction)
    n_eval = min(max(n_eval, 1 if eval_fraction > 0 else 0), len(train_idx) - 1)
    return train_idx[: len(train_idx) - n_eval], train_idx[len(train_idx) - n_eval :], False
