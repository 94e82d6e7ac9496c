"""The lower bound: the benchmark workload as a plain PyTorch loop, no framework.

20 clients (IID over scikit-learn's digits), 10 sampled per round, 5 rounds,
1 local epoch of SGD (lr 0.1, momentum 0.9, batch 16) on the same CNN, sample-
weighted averaging, 10 clients evaluating on their held-out 20%, and a central
test evaluation every round: the same work fedlearn's benchmark config does.

``--freeze-gc`` gives it the garbage-collector treatment fedlearn's console
scripts apply (``gc.freeze()`` after start-up and at exit), so the comparison
with it measures the framework alone.
"""

from __future__ import annotations

import gc
import random
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

from fedlearn.data.digits import load
from fedlearn.models.cnn import CNN

NUM_CLIENTS, PER_ROUND, ROUNDS, BATCH, LR, MOMENTUM = 20, 10, 5, 16, 0.1, 0.9


def main(seed: int = 0) -> tuple[float, float]:
    torch.set_num_threads(1)
    data = load()
    order = np.random.default_rng(seed).permutation(len(data.train_y))
    parts = np.array_split(order, NUM_CLIENTS)
    splits = [(p[: len(p) - len(p) // 5], p[len(p) - len(p) // 5 :]) for p in parts]
    torch.manual_seed(seed)
    model = CNN((1, 8, 8), 10, channels=16, hidden=64)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for rnd in range(1, ROUNDS + 1):
        sums, total = None, 0
        for cid in rng.sample(range(NUM_CLIENTS), PER_ROUND):
            train_idx, _ = splits[cid]
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
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
            for cid in rng.sample(range(NUM_CLIENTS), PER_ROUND):  # federated evaluation
                _, ev = splits[cid]
                F.cross_entropy(model(data.train_x[ev]), data.train_y[ev])
            acc = (model(data.test_x).argmax(-1) == data.test_y).float().mean().item()
    return acc, time.perf_counter() - t0


if __name__ == "__main__":
    freeze = "--freeze-gc" in sys.argv
    if freeze:
        gc.freeze()
    seeds = [int(a) for a in sys.argv[1:] if not a.startswith("--")]
    accuracy, seconds = main(seeds[0] if seeds else 0)
    print(f"accuracy {accuracy:.4f} rounds_seconds {seconds:.3f}")
    if freeze:
        gc.freeze()
