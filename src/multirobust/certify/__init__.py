"""Certified robustness: randomized smoothing and bound propagation, per threat and union.

An attack can only show that a model is *not* robust; a certificate proves that no input in
the ball changes the prediction. Two families, each certifying a different classifier:

- **Randomized smoothing** (:class:`Smooth`; Cohen, Rosenfeld & Kolter 2019): the smoothed
  classifier ``g(x) = argmax_c P(f(x + η) = c)`` is certified with probability ≥ 1 − α in an ℓ2
  ball (Gaussian noise) or an ℓ1 ball (uniform or Laplace noise; Yang et al. 2020).
- **Bound propagation** (:func:`verify`; IBP, Gowal et al. 2018; CROWN-IBP and CROWN, Zhang et
  al. 2018/2020): the network itself is proved constant on an ℓ∞, ℓ2 or ℓ1 ball.

:func:`certify` runs both on a data set, per threat and for the union of the threats (certified
when every ball is), resumable and shardable, into a :class:`CertificationReport` (JSON, HTML)::

    from multirobust import certify, data, models

    model = models.load("runs/noise/model.pt")
    test = data.load("mnist", "test", limit=500)
    report = certify.certify(model, test, threats=["l2:0.5", "linf:0.1"],
                             smoothing=["gaussian:0.25"], bounds=["ibp"], n=10_000)
    print(report.summary())
"""

from __future__ import annotations

from .crown import crown_margins
from .ibp import Bounds, PerExample, interval_bounds, margin_bounds
from .integration import attach_to_evaluation, certified_summary, leaderboard_columns
from .layers import UnsupportedLayerError, flatten, supported
from .noise import NOISES, Noise, parse_noise
from .report import CertificationReport, MethodResult
from .runner import certify, fingerprint
from .smoothing import ABSTAIN, Smooth, SmoothingResult, checkpoints
from .soft import SmoothedSoft
from .union import covered_eps, covers, union_certified
from .verify import BOUND_METHODS, bound_margins, verified_radius, verify

__all__ = [
    "ABSTAIN",
    "BOUND_METHODS",
    "NOISES",
    "Bounds",
    "CertificationReport",
    "MethodResult",
    "Noise",
    "PerExample",
    "Smooth",
    "SmoothedSoft",
    "SmoothingResult",
    "UnsupportedLayerError",
    "attach_to_evaluation",
    "bound_margins",
    "certified_summary",
    "certify",
    "checkpoints",
    "covered_eps",
    "covers",
    "crown_margins",
    "fingerprint",
    "flatten",
    "interval_bounds",
    "leaderboard_columns",
    "margin_bounds",
    "parse_noise",
    "supported",
    "union_certified",
    "verified_radius",
    "verify",
]
