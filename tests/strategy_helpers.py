"""Hand-built Flower messages and a fake Grid for strategy unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, MetricRecord, RecordDict


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Flower stamps new instruction messages with the running task's identity."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class FakeGrid:
    """Just enough Grid for ``configure_train``: node ids."""

    def __init__(self, n: int) -> None:
        self.nodes = list(range(1, n + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def arrays(**named: list[float]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in named.items()})


def _metadata(node: int) -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="",
        created_at=0.0,
        ttl=100.0,
        message_type="train",
    )


def reply(
    node: int, weights: ArrayRecord, examples: int, steps: int = 1, **extra: ArrayRecord
) -> Message:
    """A train reply as fedlearn's ClientApp sends it."""
    metrics = MetricRecord({"train_loss": 1.0, "num-examples": examples, "num-steps": steps})
    content = RecordDict({"arrays": weights, "metrics": metrics, **extra})
    return Message(content=content, metadata=_metadata(node))


def error_reply(node: int) -> Message:
    return Message(Error(1000, "boom"), metadata=_metadata(node))


def values(record: ArrayRecord, key: str = "w") -> np.ndarray:
    return record[key].numpy()


def simulate_small(strategy: str, run_dir: object, *extra: str) -> tuple[dict, list, dict]:
    """A short in-process run with client sampling and unequal local steps.

    Six clients with Dirichlet(0.5) label skew hold different amounts of data, so
    one local epoch is a different number of steps on each; half are sampled a round.
    Returns result.json, the metrics lines and the final checkpoint.
    """
    from pathlib import Path

    from fedlearn import records
    from fedlearn.experiment import simulate

    result = simulate(
        [
            f"strategy={strategy}",
            "num_rounds=4",
            "num_clients=6",
            "strategy.fraction_train=0.5",
            "strategy.min_train_nodes=2",
            "partitioner=dirichlet",
            "partitioner.alpha=0.5",
            "client.local_epochs=3",
            "runtime.workers=1",
            "progress=false",
            *extra,
        ],
        run_dir=run_dir,
    )
    run_dir = Path(str(run_dir))
    return result, records.read_metrics(run_dir), records.load_checkpoint(run_dir)


def assert_learns(result: dict, lines: list) -> None:
    """Completed, clients took unequal numbers of steps, accuracy clearly above the start."""
    assert result["status"] == "completed", result["error"]
    assert all(m["sampled"] == 3 for m in lines if m["round"] > 0)
    steps = [m["train"]["num-steps"] for m in lines if m["round"] > 0]
    assert any(s != round(s) for s in steps)  # a weighted mean of unequal step counts
    best = max(m["test"]["accuracy"] for m in lines)
    assert best > lines[0]["test"]["accuracy"] + 0.3


def assert_grpc_matches_inprocess(strategy: str, tmp: object) -> None:
    """Same run over gRPC (client processes, Context kept per connection) and in-process:
    the same numbers every round. Two rounds with every client: round 2 uses round 1's
    client state; the strategy's extra records travel through fedlearn's gRPC messages."""
    from pathlib import Path

    from fedlearn import records
    from fedlearn.experiment import simulate

    base = [
        f"strategy={strategy}",
        "num_clients=3",
        "num_rounds=2",
        "dataset.max_samples=300",
        "client.max_steps=4",
        "partitioner=dirichlet",
        "partitioner.alpha=0.5",
        "progress=false",
    ]
    tmp = Path(str(tmp))
    grpc = simulate([*base, "runtime=grpc", "runtime.insecure=true"], run_dir=tmp / "grpc")
    # One client at a time in-process too, for a bit-for-bit comparison.
    local = simulate(
        [*base, "runtime.workers=1", "runtime.vectorize=false"], run_dir=tmp / "inprocess"
    )
    assert grpc["status"] == "completed", grpc["error"]
    central = [
        [(m.get("validation"), m.get("test")) for m in records.read_metrics(tmp / d)]
        for d in ("grpc", "inprocess")
    ]
    assert central[0] == central[1]
    assert grpc["final"] == local["final"]


def label_split_rounds(strategy: object, rounds: int, lr: float, steps: int) -> float:
    """Full-batch federated training of a linear classifier on digits split by label
    (client 1: digits 0-4, client 2: 5-9), strategy and client side driven by hand.
    Returns the global model's cross-entropy on all the data: a convex problem where
    client drift is the only obstacle, so drift correction must show."""
    import torch
    from flwr.app import ConfigRecord, Context
    from sklearn.datasets import load_digits
    from torch import nn

    from fedlearn import training
    from fedlearn.app import client_strategies

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
    parts = [torch.where(y < 5)[0], torch.where(y >= 5)[0]]
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    weights = ArrayRecord(model.state_dict())
    contexts = [
        Context(run_id=1, node_id=i + 1, node_config={}, state=RecordDict(), run_config={})
        for i in range(2)
    ]
    settings = training.TrainSettings(lr=lr, batch_size=len(y), local_epochs=steps)
    cpu = torch.device("cpu")
    for rnd in range(1, rounds + 1):
        replies = []
        for msg in strategy.configure_train(rnd, weights, ConfigRecord({"lr": lr}), FakeGrid(2)):
            i = msg.metadata.dst_node_id - 1
            model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
            told = RecordDict(dict(msg.content))  # the server's word: last round aggregated
            told[client_strategies.COMMIT_KEY] = ConfigRecord(
                {"round": rnd - 1, "aggregated": True}
            )
            params = dict(model.named_parameters())
            side = client_strategies.setup(told, contexts[i], params, settings, cpu)
            metrics = training.train(
                model,
                x[parts[i]],
                y[parts[i]],
                settings,
                cpu,
                torch.Generator(),
                side.loss_terms,
                side.grad_terms,
            )
            content = RecordDict(
                {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
            )
            for key, record in side.finish(dict(model.named_parameters()), metrics).items():
                content[key] = record
            replies.append(Message(content=content, metadata=_metadata(i + 1)))
        weights, _ = strategy.aggregate_train(rnd, replies)
    model.load_state_dict(weights.to_torch_state_dict())
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def assert_resume_matches(strategy: str, tmp: object) -> None:
    """Stopped after round 2 and resumed to 4 == 4 rounds straight: the strategy's server
    state (pickled instance attributes) and the clients' Context state both come back."""
    from pathlib import Path

    from fedlearn.experiment import simulate
    from tests.conftest import TINY, metrics_without_timings

    tmp = Path(str(tmp))
    args = [*TINY, f"strategy={strategy}", "partitioner=dirichlet", "partitioner.alpha=0.5"]
    full = simulate([*args, "num_rounds=4"], run_dir=tmp / "full")
    assert full["status"] == "completed"
    simulate([*args, "num_rounds=2"], run_dir=tmp / "part")
    resumed = simulate([f"resume={tmp / 'part'}", "num_rounds=4"])
    assert resumed["rounds_completed"] == 4
    assert metrics_without_timings(tmp / "part") == metrics_without_timings(tmp / "full")
