"""Linear and multi-layer perceptron nets; both flatten whatever input shape they are given."""

import math

from torch import nn

from models.catalog.base import NoArgs
from models.catalog.nets import MLPArgs
from worker.nets.constraints import constrain, norm_layer

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def linear(args: NoArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


def mlp(args: MLPArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Flatten → [Linear → norm → activation → dropout] per hidden width → Linear.

    `orthogonal` constrains the hidden layers' weights, `spectral_norm` every layer's.
    """
    hidden_constraint = "spectral" if args.spectral_norm else args.orthogonal
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in args.hidden:
        dense = nn.Linear(width, hidden, bias=args.norm != "batch")
        layers += [constrain(dense, hidden_constraint), norm_layer(args.norm, hidden)]
        layers.append(ACTIVATIONS[args.activation]())
        if args.dropout > 0:
            layers.append(nn.Dropout(args.dropout))
        width = hidden
    head = nn.Linear(width, num_outputs)
    layers.append(constrain(head, "spectral" if args.spectral_norm else "none"))
    return nn.Sequential(*[layer for layer in layers if not isinstance(layer, nn.Identity)])
