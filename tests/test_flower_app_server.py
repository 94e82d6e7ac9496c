"""``fedlearn-server app=<folder>``: a Flower app's ServerApp served over gRPC (TLS,
tokens) to two ``fedlearn-client --app module:attr`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fedlearn import records
from fedlearn.runtime.grpc.certs import make_pki
from tests.test_flower_app import APP
from tests.test_grpc_helpers import REPO, free_port, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_fedlearn_server_serves_a_flower_app_to_client_processes(tmp_path) -> None:
    pki = make_pki(tmp_path / "pki", ["c0", "c1"])
    port, run_dir = free_port(), tmp_path / "run"
    grpc_cli = [sys.executable, "-m", "fedlearn.runtime.grpc.cli"]
    server = subprocess.Popen(
        [
            *grpc_cli,
            "server",
            f"app={APP}",
            "num_clients=2",
            "app.config.num-server-rounds=2",
            "app.config.max-samples=300",
            "progress=false",
            f"runtime.address=127.0.0.1:{port}",
            f"runtime.tls.cert={pki.server_cert}",
            f"runtime.tls.key={pki.server_key}",
            f"runtime.auth_tokens={pki.tokens}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
    )
    # The clients import the app themselves: it is on their path, as an installed app would be.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(APP)])}
    clients = [
        subprocess.Popen(
            [
                *grpc_cli,
                "client",
                "--server",
                f"127.0.0.1:{port}",
                "--tls-ca",
                str(pki.ca),
                "--token-file",
                str(pki.client_tokens[f"c{k}"]),
                "--app",
                "quickstart_app.client_app:app",
                "--partition-id",
                str(k),
                "--num-partitions",
                "2",
                "--reconnect-timeout",
                "120",
            ],
            cwd=tmp_path,
            env=env,
            stdout=open(tmp_path / f"c{k}.log", "wb"),  # noqa: SIM115 - the child's
            stderr=subprocess.STDOUT,
        )
        for k in range(2)
    ]
    try:
        assert server.wait(240) == 0
        assert [c.wait(60) for c in clients] == [0, 0]
        result = json.loads((run_dir / records.RESULT).read_text())
        assert result["status"] == "completed" and result["app"] == "quickstart-app"
        lines = records.read_metrics(run_dir)
        assert [(m["round"], m["succeeded"]) for m in lines] == [(1, 2), (2, 2)]
        assert all(m["bytes_sent"] > 0 and m["bytes_received"] > 0 for m in lines)
        assert "[ROUND 2/2]" in (run_dir / records.LOG).read_text()
    finally:
        stop([server, *clients])
