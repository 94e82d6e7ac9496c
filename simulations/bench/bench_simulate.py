"""Benchmark: fedlearn in-process vs Flower's Ray engine vs a plain PyTorch loop.

Whole-process wall time (python start-up, imports, data, training, writing the
run folder), median of N runs each, on the workload of issue 2: 20 clients,
10 per round, 5 rounds, 1 local epoch, the CNN on digits. A second workload,
training-heavy, compares in-process ``workers=1`` against ``workers=2``.

    python simulations/bench/bench_simulate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
WORKLOAD = [
    "num_clients=20", "num_rounds=5", "client.local_epochs=1",
    "strategy.fraction_train=0.5", "strategy.fraction_evaluate=0.5",
    "server.checkpoint_every=0", "progress=false",
]
HEAVY = [
    "num_clients=10", "num_rounds=3", "client.local_epochs=4", "model.channels=64",
    "model.hidden=256", "server.checkpoint_every=0", "progress=false",
]



def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def median_time(cmd_for_run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(timed(cmd_for_run(tmp)))
    return statistics.median(times)


def simulate_cmd(overrides: list[str]):
    code = "import sys; from fedlearn.cli import simulate; simulate()"
    return lambda tmp: [sys.executable, "-c", code, *overrides, f"hydra.run.dir={tmp}/run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = args.repeats
    plain = median_time(lambda tmp: [sys.executable, str(HERE / "plain_loop.py")], r)
    inproc = median_time(simulate_cmd([*WORKLOAD, "runtime.workers=1"]), r)
    ray = median_time(simulate_cmd([*WORKLOAD, "runtime=ray"]), r)
    heavy1 = median_time(simulate_cmd([*HEAVY, "runtime.workers=1"]), r)
    heavy2 = median_time(simulate_cmd([*HEAVY, "runtime.workers=2"]), r)
    print(f"workload: 20 clients, 10/round, 5 rounds, CNN on digits; median of {r} runs")
    print(f"| plain PyTorch loop | {plain:.2f} s | 1.00x |")
    print(f"| fedlearn in-process (workers=1) | {inproc:.2f} s | {inproc / plain:.2f}x plain |")
    print(f"| fedlearn on Flower's Ray engine | {ray:.2f} s | {ray / plain:.2f}x plain,"
          f" in-process is {ray / inproc:.1f}x faster |")
    print("training-heavy: 10 clients, 3 rounds, 4 local epochs, CNN 64/256")
    print(f"| in-process workers=1 | {heavy1:.2f} s | 1.00x |")
    print(f"| in-process workers=2 | {heavy2:.2f} s | {heavy1 / heavy2:.2f}x faster |")


if __name__ == "__main__":
    main()
