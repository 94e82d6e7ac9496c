"""Checks shared by the character models' tests (LSTM, Transformer)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

from fedlearn.data import DataSpec
from fedlearn.models import build_model


def fits_last_character(cfg: dict, steps: int, lr: float = 0.01) -> float:
    """Train accuracy after ``steps`` Adam steps at "repeat the last character".

    Only the output at the last position can solve it from random sequences.
    Small on purpose: a few milliseconds a step even on a busy CPU.
    """
    torch.manual_seed(0)
    model = build_model(cfg, DataSpec(input_shape=(6,), num_classes=81, kind="text"))
    x = torch.randint(0, 4, (64, 6), dtype=torch.uint8)
    y = x[:, -1].long()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: extra threads only wait on a busy machine
    try:
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return float((model(x).argmax(-1) == y).float().mean())
    finally:
        torch.set_num_threads(threads)


def step_on_shakespeare_fixture(cfg: dict, tmp_path: Path) -> torch.nn.Module:
    """Forward and backward on windows of the committed fixture plays (uint8 inputs)."""
    from fedlearn.data.shakespeare import load

    shutil.copytree(Path(__file__).parent / "fixtures" / "shakespeare", tmp_path / "texts")
    data = load(cache_dir=str(tmp_path), seq_len=8, min_samples=20)
    assert data.train_x.dtype == torch.uint8
    model = build_model(cfg, data.spec)
    loss = F.cross_entropy(model(data.train_x[:32]), data.train_y[:32])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    return model


def shakespeare_run(tmp_path: Path, num_clients: int) -> list[str]:
    """Overrides for a run on the committed fixture plays (copied under ``tmp_path``):
    8-character windows, one client per role."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "shakespeare", tmp_path / "texts")
    return [
        "dataset=shakespeare",
        f"dataset.cache_dir={tmp_path}",
        "dataset.seq_len=8",
        "dataset.min_samples=20",
        "partitioner=natural",
        f"num_clients={num_clients}",
    ]
