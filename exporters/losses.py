"""Losses of the LIDA recipe.

* :class:`CenterLoss` -- attribution loss ``L_A = sum_i ||x_i - c_{y_i}||^2`` (averaged over the
  batch here, so its scale does not depend on the batch size), with the class centers updated
  once per mini-batch as in Wen et al. (the paper's "dynamically updated within each
  mini-batch"): ``c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)``. The centers are
  buffers, not parameters: the loss pulls embeddings to fixed centers, then the centers move.
  A class seen for the first time starts at the mean of its embeddings in that batch.
* :func:`detection_loss` -- real-prototype contrastive loss with temperature ``tau``:
  ``L_D = -mean_r log sigma(sim(x_r, p_r)/tau) - mean_f log(1 - sigma(sim(x_f, p_r)/tau))``.
* :func:`lida_loss` -- ``L = L_A + lambda * L_D`` (lambda = 0.9, the paper's value).
* :class:`CosineClassifier` + cross-entropy -- the pre-training proxy loss and the adaptation
  ablation the paper compares against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAMBDA = 0.9


class CenterLoss(nn.Module):
    def __init__(self, n_classes: int, dim: int, alpha: float = 0.5):
        super().__init__()
        self.alpha = alpha
        self.register_buffer("centers", torch.zeros(n_classes, dim))
        self.register_buffer("seen", torch.zeros(n_classes, dtype=torch.bool))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss for this batch (centers held fixed); call :meth:`update` after the step."""
        with torch.no_grad():
            for j in torch.unique(y[~self.seen[y]]):
                self.centers[j] = x[y == j].mean(0)
                self.seen[j] = True
        c = self.centers[y]
        return ((x - c) ** 2).sum(1).mean()

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.detach()
        for j in torch.unique(y):
            m = y == j
            delta = (self.centers[j] - x[m]).sum(0) / (1.0 + m.sum())
            self.centers[j] -= self.alpha * delta


def detection_loss(x: torch.Tensor, is_real: torch.Tensor, prototype: torch.Tensor, tau: float) -> torch.Tensor:
    """``L_D`` on L2-normalised embeddings ``x``; ``prototype`` is normalised here."""
    p = F.normalize(prototype, dim=0)
    logits = (x @ p) / tau
    parts = []
    if is_real.any():
        parts.append(-F.logsigmoid(logits[is_real]).mean())
    if (~is_real).any():
        parts.append(-F.logsigmoid(-logits[~is_real]).mean())  # log(1 - sigma(z)) = logsigmoid(-z)
    return sum(parts) if parts else logits.sum() * 0.0


def lida_loss(l_a: torch.Tensor, l_d: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    return l_a + lam * l_d


class CosineClassifier(nn.Module):
    """Logits ``s * cos(x, w_j)``: a softmax head on the unit sphere the retrieval uses."""

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()
