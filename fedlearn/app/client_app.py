"""fedlearn's Flower ClientApp: unpack a Message, train or evaluate, reply.

What a client reads:

- ``context.run_config`` (flat scalars, see :mod:`fedlearn.app.run_config`):
  ``dataset.*``, ``model.*``, ``partitioner.*``, ``client.*``, ``num_clients``,
  ``seed``.
- ``context.node_config``: Flower's ``partition-id`` / ``num-partitions`` in a
  simulation; in a deployment any ``dataset.*`` key (e.g. ``dataset.root``)
  overrides the run's dataset, and without ``partition-id`` the client trains
  on the whole train split of the data it loads (its own local data).
  ``device`` overrides ``client.device``.
- The train message's ConfigRecord ``config``: ``server-round``, ``lr``,
  ``local-epochs``, ``batch-size``, ``momentum``, ``weight-decay``,
  ``max-steps`` and strategy keys such as FedProx's ``proximal-mu``. Strategies
  with client state (SCAFFOLD's ``scaffold-c`` record, FedDyn's ``feddyn-alpha``)
  are handled by :mod:`fedlearn.app.client_strategies`, which keeps that state in
  ``context.state`` and may add records to the reply.

Replies carry ``arrays`` and ``metrics`` (``train_loss``, ``num-examples``,
``num-steps`` after training; ``eval_loss``, ``eval_acc``, ``num-examples``
after evaluation).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedlearn import targets, training
from fedlearn.app import arrays, client_strategies
from fedlearn.app.run_config import section
from fedlearn.data import DataSpec, load_dataset
from fedlearn.data.partition import client_indices, local_split
from fedlearn.models import build_model
from fedlearn.runtime import batched

app = ClientApp()
# A round's messages at once, for runtimes that can (the in-process one): vectorized clients.
batched.offer(app, "fedlearn.app.client_group:VectorizedClients")


@dataclass
class ClientJob:
    """A client's data, model settings and device, built once per process and node."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    spec: DataSpec
    model_json: str
    device: torch.device
    seed: int
    partition_id: int


@lru_cache(maxsize=64)
def _model(model_json: str, spec: DataSpec, device: str, thread: int) -> nn.Module:  # noqa: ARG001
    return build_model(json.loads(model_json), spec).to(device)


def job_model(job: ClientJob) -> nn.Module:
    """The model a client trains: one per process, thread and model config, shared by
    the nodes it serves (every message loads its own weights first, and a client's own
    state lives in its Context). Per node, 810 Shakespeare roles would hold 810 LSTMs.
    Take it once per message: the cache may drop it for another thread's model."""
    return _model(job.model_json, job.spec, str(job.device), threading.get_ident())


def _dataset_config(run_config: dict, node_config: dict) -> dict:
    dataset = section(run_config, "dataset")
    dataset.update(section(node_config, "dataset"))
    return dataset


def _device(run_config: dict, node_config: dict) -> torch.device:
    client = section(run_config, "client")
    return training.resolve_device(str(node_config.get("device", client.get("device", "auto"))))


def _model_json(run_config: dict) -> str:
    return json.dumps(section(run_config, "model"), sort_keys=True)


def node_model(context: Context) -> tuple[nn.Module, torch.device, DataSpec]:
    """This node's model (this thread's copy), device and data spec, without building
    its data."""
    run_config, node_config = dict(context.run_config), dict(context.node_config)
    spec = load_dataset(_dataset_config(run_config, node_config)).spec
    device = _device(run_config, node_config)
    model = _model(_model_json(run_config), spec, str(device), threading.get_ident())
    return model, device, spec


@lru_cache(maxsize=256)  # one entry per node this process serves
def _job(run_config_json: str, node_config_json: str) -> ClientJob:
    run_config = json.loads(run_config_json)
    node_config = json.loads(node_config_json)
    dataset = _dataset_config(run_config, node_config)
    # The run config is the server's: only what this installation allows is built from it.
    for group, cfg in (("dataset", dataset), ("model", section(run_config, "model"))):
        targets.check(cfg, group)
    if "partition-id" in node_config:
        targets.check(section(run_config, "partitioner"), "partitioner")
    data = load_dataset(dataset)
    client = section(run_config, "client")
    seed = int(run_config.get("seed", 0))
    if "partition-id" in node_config:
        pid = int(node_config["partition-id"])
        num = int(node_config.get("num-partitions", run_config.get("num_clients", 1)))
        parts = client_indices(dataset, section(run_config, "partitioner"), num, seed)
        tr, ev, from_test = local_split(data, parts[pid], float(client.get("eval_fraction", 0.2)))
        train_x, train_y = data.train_x[tr], data.train_y[tr]
        src_x, src_y = (data.test_x, data.test_y) if from_test else (data.train_x, data.train_y)
        eval_x, eval_y = src_x[ev], src_y[ev]
    else:  # a deployed client with its own data
        pid = int(node_config.get("node-index", 0))
        train_x, train_y, eval_x, eval_y = data.train_x, data.train_y, data.test_x, data.test_y
    device = _device(run_config, node_config)
    model_json = _model_json(run_config)
    return ClientJob(train_x, train_y, eval_x, eval_y, data.spec, model_json, device, seed, pid)


def client_job(context: Context) -> ClientJob:
    """This node's job, cached by its run and node config."""
    return _job(
        json.dumps(dict(context.run_config), sort_keys=True),
        json.dumps(dict(context.node_config), sort_keys=True),
    )


def train_settings(config: ConfigRecord) -> training.TrainSettings:
    """Local optimisation settings from the train message's ConfigRecord."""
    max_steps = int(config.get("max-steps", 0))
    return training.TrainSettings(
        lr=float(config.get("lr", 0.05)),
        local_epochs=int(config.get("local-epochs", 1)),
        batch_size=int(config.get("batch-size", 32)),
        momentum=float(config.get("momentum", 0.0)),
        weight_decay=float(config.get("weight-decay", 0.0)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        max_steps=max_steps if max_steps > 0 else None,
    )


def _load(model: nn.Module, msg: Message) -> None:
    model.load_state_dict(arrays.to_state_dict(msg.content["arrays"]), strict=True)


def client_seed(job: ClientJob, config: ConfigRecord) -> int:
    """The seed of a client's data order and dropout in a round: it depends only on
    (seed, round, client), so on no runtime, worker or what ran before in this process."""
    return job.seed * 1_000_003 + int(config.get("server-round", 0)) * 10_007 + job.partition_id


def check_finite(state: dict[str, torch.Tensor]) -> None:
    """Raise FloatingPointError when local training left NaN or Inf in the weights: the
    client reports its failure instead of sending them, and stages no new state."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise FloatingPointError(f"model not finite after local training ({key}): lower lr?")


def train_reply(msg: Message, state: dict, metrics: dict, extra: dict) -> Message:
    """The reply to a train message: trained weights, metrics, a strategy's extra records."""
    content = RecordDict({"arrays": arrays.to_record(state), "metrics": MetricRecord(metrics)})
    for key, record in extra.items():
        content[key] = record
    return Message(content=content, reply_to=msg)


def evaluate_reply(msg: Message, res: dict) -> Message:
    """The reply to an evaluate message, from :func:`fedlearn.training.evaluate`'s result."""
    metrics = {
        "eval_loss": res["loss"],
        "eval_acc": res["accuracy"],
        "num-examples": res["num-examples"],
    }
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on this node's data and send it back."""
    job = client_job(context)
    model = job_model(job)
    _load(model, msg)
    config = msg.content["config"]
    # The RNG state of this process is left as it was (fork_rng below).
    seed = client_seed(job, config)
    gen = torch.Generator().manual_seed(seed)
    settings = train_settings(config)
    # Strategies with client state (SCAFFOLD, FedDyn): terms + extra reply records.
    received = dict(model.named_parameters())
    side = client_strategies.setup(msg.content, context, received, settings, job.device)
    cuda = []
    if job.device.type == "cuda":
        cuda = [job.device.index if job.device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        metrics = training.train(
            model,
            job.train_x,
            job.train_y,
            settings,
            job.device,
            gen,
            loss_terms=side.loss_terms,
            grad_terms=side.grad_terms,
        )
    check_finite(model.state_dict())  # else this client fails; its strategy state stays
    extra = side.finish(dict(model.named_parameters()), metrics)
    return train_reply(msg, model.state_dict(), metrics, extra)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this node's held-out data."""
    client_strategies.settle(msg.content, context)  # the server's word on the last update
    job = client_job(context)
    model = job_model(job)
    _load(model, msg)
    return evaluate_reply(msg, training.evaluate(model, job.eval_x, job.eval_y, job.device))
