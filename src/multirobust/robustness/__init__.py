"""Robustness scores: per-example minimal adversarial distortion and the CLEVER score.

Example::

    from multirobust.robustness import minimal_distortion, clever
    md = minimal_distortion(model, x, y, norm="l2")      # md.distances, md.median
    cs = clever(model, x, norm="linf", radius=0.3)        # cs.scores, cs.lipschitz

``robustness.compare`` places evaluation reports on accuracy/robustness plots (``multirobust
compare``) and ``robustness.leaderboard`` keeps every recorded evaluation in a local SQLite
database (``multirobust leaderboard``); see docs/robustness-scores.md.
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
