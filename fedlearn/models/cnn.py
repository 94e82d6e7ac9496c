"""A small CNN for image classification (8x8x1, 28x28x1, 32x32x3, ...)."""

from __future__ import annotations

import torch
from torch import nn

VECTORIZE_MAX_PIXELS = 16 * 16


class CNN(nn.Module):
    """Two conv-ReLU-maxpool blocks and a two-layer classifier.

    No batch norm on purpose: its running statistics are not weights that
    federated averaging treats well, and it keeps every array a float tensor.

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` from the dataset.
    num_classes : int
        From the dataset.
    channels : int
        Filters of the first conv layer (the second has twice as many).
    hidden : int
        Width of the hidden dense layer.
    """

    KINDS = ("image",)

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, channels: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"model=cnn needs (C, H, W) inputs, got shape {input_shape}")
        c, h, w = input_shape
        if min(h, w) < 4:
            raise ValueError(f"model=cnn needs images of at least 4x4, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 2 * channels * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.pixels = h * w

    def vectorize_auto(self, device: torch.device) -> bool:  # noqa: ARG002 - measured on CPU only
        """Whether ``runtime.vectorize=auto`` trains a round's clients together: where
        ``simulations/bench/bench_vectorized_models.py`` measured it faster, on images up
        to 16x16 (the smaller, the more a step is per-operation overhead that one batched
        operation saves); at 28x28 (Fashion-MNIST) and 32x32x3 the grouped convolutions
        are slower than one client at a time."""
        return self.pixels <= VECTORIZE_MAX_PIXELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
