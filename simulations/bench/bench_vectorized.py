"""Benchmark: vectorized clients against one at a time, workers=2 and a plain PyTorch loop.

Two workloads, each run whole-process (``fedlearn-simulate`` as a subprocess) and
timed for the whole process and for the rounds alone (``result.json``'s
``round_seconds``; the plain loop prints its own), medians of ``--repeats`` runs:

- (a) ``bench_simulate.py``'s: 20 clients, 10 per round, 5 rounds, the CNN on digits.
- (b) training-heavy: 100 clients, 20 per round, 20 rounds, the CNN on Fashion-MNIST
  (``/usr/share/datasets/fashion-mnist``).

Runs: the plain loop (``plain_loop.py``, one thread); fedlearn one client at a time
(``workers=1``) and with ``workers=2``; vectorized (``runtime.vectorize=true``) with
one and two workers; and the defaults (``vectorize=auto``, a worker per core). Every
fedlearn run's final test accuracy and loss are compared with the one-at-a-time
run's.

    python simulations/bench/bench_vectorized.py [--repeats 3] [--only a|b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_simulate import HERE, WORKLOAD, simulate_cmd

FASHION = [
    "dataset=fashion_mnist",
    "num_clients=100",
    "num_rounds=20",
    "client.local_epochs=1",
    "client.lr=0.05",
    "strategy.fraction_train=0.2",
    "strategy.fraction_evaluate=0.2",
    "server.checkpoint_every=0",
    "progress=false",
]
WORKLOADS = {
    "a": ("20 clients, 10 per round, 5 rounds, CNN on digits", WORKLOAD, []),
    "b": (
        "100 clients, 20 per round, 20 rounds, CNN on Fashion-MNIST",
        FASHION,
        [
            "--dataset",
            "fashion_mnist",
            "--clients",
            "100",
            "--per-round",
            "20",
            "--rounds",
            "20",
            "--lr",
            "0.05",
        ],
    ),
}
RUNS = {
    "one at a time (workers=1)": ["runtime.workers=1", "runtime.vectorize=false"],
    "workers=2": ["runtime.workers=2", "runtime.vectorize=false"],
    "vectorized (workers=1)": ["runtime.workers=1", "runtime.vectorize=true"],
    "vectorized, workers=2": ["runtime.workers=2", "runtime.vectorize=true"],
    "defaults (auto, a worker per core)": [],
}


def run_once(cmd: list[str], run_dir: Path | None) -> dict:
    """Wall seconds, in-rounds seconds and (fedlearn) final test metrics of one run."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    if run_dir is None:  # the plain loop prints its own
        return {"wall": wall, "rounds": float(out.split("rounds_seconds")[-1]), "final": {}}
    result = json.loads((run_dir / "result.json").read_text())
    return {"wall": wall, "rounds": result["round_seconds"], "final": result["final"]["test"]}


def median_run(cmd_for_dir, repeats: int, fedlearn: bool = True) -> dict:
    """Median wall and rounds seconds over ``repeats`` runs; the final metrics of the last."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            runs.append(run_once(cmd_for_dir(str(tmp)), run_dir if fedlearn else None))
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "rounds": statistics.median(r["rounds"] for r in runs),
        "final": runs[-1]["final"],
    }


def bench(key: str, repeats: int) -> None:
    title, overrides, plain_args = WORKLOADS[key]
    plain = [sys.executable, str(HERE / "plain_loop.py"), *plain_args]
    rows = {"plain PyTorch loop": median_run(lambda tmp: plain, repeats, fedlearn=False)}
    for name, extra in RUNS.items():
        rows[name] = median_run(simulate_cmd([*overrides, *extra]), repeats)
    base, ref = rows["plain PyTorch loop"], rows["one at a time (workers=1)"]["final"]
    print(f"\n({key}) {title}. Median of {repeats} run(s).")
    print(
        "| run | wall s | rounds s | rounds: x faster than plain | wall: x faster than plain"
        " | final accuracy | final loss vs one at a time |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        acc = f"{r['final']['accuracy']:.4f}" if r["final"] else "-"
        diff = "-"
        if r["final"] and ref:
            diff = f"{abs(r['final']['loss'] - ref['loss']) / ref['loss']:.1e} relative"
        print(
            f"| {name} | {r['wall']:.2f} | {r['rounds']:.2f} | {base['rounds'] / r['rounds']:.2f}x"
            f" | {base['wall'] / r['wall']:.2f}x | {acc} | {diff} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(WORKLOADS))
    args = parser.parse_args()
    for key in WORKLOADS:
        if args.only in (None, key):
            bench(key, args.repeats)


if __name__ == "__main__":
    main()
