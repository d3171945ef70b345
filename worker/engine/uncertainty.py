"""Calibration and predictive uncertainty for classification: ECE, NLL, predictive entropy, and
Monte Carlo dropout.

Written here rather than taken from torchmetrics (not a dependency): each is a few tensor lines,
and accumulating over evaluation batches on the device keeps the loop free of host syncs.

- Expected calibration error (Guo et al. 2017, https://arxiv.org/abs/1706.04599): predictions
  binned by confidence (max probability) into 15 equal-width bins on [0, 1];
  ECE = Σ_b (|B_b| / n) · |accuracy(B_b) − confidence(B_b)|.
- NLL: −(1/n) Σ log p(y_i | x_i), the cross-entropy of the true class.
- Predictive entropy: (1/n) Σ_i H(p_i), H(p) = −Σ_c p_c log p_c (nats).
- MC dropout (Gal & Ghahramani 2016, https://arxiv.org/abs/1506.02142): T forward passes with
  dropout active, p̄ = (1/T) Σ_t softmax(f_t(x)); the metrics above computed on p̄, plus the
  mutual information H(p̄) − (1/T) Σ_t H(p_t), the part of the uncertainty that comes from
  the weights.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

ECE_BINS = 15


class Calibration:
    """Sums over evaluation batches, on the device; `compute` returns tensors (no sync)."""

    def __init__(self, device: torch.device, bins: int = ECE_BINS) -> None:
        self.bins = bins
        self.count = torch.zeros(bins, device=device)
        self.confidence = torch.zeros(bins, device=device)
        self.correct = torch.zeros(bins, device=device)
        self.nll = torch.zeros((), device=device)
        self.entropy = torch.zeros((), device=device)
        self.n = 0

    def update_probs(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        probs = probs.float()
        confidence, predicted = probs.max(dim=1)
        # bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 cannot occur
        index = (confidence * self.bins).ceil().long().clamp(1, self.bins) - 1
        ones = torch.ones_like(confidence)
        self.count.index_add_(0, index, ones)
        self.confidence.index_add_(0, index, confidence)
        self.correct.index_add_(0, index, (predicted == labels).float())
        picked = probs.gather(1, labels[:, None])[:, 0]
        self.nll -= picked.clamp_min(torch.finfo(probs.dtype).tiny).log().sum()
        self.entropy += entropy(probs).sum()
        self.n += len(labels)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.update_probs(logits.float().softmax(dim=1), labels)

    def compute(self, prefix: str = "val_") -> dict[str, torch.Tensor]:
        n = max(self.n, 1)
        gaps = (self.correct - self.confidence).abs().sum() / n
        return {
            f"{prefix}ece": gaps,
            f"{prefix}nll": self.nll / n,
            f"{prefix}entropy": self.entropy / n,
        }


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) per row, in nats; 0·log 0 = 0."""
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim=1)


def dropout_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@torch.no_grad()
def mc_dropout_metrics(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    passes: int,
    *,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Predictive mean over `passes` stochastic forward passes with only the dropout layers in
    training mode (batch norm and the rest stay in eval). Metrics are named `mc_val_*`."""
    dropouts = dropout_modules(net)
    if not dropouts:
        raise ValueError("eval.mc_dropout needs a model with dropout (e.g. mlp args.dropout > 0)")
    was_training = net.training
    net.eval()
    for module in dropouts:
        module.train()
    calibration = Calibration(x.device)
    correct = torch.zeros((), device=x.device)
    mutual_information = torch.zeros((), device=x.device)
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            mean = torch.zeros((), device=x.device)
            expected_entropy = torch.zeros(len(xb), device=x.device)
            for _ in range(passes):
                with autocast():
                    probs = net(xb).float().softmax(dim=1)
                mean = mean + probs / passes
                expected_entropy += entropy(probs) / passes
            calibration.update_probs(mean, yb)
            correct += (mean.argmax(dim=1) == yb).sum()
            mutual_information += (entropy(mean) - expected_entropy).sum()
    finally:
        net.train(was_training)
    metrics = calibration.compute(prefix="mc_val_")
    metrics["mc_val_acc"] = correct / len(x)
    metrics["mc_val_mutual_information"] = mutual_information / len(x)
    return metrics
