"""A small ResNet (He et al. 2016, https://arxiv.org/abs/1512.03385), CIFAR layout: a 3×3 stem,
stages of basic blocks (two 3×3 convolutions and an identity or 1×1 shortcut), the width doubling
and the resolution halving from one stage to the next, global average pooling, a linear head."""

import torch
from torch import nn

from models.catalog.nets import ResNetArgs
from worker.nets.cnn import image_shape
from worker.nets.constraints import norm_layer


def conv3x3(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = conv3x3(inputs, outputs, stride)
        self.norm1 = norm_layer(norm, outputs, image=True)
        self.conv2 = conv3x3(outputs, outputs)
        self.norm2 = norm_layer(norm, outputs, image=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                norm_layer(norm, outputs, image=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet(args: ResNetArgs, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    channels, height, width = image_shape("resnet", input_shape)
    layers: list[nn.Module] = [
        conv3x3(channels, args.width),
        norm_layer(args.norm, args.width, image=True),
        nn.ReLU(),
    ]
    inputs, size = args.width, min(height, width)
    for stage, blocks in enumerate(args.blocks):
        outputs = args.width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 and size >= 2 else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(BasicBlock(inputs, outputs, stride, args.norm))
            inputs = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, num_outputs)]
    return nn.Sequential(*layers)
