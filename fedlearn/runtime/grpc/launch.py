"""Serve a run over gRPC, optionally with client processes on this machine.

:func:`run_local_deployment` is the gRPC branch of ``fedlearn.experiment.run``:
the lead's ServerApp runs unchanged against a :class:`GrpcGrid`. With
``runtime.local_clients`` > 0 (``fedlearn-launch``, ``fedlearn-simulate
runtime=grpc``) it also starts that many ``fedlearn-client`` processes, one
partition each, with a CA, certificates and tokens generated into the run
folder's ``certs/`` (or plaintext on loopback with ``runtime.insecure=true``).
``fedlearn-server`` sets ``local_clients=0`` and only serves.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict

from fedlearn.app.run_config import client_run_config
from fedlearn.app.server_app import ServerSetup, make_server_app
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.grid import GrpcGrid
from fedlearn.runtime.grpc.server import GrpcServer
from fedlearn.runtime.grpc.settings import DeploySettings, log


def local_client_count(cfg: dict[str, Any]) -> int:
    """How many client processes to start on this machine."""
    n = cfg["runtime"].get("local_clients")
    n = int(cfg["num_clients"]) if n is None else int(n)
    if n < 0:
        raise ValueError(f"runtime.local_clients={n}: must be >= 0 (null: num_clients)")
    return n


def _local_settings(settings: DeploySettings, run_dir: Path, n: int) -> tuple[DeploySettings, Any]:
    """Loopback on a free port; self-signed TLS and tokens unless insecure or given."""
    host = settings.address.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(
            f"runtime.address={settings.address}: local clients need a loopback address"
            " (127.0.0.1:PORT)"
        )
    settings.address = "127.0.0.1:0"
    pki = None
    if not settings.insecure and not settings.tls.cert:
        pki = make_pki(run_dir / "certs", [f"client-{k}" for k in range(n)])
        settings.tls.cert, settings.tls.key = str(pki.server_cert), str(pki.server_key)
        settings.tls.ca = str(pki.ca)
        settings.auth_tokens = str(pki.tokens)
    return settings, pki


def client_command(port: int, k: int, n: int, cfg: dict[str, Any], pki: Any) -> list[str]:
    """The command line of local client ``k`` of ``n``."""
    cmd = [sys.executable, "-m", "fedlearn.runtime.grpc.cli", "client",
           "--server", f"127.0.0.1:{port}", "--node-name", f"client-{k}",
           "--partition-id", str(k), "--num-partitions", str(n),
           "--threads", str(int(cfg["runtime"].get("client_threads") or 1)),
           "--reconnect-timeout", str(float(cfg["runtime"].get("wait_timeout", 300)))]
    if pki is None:
        cmd.append("--insecure")
    else:
        name = f"client-{k}"
        cmd += ["--tls-ca", str(pki.ca), "--token-file", str(pki.client_tokens[name])]
    return cmd


def run_local_deployment(cfg: dict[str, Any], setup: ServerSetup) -> None:
    """Run ``setup``'s ServerApp over gRPC; with local clients, start and reap them too."""
    raw = dict(cfg["runtime"])
    if raw.get("round_timeout") is None:
        raw["round_timeout"] = setup.round_timeout
    settings = DeploySettings.from_dict(raw, check=False)
    n_local = local_client_count(cfg)
    pki = None
    if n_local:
        settings, pki = _local_settings(settings, setup.run_dir, n_local)
    settings.validate()
    grid = GrpcGrid(client_run_config(cfg), round_timeout=settings.round_timeout)
    server = GrpcServer(grid, settings)
    port = server.start()
    log.info("fedlearn server listening on %s", settings.address.rsplit(":", 1)[0] + f":{port}")
    procs: list[subprocess.Popen] = []
    logs = setup.run_dir / "clients"
    reason = "run failed"
    try:
        if n_local:
            logs.mkdir(exist_ok=True)
            for k in range(n_local):
                with open(logs / f"client-{k}.log", "ab") as out:
                    procs.append(subprocess.Popen(client_command(port, k, n_local, cfg, pki),
                                                  stdout=out, stderr=subprocess.STDOUT))
        wanted = int(settings.min_clients)
        got = grid.wait_for_nodes(wanted, settings.wait_timeout)
        if got < wanted:
            raise ValueError(
                f"runtime.min_clients={wanted}: only {got} client(s) connected within"
                f" runtime.wait_timeout={settings.wait_timeout} s"
            )
        context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                          run_config={})
        make_server_app(setup)(grid, context)
        reason = f"run {setup.result.get('status', 'over')}"
    finally:
        server.finish(reason)  # clients exit instead of retrying a server that is gone
        server.stop()
        _reap(procs)


def _reap(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Wait for local clients to exit; kill those that do not (never leave orphans)."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
