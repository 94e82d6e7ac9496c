"""The gRPC runtime end to end with real processes on 127.0.0.1.

Same weights as the in-process runtime; a client killed mid-round (the round
completes without it, it restarts and rejoins); the server killed and resumed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from fedlearn import records
from fedlearn.app.server_app import ServerSetup, run_rounds
from fedlearn.experiment import simulate
from fedlearn.runtime.grpc import security
from tests.test_grpc_helpers import (
    REPO,
    free_port,
    partition,
    spawn_client,
    spawn_partition_clients,
    start_server,
    stop,
    wait_for,
)

# Several whole runs with client processes each: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SMALL = [
    "dataset.max_samples=300",
    "num_clients=3",
    "num_rounds=3",
    "client.max_steps=3",
    "progress=false",
]


def test_same_final_weights_as_inprocess(tmp_path):
    # One client at a time in-process too: vectorized clients agree only within float
    # tolerance (tests/test_vectorized_runs.py); this compares the runtimes bit for bit.
    inprocess = [*SMALL, "runtime=inprocess", "runtime.workers=1", "runtime.vectorize=false"]
    a = simulate(inprocess, tmp_path / "inprocess")
    b = simulate([*SMALL, "runtime=grpc"], tmp_path / "grpc")  # self-signed TLS + tokens
    assert a["status"] == b["status"] == "completed" and b["rounds_completed"] == 3
    wa = torch.load(tmp_path / "inprocess" / records.MODEL)
    wb = torch.load(tmp_path / "grpc" / records.MODEL)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert a["final"] == b["final"]
    assert (tmp_path / "grpc" / "certs" / "ca.pem").exists()
    assert b["bytes_sent"] > 0 and b["bytes_received"] > 0


def test_resume_keeps_client_state_and_equals_uninterrupted(tmp_path):
    # SCAFFOLD's client control variates live in the client processes: the local
    # clients keep them in clients/client-k.state, and the resumed run's new client
    # processes carry on with them.
    grpc = [*SMALL, "runtime=grpc", "strategy=scaffold"]
    whole = simulate(grpc, tmp_path / "whole")
    simulate([*grpc, "num_rounds=2"], tmp_path / "split")
    resumed = simulate([f"resume={tmp_path / 'split'}", "num_rounds=3"])
    assert resumed["rounds_completed"] == 3 and resumed["final"] == whole["final"]
    log = (tmp_path / "split" / "clients" / "client-0.log").read_text()
    assert "restored client state (" in log


def _read_until(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line.decode():
            return
    raise AssertionError(f"client exited before printing {text!r}")


def test_client_killed_mid_round_completes_without_it_and_rejoins(tmp_path):
    grid, server, port = start_server(heartbeat_interval=1.0, heartbeat_timeout=5.0)
    procs = spawn_partition_clients(port, "c", 2, 3, tmp_path)
    victim = spawn_client(
        port,
        "c2",
        *partition(2, 3),
        "--node-config",
        "train-sleep=60",
        "--node-config",
        "sleep-round=2",
    )
    procs.append(victim)
    setup = ServerSetup(
        strategy=FedAvg(min_available_nodes=3),
        initial_arrays=ArrayRecord([np.zeros(4)]),
        num_rounds=3,
        run_dir=tmp_path,
        round_timeout=60,
        checkpoint_every=0,
    )
    try:
        assert grid.wait_for_nodes(3, 60) == 3
        runner = threading.Thread(target=run_rounds, args=(setup, grid), daemon=True)
        runner.start()
        _read_until(victim, "TRAIN 2")  # c2 is training in round 2 ...
        victim.kill()  # ... and dies; it restarts at once under the same name (node id)
        log = tmp_path / "c2-again.log"
        procs.append(spawn_client(port, "c2", *partition(2, 3), log=log))
        runner.join(60)
        r2 = records.read_metrics(tmp_path)[1]
        assert (r2["round"], r2["sampled"], r2["succeeded"], r2["failed"]) == (2, 3, 2, 1)
        assert r2["seconds"] < 30  # dropped when its stream closed, not at the 60 s timeout
        assert setup.result["status"] == "completed"
        r3 = records.read_metrics(tmp_path)[2]
        assert (r3["sampled"], r3["succeeded"]) == (3, 3)
        assert f"TRAIN 3 {security.node_id_for('c2')}" in log.read_text()
        server.finish()
        assert [p.wait(20) for p in procs[:2]] == [0, 0]
    finally:
        server.stop()
        stop(procs)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM])
def test_server_stopped_and_resumed_completes_all_rounds(stop_signal, tmp_path):
    # SIGKILL: the clients' streams just break. SIGTERM: the server stops cleanly but
    # does not tell its remote clients the run is over, so they wait for the restart.
    port, run_dir = free_port(), tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "fedlearn.runtime.grpc.cli",
        "server",
        "num_clients=2",
        "num_rounds=5",
        "dataset.max_samples=300",
        "client.max_steps=3",
        "progress=false",
        "runtime.insecure=true",
        f"runtime.address=127.0.0.1:{port}",
        f"hydra.run.dir={run_dir}",
    ]
    server = subprocess.Popen(args, cwd=REPO)
    clients = [
        spawn_client(
            port,
            f"c{k}",
            *partition(k, 2),
            "--node-config",
            "train-sleep=0.5",
            app_spec="tests.test_grpc_helpers:slow_app",
            log=tmp_path / f"c{k}.log",
        )
        for k in range(2)
    ]
    procs = [server, *clients]
    try:
        wait_for(lambda: len(records.read_metrics(run_dir)) >= 3, 90, "round 2")  # 0, 1, 2
        server.send_signal(stop_signal)
        server.wait(30)
        done = max(m["round"] for m in records.read_metrics(run_dir))
        assert done < 5, "the run ended before the server was killed"
        server = subprocess.Popen([*args, f"resume={run_dir}"], cwd=REPO)
        procs.append(server)
        assert server.wait(90) == 0
        result = json.loads((run_dir / records.RESULT).read_text())
        assert result["status"] == "completed" and result["rounds_completed"] == 5
        rounds = [m["round"] for m in records.read_metrics(run_dir) if m["round"] > 0]
        assert rounds == [1, 2, 3, 4, 5]
        assert [c.wait(20) for c in clients] == [0, 0]
        for k in range(2):  # reconnected under the same node id, same process and Context
            joins = [
                ln
                for ln in (tmp_path / f"c{k}.log").read_text().splitlines()
                if "joined as node" in ln
            ]
            assert len(joins) >= 2 and len({ln.split("joined as node")[1] for ln in joins}) == 1
    finally:
        stop(procs)


def test_client_with_its_own_local_data_trains_on_it(tmp_path):
    from omegaconf import OmegaConf

    from fedlearn.app.run_config import client_run_config
    from fedlearn.data import load_dataset
    from fedlearn.experiment import compose_config
    from fedlearn.models import build_model

    cfg = OmegaConf.to_container(compose_config(["client.batch_size=16"]), resolve=True)
    grid, server, port = start_server(client_run_config(cfg))
    # No partition: the client loads its own data (here: 120 digits, 96 of them to train).
    proc = spawn_client(
        port,
        "own",
        "--data",
        "max_samples=120",
        "--data",
        "seed=5",
        app_spec="fedlearn.app.client_app:app",
        log=tmp_path / "own.log",
    )
    try:
        assert grid.wait_for_nodes(1, 60) == 1
        model = build_model(cfg["model"], load_dataset(cfg["dataset"]).spec)
        result = FedAvg(min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1).start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=1,
            train_config=ConfigRecord({"lr": 0.05, "local-epochs": 1, "batch-size": 16}),
        )
        assert result.train_metrics_clientapp[1]["num-steps"] == 6  # ceil(96 / 16)
        server.finish()
        assert proc.wait(20) == 0
    finally:
        server.stop()
        stop([proc])
