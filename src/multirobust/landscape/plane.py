"""The plane of an input surface: the threat's steepest-ascent direction and a random one.

For an example x and an ℓp threat with radius ε, the plane is {x + ε(a·u + b·v)}:

- u = s(∇ₓℓ(x)) / ‖s(∇ₓℓ(x))‖_p, the threat's own steepest-ascent direction
  (``threat.steepest_ascent``: sign(∇) for ℓ∞, ∇/‖∇‖₂ for ℓ2, SLIDE's sparse top-k signs for
  ℓ1), so a = 1 is the one-step attack (FGSM, FGM, SLIDE's step) of size ε;
- v = w − (⟨w, u⟩/⟨u, u⟩)·u rescaled to ‖v‖_p = 1, with w = s(r − (⟨r, u⟩/⟨u, u⟩)·u) and
  r ~ N(0, I) from an explicit generator: a random direction in the threat's geometry (a sign
  vector for ℓ∞, a sparse one for ℓ1), Euclidean-orthogonal to u. For ℓ∞ the last
  orthogonalisation leaves entries ±(1 ± O(1/√d)) instead of exactly ±1.

Both have unit length in the threat's norm, so the ball's boundary along each axis is at
|a| = 1 or |b| = 1 (Engstrom et al. 2018 and Athalye et al. 2018 draw loss surfaces on such
planes; Li et al. 2018 on the weight-space analogue).

When the model's gradient of the chosen loss is zero or not finite at x (a masked model), the
direction still has to point somewhere useful, so it falls back in this order, per example, and
records which one it used (``source``): the gradient of the logit margin (saturated softmax
leaves it intact), an antithetic finite-difference estimate of the margin's gradient (NES,
Ilyas et al. 2018: ĝ = Σᵢ (m(x + σnᵢ) − m(x − σnᵢ))·nᵢ / (2σq), q pairs), and finally a random
direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.gradients import input_gradient
from ..threats import LpBall
from ..threats.base import flat, per_example
from ._common import loss_fn, randn_like

#: Where the ascent direction u came from, per example.
SOURCES = ("gradient", "margin-gradient", "finite-differences", "random", "given")


@dataclass
class Plane:
    """The two directions spanning an input surface, each of unit length in the threat's norm.

    Attributes:
        u: ascent directions (N, ...).
        v: random directions (N, ...), Euclidean-orthogonal to ``u``.
        source: per example, where ``u`` came from (one of :data:`SOURCES`).
    """

    u: torch.Tensor
    v: torch.Tensor
    source: list[str]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (flat(a) * flat(b)).sum(1)


def _remove(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """w minus its Euclidean component along u, per example."""
    coef = _dot(w, u) / _dot(u, u).clamp_min(torch.finfo(u.dtype).tiny)
    return w - per_example(coef, w) * u


def _unit(threat: LpBall, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d`` scaled to unit threat norm, and (N,) bool: the direction was usable (finite, ≠ 0)."""
    norm = threat.norm(d)
    ok = torch.isfinite(norm) & (norm > 0)
    safe = torch.where(ok, norm, torch.ones_like(norm))
    return torch.where(per_example(ok, d), d / per_example(safe, d), torch.zeros_like(d)), ok


def _ascent(threat: LpBall, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    return _unit(threat, threat.steepest_ascent(g, x))


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """∇ₓ loss, or zeros when the model's output has no gradient path to its input at all
    (``x.detach()`` inside the model): the same situation as a zero gradient for the plane."""
    fn = loss_fn(loss)
    try:
        grad, _, _ = input_gradient(model, x, y, lambda z, t, _=None: fn(z, t))
    except RuntimeError as err:
        text = str(err)
        if "does not require grad" in text or "not have been used in the graph" in text:
            return torch.zeros_like(x)
        raise
    return grad


def finite_difference_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples: int,
    sigma: float,
    generator: torch.Generator,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Antithetic finite-difference estimate of ∇ₓ m(x), m the logit margin (NES).

    ĝ = Σᵢ (m(clip(x + σnᵢ)) − m(clip(x − σnᵢ)))·nᵢ / (2σq), nᵢ ~ N(0, I), i = 1…q: 2q forward
    passes per example and no gradient from the model (Ilyas et al. 2018, "Black-box
    adversarial attacks with limited queries and information").

    Shape: x (N, ...), y (N,) -> (N, ...).
    """
    margin = loss_fn("margin")
    n = x.shape[0]
    noise = torch.stack([randn_like(x, generator) for _ in range(samples)], dim=1)  # (N, q, ...)
    flat_noise = noise.reshape((n * samples,) + x.shape[1:])
    xs = x.repeat_interleave(samples, 0)
    ys = y.repeat_interleave(samples, 0)
    diffs = torch.empty(n * samples, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for start in range(0, n * samples, max(1, batch_size // 2)):
            stop = min(start + max(1, batch_size // 2), n * samples)
            nz, xc, yc = flat_noise[start:stop], xs[start:stop], ys[start:stop]
            both = torch.cat([(xc + sigma * nz).clamp(0, 1), (xc - sigma * nz).clamp(0, 1)])
            m = margin(model(both), torch.cat([yc, yc]))
            diffs[start:stop] = m[: stop - start] - m[stop - start :]
        weights = diffs.reshape(n, samples)
        est = (per_example(weights.reshape(-1), flat_noise) * flat_noise).reshape(noise.shape)
        return est.sum(1) / (2 * sigma * samples)


def ascent_plane(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: LpBall,
    *,
    loss: str,
    generator: torch.Generator,
    direction: torch.Tensor | None = None,
    direction_model: nn.Module | None = None,
    fd_samples: int = 200,
    fd_sigma: float = 0.05,
    batch_size: int = 1024,
) -> Plane:
    """The plane {x + ε(a·u + b·v)} of an input surface (see the module docstring).

    The caller puts the models in attack mode (eval, frozen parameters).

    Args:
        model: the classifier.
        x: clean inputs (N, ...) in the box; y: labels (N,).
        threat: the ℓp ball; its ``steepest_ascent`` and ``norm`` shape both directions.
        loss: the loss whose input gradient gives u (``ce``, ``margin``, ``dlr``).
        generator: CPU generator for v and the finite differences.
        direction: (N, ...) a direction to use instead of the gradient (e.g. towards a transfer
            attack's example); u = s(direction) normalised, source ``given``.
        direction_model: take the gradient of this model instead (a surrogate, or the
            undefended twin of a defended model).
        fd_samples: antithetic pairs q of the finite-difference fallback.
        fd_sigma: its smoothing σ, in input units.
        batch_size: points per forward pass of the finite differences.
    """
    n = x.shape[0]
    source = ["given"] * n
    if direction is not None:
        if direction.shape != x.shape:
            raise ValueError(
                f"direction has shape {tuple(direction.shape)}, expected {tuple(x.shape)} like x"
            )
        u, ok = _ascent(threat, direction.to(x.device, x.dtype), x)
        if not bool(ok.all()):
            raise ValueError("direction is zero or not finite for some examples")
    else:
        src = direction_model if direction_model is not None else model
        u, ok = _ascent(threat, _gradient(src, x, y, loss), x)
        source = ["gradient"] * n
        steps: list[tuple[str, torch.Tensor]] = []
        if not bool(ok.all()) and loss != "margin":
            steps.append(("margin-gradient", _gradient(src, x, y, "margin")))
        for name, g in steps:
            cand, cand_ok = _ascent(threat, g, x)
            take = cand_ok & ~ok
            u = torch.where(per_example(take, u), cand, u)
            for i in take.nonzero().flatten().tolist():
                source[i] = name
            ok = ok | take
        if not bool(ok.all()) and fd_samples > 0:
            rows = (~ok).nonzero().flatten()
            g = finite_difference_gradient(
                src,
                x[rows],
                y[rows],
                samples=fd_samples,
                sigma=fd_sigma,
                generator=generator,
                batch_size=batch_size,
            )
            cand, cand_ok = _ascent(threat, g, x[rows])
            u[rows] = torch.where(per_example(cand_ok, cand), cand, u[rows])
            for k, i in enumerate(rows.tolist()):
                if bool(cand_ok[k]):
                    source[i] = "finite-differences"
            ok[rows] = cand_ok
        if not bool(ok.all()):
            rows = (~ok).nonzero().flatten()
            cand, _ = _ascent(threat, randn_like(x[rows], generator), x[rows])
            u[rows] = cand
            for i in rows.tolist():
                source[i] = "random"
    r = _remove(randn_like(x, generator), u)
    w = threat.steepest_ascent(r, x)
    v, ok_v = _unit(threat, _remove(w, u))
    if not bool(ok_v.all()):
        # Degenerate only if every movable coordinate is on u's support (a tiny input): fall
        # back to the Gaussian direction itself, still orthogonal to u.
        v_plain, _ = _unit(threat, r)
        v = torch.where(per_example(ok_v, v), v, v_plain)
    return Plane(u=u, v=v, source=source)
