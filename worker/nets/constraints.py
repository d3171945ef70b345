"""Weight constraints as parametrizations: orthogonal (four maps) and spectral normalization.

torch.nn.utils.parametrizations.orthogonal offers the matrix exponential, Cayley and Householder
maps. The QR map is ours: W = Q of the QR decomposition of an unconstrained matrix A, with the
signs of R's diagonal folded into Q so the map is continuous and Q(A) = A for orthogonal A
(torch's `orthogonal` has no QR map). All four keep W (semi-)orthogonal at every step, so an
RNN's recurrent matrix neither explodes nor vanishes the hidden state.
"""

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize


class QROrthogonal(nn.Module):
    """A ↦ Q·diag(sign(diag R)), A = QR; wide matrices through their transpose."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        wide = a.shape[-2] < a.shape[-1]
        m = a.mT if wide else a
        q, r = torch.linalg.qr(m)
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        return q.mT if wide else q


def constrain(module: nn.Module, kind: str, name: str = "weight") -> nn.Module:
    """Parametrize `module.<name>`: "qr", "cayley", "householder", "matrix_exp", "spectral",
    or "none"."""
    if kind == "none":
        return module
    if kind == "spectral":
        return parametrizations.spectral_norm(module, name=name)
    if kind == "qr":
        parametrize.register_parametrization(module, name, QROrthogonal())
        return module
    return parametrizations.orthogonal(module, name=name, orthogonal_map=kind)


def norm_layer(kind: str, features: int, *, image: bool = False) -> nn.Module:
    """batch / layer / none; for images "layer" is GroupNorm with one group (normalizes each
    example over channels and pixels)."""
    if kind == "batch":
        return nn.BatchNorm2d(features) if image else nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.GroupNorm(1, features) if image else nn.LayerNorm(features)
    return nn.Identity()
