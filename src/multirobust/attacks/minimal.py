"""Per-example minimal adversarial distortion in one ℓp norm, by batched bisection over ε.

For each example, the smallest ε at which an attack finds an adversarial example is searched by
bisection, with every example keeping its own ε interval. The fixed-budget attack (APGD by
default) runs under ordinary scalar-ε threat models, so the search works on a fixed geometric
grid of K ε levels: in each round every example picks the level that splits its interval (the
one with the most trailing zero bits in its position, so that examples with different intervals
pick the same few levels), the examples are grouped by level, and each distinct level is one
batched attack call on its group. This is exact — every call is the registered attack under a
real ℓp ball with its exact box-aware projection, and every kept result is checked by the
attack contract — and costs the same number of attack runs per example as a scalar bisection:
one at the largest ε plus at most ⌈log2 K⌉.

(Why not a per-example-ε threat object: attacks drop broken examples from their batch mid-run,
and a threat model sees only the clean inputs of the rows still running, so a tensor ε cannot
follow the rows. Why not rescaling each example's ball to radius 1: the rescaled input box is no
longer [0, 1], so the projection would no longer be onto the real set.)

The registered minimum-norm attacks of the same norm (DeepFool, C&W), cheapest first, run
before the bisection: their distances give each example an upper bound, and the smallest
adversarial found by any attack is kept. The distance reported for an example is the norm of
that adversarial, which meets the goal (checked by a fresh forward pass): an upper bound on the
true minimal distortion, at most a factor (1 + rtol) above the largest ε at which the attack
failed.

Two forms: :func:`minimal_distortion` (the detailed :class:`MinimalDistortion`, with which attack
found each distance) and the registered minimum-norm attack ``minimal-search``
(:class:`MinimalSearch`), which answers the ordinary minimum-norm contract.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..models.state import attack_mode
from ..threats import LpBall, lp_ball
from .base import (
    Context,
    MinimumNormAttack,
    check_labels,
    check_logits,
    check_model_inputs,
    validate_inputs,
)
from .goals import Goal, ReduceConfidence, Targeted, Untargeted
from .registry import create, create_minimum_norm, minimum_norm_names, names, register
from .registry import get as get_attack

log = logging.getLogger(__name__)

#: Options of the default fixed-budget attack: the margin loss does not saturate with the
#: softmax (cross-entropy gradients vanish on over-confident models) and works with 2 classes.
DEFAULT_ATTACK_OPTIONS: dict[str, Any] = {"loss": "margin", "steps": 50}


def _ball_class(norm: Any) -> type[LpBall]:
    return type(lp_ball(norm, 1.0))


def default_max_eps(norm: str, dim: int) -> float:
    """The largest ε searched by default: enough to reach any image of [0, 1]^dim (the box's
    diameter in the norm: ℓ∞ 1, ℓ2 √dim, ℓ1 dim)."""
    return _ball_class(norm).box_diameter(dim)


def check_norms(norms: str | Sequence[str]) -> list[str]:
    """The norms of ``norms`` (one name or several), checked, duplicates dropped, order kept."""
    items = [norms] if isinstance(norms, str) else list(norms)
    out: list[str] = []
    for norm in items:
        _ball_class(norm)
        if norm not in out:
            out.append(norm)
    return out


def minimum_norm_attacks_for(norm: str) -> list[str]:
    """The registered minimum-norm attacks minimising ``norm``, cheapest first (searches such
    as ``minimal-search`` itself excluded)."""
    kind = _ball_class(norm)
    found = []
    for name in minimum_norm_names():
        cls = get_attack(name)
        if not issubclass(cls, MinimumNormAttack) or issubclass(cls, MinimalSearch):
            continue
        if kind in cls.supported_threats:
            found.append((cls.cost, name))
    return [name for _, name in sorted(found)]


@dataclass
class MinimalDistortion:
    """Per-example minimal adversarial distortion in one norm.

    Attributes:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        distances: (N,) float64 on the CPU: the norm of the smallest adversarial example found;
            0 for examples misclassified without attack, ``inf`` for examples not broken
            within ``max_eps``.
        x_adv: (N, ...) the adversarial examples behind ``distances`` (the clean input where
            the distance is 0 or inf), same dtype and device as the input.
        found_by: per example, which attack found the kept adversarial (``"clean"`` for
            already misclassified examples, ``None`` for unbroken ones).
        max_eps: the largest ε searched.
        eps_min: the smallest grid level: an example broken there gets the norm of the
            adversarial found (about eps_min for APGD, smaller from a minimum-norm attack), so
            distances below eps_min are resolved only to eps_min.
        rtol: relative spacing of the ε grid.
        attacks: the attacks that ran, in order.
        seconds: wall-clock time of the search.
    """

    norm: str
    distances: torch.Tensor
    x_adv: torch.Tensor
    found_by: list[str | None]
    max_eps: float
    eps_min: float
    rtol: float
    attacks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def median(self) -> float:
        """Median over all examples (0 for misclassified ones, inf for unbroken ones).

        The lower median (the ⌈N/2⌉-th smallest) for even N, so it is always an attained
        distance, and inf when at least half the examples were never broken.
        """
        return float(self.distances.median())

    @property
    def never_broken(self) -> float:
        """Fraction of examples not broken within ``max_eps``."""
        return float(torch.isinf(self.distances).double().mean())

    @property
    def misclassified(self) -> float:
        """Fraction of examples misclassified without any perturbation (distance 0)."""
        return float((self.distances == 0).double().mean())

    def robust_accuracy(self, eps: float | Sequence[float]) -> Any:
        """Fraction of examples whose distance exceeds ``eps`` (robust accuracy at ε implied by
        the distances); a list for a sequence of ε."""
        if isinstance(eps, Sequence):
            return [self.robust_accuracy(float(e)) for e in eps]
        return float((self.distances > float(eps)).double().mean())

    def histogram(self, bins: int = 20) -> tuple[list[int], list[float]]:
        """Counts of the finite, positive distances in ``bins`` equal-width bins over
        [0, max distance]; returns ``(counts, edges)`` (edges has ``bins + 1`` entries)."""
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"Invalid bins: {bins!r} (must be an integer >= 1)")
        d = self.distances
        finite = d[torch.isfinite(d) & (d > 0)]
        top = float(finite.max()) if finite.numel() else self.max_eps
        edges = torch.linspace(0.0, top, bins + 1, dtype=torch.float64)
        counts = torch.histc(finite, bins=bins, min=0.0, max=top) if finite.numel() else None
        return (
            [int(c) for c in counts.tolist()] if counts is not None else [0] * bins,
            [float(e) for e in edges.tolist()],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the per-example distances (inf stays ``float('inf')``)."""
        counts, edges = self.histogram()
        return {
            "norm": self.norm,
            "n": int(self.distances.numel()),
            "median": self.median,
            "mean_finite": (
                float(self.distances[torch.isfinite(self.distances)].mean())
                if bool(torch.isfinite(self.distances).any())
                else math.inf
            ),
            "never_broken": self.never_broken,
            "misclassified": self.misclassified,
            "max_eps": self.max_eps,
            "eps_min": self.eps_min,
            "rtol": self.rtol,
            "attacks": list(self.attacks),
            "distances": [float(v) for v in self.distances.tolist()],
            "found_by": list(self.found_by),
            "histogram": {"counts": counts, "edges": edges},
            "seconds": self.seconds,
        }


def _levels(eps_min: float, max_eps: float, rtol: float) -> torch.Tensor:
    """Geometric grid eps_min = ε_0 < … < ε_{K−1} = max_eps with ratio at most 1 + rtol."""
    if max_eps <= eps_min:
        return torch.tensor([max_eps], dtype=torch.float64)
    k = math.ceil(math.log(max_eps / eps_min) / math.log1p(rtol)) + 1
    return torch.logspace(math.log10(eps_min), math.log10(max_eps), k, dtype=torch.float64).clamp_(
        max=max_eps
    )


def _dyadic_split(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The level index strictly between ``lo`` and ``hi`` (hi − lo ≥ 2) to attack next.

    Not the midpoint but the index whose position (index + 1) has the most trailing zero bits
    in the interval: examples with different intervals then pick the same few levels, so a round
    needs few attack calls. Each split leaves sub-intervals holding no multiple of the power of
    two just used, so the power drops every round and an example needs at most ⌈log2 K⌉
    rounds, like bisection.
    """
    a, b = lo + 2, hi  # positions (index + 1) strictly inside the interval: a..b
    diff = torch.bitwise_xor(a, b)
    bit = torch.where(diff > 0, diff.double().log2().floor().long(), torch.zeros_like(diff))
    step = torch.pow(2, bit)
    # Below the highest bit where a and b differ, the best is b's prefix with that bit set and
    # zeros under it — unless a itself is a multiple of the next power of two.
    pos = torch.where(a % (2 * step) == 0, a, b - b % step)
    return pos - 1


def _level_at_or_above(levels: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Index of the smallest level ≥ value (len(levels) where none is)."""
    return torch.searchsorted(levels, value.to(torch.float64), right=False)


@dataclass
class _Search:
    """Settings of one search, checked (see :func:`minimal_distortion`)."""

    kind: type[LpBall]
    max_eps: float
    eps_min: float
    rtol: float
    attack: str
    options: dict[str, Any]
    extra: list[str]
    batch_size: int
    seed: int


@dataclass
class _Found:
    distances: torch.Tensor
    x_adv: torch.Tensor
    found_by: list[str | None]
    ran: list[str]


def _settings(
    norm: Any,
    dim: int,
    max_eps: Any,
    eps_min: Any,
    rtol: Any,
    attack: Any,
    attack_options: Mapping[str, Any] | None,
    min_norm_attacks: bool | Sequence[str],
    batch_size: Any,
    seed: int,
) -> _Search:
    """Check every argument of a search before any work."""
    kind = _ball_class(norm)
    max_eps = kind.box_diameter(dim) if max_eps is None else max_eps
    for label, value in (("max_eps", max_eps), ("rtol", rtol)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"Invalid {label}: {value!r} (must be a number > 0)")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"Invalid {label}: {value!r} (must be a finite number > 0)")
    max_eps = float(max_eps)
    eps_min = max_eps / 1000 if eps_min is None else eps_min
    if (
        not isinstance(eps_min, int | float)
        or isinstance(eps_min, bool)
        or not math.isfinite(eps_min)
        or not 0 < eps_min <= max_eps
    ):
        raise ValueError(f"Invalid eps_min: {eps_min!r} (must be a number in (0, max_eps])")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (must be an integer >= 1)")
    if attack not in names():
        raise ValueError(f"Unknown attack {attack!r} (available: {', '.join(names())})")
    options = dict(DEFAULT_ATTACK_OPTIONS if attack_options is None else attack_options)
    if attack_options is None and attack != "apgd":
        allowed = {f.name for f in dataclasses.fields(get_attack(attack))}
        options = {k: v for k, v in options.items() if k in allowed}
    # Built once here so bad options fail before any work.
    create(attack, threat=kind(max_eps), seed=seed, **options)
    if isinstance(min_norm_attacks, bool):
        norm_name = kind(1.0).name
        extra = minimum_norm_attacks_for(norm_name) if min_norm_attacks else []
    else:
        extra = list(min_norm_attacks)
        unknown = [a for a in extra if a not in minimum_norm_names()]
        if unknown:
            raise ValueError(
                f"Unknown min_norm_attacks {', '.join(map(repr, unknown))} "
                f"(minimum-norm attacks: {', '.join(minimum_norm_names())})"
            )
    return _Search(
        kind, max_eps, float(eps_min), float(rtol), attack, options, extra, batch_size, seed
    )


def _search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    todo: torch.Tensor,
    goal_for: Callable[[torch.Tensor], Goal],
    s: _Search,
    generator: torch.Generator,
) -> _Found:
    """The search on the examples ``todo`` (the model in attack mode, arguments checked).

    Distances are 0 outside ``todo`` and ``inf`` where no adversarial is found within max_eps.
    """
    n = x.shape[0]
    device = x.device
    searched = torch.zeros(n, dtype=torch.bool)
    searched[todo.cpu()] = True
    best = torch.where(searched, math.inf, 0.0).to(torch.float64)
    x_adv = x.detach().clone()
    found_by: list[str | None] = [None if bool(c) else "clean" for c in searched]
    ran: list[str] = []

    def keep(name: str, rows: torch.Tensor, hit: torch.Tensor, points: torch.Tensor) -> None:
        """Keep the adversarials ``points`` of ``rows`` (CPU) where ``hit`` and smaller."""
        rd = rows.to(device)
        dist = s.kind(1.0).norm(points.to(torch.float64) - x[rd].to(torch.float64)).cpu()
        better = hit & (dist < best[rows])
        if bool(better.any()):
            kept = rows[better]
            best[kept] = dist[better]
            x_adv[kept.to(device)] = points[better.to(device)]
            for i in kept.tolist():
                found_by[i] = name

    def run(eps: float, rows: torch.Tensor) -> torch.Tensor:
        """The fixed-budget attack on ``rows`` at ε; smaller adversarials kept; (len,) success."""
        attack = create(s.attack, threat=s.kind(1.0).with_eps(eps), seed=s.seed, **s.options)
        hit_all = torch.zeros(rows.numel(), dtype=torch.bool)
        for start in range(0, rows.numel(), s.batch_size):
            r = rows[start : start + s.batch_size]
            rd = r.to(device)
            res = attack(model, x[rd], y[rd], goal=goal_for(rd), generator=generator)
            hit = res.success.cpu()
            hit_all[start : start + r.numel()] = hit
            keep(s.attack, r, hit, res.x_adv)
        return hit_all

    rows_all = todo.cpu()
    for name in s.extra:
        if rows_all.numel() == 0:
            break
        try:
            attack = create_minimum_norm(name, seed=s.seed)
            for start in range(0, rows_all.numel(), s.batch_size):
                r = rows_all[start : start + s.batch_size]
                rd = r.to(device)
                res = attack(model, x[rd], y[rd], goal=goal_for(rd), generator=generator)
                hit = (res.found & (res.distance <= s.max_eps)).cpu()
                keep(name, r, hit, res.x_adv)
            ran.append(name)
        except (RuntimeError, ValueError, TypeError) as err:
            # A minimum-norm attack that cannot run here must not cost the whole search.
            log.warning("minimum-norm attack %s skipped: %s", name, str(err).splitlines()[0])

    levels = _levels(s.eps_min, s.max_eps, s.rtol)
    k_count = levels.numel()
    # lo: largest level index where the attack failed (−1: none); hi: smallest level index
    # known to be broken (k_count: none). The distance lies in (levels[lo], levels[hi]].
    lo = torch.full((n,), -1, dtype=torch.long)
    hi = torch.where(torch.isfinite(best), _level_at_or_above(levels, best), k_count)
    hi = torch.where(searched, hi, torch.full_like(hi, -1))  # not searched: nothing to do

    if rows_all.numel():
        ran.append(s.attack)
    first = rows_all[hi[rows_all] == k_count]
    if first.numel():
        hit = run(s.max_eps, first)
        lo[first[~hit]] = k_count - 1
        hi[first[hit]] = _level_at_or_above(levels, best[first[hit]]).clamp(max=k_count - 1)
    while True:
        active = (hi - lo > 1).nonzero().flatten()
        if active.numel() == 0:
            break
        mid = _dyadic_split(lo[active], hi[active])
        for k in torch.unique(mid).tolist():
            rows = active[mid == k]
            hit = run(float(levels[k]), rows)
            lo[rows[~hit]] = k
            broken = rows[hit]
            # Success at level k bounds the distance by ε_k even when the kept adversarial's
            # norm rounds a hair above it; a smaller kept norm may bound it further.
            below = _level_at_or_above(levels, best[broken]).clamp(max=k)
            hi[broken] = torch.minimum(hi[broken], below)
    return _Found(best, x_adv, found_by, ran)


def minimal_distortion(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "l2",
    *,
    max_eps: float | None = None,
    eps_min: float | None = None,
    rtol: float = 0.05,
    attack: str = "apgd",
    attack_options: dict[str, Any] | None = None,
    min_norm_attacks: bool | Sequence[str] = True,
    batch_size: int = 500,
    seed: int = 0,
) -> MinimalDistortion:
    """Smallest misclassifying perturbation found per example, in ``norm``.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: inputs (N, ...) in [0, 1]; y: labels (N,).
        norm: one of :data:`multirobust.threats.NORMS` (``"linf"``, ``"l2"``, ``"l1"``).
        max_eps: largest ε searched (default :func:`default_max_eps`: any image reachable).
        eps_min: smallest ε of the grid (default ``max_eps / 1000``).
        rtol: relative spacing of the ε grid, i.e. the bisection's relative precision.
        attack: registered fixed-budget attack bisected over ε (``"apgd"`` or ``"pgd"``...).
        attack_options: its options (default :data:`DEFAULT_ATTACK_OPTIONS` for APGD: margin
            loss, 50 steps).
        min_norm_attacks: True: also run the registered minimum-norm attacks of this norm
            (cheapest first) and keep their results where smaller; False: none; or a list of
            registered minimum-norm attack names.
        batch_size: examples per attack call.
        seed: seed of the attacks' randomness.

    Returns:
        A :class:`MinimalDistortion`.
    """
    start = time.perf_counter()
    validate_inputs(x, y)
    s = _settings(
        norm,
        int(x[0].numel()),
        max_eps,
        eps_min,
        rtol,
        attack,
        attack_options,
        min_norm_attacks,
        batch_size,
        seed,
    )
    check_model_inputs(model, x)
    y = y.to(device=x.device, dtype=torch.long)
    n = x.shape[0]
    with attack_mode(model):
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, n, batch_size)])
        check_logits(logits, n)
        check_labels(y, logits.shape[1])
        correct = logits.argmax(1) == y
        generator = torch.Generator(device=x.device).manual_seed(seed)
        found = _search(
            model, x, y, correct.nonzero().flatten(), lambda rows: Untargeted(), s, generator
        )
    return MinimalDistortion(
        norm=s.kind(1.0).name,
        distances=found.distances,
        x_adv=found.x_adv,
        found_by=found.found_by,
        max_eps=s.max_eps,
        eps_min=s.eps_min,
        rtol=s.rtol,
        attacks=found.ran,
        seconds=time.perf_counter() - start,
    )


def _freeze(value: Any) -> tuple[tuple[str, Any], ...] | None:
    if value is None:
        return None
    items = value.items() if isinstance(value, Mapping) else value
    try:
        return tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid attack_options: {value!r} (must be a mapping of option names to values)"
        ) from None


@register("minimal-search")
@dataclass(frozen=True, kw_only=True)
class MinimalSearch(MinimumNormAttack):
    """The minimal-distortion search as a minimum-norm attack (see the module).

    Args:
        norm: the norm, one of :data:`multirobust.threats.NORMS`.
        attack: registered fixed-budget attack bisected over ε.
        attack_options: its options (default :data:`DEFAULT_ATTACK_OPTIONS` for APGD).
        max_eps: largest ε searched (default: the box's diameter in the norm).
        eps_min: smallest ε of the grid (default ``max_eps / 1000``).
        rtol: relative spacing of the ε grid.
        min_norm_attacks: also run the other minimum-norm attacks of the norm first (True), none
            (False) or the named ones.
        batch_size: examples per attack call.
    """

    cost: ClassVar[int] = 1000

    norm: str = "l2"
    attack: str = "apgd"
    attack_options: Any = None
    max_eps: float | None = None
    eps_min: float | None = None
    rtol: float = 0.05
    min_norm_attacks: Any = True
    batch_size: int = 500

    def _validate(self) -> None:
        object.__setattr__(self, "attack_options", _freeze(self.attack_options))
        if not isinstance(self.min_norm_attacks, bool):
            object.__setattr__(self, "min_norm_attacks", tuple(self.min_norm_attacks))
        self._settings(1)

    def _settings(self, dim: int) -> _Search:
        options = None if self.attack_options is None else dict(self.attack_options)
        return _settings(
            self.norm,
            dim,
            self.max_eps,
            self.eps_min,
            self.rtol,
            self.attack,
            options,
            self.min_norm_attacks,
            self.batch_size,
            self.seed,
        )

    def geometry(self) -> type[LpBall]:
        return _ball_class(self.norm)

    @classmethod
    def supports(cls, threat: Any) -> bool:
        return bool(threat.additive)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        # The norm and the largest ε are the context's ball: this attack's own (the whole box)
        # as a minimum-norm attack, the budget when run within one (attacks.create(..., threat)).
        ball = ctx.ball
        s = _settings(
            ball.name,
            int(ctx.x[0].numel()),
            ball.eps if self.max_eps is None else min(self.max_eps, ball.eps),
            self.eps_min,
            self.rtol,
            self.attack,
            None if self.attack_options is None else dict(self.attack_options),
            self.min_norm_attacks,
            self.batch_size,
            self.seed,
        )

        def goal_for(rows: torch.Tensor) -> Goal:
            if ctx.targets is not None:
                return Targeted(ctx.targets[rows])
            if ctx.threshold is not None:
                return ReduceConfidence(ctx.threshold)
            return Untargeted()

        every = torch.arange(ctx.x.shape[0], device=ctx.x.device)
        found = _search(ctx.model, ctx.x, ctx.y, every, goal_for, s, ctx.generator)
        return found.x_adv, torch.isfinite(found.distances).to(ctx.x.device)


__all__ = [
    "DEFAULT_ATTACK_OPTIONS",
    "MinimalDistortion",
    "MinimalSearch",
    "check_norms",
    "default_max_eps",
    "minimal_distortion",
    "minimum_norm_attacks_for",
]
