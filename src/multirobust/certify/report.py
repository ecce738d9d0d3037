"""The typed result of a certification run, with JSON round-trip, a summary and the HTML page."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..reportfile import ReportFile

__all__ = ["FORMAT", "VERSION", "CertificationReport", "MethodResult"]

FORMAT = "multirobust-certification"
VERSION = 1


@dataclass
class MethodResult:
    """Per-example certificates of one method (one smoothing noise, or one bound method).

    Attributes:
        name: e.g. ``"smoothing gaussian:0.25"``, ``"ibp"``, ``"crown-ibp"``.
        kind: ``"smoothing"`` or ``"bounds"``.
        classifier: the classifier the certificates are about: ``"smoothed"`` (``g``, for
            smoothing) or ``"base"`` (the network itself, for bounds).
        settings: the method's parameters (noise, n0, n, α, sequential looks; bound method).
        certified: threat text -> per example, certified (right label, whole ball).
        radius: norm (``"linf"``, ``"l2"``, ``"l1"``) -> per example the certified radius for
            the true label in that norm (-1: wrong, abstained or not even certified at 0;
            None for the whole list when the method computed no radii).
        cap: norm -> the largest radius the method can certify at all (smoothing: the
            Clopper–Pearson cap at n and α; absent for bounds).
        prediction: smoothing only: per example the certified class or -1 (abstain).
        p_lower: smoothing only: per example the lower confidence bound of p_A.
        samples: smoothing only: per example the noisy forward passes spent.
        seconds: time spent on this method (this process's share when sharded).
    """

    name: str
    kind: str
    classifier: str
    settings: dict[str, Any]
    certified: dict[str, list[bool]]
    radius: dict[str, list[float] | None] = field(default_factory=dict)
    cap: dict[str, float] = field(default_factory=dict)
    prediction: list[int] | None = None
    p_lower: list[float] | None = None
    samples: list[int] | None = None
    seconds: float = 0.0

    @property
    def certified_accuracy(self) -> dict[str, float]:
        """Threat text -> fraction of examples certified."""
        return {t: sum(v) / max(len(v), 1) for t, v in self.certified.items()}

    @property
    def union(self) -> list[bool]:
        """Per example: certified in every threat's ball (the union)."""
        cols = list(self.certified.values())
        return [all(c) for c in zip(*cols, strict=True)] if cols else []

    @property
    def union_accuracy(self) -> float:
        """Fraction certified for the union of the threats."""
        u = self.union
        return sum(u) / max(len(u), 1)

    @property
    def abstain_rate(self) -> float | None:
        """Smoothing: fraction of examples abstained (None for bounds)."""
        if self.prediction is None:
            return None
        return sum(1 for p in self.prediction if p < 0) / max(len(self.prediction), 1)

    def accuracy_at(self, norm: str, radius: float) -> float | None:
        """Certified accuracy at ``radius`` in ``norm`` from the per-example radii (or None)."""
        radii = self.radius.get(norm)
        if radii is None:
            return None
        return sum(1 for r in radii if r >= 0 and r >= radius) / max(len(radii), 1)


@dataclass
class CertificationReport(ReportFile):
    """Certified accuracy per method, per threat and for the union, beside the attacks' numbers.

    Attributes:
        n: examples certified.
        labels: their labels.
        threats: the threat models (text).
        dim: input dimension d (for conversions between norms).
        methods: method name -> :class:`MethodResult`.
        empirical: what ``multirobust.evaluate`` found on the same examples, when attached
            (:meth:`attach_empirical`): robust accuracy per threat and union, per-example
            robustness, clean correctness and accuracy-vs-ε curves of the base network.
        checks: problems found (e.g. a base-classifier certificate contradicted by an attack).
        timings: seconds per phase.
        settings: everything needed to reproduce the run.
    """

    n: int
    labels: list[int]
    threats: list[str]
    dim: int
    methods: dict[str, MethodResult]
    empirical: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ empirical side
    def attach_empirical(self, evaluation: Any) -> None:
        """Record an evaluation of the base network on the same examples and cross-check.

        Args:
            evaluation: a :class:`multirobust.evaluation.EvaluationReport` (duck-typed: this
                layer sits below evaluation) of the same model on the same examples, in the
                same order, with the same threats among its own.

        Every base-classifier certificate is checked against the attacks: an example
        certified in a ball must not have been broken there. A contradiction is a bug (in the
        bounds or the attack's containment check) and is recorded in :attr:`checks`.

        Raises:
            ValueError: if the evaluation covers other examples (count or labels differ).
        """
        if int(evaluation.n) != self.n or list(evaluation.labels) != self.labels:
            raise ValueError(
                f"The evaluation covers other examples ({evaluation.n} with other labels) than "
                f"the certification ({self.n}): evaluate the same ones, in the same order"
            )
        robust = {k: list(t.robust) for k, t in evaluation.threats.items()}
        curves = {
            c.threat_type: {"eps": list(c.eps), "accuracy": list(c.accuracy), "n": c.n}
            for c in getattr(evaluation, "curves", [])
        }
        preset = evaluation.settings.get("preset", {})
        self.empirical = {
            "preset": preset.get("name") if isinstance(preset, dict) else str(preset),
            "clean_accuracy": float(evaluation.clean_accuracy),
            "robust_accuracy": {k: float(v) for k, v in evaluation.robust_accuracy.items()},
            "union_accuracy": float(evaluation.union_accuracy),
            "robust": robust,
            "clean_correct": list(evaluation.clean_correct),
            "curves": curves,
        }
        self.checks = [c for c in self.checks if c.get("name") != "certified-but-broken"]
        self.checks += self.contradictions()

    def contradictions(self) -> list[dict[str, Any]]:
        """Base-classifier certificates that an attack broke (should never happen)."""
        found: list[dict[str, Any]] = []
        if self.empirical is None:
            return found
        robust = self.empirical["robust"]
        for method in self.methods.values():
            if method.classifier != "base":
                continue
            for threat, flags in method.certified.items():
                if threat not in robust:
                    continue
                bad = [
                    i
                    for i, (c, r) in enumerate(zip(flags, robust[threat], strict=True))
                    if c and not r
                ]
                if bad:
                    found.append(
                        {
                            "name": "certified-but-broken",
                            "message": (
                                f"{method.name} certified {len(bad)} example(s) under {threat} "
                                "that an attack broke: the bounds or the attack is wrong"
                            ),
                            "evidence": {
                                "method": method.name,
                                "threat": threat,
                                "indices": bad[:20],
                            },
                        }
                    )
        return found

    # ------------------------------------------------------------------ text
    def summary(self) -> str:
        """A plain-text table: certified accuracy per method and threat, union, abstentions."""
        cols = [*self.threats, "union"]
        width = max([len(m) for m in self.methods] + [24])
        lines = [f"{'method':<{width}} " + " ".join(f"{c:>12}" for c in cols) + "  notes"]
        for name, m in self.methods.items():
            acc = m.certified_accuracy
            cells = [f"{acc.get(t, math.nan):>12.2%}" for t in self.threats]
            cells.append(f"{m.union_accuracy:>12.2%}")
            notes = [f"certifies the {m.classifier} classifier"]
            if m.abstain_rate is not None:
                notes.append(f"abstained {m.abstain_rate:.2%}")
            for norm, cap in m.cap.items():
                notes.append(f"{norm} radius cap {cap:.4g}")
            lines.append(f"{name:<{width}} " + " ".join(cells) + "  " + "; ".join(notes))
        if self.empirical is not None:
            e = self.empirical
            cells = [f"{e['robust_accuracy'].get(t, math.nan):>12.2%}" for t in self.threats]
            cells.append(f"{e['union_accuracy']:>12.2%}")
            label = f"empirical ({e['preset']})"
            lines.append(f"{label:<{width}} " + " ".join(cells) + "  attacks on the base network")
        for c in self.checks:
            lines.append(f"CHECK {c['name']}: {c['message']}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``format`` and ``version`` keys and derived accuracies."""
        body = dataclasses.asdict(self)
        for name, m in self.methods.items():
            body["methods"][name]["certified_accuracy"] = m.certified_accuracy
            body["methods"][name]["union_accuracy"] = m.union_accuracy
            body["methods"][name]["abstain_rate"] = m.abstain_rate
        return {"format": FORMAT, "version": VERSION, **body}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertificationReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        if data.get("format") != FORMAT:
            raise ValueError(
                f"Not a multirobust certification report (format {data.get('format')!r})"
            )
        if data.get("version") != VERSION:
            raise ValueError(f"Unsupported report version {data.get('version')!r} (need {VERSION})")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        derived = ("certified_accuracy", "union_accuracy", "abstain_rate")
        body["methods"] = {
            k: MethodResult(**{f: v for f, v in m.items() if f not in derived})
            for k, m in body["methods"].items()
        }
        return cls(**body)

    def _render_html(self) -> str:
        from .html import render

        return render(self)
