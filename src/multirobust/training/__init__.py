"""Adversarial training: objectives that drop into any loop, a method registry and ``fit``.

Objectives (each crafts its attack in eval mode without parameter gradients and returns the
scalar loss to backpropagate)::

    from multirobust.training import trades_loss
    loss = trades_loss(model, x, y, "linf:0.3", beta=6.0)

``standard_loss``, ``pgd_at_loss`` (Madry et al. 2018), ``fast_at_loss`` (Wong et al. 2020),
``trades_loss`` (Zhang et al. 2019), ``FreeAT`` (Shafahi et al. 2019), ``multi_max_loss``,
``multi_avg_loss``, ``multi_random_loss`` (Tramèr & Boneh 2019), ``msd_loss`` (Maini et al.
2020), ``ensemble_at_loss`` (Tramèr et al. 2018), ``EAT`` (Croce & Hein 2022) and
``max_apgd_loss``. ``OverfittingDetector`` and
``robust_accuracy`` watch for catastrophic overfitting. ``fit(TrainConfig(...))`` is the loop
behind ``multirobust train``; ``train_standard`` is plain training with a time budget.
"""

from .config import ConfigError, TrainConfig, load_config
from .eat import EAT
from .fit import FitResult, fit, make_schedule
from .max_apgd import max_apgd_loss
from .methods import BatchStep, Method, get_method, methods
from .mode import attack_mode
from .objectives import (
    FreeAT,
    ensemble_at_loss,
    fast_at_loss,
    msd_loss,
    multi_avg_loss,
    multi_max_loss,
    multi_random_loss,
    pgd_at_loss,
    standard_loss,
    trades_loss,
)
from .overfitting import OverfittingDetector, robust_accuracy
from .standard import train_standard

__all__ = [
    "EAT",
    "BatchStep",
    "ConfigError",
    "FitResult",
    "FreeAT",
    "Method",
    "OverfittingDetector",
    "TrainConfig",
    "attack_mode",
    "ensemble_at_loss",
    "fast_at_loss",
    "fit",
    "get_method",
    "load_config",
    "make_schedule",
    "max_apgd_loss",
    "methods",
    "msd_loss",
    "multi_avg_loss",
    "multi_max_loss",
    "multi_random_loss",
    "pgd_at_loss",
    "robust_accuracy",
    "standard_loss",
    "train_standard",
    "trades_loss",
]
