"""Robustness scores: per-example minimal adversarial distortion and the CLEVER score.

Example::

    from multirobust.robustness import minimal_distortion, clever
    md = minimal_distortion(model, x, y, norm="l2")      # md.distances, md.median
    cs = clever(model, x, norm="linf", radius=0.3)        # cs.scores, cs.lipschitz

``robustness.optimizer_study`` compares a penalised attack's inner optimisers (``multirobust
optimizer-study``). Comparisons of evaluated models and the leaderboard are in
:mod:`multirobust.reports`; see docs/robustness-scores.md.
"""

from .clever import CleverResult, clever, reverse_weibull_fit
from .minimal import MinimalDistortion, default_max_eps, minimal_distortion

__all__ = [
    "CleverResult",
    "MinimalDistortion",
    "clever",
    "default_max_eps",
    "minimal_distortion",
    "reverse_weibull_fit",
]
