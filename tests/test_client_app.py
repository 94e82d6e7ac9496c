"""fedlearn's ClientApp: nodes of one process share a model per thread, not one each."""

from __future__ import annotations

import threading

from flwr.app import Context, RecordDict

from fedlearn.app.client_app import client_job, job_model
from fedlearn.app.run_config import client_run_config
from fedlearn.experiment import _plain, compose_config


def _context(cfg: dict, node: int) -> Context:
    node_config = {"partition-id": node, "num-partitions": int(cfg["num_clients"])}
    return Context(1, node, node_config, RecordDict(), client_run_config(cfg))


def test_nodes_share_one_model_per_thread_and_keep_their_own_data() -> None:
    cfg = _plain(compose_config(["num_clients=4", "dataset.max_samples=200"]))
    a, b = client_job(_context(cfg, 0)), client_job(_context(cfg, 1))
    assert a is not b and a.partition_id == 0 and b.partition_id == 1
    assert job_model(a) is job_model(b)
    other = []
    thread = threading.Thread(target=lambda: other.append(job_model(a)))
    thread.start()
    thread.join()
    assert other[0] is not job_model(a)  # another thread trains on its own copy
