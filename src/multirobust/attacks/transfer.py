"""Transfer attacks: craft on a surrogate with a white-box attack, count only what fools the
target. The fallback when the target's own gradients are blocked, zero or useless.

A model can hide behind a layer whose gradient is zero, missing or wrong (a non-differentiable
preprocessing step, a straight-through trick gone wrong, ``detach()``): every white-box attack
then walks blind and only black-box search is left. Adversarial examples transfer between
models (Papernot et al. 2016; Tramèr et al. 2017), so an adversary who knows the trick crafts
on a model with honest gradients and replays the result: the target's *decisions* are all that
matter. The surrogate is the target's undefended twin when one exists (the same network without
the masking layer), or a model distilled from the target's outputs (:func:`distill_surrogate`,
model stealing in the sense of Tramèr et al. 2016 and Papernot et al. 2017), which needs
nothing but queries.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..models.state import model_state
from ..threats import Threat, ThreatParams
from .base import Attack, Context, check_positive, check_positive_int
from .goals import goal_of
from .registry import create, get, register


def default_surrogate(x: torch.Tensor, num_classes: int, hidden: int = 256) -> nn.Module:
    """A surrogate for inputs like ``x``: ``small_cnn`` for square images (N, C, H, H), else a
    one-hidden-layer MLP on the flattened input."""
    if x.dim() == 4 and x.shape[2] == x.shape[3] and x.shape[2] >= 4:
        net = models.create(
            "small_cnn", num_classes=num_classes, in_channels=x.shape[1], input_size=x.shape[2]
        )
    else:
        d = x[0].numel()
        net = nn.Sequential(
            nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
    return net.to(device=x.device, dtype=x.dtype)


def distill_surrogate(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    surrogate: nn.Module | None = None,
    threat: Threat | None = None,
    samples: int = 8,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Train a surrogate to imitate ``model``'s outputs around ``inputs``; only queries are used.

    The query set is ``inputs`` and, per input, ``samples`` − 1 random points of ``threat``'s
    ball around it (where the attack will look), labelled with the target's softmax at
    temperature T. The surrogate minimises the distillation loss (Hinton et al. 2015)

        T² · KL(softmax(z_target / T) ‖ softmax(z_surrogate / T))

    with Adam for ``steps`` minibatches. ``model`` is only called forward, in eval mode, without
    gradients, and is left exactly as it was.

    Args:
        model: the target (any classifier returning logits; its gradients are never used).
        inputs: unlabelled inputs (N, ...) in the box: the evaluation batch, or more data.
        surrogate: the network to train (a copy is trained; the argument is left alone);
            :func:`default_surrogate` (``small_cnn`` for images) when None.
        threat: threat model to sample extra query points from (random members around each
            input); only ``inputs`` when None.
        samples: query points per input (≥ 1; 1 means ``inputs`` only).
        steps: Adam steps.
        batch_size: query points per step.
        lr: Adam's step size.
        temperature: T of the soft labels.
        generator: all randomness (query points, minibatches, a default surrogate's weights).

    Returns:
        The trained surrogate, in eval mode with ``requires_grad`` off.
    """
    check_positive_int("samples", samples)
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive("lr", lr)
    check_positive("temperature", temperature)
    if generator is None:
        generator = torch.Generator(device=inputs.device).manual_seed(0)
    x = inputs.detach()
    pool = [x]
    if threat is not None and not threat.is_trivial:
        pool += [threat.sample(x, generator)[0] for _ in range(samples - 1)]
    queries = torch.cat(pool)
    with model_state(model), torch.no_grad():
        soft = torch.cat(
            [model(queries[i : i + 512]) for i in range(0, queries.shape[0], 512)]
        ).div(temperature)
    soft = soft.softmax(1)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=x.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = (
            default_surrogate(x, soft.shape[1])
            if surrogate is None
            else copy.deepcopy(surrogate).to(device=x.device, dtype=x.dtype)
        )
    with model_state(net, train=True, requires_grad=True):
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        n = queries.shape[0]
        for _ in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=generator, device=x.device)
            logits = net(queries[idx]) / temperature
            loss = F.kl_div(logits.log_softmax(1), soft[idx], reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            (loss * temperature**2).backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _freeze_options(value: Any) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    try:
        return tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid options: {value!r} (must be a mapping of option names to values)"
        ) from None


@register("transfer")
@dataclass(frozen=True, kw_only=True)
class Transfer(Attack):
    """Transfer attack: a white-box attack on ``surrogate``, success judged on the target only.

    The adversarial points are crafted on the surrogate (with the caller's goal and targets)
    and then evaluated, like every attack's result, by a fresh forward pass of the *target*:
    an example counts as broken only if the target misclassifies it. The target's gradients
    are never used; it is queried once per example (plus the distillation queries).

    Args:
        surrogate: the model to craft on: the target's undefended twin, or any model that
            imitates it. None: a surrogate is distilled from the target's outputs on the batch
            and random points of the ball (:func:`distill_surrogate`) before crafting.
        distill: also distil a given ``surrogate`` (a trained copy; the argument is left
            alone) instead of using it as it is.
        attack: the registered white-box attack run on the surrogate.
        steps: its ``steps`` (when it has that option).
        options: its other options, e.g. ``{"loss": "dlr"}``. The default is PGD that keeps
            going after the surrogate is fooled (``early_stop=False``): a point deep inside the
            surrogate's wrong region transfers better than one on its boundary.
        distill_samples, distill_steps: the query points per input and Adam steps of the
            distillation.
    """

    surrogate: nn.Module | None = None
    distill: bool = False
    attack: str = "pgd"
    steps: int = 100
    options: Any = (("early_stop", False),)
    distill_samples: int = 8
    distill_steps: int = 300

    def _validate(self) -> None:
        object.__setattr__(self, "options", _freeze_options(self.options))
        if self.attack == self.name:
            raise ValueError("Invalid attack: 'transfer' (must be a white-box attack)")
        if self.surrogate is not None and not isinstance(self.surrogate, nn.Module):
            raise ValueError(
                f"Invalid surrogate: {type(self.surrogate).__name__} (must be an nn.Module)"
            )
        if not isinstance(self.distill, bool):
            raise ValueError(f"Invalid distill: {self.distill!r} (must be True or False)")
        check_positive_int("steps", self.steps)
        check_positive_int("distill_samples", self.distill_samples)
        check_positive_int("distill_steps", self.distill_steps)
        # Build the inner attack once to check the name and options now, not mid-evaluation.
        self._inner(self.threat_model)

    def _inner(self, threat: Threat) -> Attack:
        """The white-box attack run on the surrogate."""
        options = dict(self.options)
        if "steps" in {f.name for f in dataclasses.fields(get(self.attack))}:
            options.setdefault("steps", self.steps)
        return create(self.attack, threat=threat, seed=self.seed, **options)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        surrogate = self.surrogate
        if surrogate is None or self.distill:
            surrogate = distill_surrogate(
                ctx.model,
                ctx.x,
                surrogate=surrogate,
                threat=ctx.threat,
                samples=self.distill_samples,
                steps=self.distill_steps,
                generator=ctx.generator,
            )
        inner = self._inner(ctx.threat)
        # The caller's goal, resolved for these examples (targets, confidence threshold).
        goal = goal_of(ctx.targets, ctx.threshold)
        result = inner(surrogate, ctx.x, ctx.y, goal=goal, generator=ctx.generator)
        return result.x_adv, None
