"""Optuna samplers whose random draws are shared across strategies.

Optuna's seeded samplers draw every trial's values from one random stream, in the
order the values are asked for. A strategy that tunes only the client learning rate
and one that also tunes ``eta`` then try different client learning rates, though both
have "the same budget". These samplers draw each value from its own stream, seeded by
the sampler's seed, the value's name and the trial's number: trial *k* of every
study tries the same client learning rate when the ranges match, whatever else it
tunes, and a resumed study draws what it drew before.

Hydra's Optuna sweeper builds them from ``hydra.sweeper.sampler._target_``
(:meth:`fedlearn.compare.driver.Driver.tune` sets it for ``compare.sampler=tpe`` and
``random``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial


def draw_seed(seed: int | None, param_name: str, trial_number: int) -> int:
    """The seed of one value's draw in one trial: stable across processes and runs."""
    key = f"{seed}/{param_name}/{trial_number}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


class SharedRandomSampler(RandomSampler):
    """Optuna's RandomSampler, drawing each (value, trial) from its own seeded stream."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self._base_seed = seed

    def reseed_rng(self) -> None:
        """Nothing to reseed: every draw is seeded by its value's name and trial."""

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._rng = np.random.RandomState(draw_seed(self._base_seed, param_name, trial.number))
        return super().sample_independent(study, trial, param_name, param_distribution)


class SharedTPESampler(TPESampler):
    """Optuna's TPESampler whose start-up trials (random ones, the first
    ``n_startup_trials``) are :class:`SharedRandomSampler` draws."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._random_sampler = SharedRandomSampler(seed=seed)
