"""What a builder may need beyond its param groups, learning rate and args."""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BuildContext:
    net: nn.Module
    decoupled: bool  # the spec's weight decay resolved to decoupled (AdamW style)
