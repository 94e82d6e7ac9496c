"""Checks shared by the character models' tests (LSTM, Transformer)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

from fedlearn.data import DataSpec
from fedlearn.models import build_model


def fits_repeated_pattern(cfg: dict, steps: int) -> float:
    """Train accuracy after ``steps`` Adam steps on "abcabc...": next char = f(last char)."""
    torch.manual_seed(0)
    model = build_model(cfg, DataSpec(input_shape=(10,), num_classes=81, kind="text"))
    seq = torch.tensor([i % 3 for i in range(200)])
    x = torch.stack([seq[i : i + 10] for i in range(150)])
    y = torch.stack([seq[i + 10] for i in range(150)])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return float((model(x).argmax(-1) == y).float().mean())


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
