"""Attacks run example by example, batched in lock step, with a trace of every query.

A query budget is a budget *per example*: "robust accuracy at 1,000 queries" asks, for each
image, whether the attack broke it within its first 1,000 queries. A batched attack only reports
the total it spent, so :func:`trace_attack` runs the attack on one example at a time, each in its
own thread with its own generator, and a lock-step batcher merges their model calls: when every
running example has submitted its next call, the calls go to the model as one batch (one HTTP
request for a :class:`~multirobust.api.RemoteModel`, split at the server's maximum batch) and the
answers go back to their examples. Each example's calls, its answers and the randomness it draws
are the same as if it ran alone, and examples are assigned to threads in a fixed order, so the
batches, and every result, are the same from run to run.

Each example's proxy model counts its queries, stops the example at its budget (the call that
would exceed it is not sent), and records:

- whether the clean image (the contract's first query) met the goal already;
- the first query that lies inside the threat model and meets the goal (its index, counted as
  the server counts: the clean query is number 1), and that point;
- the smallest perturbation norm among the queries that met the goal, each time it shrinks
  (minimal-distortion curves for decision-based attacks).

Success is what a query answered, never the attack's own claim.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..attacks import Attack
from ..threats import LpBall


class _Exhausted(Exception):
    """An example reached its query budget (raised inside its attack, caught by its thread)."""


@dataclass
class Trace:
    """What the queries of one example showed.

    Attributes:
        index: the example's position in the batch given to :func:`trace_attack`.
        queries: queries spent on it (the clean query included).
        clean_met: the goal held at the clean image (misclassified already).
        first_success: index (1-based) of the first query inside the threat model that met the
            goal; None if none did.
        norm: the perturbation norm at ``first_success``.
        best: (query index, norm) each time a query met the goal with a smaller norm (any norm,
            inside the ball or not).
        x_adv: the point of ``first_success`` (None if none).
        error: a message if the attack failed for another reason than the budget.
    """

    index: int
    queries: int = 0
    clean_met: bool | None = None
    first_success: int | None = None
    norm: float | None = None
    best: list[tuple[int, float]] = field(default_factory=list)
    x_adv: torch.Tensor | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the image)."""
        return {
            "index": self.index,
            "queries": self.queries,
            "clean_met": self.clean_met,
            "first_success": self.first_success,
            "norm": self.norm,
            "best": [[q, v] for q, v in self.best],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        return cls(
            index=int(d["index"]),
            queries=int(d["queries"]),
            clean_met=d["clean_met"],
            first_success=d["first_success"],
            norm=d["norm"],
            best=[(int(q), float(v)) for q, v in d["best"]],
            error=d.get("error"),
        )


class _Lockstep:
    """Merges the model calls of the running slots into one batch per round."""

    def __init__(self, model: nn.Module, slots: int) -> None:
        self.model = model
        self.active = slots
        self.cond = threading.Condition()
        self.pending: dict[int, torch.Tensor] = {}
        self.results: dict[int, torch.Tensor | BaseException] = {}
        self.rounds = 0

    def call(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        with self.cond:
            self.pending[slot] = x
            if len(self.pending) == self.active:
                self._flush()
            while slot not in self.results:
                self.cond.wait()
            out = self.results.pop(slot)
        if isinstance(out, BaseException):
            raise out
        return out

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            if self.pending and len(self.pending) == self.active:
                self._flush()

    def _flush(self) -> None:
        """Answer every pending call with one model call (the lock is held)."""
        order = sorted(self.pending)
        sizes = [self.pending[s].shape[0] for s in order]
        try:
            with torch.no_grad():
                out = self.model(torch.cat([self.pending[s] for s in order]))
            parts: list[torch.Tensor | BaseException] = list(out.split(sizes))
        except BaseException as err:  # every waiting example sees the failure
            parts = [err] * len(order)
        for s, part in zip(order, parts, strict=True):
            self.results[s] = part
        self.pending.clear()
        self.rounds += 1
        self.cond.notify_all()


class _Proxy(nn.Module):
    """One example's view of the model: batched through the lock step, counted and traced."""

    def __init__(
        self,
        step: _Lockstep,
        slot: int,
        trace: Trace,
        x: torch.Tensor,
        goal: Any,
        threat: LpBall,
        budget: int,
    ) -> None:
        super().__init__()
        self.step, self.slot, self.trace = step, slot, trace
        self.x, self.goal, self.threat, self.budget = x, goal, threat, budget

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trace
        k = x.shape[0]
        if t.queries + k > self.budget:
            raise _Exhausted
        out = self.step.call(self.slot, x.detach())
        met = self.goal(out)
        start = t.queries
        t.queries += k
        if t.clean_met is None and k >= 1 and torch.equal(x[0], self.x[0]):
            t.clean_met = bool(met[0])
        if bool(met.any()):
            delta = x.detach() - self.x
            norms = self.threat.norm(delta)
            inside = self.threat.contains(x.detach(), self.x.expand_as(x), atol=1e-4)
            for r in met.nonzero().flatten().tolist():
                q = start + r + 1
                norm = float(norms[r])
                if t.first_success is None and bool(inside[r]):
                    t.first_success, t.norm = q, norm
                    t.x_adv = x[r : r + 1].detach().clone()
                if not t.best or norm < t.best[-1][1]:
                    t.best.append((q, norm))
        return out


def _goal(y: torch.Tensor, target: torch.Tensor | None) -> Any:
    if target is not None:
        return lambda logits: logits.argmax(1) == target
    return lambda logits: logits.argmax(1) != y


def trace_attack(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    budget: int,
    targets: torch.Tensor | None = None,
    slots: int = 64,
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> list[Trace]:
    """Run ``attack`` on each example separately, batched in lock step, tracing every query.

    Args:
        attack: any registered attack whose threat is an ℓp ball (score- or decision-based;
            a white-box attack fails here on a remote model, which has no gradients).
        model: a local model or a :class:`~multirobust.api.RemoteModel`.
        x, y: examples (N, ...) in [0, 1] and labels (N,).
        budget: queries per example, the clean query included; the call that would exceed it
            is not sent and the example stops there.
        targets: (N,) target classes, or None (untargeted).
        slots: examples running at once (threads; one model call per round for all of them).
        seed: example i draws its randomness from a generator seeded with ``(seed, i)``.
        progress: show a bar over the examples.

    Returns:
        One :class:`Trace` per example, in order.

    Raises:
        RuntimeError: naming the first example whose attack failed for another reason (a
            server that stopped answering, a bug), after every thread has finished.
    """
    threat = attack.threat_model
    if not isinstance(threat, LpBall):
        raise ValueError(f"trace_attack needs an ℓp-ball threat, got {threat}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"Invalid budget: {budget!r} (must be an integer >= 1)")
    n = x.shape[0]
    slots = max(1, min(slots, n))
    traces = [Trace(index=i) for i in range(n)]
    step = _Lockstep(model, slots)
    bar = tqdm(total=n, desc=desc or attack.name, unit="img", disable=not progress, leave=False)
    bar_lock = threading.Lock()

    stop = threading.Event()

    def worker(slot: int) -> None:
        try:
            # Fixed assignment (slot, slot + slots, ...): the same batches in every run.
            for i in range(slot, n, slots):
                if stop.is_set():
                    break
                xi, yi = x[i : i + 1], y[i : i + 1]
                ti = None if targets is None else targets[i : i + 1]
                proxy = _Proxy(step, slot, traces[i], xi, _goal(yi, ti), threat, budget)
                generator = torch.Generator(device=x.device).manual_seed(_example_seed(seed, i))
                try:
                    attack(proxy, xi, yi, targets=ti, generator=generator)
                except _Exhausted:
                    pass
                except Exception as err:  # reported once every thread has ended
                    traces[i].error = f"{type(err).__name__}: {err}"
                    stop.set()
                with bar_lock:
                    bar.update(1)
        finally:
            step.leave()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    failed = [t for t in traces if t.error]
    if failed:
        raise RuntimeError(
            f"The attack failed on {len(failed)} of {n} example(s); first, example "
            f"{failed[0].index}: {failed[0].error}"
        )
    return traces


def _example_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63 - 1)


def success_at(traces: list[Trace], budget: int) -> list[bool]:
    """Per example: clean-correct and broken within ``budget`` queries."""
    return [
        (t.clean_met is False and t.first_success is not None and t.first_success <= budget)
        for t in traces
    ]


def norm_at(trace: Trace, budget: int) -> float:
    """The smallest adversarial norm found within ``budget`` queries (inf if none)."""
    found = [v for q, v in trace.best if q <= budget]
    return min(found) if found else math.inf
