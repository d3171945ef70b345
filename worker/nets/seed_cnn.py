"""001's showdown network: Conv2D → MaxPooling → Dropout → Dense.

The Keras original is Conv2D(32, 3×3, relu) → MaxPooling2D(2×2) → Dropout(0.25) → Flatten →
Dense(10, softmax); the softmax lives in the loss here.
"""

import math

from torch import nn

from models.catalog.nets import SeedCNNArgs


def seed_cnn(args: SeedCNNArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"seed_cnn needs image input (channels, height, width), got {input_shape}")
    channels, height, width = input_shape
    if min(height, width) < args.kernel_size + 1:
        raise ValueError(f"images of {height}×{width} are too small for kernel {args.kernel_size}")
    conv_h, conv_w = height - args.kernel_size + 1, width - args.kernel_size + 1
    features = args.filters * math.prod((conv_h // 2, conv_w // 2))
    return nn.Sequential(
        nn.Conv2d(channels, args.filters, args.kernel_size),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(args.dropout),
        nn.Flatten(),
        nn.Linear(features, num_outputs),
    )
