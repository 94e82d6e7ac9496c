"""The LEAF / FedAvg-paper character LSTM for next-character prediction.

McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data" (2017) and LEAF (Caldas et al., 2018): an 8-dimensional
character embedding, two LSTM layers of 256 units and a dense layer to the
vocabulary, read at the last position.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTM(nn.Module):
    """Character LSTM: embedding -> stacked LSTM -> logits of the next character.

    Parameters
    ----------
    input_shape : tuple[int]
        ``(seq_len,)`` from the dataset (any length works).
    num_classes : int
        Vocabulary size from the dataset; inputs are indices below it.
    embed_dim : int
        Width of the character embedding (LEAF: 8).
    hidden : int
        Units per LSTM layer (LEAF: 256).
    layers : int
        Stacked LSTM layers (LEAF: 2).
    dropout : float
        Dropout between LSTM layers.
    """

    KINDS = ("text",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        embed_dim: int = 8,
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"model=lstm needs (seq_len,) inputs, got shape {input_shape}")
        for name, value in (("embed_dim", embed_dim), ("hidden", hidden), ("layers", layers)):
            if value < 1:
                raise ValueError(f"model.{name} must be at least 1, got {value}")
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Datasets may store characters as uint8 to save memory.
        out, _ = self.lstm(self.embed(x.long()))
        return self.head(out[:, -1])
