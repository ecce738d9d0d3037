"""What a membership-inference attacker observes: logits, and the statistics made of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import model_state

__all__ = ["logit_confidence", "logits_of", "loss_score"]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for every image (eval mode, restored after).

    Shape: ``(N, C, H, W)`` -> ``(N, K)`` float32.
    """
    out = []
    with model_state(model):
        for start in range(0, len(x), batch_size):
            out.append(model(x[start : start + batch_size]).float())
    return torch.cat(out)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logit-scaled confidence of LiRA: ``φ(p) = log(p_y / (1 − p_y))``.

    Carlini et al. (2022, Sec. IV-B) scale the true-class probability this way because φ of a
    model's confidence is close to normally distributed over training runs, which is what the
    Gaussian likelihood ratio assumes. Computed without forming ``p``:

        φ = z_y − log Σ_{j≠y} exp(z_j),

    which stays finite where ``p_y`` rounds to 1 in float32.

    Shape: logits ``(..., K)``, labels ``(...)`` -> ``(...)`` float64.
    """
    z = logits.double()
    zy = z.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    others = z.scatter(-1, labels.long().unsqueeze(-1), float("-inf"))
    return zy - torch.logsumexp(others, dim=-1)


def loss_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Minus the cross-entropy loss, ``log p_y``: the loss-threshold attack's score (higher
    means "member"; Yeom et al. 2018).

    Shape: logits ``(..., K)``, labels ``(...)`` -> ``(...)`` float64.
    """
    z = logits.double()
    return -F.cross_entropy(
        z.reshape(-1, z.shape[-1]), labels.long().reshape(-1), reduction="none"
    ).reshape(labels.shape)
