"""Benchmark: fedlearn in-process vs Flower's Ray engine vs a plain PyTorch loop.

Whole-process wall time (python start-up, imports, data, training, writing the
run folder), median of N runs each, on the workload of issue 2: 20 clients,
10 per round, 5 rounds, 1 local epoch, the CNN on digits. A second workload,
training-heavy, compares in-process ``workers=1`` against ``workers=2``.

    python simulations/bench/bench_simulate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
WORKLOAD = [
    "num_clients=20",
    "num_rounds=5",
    "client.local_epochs=1",
    "strategy.fraction_train=0.5",
    "strategy.fraction_evaluate=0.5",
    "server.checkpoint_every=0",
    "progress=false",
]
HEAVY = [
    "num_clients=10",
    "num_rounds=3",
    "client.local_epochs=4",
    "model.channels=64",
    "model.hidden=256",
    "server.checkpoint_every=0",
    "progress=false",
]


def timed(cmd: list[str], tmp: str) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds of the process tree, and seconds spent in the rounds
    (after start-up: imports, data, partitioning) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = Path(tmp) / "run" / "result.json"
    if result.exists():
        rounds = json.loads(result.read_text())["round_seconds"]
    else:  # the plain loop prints its own
        rounds = float(out.split("rounds_seconds")[-1])
    return wall, cpu, rounds


def median_time(cmd_for_run, repeats: int) -> tuple[float, float, float]:
    """Medians of wall, CPU and in-rounds seconds over ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(timed(cmd_for_run(tmp), tmp))
    return tuple(statistics.median(col) for col in zip(*runs, strict=True))


def simulate_cmd(overrides: list[str]):
    code = "import sys; from fedlearn.cli import simulate; simulate()"
    return lambda tmp: [sys.executable, "-c", code, *overrides, f"hydra.run.dir={tmp}/run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    r = args.repeats
    plain_loop = [sys.executable, str(HERE / "plain_loop.py")]
    rows = {
        "plain PyTorch loop": median_time(lambda tmp: plain_loop, r),
        "plain loop + fedlearn's gc.freeze": median_time(
            lambda tmp: [*plain_loop, "--freeze-gc"], r
        ),
        "fedlearn in-process (workers=1)": median_time(
            simulate_cmd([*WORKLOAD, "runtime.workers=1"]), r
        ),
        "fedlearn on Flower's Ray engine": median_time(simulate_cmd([*WORKLOAD, "runtime=ray"]), r),
    }
    plain, frozen = rows["plain PyTorch loop"], rows["plain loop + fedlearn's gc.freeze"]
    print(f"Workload: 20 clients, 10 per round, 5 rounds, CNN on digits. Median of {r} runs.")
    print(
        "| run | wall s | vs plain | vs plain + gc.freeze | CPU s | vs plain"
        " | rounds only s | vs plain | vs plain + gc.freeze |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (wall, cpu, rounds) in rows.items():
        print(
            f"| {name} | {wall:.2f} | {wall / plain[0]:.2f}x | {wall / frozen[0]:.2f}x"
            f" | {cpu:.2f} | {cpu / plain[1]:.2f}x"
            f" | {rounds:.2f} | {rounds / plain[2]:.2f}x | {rounds / frozen[2]:.2f}x |"
        )
    inproc, ray = rows["fedlearn in-process (workers=1)"], rows["fedlearn on Flower's Ray engine"]
    print(f"in-process is {ray[0] / inproc[0]:.1f}x faster than Ray (wall)")
    heavy1 = median_time(simulate_cmd([*HEAVY, "runtime.workers=1"]), r)
    heavy2 = median_time(simulate_cmd([*HEAVY, "runtime.workers=2"]), r)
    print("Training-heavy: 10 clients, 3 rounds, 4 local epochs, CNN 64/256.")
    print("| in-process | wall s | rounds only s |")
    print("| --- | ---: | ---: |")
    print(f"| workers=1 | {heavy1[0]:.2f} | {heavy1[2]:.2f} |")
    print(f"| workers=2 | {heavy2[0]:.2f} | {heavy2[2]:.2f} |")
    print(
        f"workers=2 is {heavy1[0] / heavy2[0]:.2f}x faster whole-process,"
        f" {heavy1[2] / heavy2[2]:.2f}x in the rounds"
    )


if __name__ == "__main__":
    main()
