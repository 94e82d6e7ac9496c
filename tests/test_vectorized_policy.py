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


def _sample(model: nn.Module, spec: DataSpec) -> torch.Tensor:
    text = spec.kind == "text"
    return torch.zeros(1, *spec.input_shape, dtype=torch.long if text else None)


def _refusal(model: nn.Module, spec: DataSpec = TEXT, forced: bool = False) -> str | None:
    return policy.refusal(model, CPU, forced, _sample(model, spec))


def test_auto_vectorizes_the_cnn_up_to_16x16():
    assert _refusal(_model("cnn", _image(8)), _image(8)) is None
    assert _refusal(_model("cnn", _image(16)), _image(16)) is None
    slower = "model=CNN trains faster one client at a time on cpu"
    assert _refusal(_model("cnn", _image(28)), _image(28)) == slower
    assert _refusal(_model("cnn", _image(28)), _image(28), forced=True) is None
    color = DataSpec(input_shape=(3, 32, 32), num_classes=10, kind="image")
    reason = _refusal(_model("cnn", color), color)
    assert reason == "model=CNN trains faster one client at a time on cpu"
    assert _refusal(_model("cnn", color), color, forced=True) is None


def test_auto_runs_the_transformer_one_at_a_time_but_true_vectorizes_it():
    model = _model("transformer", width=8, heads=2)
    assert _refusal(model) == "model=Transformer trains faster one client at a time on cpu"
    assert _refusal(model, forced=True) is None


def test_lstm_cannot_run_vectorized():
    reason = _refusal(_model("lstm", hidden=8), forced=True)
    assert reason.startswith("model=LSTM cannot run vectorized: Batching rule not implemented")
    assert "aten::lstm" in reason and "\n" not in reason


@pytest.mark.parametrize(
    ("name", "sizes", "where"),
    [
        ("lstm", {"hidden": 8, "layers": 2, "dropout": 0.2}, "lstm (p=0.2)"),
        ("transformer", {"width": 8, "heads": 2, "dropout": 0.1}, "(p=0.1)"),
    ],
)
def test_dropout_is_refused_in_one_line(name, sizes, where):
    model = _model(name, **sizes)
    reason = _refusal(model, forced=True)
    assert reason.startswith(f"model={type(model).__name__} has dropout at")
    assert where in reason and "cannot reproduce" in reason and "\n" not in reason


def test_buffers_that_training_updates_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    reason = policy.refusal(model, CPU, True, torch.zeros(1, 4))
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
