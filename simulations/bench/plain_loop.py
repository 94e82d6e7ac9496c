"""The lower bound: a benchmark workload as a plain PyTorch loop, no framework.

By default the workload of ``bench_simulate.py``: 20 clients (IID over
scikit-learn's digits), 10 sampled per round, 5 rounds, 1 local epoch of SGD
(lr 0.1, momentum 0.9, batch 16) on the same CNN, sample-weighted averaging, 10
clients evaluating on their held-out 20%, and a central test evaluation every
round: the same work fedlearn's benchmark config does. ``--dataset``,
``--clients``, ``--per-round``, ``--rounds`` and ``--lr`` give other workloads
(``bench_vectorized.py``'s Fashion-MNIST one).

``--freeze-gc`` gives it the garbage-collector treatment fedlearn's console
scripts apply (``gc.freeze()`` after start-up and at exit), so the comparison
with it measures the framework alone.

    python simulations/bench/plain_loop.py [seed] [--freeze-gc] [--dataset fashion_mnist ...]
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import numpy as np
import torch
from torch.nn import functional as F

from fedlearn.models.cnn import CNN

BATCH, MOMENTUM, EVAL_BATCH = 16, 0.9, 512


def _load(dataset: str):
    if dataset == "digits":
        from fedlearn.data.digits import load
    else:
        from fedlearn.data.fashion_mnist import load
    return load()


def main(
    seed: int = 0,
    dataset: str = "digits",
    clients: int = 20,
    per_round: int = 10,
    rounds: int = 5,
    lr: float = 0.1,
) -> tuple[float, float]:
    """Final central accuracy and the seconds the rounds took."""
    torch.set_num_threads(1)
    data = _load(dataset)
    order = np.random.default_rng(seed).permutation(len(data.train_y))
    parts = np.array_split(order, clients)
    splits = [(p[: len(p) - len(p) // 5], p[len(p) - len(p) // 5 :]) for p in parts]
    torch.manual_seed(seed)
    model = CNN(tuple(data.spec.input_shape), 10, channels=16, hidden=64)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for rnd in range(1, rounds + 1):
        sums, total = None, 0
        for cid in rng.sample(range(clients), per_round):
            train_idx, _ = splits[cid]
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
            x, y = data.train_x[train_idx], data.train_y[train_idx]
            perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(rnd * 100 + cid))
            for s in range(0, len(y), BATCH):
                idx = perm[s : s + BATCH]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            n = len(y)
            state = model.state_dict()
            if sums is None:
                sums = {k: v.double() * n for k, v in state.items()}
            else:
                for k, v in state.items():
                    sums[k] += v.double() * n
            total += n
        global_state = {k: (v / total).float() for k, v in sums.items()}
        model.load_state_dict(global_state)
        with torch.no_grad():
            for cid in rng.sample(range(clients), per_round):  # federated evaluation
                _, ev = splits[cid]
                F.cross_entropy(model(data.train_x[ev]), data.train_y[ev])
            hits = sum(
                int(
                    (
                        model(data.test_x[s : s + EVAL_BATCH]).argmax(-1)
                        == data.test_y[s : s + EVAL_BATCH]
                    ).sum()
                )
                for s in range(0, len(data.test_y), EVAL_BATCH)
            )
            acc = hits / len(data.test_y)
    return acc, time.perf_counter() - t0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--freeze-gc", action="store_true")
    parser.add_argument("--dataset", choices=["digits", "fashion_mnist"], default="digits")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    if args.freeze_gc:
        gc.freeze()
    accuracy, seconds = main(
        args.seed, args.dataset, args.clients, args.per_round, args.rounds, args.lr
    )
    print(f"accuracy {accuracy:.4f} rounds_seconds {seconds:.3f}")
    if args.freeze_gc:
        gc.freeze()
