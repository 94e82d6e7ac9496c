"""Prometheus metrics of the gRPC server, scraped while it serves (real gRPC on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedlearn.runtime.grpc import fedlearn_pb2 as pb
from fedlearn.runtime.grpc.certs import make_pki
from fedlearn.runtime.grpc.settings import PROTOCOL_VERSION
from tests import test_grpc_helpers as helpers
from tests.test_grpc_helpers import (
    ThreadClient,
    raw_connect,
    run_fedavg,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

release = threading.Event()
blocking = ClientApp()  # the helpers' app, whose "block" nodes train only once released


@blocking.train()
def _train(msg: Message, context: Context) -> Message:
    if context.node_config.get("block"):
        release.wait(60)
    return helpers.train(msg, context)


@blocking.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    return helpers.evaluate(msg, context)


def scrape(port: int) -> dict[str, float]:
    """``name{label="value",...}`` -> value, from the endpoint's text format."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _refused(port: int, token: str | None, frames: list[bytes]) -> grpc.StatusCode:
    """Open a stream by hand, send ``frames``; the status the server ends it with."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        connect = raw_connect(channel)
        try:
            for _ in connect(iter(frames), metadata=metadata, timeout=10):
                pass
        except grpc.RpcError as err:
            return err.code()
    raise AssertionError("the server did not refuse the stream")


def _hello() -> bytes:
    return pb.ClientFrame(hello=pb.Hello(protocol_version=PROTOCOL_VERSION)).SerializeToString()


def test_metrics_follow_a_run_while_it_serves(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, ["alice", "bob", "eve"])  # tokens only: plaintext on loopback
    grid, server, port = start_server(
        auth_tokens=str(pki.tokens), metrics_address="127.0.0.1:0", max_message_mb=1
    )
    metrics = grid.monitor.port
    eve = pki.client_tokens["eve"].read_text().strip()
    try:
        got = scrape(metrics)
        assert got["fedlearn_clients_connected"] == 0
        assert got['fedlearn_round_phase{fedlearn_round_phase="waiting"}'] == 1
        assert _refused(port, None, [_hello()]) == grpc.StatusCode.UNAUTHENTICATED
        assert _refused(port, eve, [b"\xff\x01garbage"]) == grpc.StatusCode.INVALID_ARGUMENT
        big = pb.ClientFrame(chunk=pb.Chunk(seq=1, total_bytes=3 << 20, data=b"x"))
        assert _refused(port, eve, [_hello(), big.SerializeToString()]) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        got = scrape(metrics)
        for reason in ("unauthenticated", "protocol", "size"):
            assert got[f'fedlearn_refusals_total{{reason="{reason}"}}'] == 1, reason
        tokens = {n: str(pki.client_tokens[n]) for n in ("alice", "bob")}
        clients = [
            ThreadClient(port, "alice", {"partition-id": 0, "block": True}, blocking,
                         token_file=tokens["alice"]),
            ThreadClient(port, "bob", {"partition-id": 1, "raise": True}, blocking,
                         token_file=tokens["bob"]),
        ]  # fmt: skip
        grid.wait_for_nodes(2, 30)
        assert scrape(metrics)["fedlearn_clients_connected"] == 2
        release.clear()
        fedavg = threading.Thread(target=run_fedavg, args=(grid, 2, 2), daemon=True)
        fedavg.start()

        def in_round_1_training() -> bool:
            got = scrape(metrics)
            train = got['fedlearn_round_phase{fedlearn_round_phase="train"}']
            return got["fedlearn_round"] == 1 and train == 1

        wait_for(in_round_1_training, 30, "round 1's train phase")  # alice holds it there
        release.set()
        fedavg.join(60)
        assert not fedavg.is_alive()
        server.finish()
        assert [c.join() for c in clients] == [0, 0]
        got = scrape(metrics)
        assert got["fedlearn_round"] == 2
        assert got['fedlearn_round_phase{fedlearn_round_phase="finished"}'] == 1
        assert got["fedlearn_round_seconds_count"] == 2
        assert got['fedlearn_replies_total{phase="train"}'] == 4
        assert got['fedlearn_replies_total{phase="evaluate"}'] == 4
        assert got['fedlearn_replies_failed_total{phase="train",reason="client_error"}'] == 2
        assert 0 < got["fedlearn_sent_bytes_total"] <= grid.bytes_sent
        assert 0 < got["fedlearn_received_bytes_total"] <= grid.bytes_received
    finally:
        release.set()
        server.stop()
    with pytest.raises(OSError):  # the endpoint stops with the server
        scrape(metrics)


@pytest.mark.slow
def test_fedlearn_server_serves_metrics_and_is_tracked(tmp_path: Path) -> None:
    # fedlearn-server waits for its two clients: the endpoint is up meanwhile.
    run_dir, metrics, port = tmp_path / "run", helpers.free_port(), helpers.free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from fedlearn.cli import server; server()",
            "dataset.max_samples=300",
            "num_clients=2",
            "num_rounds=2",
            "client.max_steps=3",
            "progress=false",
            f"runtime.address=127.0.0.1:{port}",
            "runtime.insecure=true",
            f"runtime.metrics_address=127.0.0.1:{metrics}",
            "logger=tensorboard",
            f"hydra.run.dir={run_dir}",
        ],  # fmt: skip
        cwd=helpers.REPO,
        env={**os.environ, "PYTHONPATH": str(helpers.REPO)},
    )
    clients: list[subprocess.Popen] = []
    try:

        def waiting() -> bool:
            assert server.poll() is None, "fedlearn-server ended"
            try:
                got = scrape(metrics)
            except OSError:
                return False
            return got['fedlearn_round_phase{fedlearn_round_phase="waiting"}'] == 1

        wait_for(waiting, 120, "fedlearn-server's metrics endpoint")
        assert scrape(metrics)["fedlearn_clients_connected"] == 0
        app = "fedlearn.app.client_app:app"
        clients = [
            helpers.spawn_client(port, f"c{k}", *helpers.partition(k, 2), app_spec=app,
                                 log=tmp_path / f"c{k}.log")
            for k in range(2)
        ]  # fmt: skip
        assert server.wait(120) == 0
    finally:
        helpers.stop([server, *clients])
    from tbparse import SummaryReader

    scalars = SummaryReader(str(run_dir / "tensorboard")).scalars
    steps = scalars[scalars["tag"] == "test/accuracy"]["step"].tolist()
    assert steps == [0, 1, 2]
    assert set(scalars[scalars["tag"] == "bytes_sent"]["step"]) == {1, 2}
