"""Client sides of strategies that need more than TrainSettings: keyed by message contents.

:func:`setup` looks at a train message and returns the loss and gradient terms
(:class:`fedlearn.training.Term`) a client's local training adds, plus a ``finish``
step that updates the client's state in its Flower ``Context.state`` and returns
extra reply records. The terms are pure functions of the parameters (or gradients)
and the client's tensors, so a client trained alone and a group trained at once
(:mod:`fedlearn.vectorized`) run the same code.

==========================  ================================  ==================================
message contains            client does                       kept in ``context.state``
==========================  ================================  ==================================
record ``"scaffold-c"``     SCAFFOLD: gradient += c - c_i;    ``"scaffold-ci"`` (ArrayRecord)
(ArrayRecord, server c)     replies ``"scaffold-dc"``
config ``"feddyn-alpha"``   FedDyn: loss += -<g, w> +         ``"feddyn-grad"`` (ArrayRecord)
                            alpha/2 ||w - x||^2
==========================  ================================  ==================================

Arrays cover the model's trainable parameters by name (``named_parameters``);
a name missing from a received or stored record counts as zeros.

A client's state changes only with updates the server aggregated. After
training, the new state is kept *pending* (``"<key>.pending"``, tagged with
its round in ``"pending-round"``) and a round trains from the committed
state. Once a round is over (its checkpoint written) the server tells each
node, in every later message, what became of the node's last train reply
(record ``"fedlearn-commit"``: ``round``, ``aggregated``;
:class:`~fedlearn.app.tracking.TrackingGrid` keeps that ledger, checkpoints
save it); :func:`settle` then commits the pending state or drops it. A reply
refused (NaN, an outlier), lost, or part of a round whose aggregate was not
applied leaves the state as it was. A server resumed from the checkpoint
before a round the client had trained speaks of an earlier round: the pending
state waits, and the redone round replaces it. A message without the record (a
server that keeps no ledger) leaves a pending state waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from fedlearn.app import arrays
from fedlearn.app.tracking import COMMIT_KEY
from fedlearn.strategies.feddyn import ALPHA_KEY
from fedlearn.strategies.fednova import normalizing_norm
from fedlearn.strategies.scaffold import CONTROL_KEY, DELTA_KEY
from fedlearn.training import Term, TrainSettings

SCAFFOLD_STATE = "scaffold-ci"
FEDDYN_STATE = "feddyn-grad"
PENDING = ".pending"  # suffix of a state record awaiting the server's word
PENDING_ROUND = "pending-round"  # ConfigRecord {"round": r} of the pending records

Tensors = dict[str, torch.Tensor]
# After training: (trained parameters by name, train metrics) -> extra reply records.
Finish = Callable[[Mapping[str, torch.Tensor], dict], dict[str, ArrayRecord]]


@dataclass
class ClientSide:
    """Terms for one local training run and what to do after it."""

    loss_terms: tuple[Term, ...] = ()
    grad_terms: tuple[Term, ...] = ()
    finishers: list[Finish] = field(default_factory=list)

    def finish(self, params: Mapping[str, torch.Tensor], metrics: dict) -> dict[str, ArrayRecord]:
        """Run every finisher on the trained parameters; their extra reply records, merged."""
        extra: dict[str, ArrayRecord] = {}
        for fn in self.finishers:
            extra.update(fn(params, metrics))
        return extra


def setup(
    content: RecordDict,
    context: Context,
    params: Mapping[str, torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
) -> ClientSide:
    """The client side of whatever strategy ``content`` (a train message) asks for.

    ``params``: the received global weights, by parameter name (a model's
    ``named_parameters()``). What the message says of the node's last update is
    settled first (:func:`settle`).
    """
    settle(content, context)
    side = ClientSide()
    config = content["config"] if "config" in content else {}
    round_ = int(config.get("server-round", 0))
    if CONTROL_KEY in content:
        _scaffold(side, content[CONTROL_KEY], context, params, settings, device, round_)
    if ALPHA_KEY in config:
        _feddyn(side, float(config[ALPHA_KEY]), context, params, device, round_)
    return side


def settle(content: RecordDict, context: Context) -> None:
    """Settle the pending state with what ``content`` says of this node's last update:
    commit it when its round was aggregated, drop it when refused or when the server
    speaks of a later round; keep it waiting without word or for an earlier round."""
    if COMMIT_KEY in content:
        told = content[COMMIT_KEY]
        settle_state(context.state, int(told.get("round", -1)), bool(told.get("aggregated")))


def settle_state(state: RecordDict, server_round: int, aggregated: bool) -> None:
    """Settle a node's pending state with the server's word on its update of
    ``server_round`` (:func:`settle`); a server that holds its nodes' states settles
    them itself with this when the round ends."""
    if PENDING_ROUND not in state:
        return
    mine = int(state[PENDING_ROUND]["round"])
    if server_round < mine:  # not decided yet (or a resumed server redoing this round)
        return
    commit = server_round == mine and aggregated
    for key in [k for k in state.keys() if k.endswith(PENDING)]:
        record = state.pop(key)
        if commit:
            state[key[: -len(PENDING)]] = record
    del state[PENDING_ROUND]


def _stage(context: Context, key: str, record: ArrayRecord, round_: int) -> None:
    """Keep ``record`` as the pending new value of state ``key``, for round ``round_``."""
    context.state[key + PENDING] = record
    context.state[PENDING_ROUND] = ConfigRecord({"round": round_})


def _params(params: Mapping[str, torch.Tensor], device: torch.device) -> Tensors:
    return {k: p.detach().to(device).clone() for k, p in params.items()}


def _tensors(record: ArrayRecord | None, like: Tensors) -> Tensors:
    """``record``'s arrays as tensors shaped like ``like`` (zeros where missing)."""
    out = {}
    for k, ref in like.items():
        if record is not None and k in record:
            out[k] = torch.tensor(arrays.view(record[k]), dtype=ref.dtype, device=ref.device)
        else:
            out[k] = torch.zeros_like(ref)
    return out


def _state(context: Context, key: str) -> ArrayRecord | None:
    return context.state[key] if key in context.state else None


def _scaffold(
    side: ClientSide,
    c_record: ArrayRecord,
    context: Context,
    params: Mapping[str, torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
    round_: int,
) -> None:
    """SCAFFOLD option II (Karimireddy et al. 2020, Alg. 1 lines 10 and 12).

    Option II estimates the client's mean gradient as ``(x - y) / (K lr)``, true for
    plain SGD. With momentum ``rho`` the same gradients move the model about
    ``1 / (1 - rho)`` times further, and that estimate would blow ``c_i`` up by as
    much (training diverges at rho = 0.9); dividing by ``lr * ||a||_1`` instead,
    FedNova's count of effective steps (``K`` for plain SGD), keeps it a mean gradient.
    """
    x = _params(params, device)
    c = _tensors(c_record, x)
    c_i = _tensors(_state(context, SCAFFOLD_STATE), x)
    correction = {k: c[k] - c_i[k] for k in x}

    def finish(trained: Mapping[str, torch.Tensor], metrics: dict) -> dict[str, ArrayRecord]:
        steps = int(metrics.get("num-steps", 0))
        y = _params(trained, device)
        if steps > 0:
            prox = settings.lr * settings.proximal_mu
            scale = 1.0 / (settings.lr * normalizing_norm(steps, settings.momentum, prox))
            c_new = {k: c_i[k] - c[k] + scale * (x[k] - y[k]) for k in x}
        else:  # no local step: nothing learned about this client's drift
            c_new = c_i
        _stage(context, SCAFFOLD_STATE, arrays.to_record(c_new), round_)
        return {DELTA_KEY: arrays.to_record({k: c_new[k] - c_i[k] for k in x})}

    side.grad_terms += (Term(scaffold_correction, (correction,)),)
    side.finishers.append(finish)


def scaffold_correction(grads: Tensors, correction: Tensors) -> Tensors:
    """SCAFFOLD's corrected gradient ``g + (c - c_i)`` (Alg. 1 line 10)."""
    return {k: g + correction[k] for k, g in grads.items()}


def _feddyn(
    side: ClientSide,
    alpha: float,
    context: Context,
    params: Mapping[str, torch.Tensor],
    device: torch.device,
    round_: int,
) -> None:
    """FedDyn's local objective and gradient-state update (Acar et al. 2021, Alg. 1)."""
    x = _params(params, device)
    g = _tensors(_state(context, FEDDYN_STATE), x)

    def finish(trained: Mapping[str, torch.Tensor], metrics: dict) -> dict[str, ArrayRecord]:
        y = _params(trained, device)
        new = arrays.to_record({k: g[k] - alpha * (y[k] - x[k]) for k in x})
        _stage(context, FEDDYN_STATE, new, round_)
        return {}

    side.loss_terms += (Term(feddyn_term, (g, x, torch.tensor(alpha, device=device))),)
    side.finishers.append(finish)


def feddyn_term(params: Tensors, g: Tensors, x: Tensors, alpha: torch.Tensor) -> torch.Tensor:
    """FedDyn's ``-<g, w> + alpha/2 ||w - x||^2``."""
    linear = sum((p * g[k]).sum() for k, p in params.items())
    quad = sum((p - x[k]).pow(2).sum() for k, p in params.items())
    return -linear + 0.5 * alpha * quad
