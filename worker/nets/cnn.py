"""A plain convolutional net with a choice of normalization, for image inputs."""

from torch import nn

from models.catalog.nets import CNNArgs
from worker.nets.basic import ACTIVATIONS
from worker.nets.constraints import constrain, norm_layer


def image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image input (channels, height, width), got {input_shape}")
    return input_shape  # type: ignore[return-value]


def cnn(args: CNNArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """[conv → norm → activation → 2×2 max-pool]* → global average pool → dropout → linear.

    Convolutions keep the size ("same" padding); a block pools only while the image is at
    least 2×2, so the net fits 8×8 digits and 28×28 MNIST alike.
    """
    channels, height, width = image_shape("cnn", input_shape)
    layers: list[nn.Module] = []
    for filters in args.channels:
        conv = nn.Conv2d(
            channels,
            filters,
            args.kernel_size,
            padding=args.kernel_size // 2,
            bias=args.norm != "batch",
        )
        layers += [
            constrain(conv, "spectral" if args.spectral_norm else "none"),
            norm_layer(args.norm, filters, image=True),
            ACTIVATIONS[args.activation](),
        ]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if args.dropout > 0:
        layers.append(nn.Dropout(args.dropout))
    layers.append(nn.Linear(channels, num_outputs))
    return nn.Sequential(*[layer for layer in layers if not isinstance(layer, nn.Identity)])
