"""Local training and evaluation: plain PyTorch, no Flower.

Whatever a strategy needs from a client is implemented here and switched on by
a :class:`TrainSettings` field that the ClientApp fills from documented
ConfigRecord keys (FedProx's ``proximal-mu`` -> ``proximal_mu``, ...), or
given as a :class:`Term` (strategies with client state, see
:mod:`fedlearn.app.client_strategies`).
Batches are drawn by indexing in-memory tensors: a DataLoader's per-batch
overhead is a visible share of a small model's step on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class TrainSettings:
    """One client's local optimisation for one round.

    Attributes
    ----------
    lr, momentum, weight_decay : float
        Local SGD settings.
    local_epochs : int
        Passes over the local data.
    batch_size : int
        Mini-batch size.
    proximal_mu : float
        FedProx proximal coefficient (0 disables the term).
    max_steps : int or None
        Stop after this many steps (None: run all epochs).
    """

    lr: float = 0.05
    local_epochs: int = 1
    batch_size: int = 32
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    max_steps: int | None = None


Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Term:
    """A strategy's part in a client's local step: a pure function and this client's data.

    A loss term's ``fn(params, *tensors)`` is added to the loss (FedDyn's linear and
    quadratic terms); a gradient term's ``fn(grads, *tensors)`` returns the gradients
    to step with (SCAFFOLD's correction). ``params`` and ``grads`` map parameter names
    to tensors; ``tensors`` are this client's own (tensors, or dicts of them). Pure and
    given its data explicitly, one term serves a client trained alone (:func:`train`)
    and a group trained at once (:mod:`fedlearn.vectorized` stacks each client's
    ``tensors`` and maps ``fn`` over the group).
    """

    fn: Callable[..., Any]
    tensors: tuple[Any, ...] = ()


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device} but CUDA is not available here; use auto or cpu")
    return dev


def _on(model: nn.Module, device: torch.device) -> nn.Module:
    # Module.to walks every submodule even when nothing moves: skip it then.
    param = next(model.parameters(), None)
    if param is None or param.device != device:
        model.to(device)
    return model


def batch_schedule(
    n: int, settings: TrainSettings, generator: torch.Generator
) -> list[torch.Tensor]:
    """The sample indices of every local step, in order: a fresh ``randperm`` of the
    ``n`` samples each epoch, cut into ``batch_size`` batches (the last one of an epoch
    may be shorter), stopping after ``max_steps``. Any way of training a client draws
    its batches here, so its data order depends only on ``generator``'s seed."""
    out: list[torch.Tensor] = []
    for _ in range(settings.local_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            if settings.max_steps is not None and len(out) >= settings.max_steps:
                break
            out.append(order[start : start + settings.batch_size])
    return out


def proximal_term(params: Iterable[torch.Tensor], anchor: Iterable[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``||w - w_global||^2``, summed over the parameters in order."""
    return sum((p - g).pow(2).sum() for p, g in zip(params, anchor, strict=True))  # type: ignore[return-value]


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
    generator: torch.Generator,
    loss_terms: tuple[Term, ...] = (),
    grad_terms: tuple[Term, ...] = (),
) -> dict[str, float]:
    """Train ``model`` in place on ``(x, y)``.

    Returns
    -------
    dict
        ``train_loss`` (mean over steps), ``num-examples`` and ``num-steps``.
    """
    _on(model, device).train()
    opt = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    global_params = None
    if settings.proximal_mu > 0:
        global_params = [p.detach().clone() for p in model.parameters()]
    steps, total = 0, 0.0
    for idx in batch_schedule(len(y), settings, generator):
        xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        total += float(loss.detach())
        if global_params is not None:
            loss = loss + 0.5 * settings.proximal_mu * proximal_term(
                model.parameters(), global_params
            )
        if loss_terms:
            params = dict(model.named_parameters())
            for term in loss_terms:
                loss = loss + term.fn(params, *term.tensors)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_terms:
            _apply(grad_terms, model)
        opt.step()
        steps += 1
    return {"train_loss": total / max(steps, 1), "num-examples": len(y), "num-steps": steps}


def _apply(grad_terms: tuple[Term, ...], model: nn.Module) -> None:
    """Replace the model's gradients by what ``grad_terms`` make of them, in turn."""
    with_grad = {k: p for k, p in model.named_parameters() if p.grad is not None}
    grads = {k: p.grad for k, p in with_grad.items()}
    for term in grad_terms:
        grads = term.fn(grads, *term.tensors)
    for k, p in with_grad.items():
        p.grad = grads[k]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 512,
) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``."""
    _on(model, device).eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(-1) == yb).sum())
    n = max(len(y), 1)
    return {"loss": loss_sum / n, "accuracy": correct / n, "num-examples": len(y)}
