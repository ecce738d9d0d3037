"""What a served model reveals, and how a client turns it back into scores an attack can use.

Server side, :class:`OutputSpec` encodes the model's logits as OIP v2 output tensors in one of
four modes, optionally rounded to ``decimals`` decimal places:

=================  ==========================================================================
``logits``         ``logits`` FP32 [N, C]
``probabilities``  ``probabilities`` FP32 [N, C] (softmax)
``top-k``          ``top_k_labels`` INT64 [N, k] and ``top_k_probabilities`` FP32 [N, k]
``label``          ``label`` INT64 [N]
=================  ==========================================================================

Client side, :func:`scores` turns a response back into (N, C) scores that the attack contract
accepts as logits (``attacks.base.check_logits`` rejects rows that look like probabilities):

- logits: as sent.
- probabilities: log p, with p floored at :data:`FLOOR` (a class rounded to 0 has log p ≈ −87).
  log p differs from the logits by one constant per row, so argmax and every margin
  z_i − z_j are unchanged: margin-loss attacks (Square, sparse-rs) see exactly what they would
  see locally.
- top-k: log p for the k classes sent; every hidden class gets the same estimate,

      log min(p_(k), max(1 − Σ_top-k p, FLOOR) / (C − k)),

  the mass left spread evenly over the hidden classes, capped at the smallest probability sent
  (a hidden class is never ranked above a shown one). For k ≥ 2 the untargeted margin
  max_{i≠y} z_i − z_y only involves classes that were sent, as long as y is in the top k (and
  once it is not, the example is already misclassified), so Square and sparse-rs are unchanged.
- label: 0 for the predicted class and −1 for the others ("one-hot minus one"): the argmax is the
  label, which is all that decision-based attacks (HopSkipJump, RayS) read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MODES = ("logits", "probabilities", "top-k", "label")
"""The output modes a server can be configured with."""

FLOOR = float(np.finfo(np.float32).tiny)
"""Smallest probability a client uses in ``log p`` (about 1.2e-38, so log p ≥ −87.3)."""
FLOOR_LOG = math.log(FLOOR)
"""``log FLOOR``: the score of a class whose probability was rounded to 0 (about −87.3)."""


def output_names(mode: str) -> tuple[str, ...]:
    """The output tensor names of a mode."""
    return {
        "logits": ("logits",),
        "probabilities": ("probabilities",),
        "top-k": ("top_k_labels", "top_k_probabilities"),
        "label": ("label",),
    }[mode]


def mode_of(names: set[str] | list[str] | tuple[str, ...]) -> str:
    """The output mode whose tensors are ``names`` (from a server's metadata)."""
    found = set(names)
    for mode in MODES:
        if found == set(output_names(mode)):
            return mode
    raise ValueError(
        f"The server's outputs {sorted(found)} match no output mode (known: {', '.join(MODES)})"
    )


@dataclass(frozen=True)
class OutputSpec:
    """The response a server sends: the mode, k for top-k, and rounding.

    Args:
        mode: ``logits``, ``probabilities``, ``top-k`` or ``label``.
        top_k: k for ``top-k`` (1 ≤ k ≤ C).
        decimals: round floats to this many decimal places (None: full float32).
    """

    mode: str = "probabilities"
    top_k: int = 5
    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Invalid output mode: {self.mode!r} (allowed: {', '.join(MODES)})")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"Invalid top_k: {self.top_k!r} (must be an integer >= 1)")
        if self.decimals is not None and (
            isinstance(self.decimals, bool)
            or not isinstance(self.decimals, int)
            or not 0 <= self.decimals <= 12
        ):
            raise ValueError(f"Invalid decimals: {self.decimals!r} (must be 0..12 or None)")

    def check_classes(self, num_classes: int) -> None:
        """Raise when top-k asks for more classes than the model has."""
        if self.mode == "top-k" and self.top_k > num_classes:
            raise ValueError(f"Invalid top_k: {self.top_k} (the model has {num_classes} classes)")

    def metadata(self, num_classes: int) -> list[dict[str, Any]]:
        """OIP v2 output metadata (name, datatype, shape with −1 for the batch)."""
        if self.mode == "top-k":
            return [
                {"name": "top_k_labels", "datatype": "INT64", "shape": [-1, self.top_k]},
                {"name": "top_k_probabilities", "datatype": "FP32", "shape": [-1, self.top_k]},
            ]
        if self.mode == "label":
            return [{"name": "label", "datatype": "INT64", "shape": [-1]}]
        return [{"name": self.mode, "datatype": "FP32", "shape": [-1, num_classes]}]

    def _floats(self, values: torch.Tensor) -> list[float]:
        array = values.detach().to(torch.float64).cpu().numpy()
        if self.decimals is not None:
            # Rounded in float64, so the JSON shows the short decimal (0.1235, not 0.12349999).
            array = np.round(array, self.decimals)
        return array.ravel().tolist()

    def encode(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        """The OIP v2 output tensors for ``logits`` (N, C)."""
        n, c = logits.shape
        if self.mode == "logits":
            return [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": [n, c],
                    "data": self._floats(logits),
                }
            ]
        if self.mode == "label":
            labels = logits.argmax(1).cpu().tolist()
            return [{"name": "label", "datatype": "INT64", "shape": [n], "data": labels}]
        p = logits.float().softmax(1)
        if self.mode == "probabilities":
            return [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [n, c],
                    "data": self._floats(p),
                }
            ]
        k = min(self.top_k, c)
        top = p.topk(k, dim=1)
        return [
            {
                "name": "top_k_labels",
                "datatype": "INT64",
                "shape": [n, k],
                "data": top.indices.cpu().ravel().tolist(),
            },
            {
                "name": "top_k_probabilities",
                "datatype": "FP32",
                "shape": [n, k],
                "data": self._floats(top.values),
            },
        ]


def scores(
    outputs: dict[str, np.ndarray], mode: str, num_classes: int, like: torch.Tensor
) -> torch.Tensor:
    """(N, C) scores an attack can treat as logits, from a response's outputs (see the module).

    Args:
        outputs: output name -> array, from :func:`multirobust.api.protocol.parse_infer_response`.
        mode: the server's output mode.
        num_classes: C.
        like: the scores take its dtype and device.
    """
    names = output_names(mode)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise ValueError(f"The server's response lacks the output(s) {', '.join(missing)}")
    dtype, device = like.dtype, like.device
    if mode == "logits":
        z = torch.as_tensor(outputs["logits"], dtype=torch.float64)
        return z.to(dtype=dtype, device=device)
    if mode == "probabilities":
        p = torch.as_tensor(outputs["probabilities"], dtype=torch.float64)
        return p.clamp_min(FLOOR).log().to(dtype=dtype, device=device)
    if mode == "label":
        labels = torch.as_tensor(outputs["label"], dtype=torch.long).view(-1)
        _check_labels(labels, num_classes)
        one_hot = torch.nn.functional.one_hot(labels, num_classes)
        return (one_hot.to(torch.float64) - 1).to(dtype=dtype, device=device)
    labels = torch.as_tensor(outputs["top_k_labels"], dtype=torch.long)
    p = torch.as_tensor(outputs["top_k_probabilities"], dtype=torch.float64)
    if labels.dim() != 2 or labels.shape != p.shape:
        raise ValueError("The server's top-k labels and probabilities differ in shape")
    _check_labels(labels, num_classes)
    n, k = labels.shape
    if k < num_classes:
        left = (1 - p.sum(1)).clamp_min(FLOOR) / (num_classes - k)
        hidden = torch.minimum(left, p.min(1).values)
    else:
        hidden = torch.full((n,), FLOOR, dtype=torch.float64)
    full = hidden.unsqueeze(1).expand(n, num_classes).clone()
    full.scatter_(1, labels, p)
    return full.clamp_min(FLOOR).log().to(dtype=dtype, device=device)


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"The server returned labels outside 0..{num_classes - 1}: "
            f"{int(labels.min())}..{int(labels.max())}"
        )
