"""Weight initialization by spec name (`init`), applied after the net is built.

Every weight with two or more dimensions (linear and convolution weights, recurrent matrices,
attention projections; convolution kernels are treated as (out, in·k·k) matrices) gets the
scheme, and the biases of those modules are zeroed. Normalization scales and biases keep their
defaults (1 and 0). Parametrized weights (orthogonal layers) initialize their original tensor.

- default: PyTorch's per-module defaults.
- zeros: every parameter 0 (002's hand calculations start from a = b = 0).
- orthogonal: Q of the QR decomposition of a Gaussian matrix, with R's diagonal signs folded
  in so Q is uniformly distributed (Saxe et al. 2014; torch.nn.init.orthogonal_).
- svd: U·Vᵀ from the SVD of a Gaussian matrix — the orthogonal matrix nearest to it.
- xavier_uniform / xavier_normal (Glorot & Bengio 2010), kaiming_uniform / kaiming_normal
  (He et al. 2015, for ReLU): torch.nn.init.
"""

from collections.abc import Callable

import torch
from torch import nn


def svd_orthogonal_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: U·Vᵀ of a Gaussian matrix of the tensor's (rows, rest) shape."""
    rows = tensor.shape[0]
    gaussian = torch.randn(rows, tensor.numel() // rows)
    u, _, vh = torch.linalg.svd(gaussian, full_matrices=False)
    with torch.no_grad():
        tensor.copy_((u @ vh).view_as(tensor))
    return tensor


def _kaiming_uniform(t: torch.Tensor) -> torch.Tensor:
    return nn.init.kaiming_uniform_(t, nonlinearity="relu")


def _kaiming_normal(t: torch.Tensor) -> torch.Tensor:
    return nn.init.kaiming_normal_(t, nonlinearity="relu")


WEIGHT_INITS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zeros": nn.init.zeros_,
    "orthogonal": nn.init.orthogonal_,
    "svd": svd_orthogonal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
}


def _weights(net: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """(module, name, tensor) for every weight of ≥ 2 dimensions, the original tensor of
    parametrized ones."""
    found = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.ndim >= 2:
                found.append((module, name, param))
    return found


def apply_init(net: nn.Module, scheme: str) -> None:
    if scheme == "default":
        return
    if scheme == "zeros":
        with torch.no_grad():
            for param in net.parameters():
                param.zero_()
        return
    fill = WEIGHT_INITS[scheme]
    with torch.no_grad():
        for module, _, param in _weights(net):
            fill(param)
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()


INITIALIZERS = ("default", *WEIGHT_INITS)
