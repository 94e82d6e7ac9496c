"""Helpers of the gRPC runtime tests, and a ClientApp in Flower's own plain style.

``app`` uses nothing of fedlearn: numpy arrays in, arrays + ``num-examples``
out, like Flower's quickstart apps. Its node_config switches on test
behaviours: ``train-sleep`` (seconds, from round ``sleep-round``), ``nan``
(reply with NaN), ``wrong-shape`` (one more element), ``raise`` (the app raises). Each train prints
``TRAIN <round> <node-id>`` so a test can see a client mid-round.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc.client import ClientSettings, GrpcClient
from fedlearn.runtime.grpc.grid import GrpcGrid
from fedlearn.runtime.grpc.server import GrpcServer
from fedlearn.runtime.grpc.settings import DeploySettings

REPO = Path(__file__).resolve().parents[1]
APP = "tests.test_grpc_helpers:app"

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Add (1 + partition id) to every array; count calls in the node's Context state."""
    cfg = context.node_config
    rnd = int(msg.content["config"]["server-round"])
    calls = int(context.state["calls"]["n"]) + 1 if "calls" in context.state else 1
    context.state["calls"] = MetricRecord({"n": calls})
    print(f"TRAIN {rnd} {context.node_id}", flush=True)
    if cfg.get("raise"):
        raise RuntimeError("this client's training crashed")
    if rnd >= int(cfg.get("sleep-round", 1)):
        time.sleep(float(cfg.get("train-sleep", 0.0)))
    pid = int(cfg.get("partition-id", 0))
    arrays = [
        a + np.asarray(1.0 + pid, dtype=a.dtype) for a in msg.content["arrays"].to_numpy_ndarrays()
    ]
    if cfg.get("nan"):
        arrays[0].flat[0] = np.nan
    if cfg.get("wrong-shape"):
        arrays[0] = np.append(arrays[0], arrays[0][:1])
    metrics = MetricRecord({"num-examples": 10 + pid, "calls": calls})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """A constant metric, weighted by a fixed example count."""
    metrics = MetricRecord({"num-examples": 5, "eval_acc": 0.5})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


slow_app = ClientApp()  # fedlearn's own ClientApp, slowed by node_config "train-sleep"


@slow_app.train()
def slow_train(msg: Message, context: Context) -> Message:
    from fedlearn.app import client_app

    time.sleep(float(context.node_config.get("train-sleep", 0.0)))
    return client_app.train(msg, context)


@slow_app.evaluate()
def slow_evaluate(msg: Message, context: Context) -> Message:
    from fedlearn.app import client_app

    return client_app.evaluate(msg, context)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run_config: dict | None = None, port: int = 0, host: str = "127.0.0.1", **kw
) -> tuple[GrpcGrid, GrpcServer, int]:
    """A GrpcServer on loopback (a free port by default; plaintext unless TLS is given)."""
    kw.setdefault("insecure", "tls" not in kw)
    kw.setdefault("heartbeat_interval", 1.0)
    kw.setdefault("heartbeat_timeout", 5.0)
    kw.setdefault("finish_grace", 3.0)
    settings = DeploySettings(address=f"{host}:{port}", **kw)
    settings.validate()
    grid = GrpcGrid(run_config or {"seed": 0}, round_timeout=kw.get("round_timeout"))
    server = GrpcServer(grid, settings)
    return grid, server, server.start()


class ThreadClient:
    """A GrpcClient running in a thread of the test process (real gRPC on loopback)."""

    def __init__(
        self,
        port: int,
        name: str,
        node_config: dict | None = None,
        client_app: ClientApp | None = None,
        **kw,
    ) -> None:
        kw.setdefault("insecure", True)
        kw.setdefault("reconnect_timeout", 10.0)
        kw.setdefault("address", f"127.0.0.1:{port}")
        settings = ClientSettings(node_name=name, node_config=node_config or {}, **kw)
        self.client = GrpcClient(settings, client_app or app)
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = asyncio.run(self.client.run())

    def join(self, timeout: float = 20.0) -> int | None:
        self.thread.join(timeout)
        return self.rc


def partition(k: int, n: int) -> tuple[str, ...]:
    """``fedlearn-client`` flags for partition ``k`` of ``n``."""
    return ("--partition-id", str(k), "--num-partitions", str(n))


def spawn_client(
    port: int, name: str, *extra: str, app_spec: str = APP, log: Path | None = None
) -> subprocess.Popen:
    """A ``fedlearn-client`` process (plaintext); stdout to ``log`` or a pipe."""
    cmd = [
        sys.executable,
        "-m",
        "fedlearn.runtime.grpc.cli",
        "client",
        "--insecure",
        "--server",
        f"127.0.0.1:{port}",
        "--node-name",
        name,
        "--app",
        app_spec,
        "--reconnect-timeout",
        "120",  # a restarted server may take a while to listen again on a busy machine
        "--threads",
        "1",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    out = open(log, "ab") if log else subprocess.PIPE  # noqa: SIM115 - closed by the child
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` (test-side only) until true or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill what is still running (tests never leave processes behind)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def run_fedavg(
    grid: GrpcGrid, num_nodes: int, rounds: int = 1, size: int = 4, screened: bool = False
) -> np.ndarray:
    """Flower's own FedAvg over ``grid`` (all nodes every round); the final array.
    ``screened``: through fedlearn's TrackingGrid, as fedlearn's ServerApp runs it."""
    from flwr.serverapp.strategy import FedAvg

    from fedlearn.app.tracking import TrackingGrid

    assert grid.wait_for_nodes(num_nodes, 30) >= num_nodes, "clients did not connect"
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=num_nodes,
    )
    result = strategy.start(
        grid=TrackingGrid(grid) if screened else grid,
        initial_arrays=ArrayRecord([np.zeros(size, np.float32)]),
        num_rounds=rounds,
        timeout=60,
    )
    return result.arrays.to_numpy_ndarrays()[0]


def spawn_partition_clients(
    port: int, prefix: str, count: int, partitions: int, logs: Path
) -> list[subprocess.Popen]:
    """Clients ``prefix0..`` on partitions ``0..count-1`` of ``partitions``, logs in ``logs``."""
    return [
        spawn_client(port, f"{prefix}{k}", *partition(k, partitions), log=logs / f"{prefix}{k}.log")
        for k in range(count)
    ]


def raw_connect(channel: grpc.Channel):  # noqa: ANN201 - grpc's multi-callable
    """The server's Connect stream on ``channel``, taking frames already serialized
    (a test's hand-made, possibly malformed, bytes) and giving ServerFrames."""
    return channel.stream_stream(
        "/fedlearn.grpc.v1.Fleet/Connect",
        request_serializer=lambda b: b,
        response_deserializer=pb.ServerFrame.FromString,
    )
