"""The CLEVER score (Weng et al. 2018): an attack-independent estimate of local robustness.

For an input x0 with top class c and another class j, the margin g(x) = z_c(x) − z_j(x) cannot
reach 0 within distance g(x0)/L_j in the ℓp norm, where L_j is a Lipschitz constant of g on the
ball, measured by the dual norm q of the gradient (1/p + 1/q = 1). CLEVER estimates the local L_j
by extreme value theory: sample ``batches`` × ``samples`` points uniformly in the ℓp ball of
radius R around x0, take the largest ‖∇g‖_q of each batch, fit a reverse Weibull distribution to
those batch maxima, and use its location parameter (the distribution's finite right end point)
as L_j. The score is min_j g_j(x0)/L_j, capped at R (the estimate says nothing beyond the ball).

The reverse Weibull fit is a maximum-likelihood fit written here in NumPy (no SciPy needed):
the likelihood is profiled over the end point μ, the shape and scale being the closed-form /
one-dimensional two-parameter Weibull MLE of the distances μ − y. When the fitted shape is ≤ 1
the likelihood has no interior maximum and the MLE of the end point is the sample maximum
(Smith 1985, "Maximum likelihood estimation in a class of nonregular cases"), which is used.

The score is an estimate, not a certificate: it can exceed the true distance to the boundary
when the sampling misses the steepest part of the ball (Goodfellow 2018 shows such cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.base import check_logits, check_positive, check_positive_int, validate_inputs
from ..models.state import attack_mode
from ..threats import LpBall, lp_ball
from ..threats.base import BOX

#: The default radius R per norm name: this function's documented defaults (MNIST-scale
#: budgets), not geometry; other norms need ``radius``.
_DEFAULT_RADIUS = {"l2": 2.0, "linf": 0.3}


# --------------------------------------------------------------------------- reverse Weibull


@dataclass(frozen=True)
class WeibullFit:
    """A reverse Weibull fit F(y) = exp(−((μ − y)/σ)^α) for y ≤ μ.

    Attributes:
        location: μ, the right end point (the estimate of the maximum).
        shape: α (nan when the sample maximum was used, see ``method``).
        scale: σ (nan likewise).
        method: ``"mle"`` (interior maximum of the profile likelihood), ``"sample-max"``
            (shape ≤ 1: the sample maximum is the MLE of the end point), ``"unbounded"`` (the
            likelihood prefers ever larger shapes and end points — Gumbel-like maxima that do
            not locate an end point; the sample maximum is returned) or ``"constant"`` (all
            samples equal).
    """

    location: float
    shape: float
    scale: float
    method: str


#: Bracket of the shape α searched by the two-parameter MLE, and the largest α a fit may keep.
_SHAPE_BRACKET = (1e-3, 1e4)
_SHAPE_MAX = 1e3


def _weibull_profile(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-parameter Weibull MLE of each row of ``z`` (G, n) > 0: (shape α (G,), log-lik (G,)).

    α solves h(α) = 1/α + mean(ln z) − Σ z^α ln z / Σ z^α = 0 (h decreases in α), found by
    bisection on ln α; σ^α = mean(z^α) in closed form. Computed with log-sum-exp, so large α
    does not overflow.
    """
    lz = np.log(z)
    n = z.shape[1]
    mean_lz = lz.mean(1)
    lo = np.full(z.shape[0], math.log(_SHAPE_BRACKET[0]))
    hi = np.full(z.shape[0], math.log(_SHAPE_BRACKET[1]))
    for _ in range(50):  # ln α bracket of width 16 shrinks below 1e-14
        mid = (lo + hi) / 2
        a = np.exp(mid)[:, None]
        t = a * lz
        w = np.exp(t - t.max(1, keepdims=True))
        ratio = (w * lz).sum(1) / w.sum(1)
        h = 1 / a[:, 0] + mean_lz - ratio
        lo = np.where(h > 0, mid, lo)
        hi = np.where(h > 0, hi, mid)
    alpha = np.exp((lo + hi) / 2)
    t = alpha[:, None] * lz
    tmax = t.max(1)
    log_mean = tmax + np.log(np.exp(t - tmax[:, None]).sum(1)) - math.log(n)
    loglik = n * np.log(alpha) - n * log_mean + (alpha - 1) * lz.sum(1) - n
    return alpha, loglik


def reverse_weibull_fit(samples: Any) -> WeibullFit:
    """Maximum-likelihood reverse Weibull fit of ``samples`` (1-D, at least 3 finite values).

    The log-likelihood is profiled over δ = μ − max(samples) > 0 on a log grid of 161 points
    from 10⁻⁶ to 10⁴ times the samples' range, then refined by golden-section search around the
    best grid point. The interior maximum with shape α > 1 is kept; otherwise see
    :class:`WeibullFit`.

    Returns:
        A :class:`WeibullFit`; ``location`` estimates the distribution's maximum.
    """
    y = np.asarray(samples, dtype=np.float64).ravel()
    if y.size < 3:
        raise ValueError(f"reverse_weibull_fit needs at least 3 samples, got {y.size}")
    if not np.isfinite(y).all():
        raise ValueError("reverse_weibull_fit: samples contain NaN or infinite values")
    top, spread = float(y.max()), float(y.max() - y.min())
    if spread <= 1e-12 * max(abs(top), 1e-300):
        return WeibullFit(top, math.nan, math.nan, "constant")
    gaps = top - y

    def profile(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _weibull_profile(delta[:, None] + gaps[None, :])

    log_d = np.linspace(math.log(1e-6 * spread), math.log(1e4 * spread), 161)
    alpha, ll = profile(np.exp(log_d))
    # A local maximum counts only where the shape is > 1 (below, the likelihood is unbounded at
    # the sample maximum) and well inside the shape bracket (a shape pinned near its upper end
    # means Gumbel-like maxima whose end point the data do not locate).
    shaped = (alpha[1:-1] > 1) & (alpha[1:-1] <= _SHAPE_MAX)
    interior = (ll[1:-1] >= ll[:-2]) & (ll[1:-1] >= ll[2:]) & shaped
    candidates = np.flatnonzero(interior) + 1
    if candidates.size == 0:
        gumbel = alpha[int(np.argmax(ll))] > 1
        return WeibullFit(top, math.nan, math.nan, "unbounded" if gumbel else "sample-max")
    i = int(candidates[np.argmax(ll[candidates])])

    # Golden-section refinement of ln δ on the bracket around the grid maximum.
    def at(log_delta: float) -> float:
        return float(profile(np.array([math.exp(log_delta)]))[1][0])

    a, b = float(log_d[i - 1]), float(log_d[i + 1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    lc, ld = at(c), at(d)
    for _ in range(40):  # the bracket shrinks by 0.618⁴⁰ ≈ 4e-9
        if lc >= ld:
            b, d, ld = d, c, lc
            c = b - g * (b - a)
            lc = at(c)
        else:
            a, c, lc = c, d, ld
            d = a + g * (b - a)
            ld = at(d)
    delta = math.exp((a + b) / 2)
    shape, _ = profile(np.array([delta]))
    alpha_hat = float(shape[0])
    # σ = mean(z^α)^(1/α), in logs so that a large α does not overflow.
    t = alpha_hat * np.log(delta + gaps)
    log_scale = (t.max() + math.log(np.exp(t - t.max()).mean())) / alpha_hat
    return WeibullFit(top + delta, alpha_hat, math.exp(log_scale), "mle")


# --------------------------------------------------------------------------- CLEVER


@dataclass
class CleverResult:
    """CLEVER scores of a batch.

    Attributes:
        norm: the attack norm p (``"linf"``, ``"l2"``, ``"l1"``); gradients are measured in its
            dual.
        radius: R, the sampling radius and the cap of the score.
        scores: (N,) float64, min over the other classes j of margin_j / L_j, capped at R.
        lipschitz: (N, C) the estimated local Lipschitz constants L_j (nan for the top class
            and for classes not scored).
        margins: (N, C) z_c(x0) − z_j(x0).
        predictions: (N,) the top class c at each x0.
        fits: per example, class j -> its :class:`WeibullFit`.
        batches, samples: N_b and N_s.
    """

    norm: str
    radius: float
    scores: torch.Tensor
    lipschitz: torch.Tensor
    margins: torch.Tensor
    predictions: torch.Tensor
    fits: list[dict[int, WeibullFit]] = field(default_factory=list)
    batches: int = 0
    samples: int = 0

    @property
    def mean(self) -> float:
        return float(self.scores.mean())

    @property
    def median(self) -> float:
        """Lower median of the scores."""
        return float(self.scores.median())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the per-example scores."""
        return {
            "norm": self.norm,
            "radius": self.radius,
            "batches": self.batches,
            "samples": self.samples,
            "mean": self.mean,
            "median": self.median,
            "scores": [float(v) for v in self.scores.tolist()],
            "predictions": [int(v) for v in self.predictions.tolist()],
        }


def _sample_ball(
    x0: torch.Tensor, ball: LpBall, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` points uniform in ``ball`` around ``x0`` (1, ...)."""
    return x0 + ball.sample_ball(x0.expand(count, *x0.shape[1:]), generator)


def clever(
    model: nn.Module,
    x: torch.Tensor,
    *,
    norm: str | LpBall = "l2",
    radius: float | None = None,
    batches: int = 100,
    samples: int = 128,
    targets: torch.Tensor | None = None,
    clip: bool = True,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> CleverResult:
    """CLEVER score of each input (Weng et al. 2018, "Evaluating the Robustness of Neural
    Networks: An Extreme Value Theory Approach").

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: inputs (N, ...) in [0, 1].
        norm: attack norm p, one of :data:`multirobust.threats.NORMS` (gradients are measured
            in the dual norm: ℓ2 for ℓ2, ℓ1 for ℓ∞, ℓ∞ for ℓ1), or an ℓp ball whose radius is R.
        radius: R, sampling radius and cap of the score (default 2 for ℓ2, 0.3 for ℓ∞, the
            ball's radius when ``norm`` is a ball; required for ℓ1).
        batches: N_b, batch maxima fed to the reverse Weibull fit (the paper uses 500).
        samples: N_s, points per batch (the paper uses 1024).
        targets: (N,) one class per example to score against (targeted CLEVER); default all
            classes other than the top one (untargeted: the minimum over them).
        clip: clip the sampled points to the input box [0, 1] (the model is only defined
            there); the set sampled is then the ball ∩ box.
        batch_size: points per forward/backward pass.
        generator: source of the sampling randomness (default: seeded with ``seed``).

    Returns:
        A :class:`CleverResult`.
    """
    ball = norm if isinstance(norm, LpBall) else lp_ball(norm, 0.0)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    # Labels are not used; dummy ones let the shared input checks run (shape, box, NaN).
    validate_inputs(x, torch.zeros(x.shape[0] if x.dim() else 0, dtype=torch.long))
    if radius is None:
        radius = ball.eps if isinstance(norm, LpBall) else _DEFAULT_RADIUS.get(ball.name)
        if radius is None:
            raise ValueError(f"Give radius for norm {ball.name!r} (no default)")
    check_positive("radius", radius)
    radius = float(radius)
    ball = ball.with_eps(radius)
    check_positive_int("batches", batches)
    check_positive_int("samples", samples)
    check_positive_int("batch_size", batch_size)
    if batches < 3:
        raise ValueError(f"Invalid batches: {batches!r} (the Weibull fit needs at least 3)")
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    n = x.shape[0]
    with attack_mode(model):
        with torch.no_grad():
            logits = model(x)
        check_logits(logits, n)
        num_classes = logits.shape[1]
        pred = logits.argmax(1)
        if targets is not None:
            if (
                not isinstance(targets, torch.Tensor)
                or targets.shape != (n,)
                or targets.is_floating_point()
            ):
                raise ValueError(f"targets must be integer class indices of shape ({n},)")
            targets = targets.to(x.device).long()
            if int(targets.min()) < 0 or int(targets.max()) >= num_classes:
                raise ValueError(
                    f"Targets out of range: the model has {num_classes} classes "
                    f"(targets must be in 0..{num_classes - 1})"
                )
            if bool((targets == pred).any()):
                raise ValueError(
                    "Some targets equal the model's top class at x; a target must be another class"
                )
        margins = (logits.gather(1, pred[:, None]) - logits).double().cpu()
        lipschitz = torch.full((n, num_classes), math.nan, dtype=torch.float64)
        scores = torch.empty(n, dtype=torch.float64)
        fits: list[dict[int, WeibullFit]] = []
        for i in range(n):
            c = int(pred[i])
            classes = (
                [int(targets[i])]
                if targets is not None
                else [j for j in range(num_classes) if j != c]
            )
            maxima = _batch_maxima(
                model,
                x[i : i + 1],
                c,
                classes,
                ball,
                batches,
                samples,
                clip,
                batch_size,
                generator,
            )
            fit_i: dict[int, WeibullFit] = {}
            best = radius
            for k, j in enumerate(classes):
                fit = reverse_weibull_fit(maxima[:, k])
                fit_i[j] = fit
                lipschitz[i, j] = fit.location
                if fit.location > 0:
                    best = min(best, float(margins[i, j]) / fit.location)
            scores[i] = best
            fits.append(fit_i)
    return CleverResult(
        norm=ball.name,
        radius=radius,
        scores=scores,
        lipschitz=lipschitz,
        margins=margins,
        predictions=pred.cpu(),
        fits=fits,
        batches=batches,
        samples=samples,
    )


def _batch_maxima(
    model: nn.Module,
    x0: torch.Tensor,
    c: int,
    classes: list[int],
    ball: LpBall,
    batches: int,
    samples: int,
    clip: bool,
    batch_size: int,
    generator: torch.Generator,
) -> np.ndarray:
    """(batches, len(classes)) largest dual norm ‖∇(z_c − z_j)‖_q of each batch of sampled
    points."""
    total = batches * samples
    norms = torch.empty(total, len(classes), dtype=torch.float64)
    lo, hi = BOX
    for s in range(0, total, batch_size):
        count = min(batch_size, total - s)
        pts = _sample_ball(x0, ball, count, generator)
        if clip:
            pts = pts.clamp(lo, hi)
        pts.requires_grad_(True)
        with torch.enable_grad():
            out = model(pts)
            for k, j in enumerate(classes):
                (grad,) = torch.autograd.grad(
                    (out[:, c] - out[:, j]).sum(), pts, retain_graph=k < len(classes) - 1
                )
                norms[s : s + count, k] = ball.dual_norm(grad).double().cpu()
    return norms.view(batches, samples, len(classes)).amax(1).numpy()
