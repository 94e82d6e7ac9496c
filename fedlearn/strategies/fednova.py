"""FedNova: normalized averaging of heterogeneous local updates.

Wang, Liu, Liang, Joshi, Poor. "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization." NeurIPS 2020. https://arxiv.org/abs/2007.07481
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg

from fedlearn.strategies import NDArrays, positive, to_numpy, to_record

STEPS_KEY = "num-steps"  # train metric: local SGD steps the client took this round


def normalizing_norm(steps: int, momentum: float = 0.0, lr_mu: float = 0.0) -> float:
    """``||a_i||_1`` of FedNova's normalizing vector for one client.

    Follows the authors' optimizer (github.com/JYWa/FedNova): plain SGD gives
    ``a = steps``; SGD momentum ``rho`` adds ``sum_t (1 - rho^t) / (1 - rho)``; a
    proximal term (FedProx ``mu``) at learning rate ``lr`` decays it by ``1 - lr mu``
    per step.

    Parameters
    ----------
    steps : int
        Local steps ``tau_i``.
    momentum : float
        Local SGD momentum ``rho``.
    lr_mu : float
        Local learning rate times the proximal coefficient.
    """
    norm, counter = 0.0, 0.0
    for _ in range(steps):
        if momentum != 0.0:
            counter = counter * momentum + 1.0
            norm += counter
        if lr_mu != 0.0:
            norm = norm * (1.0 - lr_mu) + 1.0
        if momentum == 0.0 and lr_mu == 0.0:
            norm += 1.0
    return norm


class FedNova(FedAvg):
    """FedNova (Wang et al. 2020): average updates normalized by local work.

    Client ``i`` starts from ``x``, takes ``tau_i`` local steps (its ``"num-steps"``
    train metric) and returns ``y_i``. With ``p_i`` the ``weighted_by_key`` weights
    (normalized over the replies) and ``a_i = normalizing_norm(tau_i, ...)``, the
    server sets::

        tau_eff = sum_i p_i a_i
        x <- x - server_learning_rate * tau_eff * sum_i p_i (x - y_i) / a_i

    so a client that ran more steps does not pull the model further towards its own
    optimum (FedAvg's objective inconsistency). With equal ``a_i`` this is FedAvg.

    Sent to clients: nothing beyond the standard train config. The server reads the
    standard ``"lr"``, ``"momentum"`` and ``"proximal-mu"`` keys of the train config it
    sends, to compute ``a_i`` exactly as the client's local SGD accumulates it.

    Parameters
    ----------
    server_learning_rate : float
        Global step size (1.0 in the paper).
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_learning_rate = positive("server_learning_rate", server_learning_rate)
        self.current_arrays: NDArrays | None = None
        self.momentum = 0.0
        self.lr_mu = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages; remembers ``x`` and the local optimizer's settings."""
        self.current_arrays = to_numpy(arrays)
        self.momentum = float(config.get("momentum", 0.0))
        self.lr_mu = float(config.get("lr", 0.0)) * float(config.get("proximal-mu", 0.0))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Normalized averaging of the replies' updates."""
        valid, _ = self._check_and_log_replies(list(replies), is_train=True)
        if not valid:
            return None, None
        if self.current_arrays is None:
            raise AggregationError(reason="FedNova: aggregate_train before configure_train")
        contents = [msg.content for msg in valid]
        metrics = [next(iter(c.metric_records.values())) for c in contents]
        if any(STEPS_KEY not in m for m in metrics):
            raise AggregationError(
                reason=f"FedNova needs the '{STEPS_KEY}' train metric from every client"
            )
        weights = np.array([float(m[self.weighted_by_key]) for m in metrics])
        p = weights / weights.sum()
        norms = [normalizing_norm(int(m[STEPS_KEY]), self.momentum, self.lr_mu) for m in metrics]
        tau_eff = float(np.dot(p, norms))
        x = self.current_arrays
        direction = {k: np.zeros(v.shape, dtype=np.float64) for k, v in x.items()}
        for p_i, a_i, content in zip(p, norms, contents, strict=True):
            if a_i == 0.0:  # no local step: y_i == x, nothing to add
                continue
            y = to_numpy(next(iter(content.array_records.values())))
            for k in direction:
                direction[k] += (p_i / a_i) * (x[k] - y[k])
        scale = self.server_learning_rate * tau_eff
        new = {k: (x[k] - scale * direction[k]).astype(x[k].dtype) for k in x}
        return to_record(new), self.train_metrics_aggr_fn(contents, self.weighted_by_key)
