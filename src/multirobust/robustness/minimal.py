"""Per-example minimal adversarial distortion under ℓ∞, ℓ2 or ℓ1, by batched bisection over ε.

For each example, the smallest ε at which an attack finds an adversarial example is searched by
bisection, with every example keeping its own ε interval. The fixed-budget attack (APGD by
default) runs under ordinary scalar-ε threat models, so the search works on a fixed geometric
grid of K ε levels: in each round every example picks the level that splits its interval (the
one with the most trailing zero bits in its position, so that examples with different intervals
pick the same few levels), the examples are grouped by level, and each distinct level is one
batched attack call on its group. This is exact — every call is the registered attack under a
real ``LpBall`` with its exact box-aware projection, and every kept result is checked by the
attack contract — and costs the same number of attack runs per example as a scalar bisection:
one at the largest ε plus at most ⌈log2 K⌉.

(Why not a per-example-ε threat object: attacks drop broken examples from their batch mid-run,
and a threat model sees only the clean inputs of the rows still running, so a tensor ε cannot
follow the rows. Why not rescaling each example's ball to radius 1: the rescaled input box is no
longer [0, 1], so the projection would no longer be onto the real set.)

Minimum-norm attacks (``deepfool-*``, ``cw-*``), when registered, run first: their results give
each example an upper bound before the bisection starts, and the smallest adversarial found by
any attack is kept. The distance reported for an example is the norm of that adversarial, which
the model misclassifies (checked by a fresh forward pass): an upper bound on the true minimal
distortion, at most a factor (1 + rtol) above the largest ε at which the attack failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import attacks
from ..attacks.base import check_logits, validate_inputs
from ..threats import L1Ball, L2Ball, LinfBall, LpBall

log = logging.getLogger(__name__)

NORMS = ("linf", "l2", "l1")
_BALLS: dict[str, type[LpBall]] = {"linf": LinfBall, "l2": L2Ball, "l1": L1Ball}

#: Minimum-norm attacks tried first for each norm, when they are registered.
MIN_NORM_ATTACKS: dict[str, tuple[str, ...]] = {
    "linf": ("deepfool-linf", "cw-linf"),
    "l2": ("deepfool-l2", "cw-l2"),
    "l1": (),
}

#: Options of the default fixed-budget attack: the margin loss does not saturate with the
#: softmax (cross-entropy gradients vanish on over-confident models) and works with 2 classes.
DEFAULT_ATTACK_OPTIONS: dict[str, Any] = {"loss": "margin", "steps": 50}


def default_max_eps(norm: str, dim: int) -> float:
    """The largest ε searched by default: enough to reach any image of [0, 1]^dim.

    ℓ∞: 1; ℓ2: √dim (the box's diagonal); ℓ1: dim.
    """
    _check_norm(norm)
    return {"linf": 1.0, "l2": math.sqrt(dim), "l1": float(dim)}[norm]


def _check_norm(norm: Any) -> str:
    if norm not in NORMS:
        raise ValueError(f"Invalid norm: {norm!r} (must be one of {', '.join(NORMS)})")
    return str(norm)


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
    """Smallest adversarial perturbation found per example, in the ``norm`` of the threat.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: inputs (N, ...) in [0, 1]; y: labels (N,).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        max_eps: largest ε searched (default :func:`default_max_eps`: any image reachable).
        eps_min: smallest ε of the grid (default ``max_eps / 1000``).
        rtol: relative spacing of the ε grid, i.e. the bisection's relative precision.
        attack: registered fixed-budget attack bisected over ε (``"apgd"`` or ``"pgd"``...).
        attack_options: its options (default :data:`DEFAULT_ATTACK_OPTIONS` for APGD: margin
            loss, 50 steps).
        min_norm_attacks: True: also run the registered minimum-norm attacks of this norm
            (:data:`MIN_NORM_ATTACKS`) under the ``max_eps`` ball and keep their results where
            smaller; False: none; or a list of registered attack names.
        batch_size: examples per attack call.
        seed: seed of the attacks' randomness.

    Returns:
        A :class:`MinimalDistortion`.
    """
    start = time.perf_counter()
    norm = _check_norm(norm)
    validate_inputs(x, y)
    dim = int(x[0].numel())
    max_eps = default_max_eps(norm, dim) if max_eps is None else max_eps
    for name, value in (("max_eps", max_eps), ("rtol", rtol)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"Invalid {name}: {value!r} (must be a number > 0)")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
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
    if attack not in attacks.names():
        raise ValueError(f"Unknown attack {attack!r} (available: {', '.join(attacks.names())})")
    options = dict(DEFAULT_ATTACK_OPTIONS if attack_options is None else attack_options)
    if attack_options is None and attack != "apgd":
        options = {k: v for k, v in options.items() if k in _fields(attack)}
    # Built once here so bad options fail before any work.
    attacks.create(attack, threat=_BALLS[norm](max_eps), seed=seed, **options)
    if isinstance(min_norm_attacks, bool):
        registered = [a for a in MIN_NORM_ATTACKS[norm] if a in attacks.names()]
        extra = registered if min_norm_attacks else []
    else:
        extra = list(min_norm_attacks)
        unknown = [a for a in extra if a not in attacks.names()]
        if unknown:
            raise ValueError(
                f"Unknown min_norm_attacks {', '.join(map(repr, unknown))} "
                f"(available: {', '.join(attacks.names())})"
            )

    y = y.to(device=x.device, dtype=torch.long)
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        return _search(
            model,
            x,
            y,
            norm,
            max_eps,
            float(eps_min),
            float(rtol),
            attack,
            options,
            extra,
            batch_size,
            seed,
            start,
        )
    finally:
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


def _search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    max_eps: float,
    eps_min: float,
    rtol: float,
    attack: str,
    options: dict[str, Any],
    extra: list[str],
    batch_size: int,
    seed: int,
    start: float,
) -> MinimalDistortion:
    """The search itself (model in eval mode, arguments checked)."""
    n = x.shape[0]
    device = x.device
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, n, batch_size)])
    check_logits(logits, n)
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
        raise ValueError(
            f"Labels out of range: found {int(y.min())}..{int(y.max())}, the model has "
            f"{logits.shape[1]} classes"
        )
    correct = (logits.argmax(1) == y).cpu()
    best = torch.where(correct, math.inf, 0.0).to(torch.float64)
    x_adv = x.detach().clone()
    found_by: list[str | None] = [None if bool(c) else "clean" for c in correct]
    generator = torch.Generator(device=device).manual_seed(seed)
    ran: list[str] = []

    def run(name: str, opts: dict[str, Any], eps: float, rows: torch.Tensor) -> torch.Tensor:
        """Attack ``rows`` at ε; keep smaller adversarials; return (len(rows),) success."""
        threat = _BALLS[norm](eps)
        atk = attacks.create(name, threat=threat, seed=seed, **opts)
        hit_all = torch.zeros(rows.numel(), dtype=torch.bool)
        for s in range(0, rows.numel(), batch_size):
            r = rows[s : s + batch_size]
            rd = r.to(device)
            res = atk(model, x[rd], y[rd], generator=generator)
            dist = threat.norm(res.x_adv.to(torch.float64) - x[rd].to(torch.float64)).cpu()
            hit = res.success.cpu()
            hit_all[s : s + r.numel()] = hit
            better = hit & (dist < best[r])
            if bool(better.any()):
                keep = r[better]
                best[keep] = dist[better]
                x_adv[keep.to(device)] = res.x_adv[better.to(device)]
                for i in keep.tolist():
                    found_by[i] = name
        return hit_all

    todo = correct.nonzero().flatten()
    for name in extra:
        if todo.numel() == 0:
            break
        try:
            run(name, {}, max_eps, todo)
            ran.append(name)
        except (RuntimeError, ValueError, TypeError) as err:
            # A minimum-norm attack that cannot run here must not cost the whole search.
            log.warning("minimum-norm attack %s skipped: %s", name, str(err).splitlines()[0])

    levels = _levels(eps_min, max_eps, rtol)
    k_count = levels.numel()
    # lo: largest level index where the attack failed (−1: none); hi: smallest level index
    # known to be broken (k_count: none). The distance lies in (levels[lo], levels[hi]].
    lo = torch.full((n,), -1, dtype=torch.long)
    hi = torch.where(torch.isfinite(best), _level_at_or_above(levels, best), k_count)
    hi = torch.where(correct, hi, torch.full_like(hi, -1))  # misclassified: nothing to search

    if todo.numel():
        ran.append(attack)
    first = todo[hi[todo] == k_count]
    if first.numel():
        hit = run(attack, options, max_eps, first)
        lo[first[~hit]] = k_count - 1
        hi[first[hit]] = _level_at_or_above(levels, best[first[hit]]).clamp(max=k_count - 1)
    while True:
        active = (hi - lo > 1).nonzero().flatten()
        if active.numel() == 0:
            break
        mid = _dyadic_split(lo[active], hi[active])
        for k in torch.unique(mid).tolist():
            rows = active[mid == k]
            hit = run(attack, options, float(levels[k]), rows)
            lo[rows[~hit]] = k
            broken = rows[hit]
            # Success at level k bounds the distance by ε_k even when the kept adversarial's
            # norm rounds a hair above it; a smaller kept norm may bound it further.
            below = _level_at_or_above(levels, best[broken]).clamp(max=k)
            hi[broken] = torch.minimum(hi[broken], below)
    return MinimalDistortion(
        norm=norm,
        distances=best,
        x_adv=x_adv,
        found_by=found_by,
        max_eps=max_eps,
        eps_min=eps_min,
        rtol=rtol,
        attacks=ran,
        seconds=time.perf_counter() - start,
    )


def _fields(attack: str) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(attacks.get(attack))}


def check_norms(norms: str | Sequence[str]) -> list[str]:
    """The norms of ``norms`` (one name or several), checked, duplicates dropped, order kept."""
    items = [norms] if isinstance(norms, str) else list(norms)
    out: list[str] = []
    for norm in items:
        if _check_norm(norm) not in out:
            out.append(norm)
    return out
