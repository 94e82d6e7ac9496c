"""FedDyn: federated learning with dynamic regularization.

Acar, Zhao, Matas, Mattina, Whatmough, Saligrama. "Federated Learning Based on
Dynamic Regularization." ICLR 2021. https://arxiv.org/abs/2111.04263
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedlearn.strategies import NDArrays, num_nodes, positive, to_numpy, to_record

ALPHA_KEY = "feddyn-alpha"  # train config: the regularization coefficient alpha


class FedDyn(FedAvg):
    """FedDyn (Acar et al. 2021, Algorithm 1).

    Client ``k`` keeps ``g_k`` (its previous local gradient, zeros at first) in its
    Flower ``Context.state`` and minimizes
    ``L_k(theta) - <g_k, theta> + alpha/2 ||theta - x||^2`` from the server model
    ``x``, then sets ``g_k <- g_k - alpha (theta_k - x)``. The server keeps ``h``
    (zeros at first) and, with ``avg`` the FedAvg average of the returned models
    (``weighted_by_key``; the paper's uniform mean when clients hold equal data),
    ``|S|`` the replies and ``m`` the connected nodes, sets::

        h <- h - alpha * (|S| / m) * (avg - x)     # paper: alpha/m * sum_k (theta_k - x)
        x <- avg - h / alpha

    Sent to clients: train config key ``"feddyn-alpha"`` (float); the client side is
    :mod:`fedlearn.app.client_strategies`.

    Parameters
    ----------
    alpha : float
        Regularization coefficient (the paper tries 0.1, 0.01, 0.001).
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    keeps_client_state = True  # its client half keeps a term in Context.state across rounds

    def __init__(self, *, alpha: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = positive("alpha", alpha)
        # Server state as plain numpy dicts: checkpoints pickle instance attributes.
        self.h: NDArrays = {}
        self.current_arrays: NDArrays | None = None
        self.total_nodes = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages with ``feddyn-alpha`` in the config."""
        self.current_arrays = to_numpy(arrays)
        self.total_nodes = num_nodes(grid)
        config[ALPHA_KEY] = float(self.alpha)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's average, then the ``h`` update and the corrected model."""
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.current_arrays is None:
            return arrays, metrics
        received = sum(1 for msg in replies if not msg.has_error())
        frac = received / max(self.total_nodes, received)
        avg, x = to_numpy(arrays), self.current_arrays
        new = {}
        for k, v in avg.items():
            if not np.issubdtype(v.dtype, np.floating):  # counters etc.: plain average
                new[k] = v
                continue
            h = self.h.get(k, np.zeros_like(v)) - self.alpha * frac * (v - x[k])
            self.h[k] = h
            new[k] = (v - h / self.alpha).astype(v.dtype)
        return to_record(new), metrics
