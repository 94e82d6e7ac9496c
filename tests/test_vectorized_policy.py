"""Which models are trained vectorized, the one-line reasons why not, and group sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedlearn.data import DataSpec
from fedlearn.models import build_model
from fedlearn.vectorized import policy

CPU = torch.device("cpu")
TEXT = DataSpec(input_shape=(20,), num_classes=30, kind="text")


def _model(name: str, spec: DataSpec = TEXT, **sizes) -> nn.Module:
    cls = {"cnn": "cnn.CNN", "lstm": "lstm.LSTM", "transformer": "transformer.Transformer"}[name]
    return build_model({"_target_": f"fedlearn.models.{cls}", **sizes}, spec)


def _image(side: int) -> DataSpec:
    return DataSpec(input_shape=(1, side, side), num_classes=10, kind="image")


def test_auto_vectorizes_the_cnn_on_small_images_only():
    assert policy.refusal(_model("cnn", _image(8)), CPU, forced=False) is None
    reason = policy.refusal(_model("cnn", _image(28)), CPU, forced=False)
    assert reason == "model=CNN trains faster one client at a time on cpu"
    assert policy.refusal(_model("cnn", _image(28)), CPU, forced=True) is None


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_auto_runs_text_models_one_at_a_time_but_true_may_vectorize_them(name):
    model = _model(name, hidden=8) if name == "lstm" else _model(name, width=8, heads=2)
    assert "trains faster one client at a time" in policy.refusal(model, CPU, forced=False)
    assert policy.refusal(model, CPU, forced=True) is None


@pytest.mark.parametrize(
    ("name", "sizes", "where"),
    [
        ("lstm", {"hidden": 8, "layers": 2, "dropout": 0.2}, "lstm (p=0.2)"),
        ("transformer", {"width": 8, "heads": 2, "dropout": 0.1}, "(p=0.1)"),
    ],
)
def test_dropout_is_refused_in_one_line(name, sizes, where):
    reason = policy.refusal(_model(name, **sizes), CPU, forced=True)
    assert reason.startswith(f"model={type(_model(name, **sizes)).__name__} has dropout at")
    assert where in reason and "cannot reproduce" in reason and "\n" not in reason


def test_buffers_that_training_updates_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    reason = policy.refusal(model, CPU, forced=True)
    assert reason.startswith("model=Sequential has buffers that training updates (1.running_mean")


def test_group_size_follows_available_memory(monkeypatch):
    model = _model("cnn", _image(8))
    x = torch.rand(16, 1, 8, 8)
    one = policy.client_bytes(model, x)
    params = sum(p.numel() * 4 for p in model.parameters())
    assert one > 4 * params  # activations counted too
    monkeypatch.setattr(
        policy, "available_memory", lambda device: int(10.5 * one / policy.MEMORY_SHARE)
    )
    assert policy.group_size(model, x, CPU) == 10
    monkeypatch.setattr(policy, "available_memory", lambda device: 0)
    assert policy.group_size(model, x, CPU) == 2
    monkeypatch.setattr(policy, "available_memory", lambda device: 2**50)
    assert policy.group_size(model, x, CPU) == policy.MAX_GROUP
