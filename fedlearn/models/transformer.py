"""A small causal character Transformer for next-character prediction."""

from __future__ import annotations

import torch
from torch import nn


class Transformer(nn.Module):
    """Decoder-only Transformer (pre-norm, GELU) read at the last position.

    Token and learned position embeddings, ``layers`` self-attention blocks
    under a causal mask (each position sees only earlier characters, as in a
    character language model), a final layer norm and a dense layer to the
    vocabulary.

    Parameters
    ----------
    input_shape : tuple[int]
        ``(seq_len,)`` from the dataset: the number of learned positions.
    num_classes : int
        Vocabulary size from the dataset; inputs are indices below it.
    width : int
        Model width (embedding size); divisible by ``heads``.
    heads : int
        Attention heads per block.
    layers : int
        Transformer blocks.
    ff_mult : int
        Width of each block's feed-forward layer, as a multiple of ``width``.
    dropout : float
        Dropout in attention and feed-forward layers.
    """

    KINDS = ("text",)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 128,
        heads: int = 4,
        layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"model=transformer needs (seq_len,) inputs, got shape {input_shape}")
        if heads < 1 or width % heads:
            raise ValueError(f"model.width={width} must be a multiple of model.heads={heads}")
        if layers < 1 or ff_mult < 1:
            raise ValueError(f"model.layers={layers} and model.ff_mult={ff_mult} must be >= 1")
        seq_len = input_shape[0]
        self.tok = nn.Embedding(num_classes, width)
        self.pos = nn.Embedding(seq_len, width)
        block = nn.TransformerEncoderLayer(
            width,
            heads,
            ff_mult * width,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        # Not a weight: kept out of the state dict so it never travels to clients.
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Datasets may store characters as uint8 to save memory.
        x = x.long()
        t = x.shape[1]
        if t > self.pos.num_embeddings:
            raise ValueError(f"model=transformer has {self.pos.num_embeddings} positions, got {t}")
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h[:, -1]))
