"""Model-level microbenchmark: one client at a time vs a group at once, per model.

For each model, ``--clients`` clients take ``--steps`` local SGD steps (batch 16,
momentum 0.9) on random data of the model's input shape: with
``fedlearn.training.train`` one after another, and with
``fedlearn.vectorized.engine.train_group`` as one group. It prints time per client
step for both, the speed-up, and what ``runtime.vectorize=auto`` chooses for the
model (``fedlearn.vectorized.policy``), flagging where that disagrees with the
measurement: this is the measurement ``auto``'s per-model answers come from.

The text models also run in a form that ``vmap`` batches well (nn.LSTM has no vmap
batching rule, so the LSTM as explicit cells; the Transformer with explicit matmul and
softmax attention, whose backward batches where the CPU's fused attention's does not).
They stay here, not in fedlearn: measured, they are not faster than one client at a
time on a CPU.

Times are the fastest of ``--repeats`` runs, alone and together taken in turn.

    python simulations/bench/bench_vectorized_models.py [--clients 10] [--steps 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from fedlearn import training
from fedlearn.data import DataSpec
from fedlearn.models import build_model
from fedlearn.vectorized import engine, policy

CPU = torch.device("cpu")
BATCH = 16
MODELS = {  # name: (model config, data spec)
    "CNN 8x8 (digits)": ({"_target_": "fedlearn.models.cnn.CNN"}, (1, 8, 8)),
    "CNN 8x8, 64/256": (
        {"_target_": "fedlearn.models.cnn.CNN", "channels": 64, "hidden": 256},
        (1, 8, 8),
    ),
    "CNN 16x16": ({"_target_": "fedlearn.models.cnn.CNN"}, (1, 16, 16)),
    "CNN 28x28 (Fashion-MNIST)": ({"_target_": "fedlearn.models.cnn.CNN"}, (1, 28, 28)),
    "CNN 32x32x3": ({"_target_": "fedlearn.models.cnn.CNN"}, (3, 32, 32)),
    "LSTM (LEAF, 80 characters)": ({"_target_": "fedlearn.models.lstm.LSTM"}, (80,)),
    "Transformer (80 characters)": ({"_target_": "fedlearn.models.transformer.Transformer"}, (80,)),
}


class LSTMCells(nn.Module):
    """fedlearn's LSTM, its recurrence written as cells that vmap batches (same parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embed, self.lstm, self.head = model.embed, model.lstm, model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.long())
        for layer in range(self.lstm.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                getattr(self.lstm, f"{name}_l{layer}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            gates_x = F.linear(h, w_ih, b_ih)  # every step's input projection at once
            state = cell = h.new_zeros(h.shape[0], w_hh.shape[1])
            outputs = []
            for t in range(h.shape[1]):
                i, f, g, o = (gates_x[:, t] + F.linear(state, w_hh, b_hh)).chunk(4, -1)
                cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
                state = torch.sigmoid(o) * torch.tanh(cell)
                outputs.append(state)
            h = torch.stack(outputs, 1)
        return self.head(h[:, -1])


class ExplicitAttention(nn.Module):
    """fedlearn's Transformer with attention as matmul + softmax (same parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.tok, self.pos, self.blocks, self.norm, self.head = (
            model.tok,
            model.pos,
            model.blocks,
            model.norm,
            model.head,
        )
        self.register_buffer("mask", model.mask, persistent=False)

    def _attention(self, h: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
        b, t, d = h.shape
        heads = attn.num_heads
        q, k, v = (
            z.view(b, t, heads, d // heads).transpose(1, 2)
            for z in F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads) + self.mask[:t, :t]
        out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, d)
        return attn.out_proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks.layers:
            h = h + self._attention(block.norm1(h), block.self_attn)
            h = h + block.linear2(F.gelu(block.linear1(block.norm2(h))))
        return self.head(self.norm(h[:, -1]))


def _data(shape: tuple[int, ...], classes: int, n: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return torch.randint(0, classes, (n, *shape), generator=g, dtype=torch.uint8), (
            torch.randint(0, classes, (n,), generator=g)
        )
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _fastest(fns: dict, repeats: int) -> dict[str, float | None]:
    """Each function's fastest of ``repeats`` runs, taken in turn (so that load from other
    processes hits them alike); None for one that raises (no vmap batching rule)."""
    best: dict[str, float | None] = {}
    for name, fn in fns.items():
        try:
            fn()  # warm-up: first-call allocations and kernel selection
            best[name] = float("inf")
        except RuntimeError:
            best[name] = None
    for _ in range(repeats):
        for name, fn in fns.items():
            if best[name] is not None:
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure(name: str, clients: int, steps: int, repeats: int) -> dict:
    cfg, shape = MODELS[name]
    kind = "text" if len(shape) == 1 else "image"
    classes = 80 if kind == "text" else 10
    torch.manual_seed(0)
    model = build_model(cfg, DataSpec(input_shape=shape, num_classes=classes, kind=kind))
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    settings = training.TrainSettings(lr=0.05, momentum=0.9, batch_size=BATCH, max_steps=steps)
    data = [_data(shape, classes, BATCH * steps, i) for i in range(clients)]

    client = copy.deepcopy(model)

    def alone() -> None:  # as fedlearn's ClientApp: one model, each client's weights loaded
        for i, (x, y) in enumerate(data):
            client.load_state_dict(start, strict=False)
            training.train(client, x, y, settings, CPU, torch.Generator().manual_seed(i))

    def together(form: nn.Module) -> None:
        tasks = [
            engine.ClientTask(
                start,
                x,
                y,
                training.batch_schedule(len(y), settings, torch.Generator().manual_seed(i)),
            )
            for i, (x, y) in enumerate(data)
        ]
        engine.train_group(form, tasks, settings, CPU)

    fns = {"alone": alone, "together": lambda: together(model)}
    form = {"LSTM": LSTMCells, "Transformer": ExplicitAttention}.get(type(model).__name__)
    if form is not None:
        fns["form"] = lambda: together(form(model))
    per = clients * steps * 1e-3
    row = {k: None if v is None else v / per for k, v in _fastest(fns, repeats).items()}
    sample = data[0][0][:1]
    row["auto"] = policy.refusal(model, CPU, False, sample) is None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="models whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    head = f"{args.clients} clients x {args.steps} steps of batch {BATCH}, 1 thread"
    print(f"{head}, fastest of {args.repeats}")
    print("| model | alone ms/step | together ms/step | vmap-friendly form | auto | agrees |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for name in MODELS:
        if args.only and args.only.lower() not in name.lower():
            continue
        r = measure(name, args.clients, args.steps, args.repeats)
        ways = [t for t in (r["together"], r.get("form")) if t is not None]
        faster = bool(ways) and min(ways) < r["alone"]
        cells = []
        for key in ("together", "form"):
            t = r.get(key, "-")
            if t is None:
                cells.append("no batching rule")
            else:
                cells.append(t if t == "-" else f"{t:.2f} ({r['alone'] / t:.2f}x)")
        choice = "together" if r["auto"] else "alone"
        agrees = "yes" if r["auto"] == faster else "NO"
        print(f"| {name} | {r['alone']:.2f} | {cells[0]} | {cells[1]} | {choice} | {agrees} |")


if __name__ == "__main__":
    main()
