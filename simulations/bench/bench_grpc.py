"""Benchmark: fedlearn's gRPC runtime against its in-process runtime.

1. Workload (20 clients, 10 per round, 5 rounds, 1 local epoch, CNN on digits):
   per-round time from metrics.jsonl, in-process vs gRPC (``runtime=grpc``:
   a TLS server and 20 client processes on this machine), and whole-process time.
2. Transport only (2 client processes, an app that returns the model unchanged):
   per-round time of train + evaluate for a tiny and a 10 MB model, gRPC vs in-process.
3. Bytes on the wire (counted by a TCP proxy between clients and server) over
   the size of the same messages serialized by flwr (target <= 1.02x), TLS and plaintext.
4. 100 clients on loopback (one load-test process holding 100 connections),
   20 per round: the server process's peak memory (VmHWM) and round time
   (and the same with 20 clients connected, for the per-connection cost).

    python simulations/bench/bench_grpc.py [--repeats 1] [--skip workload,transport,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_simulate import WORKLOAD  # noqa: E402 - the same workload as the simulation bench

REPO = HERE.parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}

echo_app = ClientApp()  # transport benchmark: no training, the model goes straight back


@echo_app.train()
def _echo_train(msg: Message, context: Context) -> Message:
    content = RecordDict(
        {"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content, reply_to=msg)


@echo_app.evaluate()
def _echo_evaluate(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)


def _rounds(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m["seconds"] for m in lines if m.get("round", 0) > 0]


def _simulate(overrides: list[str], run_dir: Path) -> float:
    code = "from fedlearn.cli import simulate; simulate()"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def bench_workload(repeats: int) -> list[tuple]:
    rows = []
    for label, extra in [
        ("in-process, workers=1", ["runtime.workers=1"]),
        ("in-process, workers=2", ["runtime.workers=2"]),
        ("gRPC, TLS, 20 client processes", ["runtime=grpc"]),
    ]:
        walls, firsts, rest = [], [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                walls.append(_simulate([*WORKLOAD, *extra], Path(tmp) / "run"))
                secs = _rounds(Path(tmp) / "run")
                firsts.append(secs[0])
                rest.append(statistics.median(secs[1:]))
        rows.append(
            (label, statistics.median(rest), statistics.median(firsts), statistics.median(walls))
        )
    return rows


def _load_clients(port: int, nodes: range, total: int, app_spec: str) -> subprocess.Popen:
    """One process holding a connection per node of ``nodes`` (partitions of ``total``)."""
    code = (
        "import sys, logging, torch; torch.set_num_threads(1);"
        "logging.getLogger('flwr').setLevel(logging.WARNING);"
        "from fedlearn.runtime.grpc.client import ClientSettings, load_app, run_clients;"
        f"app = load_app({app_spec!r});"
        f"s = [ClientSettings(address='127.0.0.1:{port}', insecure=True, node_name=f'n{{k}}',"
        f" node_config={{'partition-id': k, 'num-partitions': {total}}}, reconnect_timeout=60)"
        f" for k in range({nodes.start}, {nodes.stop})];"
        "sys.exit(max(run_clients(s, app)))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _fedavg_rounds(grid, arrays: ArrayRecord, rounds: int, nodes: int) -> list[float]:
    """Per-round time (train + evaluate) of Flower's FedAvg over ``grid``."""
    from flwr.serverapp.strategy import FedAvg

    times = []
    strategy = FedAvg(min_available_nodes=nodes)
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        msgs = strategy.configure_train(rnd, arrays, ConfigRecord(), grid)
        arrays, _ = strategy.aggregate_train(rnd, grid.send_and_receive(msgs))
        msgs = strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid)
        strategy.aggregate_evaluate(rnd, grid.send_and_receive(msgs))
        times.append(time.perf_counter() - t0)
    return times


def bench_transport(rounds: int = 12) -> list[tuple]:
    from fedlearn.runtime.grpc.grid import GrpcGrid
    from fedlearn.runtime.grpc.server import GrpcServer
    from fedlearn.runtime.grpc.settings import DeploySettings
    from fedlearn.runtime.inprocess import InProcessGrid

    rows = []
    for label, size in [("tiny model (4 KB)", 1_000), ("10 MB model", 2_500_000)]:
        arrays = ArrayRecord([np.ones(size, np.float32)])
        inproc = InProcessGrid(echo_app, [{"partition-id": k} for k in range(2)], {})
        t_in = statistics.median(_fedavg_rounds(inproc, arrays, rounds, 2)[2:])
        grid = GrpcGrid({})
        server = GrpcServer(grid, DeploySettings(address="127.0.0.1:0", insecure=True))
        port = server.start()
        procs = [_load_clients(port, range(k, k + 1), 2, "bench_grpc:echo_app") for k in (0, 1)]
        try:
            grid.wait_for_nodes(2, 60)
            t_g = statistics.median(_fedavg_rounds(grid, arrays, rounds, 2)[2:])
        finally:
            server.finish()
            server.stop()
            for proc in procs:
                proc.wait(30)
        rows.append((label, t_in, t_g))
    return rows


class _Proxy:
    """A TCP proxy on loopback counting bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.up = self.down = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _pipe(self, reader, writer, up: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(reader, w2, True), self._pipe(r2, writer, False))


def bench_wire(rounds: int = 5) -> list[tuple]:
    """Wire bytes / flwr-serialized bytes, for the digits CNN, 2 clients, FedAvg."""
    import torch

    from fedlearn.app.run_config import client_run_config
    from fedlearn.data import load_dataset
    from fedlearn.experiment import compose_config
    from fedlearn.models import build_model
    from fedlearn.runtime.grpc.certs import make_pki
    from fedlearn.runtime.grpc.client import ClientSettings, GrpcClient
    from fedlearn.runtime.grpc.grid import GrpcGrid
    from fedlearn.runtime.grpc.serde import message_parts
    from fedlearn.runtime.grpc.server import GrpcServer
    from fedlearn.runtime.grpc.settings import DeploySettings, TlsSettings

    class SizedGrid(GrpcGrid):
        serialized = [0, 0]

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            replies = super().send_and_receive(messages, timeout=timeout)
            self.serialized[0] += sum(len(b"".join(message_parts(m))) for m in messages)
            self.serialized[1] += sum(len(b"".join(message_parts(r))) for r in replies)
            return replies

    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config(["num_clients=2"]), resolve=True)
    torch.manual_seed(0)
    model = build_model(cfg["model"], load_dataset(cfg["dataset"]).spec)
    arrays = ArrayRecord(model.state_dict())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(tmp, ["c0", "c1"])
        for label, tls in [("TLS + tokens", True), ("plaintext", False)]:
            grid = SizedGrid(client_run_config(cfg))
            grid.serialized = [0, 0]
            kw = (
                {
                    "tls": TlsSettings(str(pki.server_cert), str(pki.server_key)),
                    "auth_tokens": str(pki.tokens),
                }
                if tls
                else {"insecure": True}
            )
            server = GrpcServer(grid, DeploySettings(address="127.0.0.1:0", **kw))
            proxy = _Proxy(server.start())
            clients = []
            for k in range(2):
                ckw = (
                    {"tls_ca": str(pki.ca), "token_file": str(pki.client_tokens[f"c{k}"])}
                    if tls
                    else {"insecure": True}
                )
                settings = ClientSettings(
                    address=f"127.0.0.1:{proxy.port}",
                    node_name=f"c{k}",
                    node_config={"partition-id": k, "num-partitions": 2},
                    **ckw,
                )
                client = GrpcClient(settings)
                threading.Thread(target=asyncio.run, args=(client.run(),), daemon=True).start()
                clients.append(client)
            grid.wait_for_nodes(2, 60)
            proxy.up = proxy.down = 0  # count the rounds, not the handshakes
            _fedavg_rounds(grid, arrays, rounds, 2)
            up, down = proxy.up, proxy.down
            server.finish()
            server.stop()
            sent, received = grid.serialized
            rows.append((label, sent, down, down / sent, received, up, up / received))
    return rows


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bench_many(n: int, rounds: int = 4) -> tuple:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedlearn.runtime.grpc.cli",
                "server",
                f"num_clients={n}",
                f"num_rounds={rounds}",
                f"strategy.fraction_train={20 / n}",
                f"strategy.fraction_evaluate={20 / n}",
                "server.checkpoint_every=0",
                "progress=false",
                "runtime.insecure=true",
                f"runtime.address=127.0.0.1:{port}",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = _load_clients(port, range(n), n, "fedlearn.app.client_app:app")
        peak = 0
        while server.poll() is None:
            peak = max(peak, _vm_hwm(server.pid))
            time.sleep(0.1)
        load.wait(60)
        secs = _rounds(run_dir)
        return peak, statistics.median(secs[1:]), secs[0], server.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated: workload,transport,wire,100")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("fedlearn.grpc").setLevel(logging.ERROR)
    print(f"machine: {os.cpu_count()} cores shared with other work; medians of rounds 2..N")
    if "workload" not in skip:
        print("\n1. workload: 20 clients, 10/round, 5 rounds, 1 local epoch, CNN on digits")
        print("| runtime | round (median of 2-5) | round 1 | whole process |")
        rows = bench_workload(args.repeats)
        for label, rest, first, wall in rows:
            print(f"| {label} | {rest:.3f} s | {first:.2f} s | {wall:.1f} s |")
        print(f"gRPC / in-process (workers=1) round time: {rows[2][1] / rows[0][1]:.2f}x")
    if "transport" not in skip:
        print("\n2. transport only: 2 client processes, train + evaluate, model echoed back")
        print("| model | in-process round | gRPC round |")
        for label, t_in, t_g in bench_transport():
            print(f"| {label} | {t_in * 1000:.1f} ms | {t_g * 1000:.1f} ms |")
    if "wire" not in skip:
        print("\n3. bytes on the wire (TCP proxy) / flwr-serialized messages, 5 rounds, 2 clients")
        print(
            "| transport | to clients: serialized | wire | ratio | from clients: serialized"
            " | wire | ratio |"
        )
        for label, s, d, rd, r, u, ru in bench_wire():
            print(f"| {label} | {s:,} | {d:,} | {rd:.4f}x | {r:,} | {u:,} | {ru:.4f}x |")
    if "100" not in skip:
        print("\n4. many clients (one load-test process), 20 per round, CNN on digits")
        print("| clients connected | server peak RSS | round (median of 2-4) | round 1 | exit |")
        for n in (20, 100):
            peak, rest, first, rc = bench_many(n)
            print(f"| {n} | {peak / 2**20:.0f} MiB | {rest:.3f} s | {first:.2f} s | {rc} |")


if __name__ == "__main__":
    main()
