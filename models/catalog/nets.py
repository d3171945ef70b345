"""Network options (the schema half); the torch modules live in worker/nets/.

Input shapes come from the data: `mlp` flattens anything, `seed_cnn`, `cnn` and `resnet` need
images (channels, height, width), `rnn` and `transformer` need sequences (length, features).
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from models.catalog.base import Args, NoArgs

Width = Annotated[int, Field(ge=1, le=65_536)]
Norm = Literal["none", "batch", "layer"]
Orthogonal = Literal["none", "qr", "cayley", "householder", "matrix_exp"]
ORTHOGONAL_HELP = (
    "keep the weight orthogonal through a parametrization: qr (Q of an unconstrained matrix), "
    "cayley, householder or matrix_exp (torch.nn.utils.parametrizations.orthogonal)"
)


class MLPArgs(Args):
    hidden: list[Width] = Field(default=[128], max_length=16, description="hidden layer widths")
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Norm = Field("none", description="after each hidden linear layer, before activation")
    orthogonal: Orthogonal = Field("none", description="hidden layers: " + ORTHOGONAL_HELP)
    spectral_norm: bool = Field(False, description="spectral normalization of every layer")

    @model_validator(mode="after")
    def _one_constraint(self) -> "MLPArgs":
        if self.orthogonal != "none" and self.spectral_norm:
            raise ValueError("choose orthogonal or spectral_norm, not both")
        return self


class SeedCNNArgs(Args):
    """001's showdown network: Conv2D → MaxPool → Dropout → Dense."""

    filters: int = Field(32, ge=1, le=1024)
    kernel_size: int = Field(3, ge=1, le=7)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)


class CNNArgs(Args):
    """Conv blocks (conv → norm → activation → 2×2 max-pool while the image is large enough),
    then global average pooling, dropout and a linear classifier."""

    channels: list[Annotated[int, Field(ge=1, le=2048)]] = Field(
        [32, 64], min_length=1, max_length=8
    )
    kernel_size: Literal[1, 3, 5, 7] = 3
    norm: Norm = "batch"
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    spectral_norm: bool = False


class ResNetArgs(Args):
    """A small ResNet (He et al. 2016, CIFAR layout): a 3×3 stem, stages of basic blocks, the
    width doubling and the resolution halving from stage to stage."""

    width: int = Field(16, ge=1, le=512, description="channels of the first stage")
    blocks: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        [1, 1, 1], min_length=1, max_length=4, description="basic blocks per stage"
    )
    norm: Norm = "batch"


class RNNArgs(Args):
    """A recurrent net over (length, features) sequences, read out at the last step."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden: Width = 64
    layers: int = Field(1, ge=1, le=8)
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="cell rnn only")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between stacked layers")
    orthogonal: Orthogonal = Field(
        "none", description="recurrent weight of cell rnn: " + ORTHOGONAL_HELP
    )

    @model_validator(mode="after")
    def _orthogonal_rnn_only(self) -> "RNNArgs":
        if self.orthogonal != "none" and self.cell != "rnn":
            raise ValueError("orthogonal recurrent weights are offered for cell 'rnn' only")
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ValueError("nonlinearity applies to cell 'rnn' only")
        return self


class TransformerArgs(Args):
    """A tiny pre-norm Transformer encoder over (length, features) sequences: a linear token
    projection, learned positions, self-attention blocks, read out at the last position."""

    d_model: int = Field(64, ge=4, le=2048)
    heads: int = Field(4, ge=1, le=64)
    layers: int = Field(2, ge=1, le=24)
    ff_mult: int = Field(4, ge=1, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["layer", "none"] = "layer"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerArgs":
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        return self


NET_ARGS: dict[str, type[Args]] = {
    "linear": NoArgs,
    "mlp": MLPArgs,
    "seed_cnn": SeedCNNArgs,
    "cnn": CNNArgs,
    "resnet": ResNetArgs,
    "rnn": RNNArgs,
    "transformer": TransformerArgs,
}
