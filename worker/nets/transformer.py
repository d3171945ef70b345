"""A tiny pre-norm Transformer encoder (Vaswani et al. 2017; pre-norm as in GPT-2) over
(length, features) sequences: a linear token projection (an embedding when the features are
one-hot), learned positions, blocks of self-attention and a GELU feed-forward, each inside a
residual with layer norm in front, a final layer norm, and a linear head on the last position.

Written out rather than nn.TransformerEncoderLayer so that `norm: none` can remove the layer
norms (torch's layer reads their eps on its fast path).
"""

import torch
from torch import nn

from models.catalog.nets import TransformerArgs
from worker.nets.recurrent import sequence_shape


def _norm(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width) if kind == "layer" else nn.Identity()


class Block(nn.Module):
    def __init__(self, args: TransformerArgs):
        super().__init__()
        d = args.d_model
        self.norm1 = _norm(args.norm, d)
        self.attention = nn.MultiheadAttention(
            d, args.heads, dropout=args.dropout, batch_first=True
        )
        self.norm2 = _norm(args.norm, d)
        self.feed_forward = nn.Sequential(
            nn.Linear(d, args.ff_mult * d),
            nn.GELU(),
            nn.Linear(args.ff_mult * d, d),
            nn.Dropout(args.dropout),
        )
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attention(h, h, h, need_weights=False)[0])
        return x + self.feed_forward(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, args: TransformerArgs, length: int, features: int, num_outputs: int):
        super().__init__()
        self.embed = nn.Linear(features, args.d_model)
        self.position = nn.Parameter(torch.randn(1, length, args.d_model) * 0.02)
        self.blocks = nn.Sequential(*[Block(args) for _ in range(args.layers)])
        self.norm = _norm(args.norm, args.d_model)
        self.head = nn.Linear(args.d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(x) + self.position[:, : x.shape[1]])
        return self.head(self.norm(h[:, -1]))


def transformer(args: TransformerArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    length, features = sequence_shape("transformer", input_shape)
    return TinyTransformer(args, length, features, num_outputs)
