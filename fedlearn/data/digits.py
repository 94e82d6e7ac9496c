"""scikit-learn's bundled 8x8 handwritten digits: 1,797 images, 10 classes, no download."""

from __future__ import annotations

import numpy as np
import torch

from fedlearn.data import DataSpec, FederatedData


def load(
    test_fraction: float = 0.2, max_samples: int | None = None, seed: int = 0
) -> FederatedData:
    """Load the digits, scaled to [0, 1], split train/test with a fixed seed.

    Parameters
    ----------
    test_fraction : float
        Share of samples held out for centralized evaluation, in (0, 1).
    max_samples : int, optional
        Keep only this many samples (before the split), for quick runs.
    seed : int
        Seed of the split (kept separate from the experiment seed so that every
        run of a study is evaluated on the same test set).
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"dataset.test_fraction must be in (0, 1), got {test_fraction}")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError(f"dataset.max_samples must be at least 2, got {max_samples}")
        order = order[:max_samples]
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y[order], dtype=torch.long)
    n_test = max(1, int(round(len(y) * test_fraction)))
    return FederatedData(
        train_x=x[n_test:],
        train_y=y[n_test:],
        test_x=x[:n_test],
        test_y=y[:n_test],
        spec=DataSpec(input_shape=(1, 8, 8), num_classes=10, kind="image"),
    )
