"""Architectures by spec name (the spec's `model`). Input shape and output size come from data."""

from collections.abc import Callable
from typing import Any

from torch import nn

from worker.nets.basic import linear, mlp
from worker.nets.cnn import cnn
from worker.nets.recurrent import rnn
from worker.nets.resnet import resnet
from worker.nets.seed_cnn import seed_cnn
from worker.nets.transformer import transformer

NetBuilder = Callable[[Any, tuple[int, ...], int], nn.Module]

NETS: dict[str, NetBuilder] = {
    "linear": linear,
    "mlp": mlp,
    "seed_cnn": seed_cnn,
    "cnn": cnn,
    "resnet": resnet,
    "rnn": rnn,
    "transformer": transformer,
}


def build_net(spec: Any, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return NETS[spec.name](spec.args, input_shape, num_outputs)
