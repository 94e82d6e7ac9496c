"""Whether a model's clients are trained together, and how many at once.

- :func:`refusal`: why a model cannot be trained vectorized with results equal to
  the sequential path (buffers that training changes, dropout), or, under
  ``runtime.vectorize=auto``, why it is not (slower there).
- :func:`group_size`: how many clients one computation holds, from the memory a
  client takes and the memory available, so a round of 1,000 clients never holds
  1,000 stacked models.

``auto`` asks the model: a model class whose ``vectorize_auto(device)`` returns True
is trained vectorized under ``auto``; one without that method is not.
``simulations/bench/bench_vectorized_models.py`` measures both paths per model and
says where the answers disagree with what it measured.
"""

from __future__ import annotations

import os
import weakref

import torch
from torch import nn

from fedlearn.vectorized import engine

MAX_GROUP = 64  # past a few dozen clients a group runs no faster per client
MEMORY_SHARE = 0.25  # of the memory available when a group is formed


def dropout(model: nn.Module) -> str | None:
    """The first dropout of ``model`` that is active in training, as ``name (p=...)``."""
    for name, module in model.named_modules():
        p = 0.0
        if isinstance(module, nn.modules.dropout._DropoutNd):
            p = module.p
        elif isinstance(module, nn.RNNBase) and module.num_layers > 1:
            p = module.dropout
        elif isinstance(module, nn.MultiheadAttention):
            p = module.dropout
        if p > 0:
            return f"{name or type(module).__name__} (p={p})"
    return None


def probe(model: nn.Module, sample: torch.Tensor) -> str | None:
    """Run two stacked copies of ``model`` forward and backward on ``sample`` (one input
    row); None if that works, else the first line of the error (an operation without a
    vmap batching rule, such as ``nn.LSTM``'s)."""
    params = {
        k: torch.stack([p.detach()] * 2).requires_grad_() for k, p in model.named_parameters()
    }
    mode = model.training
    model.train()  # as in training (a Transformer layer takes another path in eval mode)
    try:
        out = engine.batched_forward(model)(params, sample.expand(2, *sample.shape))
        torch.autograd.grad(out.float().sum(), list(params.values()), allow_unused=True)
    except RuntimeError as err:
        return str(err).strip().splitlines()[0]
    finally:
        model.train(mode)
    return None


def refusal(
    model: nn.Module, device: torch.device, forced: bool, sample: torch.Tensor
) -> str | None:
    """None when ``model``'s clients can be trained together; else why not, in one line.

    ``sample``: one input row (batch dimension first) for :func:`probe`. Unless
    ``forced`` (``runtime.vectorize=true``), also why not when the model does not
    declare the vectorized path faster (``vectorize_auto``).
    """
    name = type(model).__name__
    params = dict(model.named_parameters())
    buffers = [k for k in model.state_dict() if k not in params]
    if buffers:
        return (
            f"model={name} has buffers that training updates ({', '.join(buffers[:3])});"
            " vectorized training updates parameters only"
        )
    drop = dropout(model)
    if drop is not None:
        return (
            f"model={name} has dropout at {drop}: the sequential path draws each client's"
            " masks from torch's RNG in turn, which one vectorized step cannot reproduce"
        )
    failed = probe(model, sample)
    if failed is not None:
        return f"model={name} cannot run vectorized: {failed}"
    if not forced:
        faster = getattr(model, "vectorize_auto", None)
        if faster is None or not faster(device):
            return f"model={name} trains faster one client at a time on {device.type}"
    return None


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now (CUDA: the allocator's view; else the OS's)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf name here (macOS, Windows)
        return 2**31


_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def client_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Memory one client of a group takes for a step on the batch ``x``: its stacked
    parameters, gradients, momentum and start (four copies) and what the forward pass
    keeps for the backward pass, measured (once per model and batch shape), twice over
    for the batched kernels' copies."""
    key = (tuple(x.shape), x.dtype, str(x.device))
    known = _MEASURED.setdefault(model, {})
    if key not in known:
        known[key] = _measure(model, x)
    return known[key]


def _measure(model: nn.Module, x: torch.Tensor) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return 4 * params + 2 * sum(saved.values())


def group_size(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Clients per group for steps on batches like ``x``: as many as fit in
    ``MEMORY_SHARE`` of the memory available, between 2 and ``MAX_GROUP``."""
    fit = int(MEMORY_SHARE * available_memory(device)) // max(client_bytes(model, x), 1)
    return max(2, min(MAX_GROUP, fit))
