"""A ClientApp in Flower's own plain style (tests.test_grpc_helpers:app) joins and trains."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg

from tests.test_grpc_helpers import spawn_partition_clients, start_server, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_plain_flower_clientapp_processes_train_with_fedavg(tmp_path):
    grid, server, port = start_server()
    procs = spawn_partition_clients(port, "p", 2, 2, tmp_path)
    try:
        assert grid.wait_for_nodes(2, 60) == 2
        result = FedAvg(min_available_nodes=2).start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(3, np.float32)]), num_rounds=3
        )
        # Each round adds (10 x 1 + 11 x 2) / 21; the Context state counts calls per node.
        final = result.arrays.to_numpy_ndarrays()[0]
        np.testing.assert_allclose(final, np.full(3, 3 * 32 / 21), rtol=1e-6)
        assert result.train_metrics_clientapp[3]["calls"] == 3
        assert result.evaluate_metrics_clientapp[3]["eval_acc"] == 0.5
        server.finish()
        assert [p.wait(20) for p in procs] == [0, 0]
    finally:
        server.stop()
        stop(procs)
