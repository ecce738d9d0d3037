"""The binomial statistics of randomized smoothing (scipy), with their argument checks."""

from __future__ import annotations

import math
import numbers
from typing import Any

from scipy.stats import beta as _beta
from scipy.stats import binomtest

__all__ = ["binomial_p_value", "check_alpha", "check_count", "lower_bound", "upper_bound"]


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float in (0, 1), else ValueError naming it."""
    ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not ok or not (0.0 < float(alpha) < 1.0) or not math.isfinite(float(alpha)):
        raise ValueError(f"Invalid alpha: {alpha!r} (must be a number in (0, 1))")
    return float(alpha)


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= {minimum})")
    return int(value)


def lower_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower confidence bound of a binomial proportion.

    ``P(p ≥ lower_bound(K, n, α)) ≥ 1 − α`` for ``K ~ Binomial(n, p)``, every p. It is the
    α quantile of Beta(K, n − K + 1) (0 when K = 0): Clopper & Pearson, Biometrika 1934; the
    bound Cohen et al. (2019) use (``proportion_confint(K, n, alpha=2α, method="beta")[0]``).
    """
    if successes <= 0:
        return 0.0
    return float(_beta.ppf(alpha, successes, trials - successes + 1))


def upper_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson upper bound: the 1 − α quantile of Beta(K + 1, n − K)."""
    if successes >= trials:
        return 1.0
    return float(_beta.ppf(1 - alpha, successes + 1, trials - successes))


def binomial_p_value(successes: int, trials: int) -> float:
    """Two-sided exact binomial test of ``p = ½`` (Cohen et al.'s PREDICT); 1 when trials = 0."""
    if trials <= 0:
        return 1.0
    return float(binomtest(successes, trials, 0.5).pvalue)
