"""The character LSTM: shapes, uint8 inputs, a training step on Shakespeare-like data."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedlearn.data import DataSpec
from fedlearn.models import build_model
from fedlearn.models.lstm import LSTM

from .text_model_helpers import fits_last_character, shakespeare_run, step_on_shakespeare_fixture

TEXT = DataSpec(input_shape=(80,), num_classes=81, kind="text")
CFG = {"_target_": "fedlearn.models.lstm.LSTM", "embed_dim": 8, "hidden": 32, "layers": 2}


def test_leaf_default_sizes():
    model = LSTM((80,), 81)
    assert model.embed.embedding_dim == 8 and model.lstm.hidden_size == 256
    assert model.lstm.num_layers == 2 and model.head.out_features == 81


def test_forward_backward_on_uint8_characters():
    torch.manual_seed(0)
    model = build_model(CFG, TEXT)
    x = torch.randint(0, 81, (16, 80), dtype=torch.uint8)
    y = torch.randint(0, 81, (16,))
    logits = model(x)
    assert logits.shape == (16, 81)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_predicts_from_the_last_position():
    assert fits_last_character(CFG, steps=80, lr=0.03) == 1.0


def test_refuses_images_and_bad_sizes():
    with pytest.raises(ValueError, match="model=LSTM does not fit image data"):
        build_model(CFG, DataSpec(input_shape=(1, 28, 28), num_classes=10, kind="image"))
    with pytest.raises(ValueError, match="model.hidden"):
        LSTM((80,), 81, hidden=0)


def test_step_on_shakespeare_fixture(tmp_path):
    step_on_shakespeare_fixture(CFG, tmp_path)


def test_dropout_is_seeded_per_client_round(tmp_path) -> None:
    # Dropout draws from torch's global RNG: each client call seeds it from (seed, round,
    # client), so results do not depend on call order, workers or what ran before.
    from fedlearn.experiment import simulate
    from tests.conftest import metrics_without_timings

    overrides = [
        *shakespeare_run(tmp_path, num_clients=3),
        "num_rounds=2",
        "model=lstm",
        "model.hidden=16",
        "model.dropout=0.5",
        "client.max_steps=3",
        "progress=false",
    ]
    simulate([*overrides, "runtime.workers=1"], tmp_path / "one")
    simulate([*overrides, "runtime.workers=2"], tmp_path / "two")
    one, two = metrics_without_timings(tmp_path / "one"), metrics_without_timings(tmp_path / "two")
    assert one == two
