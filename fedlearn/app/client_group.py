"""fedlearn's ClientApp, many messages at once: the batched handler it offers runtimes.

A runtime that can (the in-process one) hands a round's messages to
:class:`VectorizedClients`. Each message is unpacked exactly as
:mod:`fedlearn.app.client_app` unpacks it (its node's data, the train settings, the
seed of its data order); clients that can share one computation (same model, device
and local optimizer) are sorted by their number of local steps and cut into groups;
each group is trained or evaluated at once by :mod:`fedlearn.vectorized.engine`; and
each client's result is packed into the reply client_app would have sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from torch import nn

from fedlearn.app import arrays, client_strategies
from fedlearn.app.client_app import (
    ClientJob,
    check_finite,
    client_job,
    client_seed,
    evaluate_reply,
    job_model,
    node_model,
    train_reply,
    train_settings,
)
from fedlearn.runtime import batched
from fedlearn.training import TrainSettings, batch_schedule
from fedlearn.vectorized import engine, policy

EVAL_BATCH = 512  # fedlearn.training.evaluate's default


@dataclass
class _Client:
    """One message, unpacked."""

    msg: Message
    job: ClientJob
    params: engine.Params
    settings: TrainSettings | None = None
    task: engine.ClientTask | None = None
    side: client_strategies.ClientSide | None = None


def received(model: nn.Module, msg: Message) -> engine.Params:
    """The message's weights by parameter name, as ``load_state_dict(strict=True)`` would
    take them (same names and shapes, the model's dtypes); ValueError otherwise."""
    state = arrays.to_state_dict(msg.content["arrays"])
    params = dict(model.named_parameters())
    if state.keys() != params.keys():
        raise ValueError("received arrays do not match the model's parameters")
    out = {}
    for k, p in params.items():
        if state[k].shape != p.shape:
            raise ValueError(f"received {k} of shape {tuple(state[k].shape)}, not {p.shape}")
        out[k] = state[k].to(p.dtype)
    return out


def _group_key(c: _Client) -> tuple:
    """Clients with equal keys can share one computation: the same model on the same
    device, the same local optimizer and the same strategy term functions."""
    key = (c.job.model_json, c.job.spec, str(c.job.device))
    if c.settings is None or c.task is None:
        return key
    s, t = c.settings, c.task
    terms = tuple(x.fn for x in t.loss_terms), tuple(x.fn for x in t.grad_terms)
    return (*key, s.lr, s.momentum, s.weight_decay, s.proximal_mu, s.batch_size, *terms)


class VectorizedClients:
    """The batched handler of fedlearn's ClientApp (see :mod:`fedlearn.runtime.batched`)."""

    def __init__(self) -> None:
        self._refusals: dict[tuple, str | None] = {}

    def refusal(self, context: Context, forced: bool) -> str | None:
        """Why this node's clients are not trained vectorized (None: they are)."""
        model, device, spec = node_model(context)
        key = (id(model), str(device), forced)  # nodes of one run share their model
        if key not in self._refusals:
            text = spec.kind == "text"  # characters as indices; else float features
            sample = torch.zeros(1, *spec.input_shape, dtype=torch.long if text else None)
            self._refusals[key] = policy.refusal(model, device, forced, sample.to(device))
        return self._refusals[key]

    def run(
        self, messages: Sequence[Message], contexts: Sequence[Context], group_size: int | None
    ) -> list[Message | Exception | None]:
        """Replies to the train and evaluate messages (or the exception a client failed
        with); None for any other message."""
        done: dict[int, Message | Exception] = {}
        train, evaluate = [], []
        for msg, ctx in zip(messages, contexts, strict=True):
            kind = msg.metadata.message_type
            if kind not in (MessageType.TRAIN, MessageType.EVALUATE):
                continue
            try:
                client = self._unpack(msg, ctx, with_task=kind == MessageType.TRAIN)
            except Exception as exc:  # noqa: BLE001 - this client's failure, as if alone
                done[id(msg)] = exc
                continue
            (train if kind == MessageType.TRAIN else evaluate).append(client)
        done.update(self._train(train, group_size))
        done.update(self._evaluate(evaluate, group_size))
        return [done.get(id(m)) for m in messages]

    @staticmethod
    def _unpack(msg: Message, context: Context, with_task: bool) -> _Client:
        client_strategies.settle(msg.content, context)  # the server's word on the last update
        job = client_job(context)
        client = _Client(msg, job, received(job_model(job), msg))
        if with_task:
            config = msg.content["config"]
            settings = client.settings = train_settings(config)
            gen = torch.Generator().manual_seed(client_seed(job, config))
            schedule = batch_schedule(len(job.train_y), settings, gen)
            side = client.side = client_strategies.setup(
                msg.content, context, client.params, settings, job.device
            )
            client.task = engine.ClientTask(
                client.params, job.train_x, job.train_y, schedule, side.loss_terms, side.grad_terms
            )
        return client

    @staticmethod
    def _groups(clients: list[_Client], group_size: int | None) -> list[list[_Client]]:
        by_key: dict[tuple, list[int]] = {}
        for i, c in enumerate(clients):
            by_key.setdefault(_group_key(c), []).append(i)
        groups = []
        for members in by_key.values():
            first = clients[members[0]].job
            if group_size is None:
                settings = clients[members[0]].settings
                batch = settings.batch_size if settings else EVAL_BATCH
                x = first.train_x.new_zeros((batch, *first.train_x.shape[1:])).to(first.device)
                size = policy.group_size(job_model(first), x, first.device)
            else:
                size = group_size
            steps = {i: len(clients[i].task.schedule) if clients[i].task else 0 for i in members}
            members.sort(key=lambda i: steps[i])  # similar step counts: less masked work
            chunks = batched.split(members, -(-len(members) // size))  # fewest of at most size
            groups += [[clients[i] for i in chunk] for chunk in chunks]
        return groups

    def _train(
        self, clients: list[_Client], group_size: int | None
    ) -> dict[int, Message | Exception]:
        trained = []
        for group in self._groups(clients, group_size):
            job, settings = group[0].job, group[0].settings
            tasks = [c.task for c in group]
            results = engine.train_group(job_model(job), tasks, settings, job.device)
            trained += zip(group, results, strict=True)
        # Only now that every group has trained: client state (SCAFFOLD's c_i, ...).
        out: dict[int, Message | Exception] = {}
        for c, (params, metrics) in trained:
            try:
                check_finite(params)  # a client that diverged fails alone, its state kept
            except FloatingPointError as exc:
                out[id(c.msg)] = exc
                continue
            out[id(c.msg)] = train_reply(c.msg, params, metrics, c.side.finish(params, metrics))
        return out

    def _evaluate(self, clients: list[_Client], group_size: int | None) -> dict[int, Message]:
        out = {}
        for group in self._groups(clients, group_size):
            job = group[0].job
            data = [(c.job.eval_x, c.job.eval_y) for c in group]
            params = [c.params for c in group]
            results = engine.evaluate_group(job_model(job), params, data, job.device, EVAL_BATCH)
            for c, res in zip(group, results, strict=True):
                out[id(c.msg)] = evaluate_reply(c.msg, res)
        return out
