"""Spectral signatures (Tran et al. 2018): poisoned examples stand out along the top singular
vector of a class's centred representations."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data import ImageDataset
from .detection import Detection
from .features import penultimate

__all__ = ["spectral_signatures"]


def spectral_signatures(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    eps: float = 0.1,
    batch_size: int = 1000,
) -> Detection:
    """Flag the examples with the largest outlier scores along each class's top singular vector.

    Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018. For each class
    ``c`` with representations ``R`` (the input of the final linear layer), centred by the class
    mean ``R̄``, let ``v`` be the top right singular vector of ``R − R̄``; every example scores

        τ_i = ((R_i − R̄) · v)²,

    and the ``⌈1.5 · eps · n_c⌉`` highest scores of the class are removed, ``eps`` being an upper
    bound on the fraction of the class that is poisoned.

    This is a filter, not a test: it removes ``1.5·eps`` of every class whether or not the class
    is poisoned (on clean data too), and it finds the poison only when the poison's shift,
    weighted by its share ``p`` of the class, carries more variance than any clean direction
    (``p(1 − p)·‖μ_poison − μ_clean‖² > λ_max`` of the clean covariance; Tran et al., Lemma 3.1).

    Args:
        model: the model trained on ``dataset``.
        dataset: the training set to inspect.
        eps: upper bound on the poisoned fraction of a class, in (0, 2/3].
        batch_size: images per forward pass.

    Returns:
        A :class:`Detection`; ``scores`` holds τ normalised by the class's median τ.
    """
    if not 0.0 < eps <= 2.0 / 3.0:
        raise ValueError(
            f"Invalid eps: {eps!r} (must be in (0, 2/3]: 1.5·eps of a class is removed)"
        )
    feats = penultimate(model, dataset.images, batch_size=batch_size).double()
    n = len(dataset)
    flagged = torch.zeros(n, dtype=torch.bool)
    scores = torch.zeros(n)
    classes = []
    for c in range(dataset.num_classes):
        idx = (dataset.labels == c).nonzero().flatten()
        info: dict[str, object] = {"class": c, "size": len(idx), "flagged": 0}
        if len(idx) < 3:
            classes.append({**info, "skipped": "fewer than 3 examples"})
            continue
        r = feats[idx]
        centred = r - r.mean(0, keepdim=True)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        tau = (centred @ vh[0]) ** 2
        share = float(s[0] ** 2 / (s**2).sum().clamp_min(1e-12))
        scores[idx] = (tau / tau.median().clamp_min(1e-12)).float()
        # round() first: 1.5 * 0.1 * 300 is 45.000000000000004 in floating point
        k = min(math.ceil(round(1.5 * eps * len(idx), 9)), len(idx))
        if k:
            top = idx[tau.topk(k).indices]
            flagged[top] = True
        info.update({"top_direction_variance_share": share, "flagged": k})
        classes.append(info)
    return Detection(
        method="spectral-signatures",
        flagged=flagged,
        scores=scores,
        classes=classes,
        params={"eps": eps},
    )
