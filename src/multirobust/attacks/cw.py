"""Carlini–Wagner attacks (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
Networks"): the ℓ2 attack with a per-example binary search over the constant c, and the ℓ∞
attack with the paper's τ penalty (§V-C), both minimum-norm and batched over examples.

Box: a change of variables keeps every iterate in [0, 1]. The paper's is x'(w) = (tanh(w) + 1)/2,
started at w0 = atanh(2x − 1); a pixel at 0 or 1 (most of an MNIST digit) then starts at
|w0| ≈ 7.25 (after the usual 10⁻⁶ edge shrink), where tanh is flat, and Adam-like optimisers,
which move w by about the step size per iteration, need about 7 / lr iterations before it moves
at all: with a few hundred iterations instead of the paper's 10,000 those pixels are frozen.
We widen the tanh slightly and clip:

    x'(w) = clip((1 + (1 + m)·tanh(w)) / 2, 0, 1),      m = ``box_margin`` = 0.05,

so the box edges are reached at the finite |w| = atanh(1/(1 + m)) ≈ 1.84, and the clip's
gradient is passed straight through (a pixel pushed past an edge stays at the edge but keeps its
gradient, so it can come back). ``box_margin=0`` is the paper's map exactly. The variable
optimised is the offset u in w = w0 + u, so u = 0 is "no change": all the optimisers here are
invariant to that shift except FTRL, whose regularisation then pulls towards the clean input.

Objective: the f6 margin with confidence κ,

    f(x') = max(Z_y(x') − max_{i≠y} Z_i(x'), −κ)          (untargeted)
    f(x') = max(max_{i≠t} Z_i(x') − Z_t(x'), −κ)          (targeted at t)

which is ``−multirobust.losses.margin(..., confidence=κ)``.

Minimum-norm contract: the attacks return, per example, the smallest perturbation they found
that meets the goal (with margin ≥ κ) and whether one was found
(``attacks.create_minimum_norm("cw-l2")(model, x, y)``: ``distance``, ``found``). Asked for a
fixed budget (``attacks.create("cw-l2", threat="l2:2")``) the answer is projected onto the ball ∩
box and evaluated: a minimal perturbation larger than ε is shrunk to ε and then usually fails.

Step sizes: a short linear warm-up then a cosine decay to 1% (``lr_schedule="cosine"``): Adam's
first step is a sign step of size ≈ lr in every coordinate, and the decay gives the end of each
run the precision a constant step size only reaches with many more iterations. Defaults
(:data:`DEFAULT_LR`, :data:`DEFAULT_LR_LINF`) were tuned on a small MNIST CNN against a long
reference run; docs/minimum-norm.md has the numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import losses
from ..threats import L2Ball, LinfBall, Threat
from ..threats.base import flat
from .base import Context, MinimumNormAttack, check_nonneg, check_positive, check_positive_int
from .optimizers import OPTIMIZERS, check_optimizer, make_optimizer, subset_optimizer
from .registry import register

SCHEDULES = ("cosine", "constant")
#: The cosine schedule ends at this fraction of the initial step size.
_LR_FLOOR = 0.01

log = logging.getLogger(__name__)

# atanh(±1) is infinite: pull the box edges in by a relative 1e-6 (5e-7 in pixel units).
_SHRINK = 1.0 - 1e-6

#: Step size used when ``learning_rate`` is None, per optimiser, for ``cw-l2``: near the best of
#: a sweep on a small MNIST CNN with the default 5 × 100-step search and the cosine schedule
#: (docs/minimum-norm.md).
DEFAULT_LR: dict[str, float] = {
    "adam": 0.1,
    "sgd": 3.0,
    "rmsprop": 0.03,
    "adagrad": 0.3,
    "ftrl": 0.3,
}
#: The same for ``cw-linf``, whose warm-started trials need finer steps.
DEFAULT_LR_LINF: dict[str, float] = {
    "adam": 0.03,
    "sgd": 1.0,
    "rmsprop": 0.01,
    "adagrad": 0.1,
    "ftrl": 0.1,
}

#: Constructor options used unless ``optimizer_options`` overrides them. FTRL's β = 1 (the
#: paper's default) makes its steps proportional to the raw gradient, like SGD's; β = 0 makes
#: them scale-free like AdaGrad's. (With β = λ1 = λ2 = 0 and a constant α, FTRL-Proximal's
#: iterates are exactly AdaGrad's; λ1 > 0 is what it adds: exact zeros, i.e. sparse offsets.)
DEFAULT_OPTIONS: dict[str, dict[str, float]] = {"ftrl": {"beta": 0.0}}


def _to_tanh(x: torch.Tensor, margin: float) -> torch.Tensor:
    """w with x'(w) = x: atanh((2x − 1) / (1 + m)), or the paper's map with its edge shrink."""
    if margin == 0:
        return torch.atanh((2 * x - 1) * _SHRINK)
    return torch.atanh((2 * x - 1) / (1 + margin))


def _from_tanh(w: torch.Tensor, margin: float) -> torch.Tensor:
    """x'(w) = clip((1 + (1 + m)·tanh(w)) / 2, 0, 1), the clip's gradient passed straight through.

    With m = 0 it is the paper's (tanh(w) + 1) / 2, which needs no clip.
    """
    if margin == 0:
        return (torch.tanh(w) + 1) / 2
    wide = (1 + (1 + margin) * torch.tanh(w)) / 2
    return wide + (wide.clamp(0.0, 1.0) - wide).detach()


def _stalled(low: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The lowest objective of this check window is not 0.01% below the previous window's.

    The paper compares the objective at two checks; comparing window minima instead keeps an
    oscillating but still improving run (large steps) from being stopped. At the first check
    ``prev`` is +inf and ``low > inf − inf`` (NaN) is False: not stalled.
    """
    return low > prev - 1e-4 * prev.abs()


def _view(n_dims: int) -> tuple[int, ...]:
    return (-1,) + (1,) * (n_dims - 1)


def _freeze_options(value: Any) -> tuple[tuple[str, Any], ...]:
    """``optimizer_options`` as a sorted tuple of pairs, so the frozen attack stays hashable."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid optimizer_options: {value!r} (must be a mapping of option names to values)"
        ) from None
    return pairs


@dataclass(frozen=True, kw_only=True)
class _CarliniWagnerBase(MinimumNormAttack):
    """Options shared by both Carlini–Wagner attacks (see the subclasses)."""

    default_lr: ClassVar[dict[str, float]] = DEFAULT_LR
    cost: ClassVar[int] = 100

    steps: int = 100
    learning_rate: float | None = None
    initial_const: float = 1e-2
    confidence: float = 0.0
    abort_early: bool = True
    optimizer: str = "adam"
    optimizer_options: Any = ()
    lr_schedule: str = "cosine"
    box_margin: float = 0.05

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(
                f"Invalid lr_schedule: {self.lr_schedule!r} (must be one of {', '.join(SCHEDULES)})"
            )
        if self.learning_rate is not None:
            check_positive("learning_rate", self.learning_rate)
        check_positive("initial_const", self.initial_const)
        check_nonneg("confidence", self.confidence)
        check_nonneg("box_margin", self.box_margin)
        if not isinstance(self.abort_early, bool):
            raise ValueError(f"Invalid abort_early: {self.abort_early!r} (must be True or False)")
        object.__setattr__(self, "optimizer_options", _freeze_options(self.optimizer_options))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {self.optimizer!r} (must be one of {', '.join(OPTIMIZERS)})"
            )
        check_optimizer(self.optimizer, dict(self.optimizer_options))

    @property
    def lr(self) -> float:
        """The step size in use: ``learning_rate`` or the optimiser's default."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return self.default_lr[self.optimizer]

    def _set_lr(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Step size for iteration ``step`` (0-based) of a run of ``steps``.

        ``cosine``: a linear warm-up over the first 10% of the steps, then a cosine decay to 1%
        of ``learning_rate``. The warm-up keeps the first steps small: Adam-like optimisers make
        their first step a sign step of size ≈ lr in every coordinate, which can jump across the
        decision boundary whatever c is.

        FTRL is left alone: its rates already decay as α/√n, and it computes w from its
        accumulators as −α·z/√n, so changing α would rescale the whole offset.
        """
        if self.lr_schedule == "constant" or self.optimizer == "ftrl":
            return
        warm = max(1, self.steps // 10)
        if step < warm:
            lr = self.lr * (step + 1) / warm
        else:
            frac = (step - warm) / max(self.steps - warm - 1, 1)
            lr = self.lr * (_LR_FLOOR + (1 - _LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr

    def _may_abort(self, step: int) -> bool:
        """Whether the stall check may stop examples after iteration ``step`` (0-based).

        Only in the second half of a run: the first half holds the optimiser's transient
        (large, oscillating steps), where a stall means "step too large", not "converged".
        """
        return self.abort_early and step + 1 >= self.steps // 2

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """Constructor options: :data:`DEFAULT_OPTIONS` updated with ``optimizer_options``."""
        return {**DEFAULT_OPTIONS.get(self.optimizer, {}), **dict(self.optimizer_options)}

    def _factory(self, param: torch.Tensor) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, [param], lr=self.lr, options=self.optimizer_kwargs)

    def _ok(
        self, ctx: Context, logits: torch.Tensor, marg: torch.Tensor, live: torch.Tensor
    ) -> torch.Tensor:
        """Goal met (and, with κ > 0, margin ≥ κ) for the examples ``live``."""
        ok = ctx.met(logits, live)
        if self.confidence > 0:
            ok = ok & (marg >= self.confidence)
        return ok


@register("cw-l2")
@dataclass(frozen=True, kw_only=True)
class CarliniWagnerL2(_CarliniWagnerBase):
    """Carlini–Wagner ℓ2 attack (Carlini & Wagner 2017), minimum-norm, batched.

    For each example it minimises, over the offset u,

        ‖x'(w0 + u) − x‖₂² + c · f(x'(w0 + u))        (x'(w) as in the module docstring)

    with ``steps`` iterations of the chosen optimiser from u = 0, for ``binary_search_steps``
    values of a per-example constant c: c starts at ``initial_const``; after a search step in
    which the run succeeded the upper bound becomes c and c ← (lower + upper) / 2; after a
    failure the lower bound becomes c and c ← (lower + upper) / 2 if an upper bound is known,
    else c ← 10·c. An iterate succeeds when the goal is met and, with κ > 0, the margin is at
    least κ. The smallest successful iterate (in ℓ2) anywhere in the search is returned;
    examples never broken return their highest-margin iterate (then projected onto the ball).

    Whether a run "succeeded" for the binary search is judged on its second half only: the
    optimiser's first steps can jump across the boundary for any c before the distance term
    pulls back, and counting those would make every c look big enough (the paper, with 10,000
    steps of 0.01, barely has this transient). Such a jump still counts as a candidate for the
    smallest perturbation.

    Early abort (per example, the paper's rule on window minima): from the middle of a run on,
    every ``max(1, steps // 10)`` iterations, an example whose lowest objective in the last
    window is not 0.01% below the window before stops for this search step and leaves the
    batch.

    Args:
        steps: optimiser iterations per search step (10,000 in the paper).
        binary_search_steps: values of c tried per example (9 in the paper).
        learning_rate: step size of the optimiser; None uses :data:`DEFAULT_LR`.
        initial_const: the first c (10⁻³ in the paper).
        confidence: κ ≥ 0, the margin the adversarial example must have.
        abort_early: stop an example's search step when its objective stalls.
        optimizer: inner optimiser, one of ``adam`` (the paper's), ``sgd``, ``rmsprop``,
            ``adagrad``, ``ftrl``.
        optimizer_options: extra constructor options of the optimiser, e.g.
            ``{"momentum": 0.9}`` for SGD or ``{"l1": 1e-3}`` for FTRL (merged over
            :data:`DEFAULT_OPTIONS`).
        lr_schedule: ``"cosine"`` (warm-up, then decay to 1%) or ``"constant"`` (the paper's).
        box_margin: m ≥ 0 of the widened tanh map; 0 is the paper's map.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L2Ball,)
    binary_search_steps: int = 5

    def _validate(self) -> None:
        super()._validate()
        check_positive_int("binary_search_steps", self.binary_search_steps)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, targets = ctx.x, ctx.y, ctx.targets
        n, dev, dt = x.shape[0], x.device, x.dtype
        view = _view(x.dim())
        margin = losses.get("margin", confidence=float(self.confidence))
        w0_all = _to_tanh(x, self.box_margin)
        big = 1e10
        const = torch.full((n,), float(self.initial_const), device=dev, dtype=dt)
        lower = torch.zeros(n, device=dev, dtype=dt)
        upper = torch.full((n,), big, device=dev, dtype=dt)
        best_norm = torch.full((n,), float("inf"), device=dev, dtype=dt)
        best_x = x.clone()
        effort_margin = torch.full((n,), float("-inf"), device=dev, dtype=dt)
        effort_x = x.clone()
        check = max(1, self.steps // 10)
        judge_from = self.steps // 2

        for _ in range(self.binary_search_steps):
            succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
            live = torch.arange(n, device=dev)
            xs, ys, cs, w0, ts = x, y, const, w0_all, targets
            u = torch.zeros_like(x, requires_grad=True)
            opt = self._factory(u)
            prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
            low = prev.clone()
            for step in range(self.steps):
                with torch.enable_grad():
                    xa = _from_tanh(w0 + u, self.box_margin)
                    logits = ctx.model(xa)
                    dist = flat(xa - xs).pow(2).sum(1)
                    marg = margin(logits, ys, ts)
                    obj = dist - cs * marg
                    (u.grad,) = torch.autograd.grad(obj.sum(), u)
                with torch.no_grad():
                    xa, marg = xa.detach(), marg.detach()
                    ok = self._ok(ctx, logits.detach(), marg, live)
                    norm = dist.detach().sqrt()
                    cur = best_norm[live]
                    improve = ok & (norm < cur)
                    best_norm[live] = torch.where(improve, norm, cur)
                    best_x[live] = torch.where(improve.view(view), xa, best_x[live])
                    cur = effort_margin[live]
                    more = marg > cur
                    effort_margin[live] = torch.where(more, marg, cur)
                    effort_x[live] = torch.where(more.view(view), xa, effort_x[live])
                    if step >= judge_from:
                        succeeded[live] |= ok
                    low = torch.minimum(low, obj.detach())
                self._set_lr(opt, step)
                opt.step()
                if (step + 1) % check == 0 and step + 1 < self.steps and self._may_abort(step):
                    # One host sync per check: examples whose objective stalled leave the batch.
                    going = ~_stalled(low, prev)
                    prev, low = low, torch.full_like(low, float("inf"))
                    if not bool(going.all()):
                        keep = going.nonzero().flatten()
                        if keep.numel() == 0:
                            break
                        live, xs, ys, cs, w0 = live[keep], xs[keep], ys[keep], cs[keep], w0[keep]
                        ts = None if ts is None else ts[keep]
                        prev, low = prev[keep], low[keep]
                        u, opt = subset_optimizer(opt, u, keep, self._factory)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "cw-l2 search step: c=%s succeeded=%s best=%s",
                    const.tolist(),
                    succeeded.tolist(),
                    best_norm.tolist(),
                )
            with torch.no_grad():
                upper = torch.where(succeeded, torch.minimum(upper, const), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, const))
                const = torch.where(upper < big, (lower + upper) / 2, const * 10)

        found = torch.isfinite(best_norm)
        return torch.where(found.view(view), best_x, effort_x), found


@register("cw-linf")
@dataclass(frozen=True, kw_only=True)
class CarliniWagnerLinf(_CarliniWagnerBase):
    """Carlini–Wagner ℓ∞ attack (Carlini & Wagner 2017, §V-C), minimum-norm, batched.

    ℓ∞ is a poor objective for gradient descent (only the largest coordinate gets a gradient),
    so the paper replaces it by the penalty Σ_i max(|δ_i| − τ, 0) and shrinks τ. Each *trial*
    minimises, per example,

        c · f(x'(w)) + Σ_i max(|x'_i(w) − x_i| − τ, 0)       (x'(w) as in the module docstring)

    with up to ``steps`` optimiser iterations, starting from the example's last accepted solution
    (warm start; x itself at first) with a fresh optimiser. A trial is accepted for an example at
    the first iterate that meets the goal (margin ≥ κ) with ‖δ‖∞ ≤ τ: that iterate becomes the
    warm start and τ ← ``tau_decrease`` · ‖δ‖∞ (the paper: τ ← 0.9 · min(τ, ‖δ‖∞)). A trial that
    is not accepted (all ``steps`` used or, with ``abort_early``, the objective stalled at a
    check every ``max(1, steps // 10)`` iterations) multiplies c by ``const_factor``; an example
    whose c exceeds ``largest_const`` is finished. At most ``search_steps`` trials are run.

    Differences from the paper's code, on purpose: τ starts at min(ε, 1) rather than 1 when the
    attack runs within a budget ε (``attacks.create("cw-linf", threat="linf:ε")``), since a
    perturbation beyond ε is of no use there (as a minimum-norm attack it starts at 1); the
    smallest adversarial iterate seen anywhere is kept, not only the last accepted one; the
    stall check (window minima, from the middle of a trial on) ends a hopeless trial early (the
    paper only stops a trial on success); and examples run their trials in lock-step batches,
    each with its own c and τ.

    Args:
        steps: optimiser iterations per trial (1000 in the paper).
        search_steps: trials per example at most (each a τ reduction or a growth of c).
        learning_rate: step size of the optimiser; None uses :data:`DEFAULT_LR_LINF`.
        initial_const: the first c (10⁻⁵ in the paper's code).
        largest_const: give up on an example once c exceeds this (20 in the paper).
        const_factor: c's growth after a failed trial (2 in the paper).
        tau_decrease: τ's shrink after an accepted trial (0.9 in the paper).
        confidence: κ ≥ 0, the margin the adversarial example must have.
        abort_early: end a trial for an example whose objective stalls.
        optimizer, optimizer_options, lr_schedule, box_margin: as for ``cw-l2``.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall,)
    default_lr = DEFAULT_LR_LINF
    search_steps: int = 20
    largest_const: float = 20.0
    const_factor: float = 2.0
    tau_decrease: float = 0.9

    def _validate(self) -> None:
        super()._validate()
        check_positive_int("search_steps", self.search_steps)
        check_positive("largest_const", self.largest_const)
        cf = self.const_factor
        if not (isinstance(cf, int | float) and not isinstance(cf, bool) and 1 < cf < float("inf")):
            raise ValueError(f"Invalid const_factor: {cf!r} (must be a number > 1)")
        td = self.tau_decrease
        if not (isinstance(td, int | float) and not isinstance(td, bool) and 0 < td < 1):
            raise ValueError(f"Invalid tau_decrease: {td!r} (must be in (0, 1))")

    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        threat = ctx.ball
        x, y, targets = ctx.x, ctx.y, ctx.targets
        n, dev, dt = x.shape[0], x.device, x.dtype
        view = _view(x.dim())
        margin = losses.get("margin", confidence=float(self.confidence))
        tau = torch.full((n,), min(threat.eps, 1.0), device=dev, dtype=dt)
        const = torch.full((n,), float(self.initial_const), device=dev, dtype=dt)
        w_start = _to_tanh(x, self.box_margin)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        best_norm = torch.full((n,), float("inf"), device=dev, dtype=dt)
        best_x = x.clone()
        effort_margin = torch.full((n,), float("-inf"), device=dev, dtype=dt)
        effort_x = x.clone()
        check = max(1, self.steps // 10)

        for _ in range(self.search_steps):
            rows = active.nonzero().flatten()
            if rows.numel() == 0:
                break
            accepted = torch.zeros(n, dtype=torch.bool, device=dev)
            acc_norm = torch.zeros(n, device=dev, dtype=dt)
            live = rows
            xs, ys, cs, taus, w0 = x[rows], y[rows], const[rows], tau[rows], w_start[rows]
            ts = None if targets is None else targets[rows]
            u = torch.zeros_like(xs, requires_grad=True)
            opt = self._factory(u)
            won = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
            won_norm = torch.zeros(rows.numel(), device=dev, dtype=dt)
            won_w = w0.clone()
            prev = torch.full((rows.numel(),), float("inf"), device=dev, dtype=dt)
            low = prev.clone()
            for step in range(self.steps):
                with torch.enable_grad():
                    w = w0 + u
                    xa = _from_tanh(w, self.box_margin)
                    logits = ctx.model(xa)
                    over = (flat(xa - xs).abs() - taus.unsqueeze(1)).clamp_min(0).sum(1)
                    marg = margin(logits, ys, ts)
                    obj = over - cs * marg
                    (u.grad,) = torch.autograd.grad(obj.sum(), u)
                with torch.no_grad():
                    xa, marg, w = xa.detach(), marg.detach(), w.detach()
                    ok = self._ok(ctx, logits.detach(), marg, live)
                    norm = flat(xa - xs).abs().amax(1)
                    cur = best_norm[live]
                    improve = ok & (norm < cur)
                    best_norm[live] = torch.where(improve, norm, cur)
                    best_x[live] = torch.where(improve.view(view), xa, best_x[live])
                    cur = effort_margin[live]
                    more = marg > cur
                    effort_margin[live] = torch.where(more, marg, cur)
                    effort_x[live] = torch.where(more.view(view), xa, effort_x[live])
                    # The first accepted iterate of the trial is kept; later ones are ignored.
                    new_win = ok & (norm <= taus) & ~won
                    won_norm = torch.where(new_win, norm, won_norm)
                    won_w = torch.where(new_win.view(view), w, won_w)
                    won = won | new_win
                    low = torch.minimum(low, obj.detach())
                self._set_lr(opt, step)
                opt.step()
                last = step + 1 == self.steps
                if (step + 1) % check == 0 or last:
                    # One host sync per check: accepted and (with abort_early) stalled examples
                    # leave the batch.
                    going = ~_stalled(low, prev) if self._may_abort(step) else torch.ones_like(won)
                    prev, low = low, torch.full_like(low, float("inf"))
                    fin = won.nonzero().flatten()
                    if fin.numel():
                        idx = live[fin]
                        accepted[idx] = True
                        acc_norm[idx] = won_norm[fin]
                        w_start[idx] = won_w[fin]
                    if last:
                        break
                    stay = ~won & going
                    if not bool(stay.all()):
                        keep = stay.nonzero().flatten()
                        if keep.numel() == 0:
                            break
                        live, xs, ys, cs = live[keep], xs[keep], ys[keep], cs[keep]
                        taus, w0 = taus[keep], w0[keep]
                        ts = None if ts is None else ts[keep]
                        prev, low, won, won_norm, won_w = (
                            prev[keep],
                            low[keep],
                            won[keep],
                            won_norm[keep],
                            won_w[keep],
                        )
                        u, opt = subset_optimizer(opt, u, keep, self._factory)
            with torch.no_grad():
                tried = torch.zeros(n, dtype=torch.bool, device=dev)
                tried[rows] = True
                tau = torch.where(accepted, acc_norm * self.tau_decrease, tau)
                failed = tried & ~accepted
                const = torch.where(failed, const * self.const_factor, const)
                active = active & ~(failed & (const > self.largest_const))

        found = torch.isfinite(best_norm)
        return torch.where(found.view(view), best_x, effort_x), found
