"""100 clients connected to one server on loopback, 20 per round."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg

from fedlearn import records
from fedlearn.app.server_app import ServerSetup, run_rounds
from fedlearn.runtime.grpc.client import ClientSettings, run_clients
from tests.test_grpc_helpers import app, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_100_clients_20_per_round(tmp_path):
    grid, server, port = start_server(heartbeat_interval=2.0, heartbeat_timeout=20.0)
    settings = [
        ClientSettings(
            address=f"127.0.0.1:{port}",
            insecure=True,
            node_name=f"n{k}",
            node_config={"partition-id": k},
            reconnect_timeout=20,
        )
        for k in range(100)
    ]
    codes: list[int] = []
    load = threading.Thread(target=lambda: codes.extend(run_clients(settings, app)), daemon=True)
    load.start()  # one load-test "process" holding 100 connections
    try:
        assert grid.wait_for_nodes(100, 60) == 100
        strategy = FedAvg(fraction_train=0.2, fraction_evaluate=0.2, min_available_nodes=100)
        setup = ServerSetup(
            strategy=strategy,
            initial_arrays=ArrayRecord([np.zeros(8)]),
            num_rounds=2,
            run_dir=tmp_path,
            checkpoint_every=0,
        )
        result = run_rounds(setup, grid)
        assert result["status"] == "completed"
        lines = records.read_metrics(tmp_path)
        assert [m["round"] for m in lines] == [1, 2]
        for line in lines:
            assert (line["sampled"], line["succeeded"], line["eval_failed"]) == (20, 20, 0)
        server.finish()
        load.join(30)
        assert codes == [0] * 100
    finally:
        server.stop()
