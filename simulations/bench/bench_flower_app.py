"""Benchmark: a Flower app run by Flower (`flwr run`, `run_simulation`) and by fedlearn.

The app is ``tests/flower_app`` (the shape of Flower's quickstart-pytorch: its
own CNN, train/test loops, FedAvg through ``strategy.start``, flwr-datasets'
IID partitioner), with data that needs no download. Ten nodes, three rounds.
Two workloads: the app's defaults (scikit-learn's digits, 1,797 8x8 images: the
runtimes' own cost dominates), and ``--dataset fashion-mnist --max-samples 10000``
(28x28 images from ``/usr/share/datasets/fashion-mnist``: the app's own imports,
data loading and training are most of fedlearn's time). Whole
process wall time (start-up, imports, data, rounds, exit), median of N runs:

- ``flwr run``: Flower's CLI against a local SuperLink in simulation mode (Ray),
  ``--stream`` until the run ends. Each repeat gets a fresh ``FLWR_HOME``, so the
  SuperLink is started by the command, as on a first ``flwr run``, and stopped
  after it.
- ``run_simulation``: Flower's Python simulation API (Ray) on the same two
  components, given the app's run config (that API passes none).
- ``fedlearn-simulate app=...``: fedlearn's in-process runtime (one worker per core).

    python simulations/bench/bench_flower_app.py [--repeats 3]
    python simulations/bench/bench_flower_app.py --dataset fashion-mnist --max-samples 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "tests" / "flower_app"
NODES = 10

RUN_SIMULATION = """
import sys
from pathlib import Path
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from quickstart_app.client_app import app as client
from quickstart_app.server_app import app as server

overrides = {"dataset": sys.argv[4], "max-samples": int(sys.argv[2])}
config = get_fused_config_from_dir(Path(sys.argv[1]), overrides)
server_app = ServerApp()

@server_app.main()
def main(grid: Grid, context: Context) -> None:
    context.run_config = config
    server(grid, context)

def fill(msg: Message, context: Context, call_next):
    original, context.run_config = context.run_config, config
    try:
        return call_next(msg, context)
    finally:
        context.run_config = original

client_app = ClientApp(mods=[fill])
client_app.train()(lambda msg, ctx: client(msg, ctx))
client_app.evaluate()(lambda msg, ctx: client(msg, ctx))
run_simulation(server_app=server_app, client_app=client_app, num_supernodes=int(sys.argv[3]),
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall seconds of one run of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall


def _superlinks(home: Path) -> list[int]:
    """Pids of the SuperLinks started with ``home`` as FLWR_HOME (their log is in it)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [
        int(line.split()[0])
        for line in out.splitlines()
        if "flower-superlink" in line and str(home) in line
    ]


def _stop_superlinks(home: Path) -> None:
    for pid in _superlinks(home):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _superlinks(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _superlinks(home):
        os.kill(pid, signal.SIGKILL)


def flwr_run(dataset: str, max_samples: int) -> float:
    """``flwr run`` on a copy of the app (flwr migrates and packs the folder it runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
        home = Path(tmp) / "flwr-home"
        env = {**os.environ, "FLWR_HOME": str(home), "PYTHONPATH": str(REPO)}
        cmd = [
            "flwr",
            "run",
            str(app),
            "--stream",
            "--run-config",
            f"dataset='{dataset}' max-samples={max_samples}",
            "--federation-config",
            f"num-supernodes={NODES}",
        ]
        try:
            return timed(cmd, env)
        finally:
            _stop_superlinks(home)


def run_simulation(dataset: str, max_samples: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(APP)])}
    code = [sys.executable, "-c", RUN_SIMULATION, str(APP), str(max_samples), str(NODES), dataset]
    return timed(code, env)


def fedlearn_simulate(dataset: str, max_samples: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-c",
            "from fedlearn.cli import simulate; simulate()",
            f"app={APP}",
            f"num_clients={NODES}",
            f"app.config.dataset={dataset}",
            f"app.config.max-samples={max_samples}",
            "progress=false",
            f"hydra.run.dir={tmp}/run",
        ]
        return timed(cmd, {**os.environ, "PYTHONPATH": str(REPO)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    parser.add_argument("--max-samples", type=int, default=0, help="images partitioned (0: all)")
    args = parser.parse_args()
    d, n = args.dataset, args.max_samples
    runs = {
        "flwr run (local simulation, Ray)": lambda: flwr_run(d, n),
        "flwr.simulation.run_simulation (Ray)": lambda: run_simulation(d, n),
        "fedlearn-simulate app=... (in-process)": lambda: fedlearn_simulate(d, n),
    }
    medians = {}
    for name, fn in runs.items():
        walls = [fn() for _ in range(args.repeats)]
        medians[name] = statistics.median(walls)
        print(f"{name}: {', '.join(f'{w:.1f}' for w in walls)} s", file=sys.stderr)
    base = medians["flwr run (local simulation, Ray)"]
    print(
        f"Flower app, {NODES} nodes, 3 rounds, {d} ({n or 'all'} images), median of"
        f" {args.repeats} runs, whole process."
    )
    print("| run | wall s | flwr run / this |")
    print("| --- | ---: | ---: |")
    for name, wall in medians.items():
        print(f"| {name} | {wall:.1f} | {base / wall:.1f}x |")


if __name__ == "__main__":
    main()
