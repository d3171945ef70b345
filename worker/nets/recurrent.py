"""Recurrent nets over (length, features) sequences, read out at the last step.

`cell: lstm | gru | rnn` use torch's fused modules. A plain RNN with `orthogonal` set runs our
own loop instead, h_t = φ(W_x x_t + b + W_h h_{t−1}), because its recurrent matrix W_h is a
parametrization (worker/nets/constraints.py) and torch's fused RNN reads its weights from a flat
buffer that a parametrization does not update. The orthogonal matrix is computed once per
forward pass (`parametrize.cached`), not once per time step.
"""

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.catalog.nets import RNNArgs
from worker.nets.constraints import constrain

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def sequence_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ValueError(f"{name} needs sequence input (length, features), got {input_shape}")
    return input_shape  # type: ignore[return-value]


class OrthogonalRNNLayer(nn.Module):
    def __init__(self, inputs: int, hidden: int, nonlinearity: str, orthogonal: str):
        super().__init__()
        self.input = nn.Linear(inputs, hidden)
        self.recurrent = constrain(nn.Linear(hidden, hidden, bias=False), orthogonal)
        self.activation = torch.tanh if nonlinearity == "tanh" else torch.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.input(x)  # (batch, length, hidden), all steps at once
        h = torch.zeros_like(projected[:, 0])
        outputs = []
        with parametrize.cached():
            for t in range(projected.shape[1]):
                h = self.activation(projected[:, t] + self.recurrent(h))
                outputs.append(h)
        return torch.stack(outputs, dim=1)


class RecurrentNet(nn.Module):
    def __init__(self, args: RNNArgs, features: int, num_outputs: int):
        super().__init__()
        if args.orthogonal != "none":
            layers: list[nn.Module] = []
            for i in range(args.layers):
                if i and args.dropout:
                    layers.append(nn.Dropout(args.dropout))
                inputs = features if i == 0 else args.hidden
                layers.append(
                    OrthogonalRNNLayer(inputs, args.hidden, args.nonlinearity, args.orthogonal)
                )
            self.body: nn.Module = nn.Sequential(*layers)
        else:
            extra = {"nonlinearity": args.nonlinearity} if args.cell == "rnn" else {}
            self.body = CELLS[args.cell](
                features,
                args.hidden,
                num_layers=args.layers,
                dropout=args.dropout if args.layers > 1 else 0.0,
                batch_first=True,
                **extra,
            )
        self.head = nn.Linear(args.hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, tuple):  # torch's RNN modules return (outputs, state)
            out = out[0]
        return self.head(out[:, -1])


def rnn(args: RNNArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    _, features = sequence_shape("rnn", input_shape)
    return RecurrentNet(args, features, num_outputs)
