"""The causal character Transformer: shapes, causality, a training step, refusals."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedlearn.data import DataSpec
from fedlearn.models import build_model
from fedlearn.models.transformer import Transformer

from .text_model_helpers import fits_last_character, step_on_shakespeare_fixture

TEXT = DataSpec(input_shape=(80,), num_classes=81, kind="text")
CFG = {"_target_": "fedlearn.models.transformer.Transformer", "width": 32, "heads": 4, "layers": 2}


def test_forward_backward_on_uint8_characters():
    torch.manual_seed(0)
    model = build_model(CFG, TEXT)
    x = torch.randint(0, 81, (8, 80), dtype=torch.uint8)
    logits = model(x)
    assert logits.shape == (8, 81)
    F.cross_entropy(logits, torch.randint(0, 81, (8,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mask_is_causal_and_not_a_weight():
    torch.manual_seed(0)
    model = build_model(CFG, TEXT).eval()
    assert "mask" not in model.state_dict()  # never sent to clients
    x = torch.randint(0, 81, (2, 80))
    # Run all positions: with a causal mask, position 39 sees only x[:, :40], so it
    # equals the model's output on that prefix, whatever follows.
    h = model.tok(x) + model.pos(torch.arange(80))
    h = model.blocks(h, mask=model.mask, is_causal=True)
    at_39 = model.head(model.norm(h[:, 39]))
    with torch.no_grad():
        torch.testing.assert_close(at_39, model(x[:, :40]), atol=1e-5, rtol=1e-4)
        changed = x.clone()
        changed[:, 40:] = (changed[:, 40:] + 1) % 81
        h2 = model.blocks(
            model.tok(changed) + model.pos(torch.arange(80)), mask=model.mask, is_causal=True
        )
        torch.testing.assert_close(h2[:, :40], h[:, :40].detach())


def test_predicts_from_the_last_position():
    assert fits_last_character({**CFG, "width": 16}, steps=40) == 1.0


def test_refuses_images_bad_widths_and_long_inputs():
    with pytest.raises(ValueError, match="model=Transformer does not fit image data"):
        build_model(CFG, DataSpec(input_shape=(3, 32, 32), num_classes=10, kind="image"))
    with pytest.raises(ValueError, match="multiple of model.heads"):
        Transformer((80,), 81, width=30, heads=4)
    with pytest.raises(ValueError, match="positions"):
        Transformer((8,), 81, width=16, heads=2)(torch.zeros(1, 9, dtype=torch.long))


def test_step_on_shakespeare_fixture(tmp_path):
    step_on_shakespeare_fixture(CFG, tmp_path)
