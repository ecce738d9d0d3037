"""Randomized smoothing: Cohen et al.'s PREDICT and CERTIFY, and a sequential CERTIFY.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML
2019 (arXiv:1902.02918), Section 3.2 and Figure/Pseudocode 1. The smoothed classifier of a base
classifier ``f`` under noise ``η`` is ``g(x) = argmax_c P(f(x + η) = c)``.

CERTIFY(f, x, n0, n, α):
    counts0 ← SAMPLEUNDERNOISE(f, x, n0);  ĉ_A ← argmax counts0
    counts ← SAMPLEUNDERNOISE(f, x, n);     p̲_A ← LowerConfBound(counts[ĉ_A], n, 1 − α)
    if p̲_A > ½: return ĉ_A with radius R(p̲_A)  else: ABSTAIN

With probability at least 1 − α over the noise, a returned class is ``g(x)`` and ``g`` is
constant on the ball of radius ``R(p̲_A)`` (:class:`~.noise.Noise`: ``σ Φ⁻¹(p̲_A)`` in ℓ2 for
Gaussian noise). The selection samples are separate from the estimation samples, which is what
makes the one-sided Clopper–Pearson bound valid for the selected class.

PREDICT(f, x, n, α):
    counts ← SAMPLEUNDERNOISE(f, x, n);  ĉ_A, ĉ_B ← the top two classes
    if BinomPValue(n_A, n_A + n_B, ½) ≤ α: return ĉ_A  else: ABSTAIN

returns a class other than ``g(x)`` with probability at most α (two-sided exact binomial test).

Noise is drawn ``batch_size`` samples at a time (memory stays bounded whatever ``n``), on the
input's device and dtype, only from the ``generator`` given: the same seed gives the same
certificate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import model_state
from .noise import Noise, parse_noise
from .stats import (
    binomial_p_value,
    check_alpha,
    check_count,
    lower_bound,
    upper_bound,
)

__all__ = ["ABSTAIN", "Smooth", "SmoothingResult", "checkpoints"]

#: The class index returned for an abstention.
ABSTAIN = -1


@dataclass
class SmoothingResult:
    """Per-example outcome of :meth:`Smooth.certify` (or :meth:`Smooth.certify_sequential`).

    Attributes:
        noise: the smoothing distribution (text, e.g. ``"gaussian:0.25"``).
        norm: the norm of the radius (``"l2"`` or ``"l1"``).
        n0, n, alpha: selection samples, estimation samples (the most any example used for a
            sequential run), level.
        cap: the largest radius ``n`` samples can certify at level α (:meth:`Noise.radius_cap`).
        prediction: per example the certified class, or :data:`ABSTAIN` (-1).
        radius: per example the certified radius (0 when abstaining).
        p_lower: per example the lower confidence bound of p_A.
        count: per example the estimation samples falling in the selected class.
        samples: per example the noisy forward passes spent (selection + estimation).
    """

    noise: str
    norm: str
    n0: int
    n: int
    alpha: float
    cap: float
    prediction: list[int] = field(default_factory=list)
    radius: list[float] = field(default_factory=list)
    p_lower: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    def certified_accuracy(self, labels: Sequence[int], radius: float) -> float:
        """Fraction of examples with the right class certified at ``radius`` or more."""
        hits = sum(
            1
            for p, r, y in zip(self.prediction, self.radius, labels, strict=True)
            if p == int(y) and r >= radius
        )
        return hits / max(len(self.prediction), 1)


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of images")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values: smoothing needs finite inputs")


def checkpoints(n_start: int, n_max: int) -> list[int]:
    """Sample sizes ``n_start · 2^k`` below ``n_max``, then ``n_max``: where a sequential
    certification looks at its counts."""
    out = []
    size = n_start
    while size < n_max:
        out.append(size)
        size *= 2
    out.append(n_max)
    return out


class Smooth:
    """The smoothed classifier ``g`` of a base classifier ``f`` under a noise distribution.

    Args:
        model: the base classifier ``f`` (logits); used in eval mode, restored afterwards.
        noise: a :class:`~.noise.Noise` or text (``"gaussian:0.25"``, ``"uniform:1"``,
            ``"laplace:0.5"``).
        batch_size: noisy copies evaluated per forward pass (memory bound).

    Raises:
        ValueError: for an invalid noise (σ ≤ 0, unknown name) or batch size.
    """

    def __init__(self, model: nn.Module, noise: Noise | str, *, batch_size: int = 1000) -> None:
        self.model = model
        self.noise = parse_noise(noise)
        self.batch_size = check_count(batch_size, "batch_size")

    # ------------------------------------------------------------------ sampling
    def _generator(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        if generator is None:
            return torch.Generator(device=x.device).manual_seed(0)
        if generator.device.type != x.device.type:
            raise ValueError(
                f"The generator is on {generator.device}, the inputs on {x.device}: create it "
                "with torch.Generator(device=x.device)"
            )
        return generator

    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        generator: torch.Generator,
        *,
        on_samples: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """SAMPLEUNDERNOISE: how often ``f(x + η)`` returns each class over ``num`` draws.

        Args:
            x: one image ``(C, H, W)`` (or any single input shape).
            num: noisy copies to classify.
            generator: noise source on ``x``'s device.
            on_samples: called with the number of samples after every chunk (progress).

        Returns:
            Counts per class ``(num_classes,)``, int64, on ``x``'s device.
        """
        counts: torch.Tensor | None = None
        done = 0
        with model_state(self.model), torch.no_grad():
            while done < num:
                b = min(self.batch_size, num - done)
                batch = self.noise.sample((b, *x.shape), like=x, generator=generator)
                batch.add_(x)
                logits = self.model(batch)
                if counts is None:
                    counts = torch.zeros(logits.shape[1], dtype=torch.long, device=x.device)
                counts += torch.bincount(logits.argmax(1), minlength=counts.numel())
                done += b
                if on_samples is not None:
                    on_samples(b)
        assert counts is not None
        return counts

    # ------------------------------------------------------------------ Cohen et al.
    def predict(
        self,
        x: torch.Tensor,
        *,
        n: int = 100_000,
        alpha: float = 0.001,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PREDICT: ``g(x)`` per example, or :data:`ABSTAIN` when the top two are too close.

        Args:
            x: inputs ``(N, ...)``.
            n: noisy samples per example.
            alpha: the probability of returning a class other than ``g(x)`` is at most α.
            generator: noise source on ``x``'s device (default: seed 0).

        Returns:
            ``(N,)`` int64 predictions, -1 for an abstention.
        """
        n = check_count(n, "n")
        alpha = check_alpha(alpha)
        _check_images(x)
        gen = self._generator(x, generator)
        out = []
        for i in range(x.shape[0]):
            counts = self.sample_counts(x[i], n, gen).cpu()
            top2 = counts.topk(2)
            n_a, n_b = int(top2.values[0]), int(top2.values[1])
            ok = binomial_p_value(n_a, n_a + n_b) <= alpha
            out.append(int(top2.indices[0]) if ok else ABSTAIN)
        return torch.tensor(out, dtype=torch.long, device=x.device)

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        generator: torch.Generator | None = None,
        on_samples: Callable[[int], None] | None = None,
    ) -> SmoothingResult:
        """CERTIFY: the class ``g(x)`` and a radius around ``x`` where ``g`` is constant.

        Args:
            x: inputs ``(N, ...)``.
            n0: selection samples (Cohen et al.: 100).
            n: estimation samples (Cohen et al.: 100,000); at least n0.
            alpha: failure probability of each certificate (Cohen et al.: 0.001).
            generator: noise source on ``x``'s device (default: seed 0).
            on_samples: progress callback, called with each chunk's sample count.

        Returns:
            A :class:`SmoothingResult` with one entry per example.

        Raises:
            ValueError: for n0 > n, n0 or n < 1, α outside (0, 1), NaN inputs.
        """
        n0 = check_count(n0, "n0")
        n = check_count(n, "n")
        if n0 > n:
            raise ValueError(f"Invalid n0: {n0} > n = {n} (the selection samples n0 must be <= n)")
        alpha = check_alpha(alpha)
        _check_images(x)
        gen = self._generator(x, generator)
        result = self._empty(n0, n, alpha)
        for i in range(x.shape[0]):
            guess = int(self.sample_counts(x[i], n0, gen, on_samples=on_samples).argmax())
            count = int(self.sample_counts(x[i], n, gen, on_samples=on_samples)[guess])
            p = lower_bound(count, n, alpha)
            self._append(result, guess, p, count, n0 + n)
        return result

    def _empty(self, n0: int, n: int, alpha: float) -> SmoothingResult:
        return SmoothingResult(
            noise=str(self.noise),
            norm=self.noise.norm,
            n0=n0,
            n=n,
            alpha=alpha,
            cap=self.noise.radius_cap(n, alpha),
        )

    def _append(
        self, result: SmoothingResult, guess: int, p: float, count: int, samples: int
    ) -> None:
        certified = p > 0.5
        result.prediction.append(guess if certified else ABSTAIN)
        result.radius.append(self.noise.radius(p) if certified else 0.0)
        result.p_lower.append(p)
        result.count.append(count)
        result.samples.append(samples)

    # ------------------------------------------------------------------ sequential
    def certify_sequential(
        self,
        x: torch.Tensor,
        radii: Sequence[float],
        *,
        n0: int = 100,
        n_start: int = 100,
        n_max: int = 102_400,
        alpha: float = 0.001,
        final_share: float = 0.5,
        futility_alpha: float | None = None,
        generator: torch.Generator | None = None,
        on_samples: Callable[[int], None] | None = None,
    ) -> SmoothingResult:
        """CERTIFY with early stopping, for target radii: same (1 − α) guarantee, fewer samples.

        Estimation samples are drawn in one growing sequence and looked at after
        ``n_1 < n_2 < … < n_K`` of them (:func:`checkpoints`: ``n_start · 2^k``, then
        ``n_max``). At look k the one-sided Clopper–Pearson bound ``L_k`` of p_A is taken at
        level ``α_k``, with ``α_K = final_share · α`` at the last look and the rest
        ``(1 − final_share) α`` split evenly over the earlier ones, so ``Σ_k α_k = α``. The
        certificate is ``R(max_k L_k)`` over the looks made. The run stops once that radius
        reaches the largest target, or once no later look can certify the next target:
        deterministically (even if every remaining sample fell in ĉ_A), or, when
        ``futility_alpha`` is given, when the (1 − futility_alpha) upper bound of p_A falls
        below the threshold ``R⁻¹(target)``.

        Guarantee (union bound over the looks). Let ĉ_A be fixed by the selection samples,
        independent of the estimation samples, and let ``p`` be its true probability. For each
        fixed k, ``K_k ~ Binomial(n_k, p)``, so ``P(L_k > p) ≤ α_k`` (Clopper–Pearson). Hence
        ``P(∃k: L_k > p) ≤ Σ_k α_k = α``, whatever the looks at which the run stops (stopping
        only removes looks, shrinking the union). Outside that event ``max_k L_k ≤ p``, so
        ``R(max_k L_k) ≤ R(p)``: the returned class has probability above ½ and ``g`` is
        constant on that radius, exactly as for CERTIFY (Cohen et al., Theorem 1 and
        Proposition 2). Stopping for futility only returns a smaller radius or abstains,
        which is never wrong; it is why ``futility_alpha`` needs no share of α.

        Args:
            x: inputs ``(N, ...)``.
            radii: the target radii (in the noise's norm) the caller wants decided; each
                example stops once all of them are decided.
            n0: selection samples.
            n_start: estimation samples at the first look.
            n_max: estimation samples at the last look (the most any example uses).
            alpha: overall failure probability of each certificate.
            final_share: the part of α spent at the last look, in (0, 1]; 1 makes the run a
                fixed-n CERTIFY at n_max with futility stops only.
            futility_alpha: level of the upper bound that stops hopeless examples early
                (None: deterministic stops only).
            generator: noise source on ``x``'s device (default: seed 0).
            on_samples: progress callback.

        Returns:
            A :class:`SmoothingResult`; ``samples`` holds each example's actual cost and ``n``
            is ``n_max``; ``cap`` is the cap at the last look's level.
        """
        n0 = check_count(n0, "n0")
        n_start = check_count(n_start, "n_start")
        n_max = check_count(n_max, "n_max")
        if n_start > n_max:
            raise ValueError(f"Invalid n_start: {n_start} > n_max = {n_max}")
        if n0 > n_max:
            raise ValueError(f"Invalid n0: {n0} > n_max = {n_max} (n0 must be <= n)")
        alpha = check_alpha(alpha)
        if not 0.0 < float(final_share) <= 1.0:
            raise ValueError(f"Invalid final_share: {final_share!r} (must be in (0, 1])")
        if futility_alpha is not None:
            futility_alpha = check_alpha(futility_alpha)
        targets = sorted(float(r) for r in radii)
        if not targets or any(not (r > 0 and math.isfinite(r)) for r in targets):
            raise ValueError(f"Invalid radii: {list(radii)!r} (give one or more radii > 0)")
        _check_images(x)
        gen = self._generator(x, generator)
        looks = checkpoints(n_start, n_max)
        k_total = len(looks)
        if k_total == 1:
            levels = [alpha]
        else:
            early = (1.0 - final_share) * alpha / (k_total - 1)
            levels = [early] * (k_total - 1) + [final_share * alpha]
        thresholds = [self.noise.threshold(r) for r in targets]
        result = self._empty(n0, n_max, alpha)
        result.cap = self.noise.radius_cap(n_max, levels[-1])
        for i in range(x.shape[0]):
            guess = int(self.sample_counts(x[i], n0, gen, on_samples=on_samples).argmax())
            count, drawn, best = 0, 0, 0.0
            for k, size in enumerate(looks):
                if levels[k] <= 0:
                    continue
                counts = self.sample_counts(x[i], size - drawn, gen, on_samples=on_samples)
                count += int(counts[guess])
                drawn = size
                best = max(best, lower_bound(count, drawn, levels[k]))
                if best >= thresholds[-1]:
                    break  # every target certified
                pending = next(t for t in thresholds if best < t)
                hope = (
                    max(
                        lower_bound(count + (m - drawn), m, levels[j])
                        for j, m in enumerate(looks)
                        if j > k and levels[j] > 0
                    )
                    if k + 1 < k_total
                    else 0.0
                )
                if hope < pending:
                    break  # no later look can certify the next target
                if futility_alpha is not None and upper_bound(count, drawn, futility_alpha) < (
                    pending
                ):
                    break
            self._append(result, guess, best, count, n0 + drawn)
        return result
