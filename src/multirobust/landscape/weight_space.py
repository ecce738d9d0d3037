"""Loss surfaces in weight space with filter-normalised random directions (Li et al. 2018).

Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets":
draw a Gaussian direction d with the shape of the parameters θ and, for every filter i of every
weight tensor (a slice along the first, output dimension: a convolution's output channel, a
linear layer's output neuron),

    d_i ← d_i / ‖d_i‖ · ‖θ_i‖           (Frobenius norms),

so that a step along d changes every filter by the same fraction of its own size and the
picture is comparable across networks whose layers are scaled differently (ReLU networks are
invariant to such scalings). Parameters with one dimension or none (biases, the scales and
shifts of BatchNorm and other normalisation layers) get d = 0 by default; with
``bias_bn=True`` each is treated as a single filter (‖d‖ = ‖θ‖). The surface is

    L(α) = ℓ(θ + α·d)            (1-D) or
    L(α, β) = ℓ(θ + α·d + β·e)   (2-D, a second independent direction e),

the mean cross-entropy and the accuracy on the given examples, for α, β on a grid (−1…1 with
51 points per axis by default), with BatchNorm in eval mode (its running statistics unchanged).
Optionally the adversarial loss at each grid point: PGD under a threat on the first few examples.
Buffers are never perturbed. The model's mode, parameter flags, parameters and buffers are
restored exactly afterwards, also after an error (``models.model_state(restore_values=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks.pgd import pgd_perturb
from ..models import model_state
from ..threats import LpBall, Threat
from ._common import check_points, check_positive_int, cpu_generator, lp_threat

__all__ = ["WeightSurface", "filter_normalised_direction", "weight_surface"]


def filter_normalised_direction(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    bias_bn: bool = False,
) -> list[torch.Tensor]:
    """A random direction in parameter space, filter-normalised as in Li et al. (2018).

    Args:
        model: its parameters (``model.parameters()`` order) give the shapes and filter norms.
        generator: CPU generator for the Gaussian draw (else one seeded with ``seed``).
        seed: used when ``generator`` is None.
        bias_bn: also perturb one-dimensional parameters (biases, normalisation scales and
            shifts), each as one filter; by default their direction is 0.

    Returns:
        One tensor per parameter, same shape, device and dtype: for every parameter θ with
        ≥ 2 dimensions and every i, ‖d[i]‖ = ‖θ[i]‖ (filters of all-zero weights stay 0).
    """
    gen = cpu_generator(generator, seed)
    out: list[torch.Tensor] = []
    for p in model.parameters():
        w = p.detach()
        d = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.device, w.dtype)
        if w.dim() <= 1:
            if not bias_bn:
                d.zero_()
            elif w.numel():
                d.mul_(torch.linalg.vector_norm(w) / torch.linalg.vector_norm(d).clamp_min(1e-30))
        else:
            d_norm = torch.linalg.vector_norm(d.flatten(1), dim=1)
            w_norm = torch.linalg.vector_norm(w.flatten(1), dim=1)
            scale = w_norm / d_norm.clamp_min(1e-30)
            d.mul_(scale.reshape((-1,) + (1,) * (w.dim() - 1)))
        out.append(d)
    return out


@dataclass
class WeightSurface:
    """Loss and accuracy at θ + α·d (+ β·e) on a grid.

    Attributes:
        alpha: (G,) coefficients along the first direction.
        beta: (G,) along the second, or None for a 1-D curve.
        loss: (G,) or (G, G) mean cross-entropy on the examples, ``[i, j]`` at
            (alpha[i], beta[j]).
        accuracy: same shape, fraction classified correctly.
        adv_loss, adv_accuracy: same shape, under PGD on the first ``adv_examples``
            examples, or None.
        examples: number of examples behind ``loss``.
        settings: seed, threat, PGD budget, ``bias_bn``, JSON-ready.
    """

    alpha: np.ndarray
    beta: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    adv_loss: np.ndarray | None = None
    adv_accuracy: np.ndarray | None = None
    examples: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        """1 for a curve, 2 for a surface."""
        return 1 if self.beta is None else 2

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as a plain numpy array (loadable with ``allow_pickle=False``)."""
        out: dict[str, np.ndarray] = {
            "kind": np.array("weight-surface"),
            "alpha": self.alpha,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "examples": np.array(self.examples),
        }
        if self.beta is not None:
            out["beta"] = self.beta
        if self.adv_loss is not None and self.adv_accuracy is not None:
            out["adv_loss"] = self.adv_loss
            out["adv_accuracy"] = self.adv_accuracy
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, settings: dict[str, Any] | None = None) -> WeightSurface:
        """Rebuild from :meth:`arrays`."""
        keys = set(arrays.keys()) if hasattr(arrays, "keys") else set(arrays)
        return cls(
            alpha=np.asarray(arrays["alpha"]),
            beta=np.asarray(arrays["beta"]) if "beta" in keys else None,
            loss=np.asarray(arrays["loss"]),
            accuracy=np.asarray(arrays["accuracy"]),
            adv_loss=np.asarray(arrays["adv_loss"]) if "adv_loss" in keys else None,
            adv_accuracy=np.asarray(arrays["adv_accuracy"]) if "adv_accuracy" in keys else None,
            examples=int(arrays["examples"]),
            settings=dict(settings or {}),
        )

    def centre(self) -> tuple[float, float]:
        """(loss, accuracy) at the grid point closest to the trained weights (α = β = 0)."""
        i = int(np.abs(self.alpha).argmin())
        if self.beta is None:
            return float(self.loss[i]), float(self.accuracy[i])
        j = int(np.abs(self.beta).argmin())
        return float(self.loss[i, j]), float(self.accuracy[i, j])


def _data(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    elif hasattr(data, "images") and hasattr(data, "labels"):
        x, y = data.images, data.labels
    else:
        raise TypeError(
            f"data must be an ImageDataset or an (images, labels) pair, got {type(data).__name__}"
        )
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("data must hold torch tensors (images, labels)")
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"data is empty or its images and labels differ in number: {tuple(x.shape)} images, "
            f"{tuple(y.shape)} labels"
        )
    return x, y


def _check_span(span: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(s) for s in span)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid span: {span!r} (must be two numbers lo < hi)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"Invalid span: {span!r} (must be two finite numbers lo < hi)")
    return lo, hi


def _check_directions(
    model: nn.Module, directions: Sequence[Sequence[torch.Tensor]], dims: int
) -> None:
    if len(directions) != dims:
        raise ValueError(
            f"Expected {dims} direction(s) for a {dims}-D surface, got {len(directions)}"
        )
    shapes = [tuple(p.shape) for p in model.parameters()]
    for k, d in enumerate(directions):
        got = [tuple(t.shape) for t in d]
        if got != shapes:
            raise ValueError(
                f"Direction {k} does not match the model's parameters: {len(got)} tensors, "
                f"expected {len(shapes)} with shapes {shapes[:3]}..."
            )


def weight_surface(
    model: nn.Module,
    data: Any,
    *,
    dims: int = 2,
    points: int = 51,
    span: Sequence[float] = (-1.0, 1.0),
    directions: Sequence[Sequence[torch.Tensor]] | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    bias_bn: bool = False,
    batch_size: int = 1000,
    threat: Threat | str | None = None,
    adv_examples: int = 100,
    adv_steps: int = 10,
    progress: bool = True,
) -> WeightSurface:
    """The clean (and optionally adversarial) loss of ``model`` around its weights.

    See the module docstring for the definition (Li et al. 2018).

    Args:
        model: the network; restored exactly afterwards (mode, flags, parameters, buffers).
        data: an ``ImageDataset`` or ``(images, labels)``; images in [0, 1].
        dims: 1 (a curve along d) or 2 (a surface over d and e).
        points: G >= 2 grid points per axis.
        span: (lo, hi), the range of α and β (−1…1: up to a whole filter's norm each way).
        directions: ``dims`` directions (each one tensor per parameter) to use instead of
            drawing filter-normalised ones (for the same directions across runs or models).
        generator: CPU generator for the directions; else one seeded by ``seed``.
        seed: used when ``generator`` is None.
        bias_bn: also perturb biases and normalisation parameters.
        batch_size: examples per forward pass.
        threat: an ℓp ball: also record the adversarial loss and accuracy (PGD with
            ``adv_steps`` steps, random start, at every grid point) on the first
            ``adv_examples`` examples. G² · adv_steps forward-backward passes per example.
        adv_examples, adv_steps: that batch and budget.
        progress: progress bar over the grid points.

    Returns:
        A :class:`WeightSurface`.

    Shape:
        (G,) for ``dims=1``, (G, G) for ``dims=2``.
    """
    if dims not in (1, 2) or isinstance(dims, bool):
        raise ValueError(f"Invalid dims: {dims!r} (must be 1 or 2)")
    g = check_points("points", points)
    lo, hi = _check_span(span)
    check_positive_int("batch_size", batch_size)
    tm = lp_threat(threat, "weight_surface") if threat is not None else None
    if tm is not None:
        check_positive_int("adv_examples", adv_examples)
        check_positive_int("adv_steps", adv_steps)
    x_all, y_all = _data(data)
    params = list(model.parameters())
    if not params:
        raise ValueError("The model has no parameters: there is no weight space to draw")
    if directions is None:
        gen = cpu_generator(generator, seed)
        dirs = [
            filter_normalised_direction(model, generator=gen, bias_bn=bias_bn) for _ in range(dims)
        ]
    else:
        _check_directions(model, directions, dims)
        dirs = [
            [t.detach().to(p.device, p.dtype) for t, p in zip(d, params, strict=True)]
            for d in directions
        ]
    device = params[0].device
    # Moved once: every grid point reads all of them again.
    x_all, y_all = x_all.to(device), y_all.to(device)
    alpha = np.linspace(lo, hi, g)
    beta = np.linspace(lo, hi, g) if dims == 2 else None
    shape = (g,) if dims == 1 else (g, g)
    loss = np.empty(shape)
    acc = np.empty(shape)
    adv_loss = np.empty(shape) if tm is not None else None
    adv_acc = np.empty(shape) if tm is not None else None
    grid = [(i, j) for i in range(g) for j in (range(g) if dims == 2 else [0])]
    adv_gen = torch.Generator(device=device)
    with model_state(model, restore_values=True):
        theta = [p.detach().clone() for p in params]
        with tqdm(total=len(grid), desc="weight surface", unit="pt", disable=not progress) as bar:
            for i, j in grid:
                a = float(alpha[i])
                b = float(beta[j]) if beta is not None else 0.0
                with torch.no_grad():
                    for k, p in enumerate(params):
                        new = theta[k] + a * dirs[0][k]
                        if dims == 2:
                            new = new + b * dirs[1][k]
                        p.copy_(new)
                at = (i, j) if dims == 2 else (i,)
                loss[at], acc[at] = _clean(model, x_all, y_all, batch_size, device)
                if tm is not None:
                    assert adv_loss is not None and adv_acc is not None
                    adv_gen.manual_seed(int(seed) + 1)
                    adv_loss[at], adv_acc[at] = _adversarial(
                        model,
                        x_all[:adv_examples],
                        y_all[:adv_examples],
                        tm,
                        adv_steps,
                        batch_size,
                        device,
                        adv_gen,
                    )
                bar.update(1)
    return WeightSurface(
        alpha=alpha,
        beta=beta,
        loss=loss,
        accuracy=acc,
        adv_loss=adv_loss,
        adv_accuracy=adv_acc,
        examples=int(x_all.shape[0]),
        settings={
            "method": "filter-normalised random directions (Li et al. 2018)",
            "seed": None if generator is not None or directions is not None else int(seed),
            "bias_bn": bool(bias_bn),
            "span": [lo, hi],
            "points": g,
            "threat": None if tm is None else str(tm),
            "adv_examples": min(adv_examples, int(x_all.shape[0])) if tm is not None else 0,
            "adv_steps": adv_steps if tm is not None else 0,
        },
    )


def _clean(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[float, float]:
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            logits = model(xb)
            total += F.cross_entropy(logits, yb, reduction="sum").to(torch.float64)
            correct += (logits.argmax(1) == yb).sum()
    n = x.shape[0]
    return float(total) / n, int(correct) / n


def _adversarial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: LpBall,
    steps: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
) -> tuple[float, float]:
    total, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        x_adv = pgd_perturb(model, xb, yb, threat, steps=steps, generator=generator)
        with torch.no_grad():
            logits = model(x_adv)
            total += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    n = x.shape[0]
    return total / n, correct / n
