"""SCAFFOLD: stochastic controlled averaging.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning." ICML 2020. https://arxiv.org/abs/1910.06378
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg

from fedlearn.strategies import NDArrays, num_nodes, positive, to_numpy, to_record

# RecordDict keys (ArrayRecords next to the model's "arrays"): documented for ClientApps.
CONTROL_KEY = "scaffold-c"  # server -> client: the server control variate c
DELTA_KEY = "scaffold-dc"  # client -> server: delta c_i = c_i+ - c_i


class Scaffold(FedAvg):
    """SCAFFOLD with option II control variates (Karimireddy et al. 2020, Alg. 1).

    The server keeps a control variate ``c`` per trainable array and sends it with every
    train message; client ``i`` keeps its own ``c_i`` in its Flower ``Context.state``,
    corrects each local gradient by ``c - c_i``, and after ``K`` local steps at learning
    rate ``lr`` sets ``c_i+ = c_i - c + (x - y_i) / (K lr)`` and returns
    ``delta c_i = c_i+ - c_i``. The server then updates

    - ``x <- x + server_learning_rate * (avg_i y_i - x)``, ``avg`` weighted by
      ``weighted_by_key`` as in FedAvg (the paper's uniform mean when clients hold
      equal data),
    - ``c <- c + (1 / N) * sum_{i in S} delta c_i`` with ``N`` the number of connected
      nodes, i.e. the paper's ``(|S| / N) * mean``, so client sampling is accounted for.

    Sent to clients: the train message's RecordDict carries ``"scaffold-c"``
    (ArrayRecord; empty before the first aggregation, read as zeros) besides
    ``"arrays"`` and ``"config"``. Expected back: ``"scaffold-dc"`` (ArrayRecord)
    besides ``"arrays"`` and ``"metrics"`` (with ``"num-steps"``); the client side is
    :mod:`fedlearn.app.client_strategies`.

    Parameters
    ----------
    server_learning_rate : float
        Global step size ``eta_g`` (1.0 in the paper's experiments).
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    keeps_client_state = True  # its client half keeps a term in Context.state across rounds

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_learning_rate = positive("server_learning_rate", server_learning_rate)
        # Server state as plain numpy dicts: checkpoints pickle instance attributes.
        self.control: NDArrays = {}
        self.current_arrays: NDArrays | None = None
        self.total_nodes = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, each also carrying the server control variate."""
        self.current_arrays = to_numpy(arrays)
        self.total_nodes = num_nodes(grid)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        control = to_record(self.control)
        for message in messages:
            message.content[CONTROL_KEY] = control
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the models as FedAvg does, then step the model and ``c``."""
        replies = list(replies)
        deltas: list[NDArrays] = []
        for msg in replies:
            if msg.has_error():
                continue
            if DELTA_KEY not in msg.content:
                raise InconsistentMessageReplies(
                    reason=f"SCAFFOLD reply from node {msg.metadata.src_node_id} has no "
                    f"'{DELTA_KEY}' record: its ClientApp does not run SCAFFOLD's client side"
                )
            deltas.append(to_numpy(msg.content[DELTA_KEY]))
            # FedAvg's validation wants exactly one ArrayRecord per reply.
            del msg.content[DELTA_KEY]
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or not deltas:
            return arrays, metrics
        if self.server_learning_rate != 1.0 and self.current_arrays is not None:
            arrays = to_record(
                _server_step(self.current_arrays, to_numpy(arrays), self.server_learning_rate)
            )
        total = max(self.total_nodes, len(deltas))
        for key in deltas[0]:
            step = sum(d[key] for d in deltas) / total
            self.control[key] = self.control.get(key, np.zeros_like(step)) + step
        return arrays, metrics


def _server_step(old: NDArrays, avg: NDArrays, lr: float) -> NDArrays:
    """``old + lr * (avg - old)`` on floating arrays; others take the average."""
    out = {}
    for k, v in avg.items():
        if np.issubdtype(v.dtype, np.floating) and k in old:
            out[k] = (old[k] + lr * (v - old[k])).astype(v.dtype)
        else:
            out[k] = v
    return out
