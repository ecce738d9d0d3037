"""Inner optimisers of the penalised attacks (Carlini–Wagner): a name -> a ``torch.optim`` object.

``make_optimizer("adam", [param], lr=0.1)`` builds one of :data:`OPTIMIZERS`. All of them update
each coordinate from that coordinate's own gradient history, so the examples of a batch stay
independent of each other — the attacks rely on this to run many examples in one tensor and to
drop finished ones with :func:`subset_optimizer`.

FTRL-Proximal (McMahan et al. 2013) is not in PyTorch; :class:`FTRL` implements it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

#: Names accepted by :func:`make_optimizer`, in the order the optimiser study runs them.
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "rmsprop", "adagrad", "ftrl")


class FTRL(torch.optim.Optimizer):
    """FTRL-Proximal with ℓ1 and ℓ2 regularisation (McMahan et al. 2013, "Ad Click Prediction:
    a View from the Trenches", Algorithm 1), per coordinate.

    With per-coordinate accumulators z (linear term) and n (sum of squared gradients), each step
    with gradient g does::

        σ = (√(n + g²) − √n) / α
        z ← z + g − σ · w
        n ← n + g²
        w ← 0                                              if |z| ≤ λ1
        w ← −(z − sign(z)·λ1) / ((β + √n) / α + λ2)         otherwise

    The ℓ1 term makes exact zeros: a coordinate whose accumulated gradient |z| stays within λ1
    is set to 0, not just near it. FTRL regularises towards the origin (the closed form computes
    w from z and n only), so start the parameter at 0 or where 0 means "no change" — the
    Carlini–Wagner attacks optimise the offset from the clean input for that reason.

    Args:
        params: parameters (or parameter groups) to optimise.
        lr: α, the per-coordinate learning-rate scale.
        l1: λ1 ≥ 0, ℓ1 strength (sparsity).
        l2: λ2 ≥ 0, ℓ2 strength.
        beta: β ≥ 0 in the adaptive rate α / (β + √n); 1 in the paper.
        initial_accumulator_value: n at the start (≥ 0).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        l1: float = 0.0,
        l2: float = 0.0,
        beta: float = 1.0,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        for name, value, strict in (
            ("lr", lr, True),
            ("l1", l1, False),
            ("l2", l2, False),
            ("beta", beta, False),
            ("initial_accumulator_value", initial_accumulator_value, False),
        ):
            _check_hyper(name, value, strict)
        defaults = {
            "lr": lr,
            "l1": l1,
            "l2": l2,
            "beta": beta,
            "initial_accumulator_value": initial_accumulator_value,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One FTRL-Proximal update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            alpha, l1, l2, beta = group["lr"], group["l1"], group["l2"], group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("FTRL does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["z"] = torch.zeros_like(p)
                    state["n"] = torch.full_like(p, group["initial_accumulator_value"])
                z, n = state["z"], state["n"]
                n_new = n + g * g
                sigma = (n_new.sqrt() - n.sqrt()) / alpha
                z.add_(g - sigma * p)
                n.copy_(n_new)
                # Where β = 0 and no gradient was ever seen the denominator is 0, but then z = 0
                # too and the coordinate is set to 0 by the ℓ1 branch: clamp only avoids 0/0.
                denom = ((beta + n.sqrt()) / alpha + l2).clamp_min(torch.finfo(p.dtype).tiny)
                w = -(z - z.sign() * l1) / denom
                p.copy_(torch.where(z.abs() <= l1, torch.zeros_like(p), w))
        return loss


def _check_hyper(name: str, value: Any, strict: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if strict else value < 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number {bound})")


_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "ftrl": FTRL,
}


def check_optimizer(name: Any, options: Mapping[str, Any] | None = None) -> None:
    """Raise ``ValueError`` naming the problem for an unknown optimiser or a bad option."""
    if name not in _CLASSES:
        raise ValueError(f"Unknown optimizer {name!r} (must be one of {', '.join(OPTIMIZERS)})")
    if options:
        probe = torch.zeros(1, requires_grad=True)
        try:
            _CLASSES[name]([probe], lr=1.0, **dict(options))
        except TypeError as err:
            raise ValueError(f"Invalid optimizer_options for {name!r}: {err}") from None
        except ValueError as err:
            raise ValueError(f"Invalid optimizer_options for {name!r}: {err}") from None


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    *,
    lr: float,
    options: Mapping[str, Any] | None = None,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params`` with step size ``lr``.

    ``options`` are passed to the constructor (e.g. ``{"momentum": 0.9}`` for SGD,
    ``{"l1": 0.01}`` for FTRL).
    """
    check_optimizer(name, options)
    return _CLASSES[name](list(params), lr=lr, **dict(options or {}))


def subset_optimizer(
    optimizer: torch.optim.Optimizer,
    param: torch.Tensor,
    keep: torch.Tensor,
    factory: Callable[[torch.Tensor], torch.optim.Optimizer],
) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    """Keep only the rows ``keep`` of a batched parameter and of its optimiser state.

    Per-coordinate state tensors shaped like ``param`` are indexed; anything else (Adam's step
    counter) is copied. Valid because every optimiser here is coordinate-wise.

    Returns:
        ``(new_param, new_optimizer)`` with ``new_param = param[keep]`` (a fresh leaf).
    """
    new = param.detach()[keep].clone().requires_grad_(True)
    new_opt = factory(new)
    old = optimizer.state.get(param, {})
    state: dict[str, Any] = {}
    for key, value in old.items():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            state[key] = value[keep].clone()
        elif isinstance(value, torch.Tensor):
            state[key] = value.clone()
        else:
            state[key] = value
    if state:
        new_opt.state[new] = state
    return new, new_opt
