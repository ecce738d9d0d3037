"""Smoothing noise distributions and the certified radius each one gives.

A smoothed classifier ``g(x) = argmax_c P(f(x + η) = c)`` with ``η`` drawn from one of these
is certified in a ball whose radius depends on a lower bound ``p_A`` of the top class's
probability (``p_A > ½``):

==========  =========================  ========  ============================  ================
name        η                          norm      radius                        paper
==========  =========================  ========  ============================  ================
gaussian    N(0, σ² I)                 ℓ2        σ Φ⁻¹(p_A)                    Cohen et al. 2019
uniform     U[−λ, λ]^d                 ℓ1        2 λ (p_A − ½)                 Yang et al. 2020
laplace     Laplace(0, λ)^d            ℓ1        −λ log(2 (1 − p_A))           Yang et al. 2020
==========  =========================  ========  ============================  ================

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML
2019, Theorem 1 (with p_B = 1 − p_A). Yang, Duan, Hu, Salman, Razenshteyn & Li, "Randomized
Smoothing of All Shapes and Sizes", ICML 2020, Table 1 (uniform: the radius λ (p_A − p_B) with
p_B = 1 − p_A; Laplace: the bound of Teng et al. 2020, ``λ log(1 / (2 (1 − p_A)))``).

The uniform radius follows from total variation: shifting ``U[−λ, λ]^d`` by δ moves at most
``‖δ‖₁ / (2λ)`` of its mass, so ``p_A − ‖δ‖₁/(2λ) > ½`` keeps the decision. The Laplace one is
tight in one dimension: the likelihood ratio of a shift δ is at most ``exp(‖δ‖₁/λ)``.

With ``n`` samples all in the top class, the one-sided Clopper–Pearson bound at level α is
``α^{1/n}``, so no example can be certified beyond :meth:`Noise.radius_cap` ``(n, α)``: for
Gaussian noise ``σ Φ⁻¹(α^{1/n})``. A radius at that cap says "more samples", not "the model".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import norm as _normal

__all__ = ["NOISES", "Noise", "parse_noise"]

#: Noise name -> the norm its certificate is in.
NOISES: dict[str, str] = {"gaussian": "l2", "uniform": "l1", "laplace": "l1"}


@dataclass(frozen=True)
class Noise:
    """A smoothing distribution: its name and scale (σ for Gaussian, λ otherwise).

    Args:
        name: ``"gaussian"``, ``"uniform"`` or ``"laplace"``.
        scale: σ (Gaussian standard deviation) or λ (half-width of the uniform noise, scale of
            the Laplace noise); must be > 0.

    Raises:
        ValueError: for an unknown name or a scale that is not a positive finite number.
    """

    name: str
    scale: float

    def __post_init__(self) -> None:
        if self.name not in NOISES:
            raise ValueError(f"Unknown noise {self.name!r} (available: {', '.join(NOISES)})")
        try:
            scale = float(self.scale)
        except (TypeError, ValueError):
            raise ValueError(f"Invalid noise scale: {self.scale!r} (must be > 0)") from None
        if not math.isfinite(scale) or scale <= 0:
            what = "sigma" if self.name == "gaussian" else "lambda"
            raise ValueError(f"Invalid {what}: {self.scale!r} (must be > 0)")
        object.__setattr__(self, "scale", scale)

    def __str__(self) -> str:
        return f"{self.name}:{self.scale:g}"

    @property
    def norm(self) -> str:
        """The norm of the certificate: ``"l2"`` (Gaussian) or ``"l1"``."""
        return NOISES[self.name]

    def sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        like: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Draw noise of ``shape`` on ``like``'s device and dtype from ``generator``.

        Laplace noise is drawn by inversion of one uniform variate per coordinate,
        ``η = −λ sign(v) log(1 − 2|v|)`` with ``v ~ U(−½, ½)``, so that every distribution
        consumes the generator the same way on every device.
        """
        size = tuple(shape)
        out = torch.empty(size, device=like.device, dtype=like.dtype)
        # The scale is applied inside the sampling kernel: no extra pass over the batch.
        if self.name == "gaussian":
            return out.normal_(0.0, self.scale, generator=generator)
        if self.name == "uniform":
            return out.uniform_(-self.scale, self.scale, generator=generator)
        u = out.uniform_(0.0, 1.0, generator=generator)
        v = u.sub_(0.5)
        # P(|η| > t) = P(1 − 2|v| < e^{−t/λ}) = e^{−t/λ}. rand can return exactly 0 (v = −½,
        # probability 2^-24 in float32): the clamp keeps that one draw finite (|η| ≈ 16.6 λ).
        tail = (1 - 2 * v.abs()).clamp_min_(2.0**-24).log_()
        return v.sign_().mul_(tail).mul_(-self.scale)

    def radius(self, p_lower: float) -> float:
        """The certified radius (in :attr:`norm`) for a lower bound ``p_lower`` > ½ of p_A.

        Returns 0 for ``p_lower <= ½`` (no certificate).
        """
        p = float(p_lower)
        if not p > 0.5:
            return 0.0
        p = min(p, 1.0)
        if self.name == "gaussian":
            return float(self.scale * _normal.ppf(p)) if p < 1.0 else math.inf
        if self.name == "uniform":
            return 2 * self.scale * (p - 0.5)
        return -self.scale * math.log(2 * (1 - p)) if p < 1.0 else math.inf

    def threshold(self, radius: float) -> float:
        """The smallest ``p_A`` lower bound certifying ``radius``: the inverse of :meth:`radius`."""
        r = float(radius)
        if r <= 0:
            return 0.5
        if self.name == "gaussian":
            return float(_normal.cdf(r / self.scale))
        if self.name == "uniform":
            return 0.5 + r / (2 * self.scale)
        return 1 - 0.5 * math.exp(-r / self.scale)

    def radius_cap(self, n: int, alpha: float) -> float:
        """The largest radius ``n`` samples can certify at level ``alpha``: radius(α^{1/n})."""
        return self.radius(alpha ** (1.0 / n))


def parse_noise(text: str | Noise) -> Noise:
    """``"gaussian:0.25"`` -> ``Noise("gaussian", 0.25)`` (a :class:`Noise` passes through).

    Raises:
        ValueError: naming what is wrong and what is allowed.
    """
    if isinstance(text, Noise):
        return text
    if not isinstance(text, str):
        raise ValueError(f"Noise must be text such as 'gaussian:0.25', got {text!r}")
    name, sep, value = text.strip().partition(":")
    if not sep:
        raise ValueError(
            f"Invalid noise {text!r}: write NAME:SCALE, e.g. gaussian:0.25, uniform:1, laplace:0.5"
        )
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"Invalid noise scale in {text!r} (must be a number > 0)") from None
    return Noise(name.strip().lower(), scale)
