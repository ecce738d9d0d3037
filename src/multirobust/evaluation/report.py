"""The typed result of an evaluation, with JSON round-trip and the HTML page (:mod:`.html`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..reportfile import ReportFile
from ..threats import parse
from .html import render

__all__ = [
    "AdversarialExample",
    "Check",
    "Curve",
    "EvaluationReport",
    "ThreatOutcome",
]

FORMAT = "multirobust-evaluation"
VERSION = 1


#: Every check an evaluation can run: name -> what it verifies (the report lists each one that
#: ran, passed or fired).
CATALOGUE: dict[str, str] = {
    "randomised-model": "outputs are the same for two identical calls",
    "probability-outputs": "outputs are logits, not probabilities",
    "no-gradient-path": "the loss has a gradient with respect to the input",
    "non-finite-gradients": "input gradients are finite",
    "zero-gradients": "input gradients are not zero or vanishing",
    "black-box-beats-white-box": "no black-box attack breaks an example every white-box one missed",
    "outside-threat-model": "every attack result lies inside the threat model",
    "attack-errors": "every attack of the ensemble ran without error",
    "large-eps-not-zero": "accuracy falls to about 0 at a very large ε",
    "more-steps-lower-accuracy": (
        "twice the steps of the strongest white-box attack break nothing more"
    ),
    "landscape-beats-attacks": (
        "a grid over a 2-D slice of the ball finds no misclassified input the attacks missed"
    ),
}


@dataclass
class Check:
    """A check of Carlini et al. (2019) that fired, with its evidence.

    Attributes:
        name: short identifier, e.g. ``"zero-gradients"``.
        message: what it means for the reported numbers and what to do.
        evidence: the measurements behind it (JSON-ready).
        threat: the threat model it concerns, or None for the model as a whole.
    """

    name: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    threat: str | None = None


@dataclass
class ThreatOutcome:
    """Per-example results under one threat model.

    Attributes:
        threat: text form of the threat model.
        attacks: labels of the attacks run, in order.
        robust: per example, True when clean-correct and no attack broke it.
        broken_by: per example, the label of the first attack that broke it (None otherwise).
        norm: per example, the perturbation's norm in the threat's norm where broken (None
            otherwise, and for non-additive threats).
        params: per example, the certifying parameters of non-additive threats (spatial:
            angle and shifts) where broken, else None.
        queries: forward passes of single examples spent by the attacks.
        forward_passes, backward_passes: single-example forward and backward passes through
            the model spent by the attacks (counted by :class:`.passes.PassCounter`).
        seconds: time spent attacking.
    """

    threat: str
    attacks: list[str]
    robust: list[bool]
    broken_by: list[str | None]
    norm: list[float | None]
    params: list[list[float] | None] = field(default_factory=list)
    queries: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0

    @property
    def robust_accuracy(self) -> float:
        return sum(self.robust) / max(len(self.robust), 1)

    def broken_counts(self) -> dict[str, int]:
        """How many examples each attack broke (first breaker only)."""
        counts = {a: 0 for a in self.attacks}
        for b in self.broken_by:
            if b is not None:
                counts[b] = counts.get(b, 0) + 1
        return counts

    @property
    def max_norm(self) -> float | None:
        values = [v for v in self.norm if v is not None]
        return max(values) if values else None

    @property
    def largest(self) -> dict[str, float]:
        """The largest perturbation among the broken examples, in the threat's own terms:
        ``{"norm": ...}`` for ℓp balls, ``{"rotation": ..., "translation": ...}`` for spatial."""
        return parse(self.threat).largest(self.norm, self.params)


@dataclass
class AdversarialExample:
    """One clean/adversarial pair kept for the report's picture grid (images as 8-bit)."""

    index: int
    threat: str
    attack: str
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float
    shape: list[int]
    clean_u8: str  # base64 of uint8 pixels, C×H×W
    adv_u8: str


@dataclass
class Curve:
    """Robust accuracy against ε for one threat type (fractions of the ``n`` examples given)."""

    threat_type: str
    eps: list[float]
    accuracy: list[float]
    preset: str = "quick"
    seconds: float = 0.0
    n: int = 0  # examples behind the curve (0: not recorded)
    #: Calls each verdict took the majority of (and each gradient averaged over): > 1 for a
    #: randomised model (EOT, as in the evaluation), 1 otherwise.
    eot_samples: int = 1


@dataclass
class EvaluationReport(ReportFile):
    """Clean, per-threat and union robust accuracy with per-example outcomes and checks.

    Attributes:
        n: number of examples evaluated.
        clean_accuracy: fraction classified correctly without attack.
        robust_accuracy: threat text -> fraction correct under every attack of the ensemble.
        union_accuracy: fraction robust under every threat (per-example worst case).
        labels, clean_pred, clean_correct: per-example labels, clean predictions, correctness.
        threats: threat text -> :class:`ThreatOutcome`.
        checks: the checks that fired.
        checks_run: every check that ran, fired or passed, in order: ``{"name", "threat"}``
            (threat None for the model as a whole); empty in reports written before it was
            recorded.
        examples: clean/adversarial pairs for the picture grid.
        curves: accuracy-vs-ε curves (filled by :func:`multirobust.evaluation.curve` callers).
        minimal_distortion: norm -> :meth:`multirobust.attacks.minimal.MinimalDistortion.
            to_dict` (median, per-example distances, histogram), when ``evaluate(min_norm=...)``
            asked.
        timings: seconds per phase.
        settings: everything needed to reproduce the run.
        landscapes: when ``evaluate(landscapes=K)`` asked: ``"html"``, the report's landscape
            section, and ``"evidence"``, threat text -> the masking evidence
            (:mod:`.landscapes`).
        adversarial: threat text -> (N, ...) inputs, the adversarial input where an example
            was broken and the clean input elsewhere, when ``evaluate(keep_adversarial=True)``
            asked (not saved in JSON).
    """

    # Minimum-norm distances are inf for examples never broken (written as JSON's Infinity).
    json_allow_nan = True

    n: int
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    union_accuracy: float
    labels: list[int]
    clean_pred: list[int]
    clean_correct: list[bool]
    threats: dict[str, ThreatOutcome]
    checks: list[Check]
    checks_run: list[dict[str, Any]] = field(default_factory=list)
    examples: list[AdversarialExample] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    minimal_distortion: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    landscapes: dict[str, Any] = field(default_factory=dict)
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ queries
    @property
    def union_robust(self) -> list[bool]:
        """Per example: robust under every threat."""
        if not self.threats:
            return list(self.clean_correct)
        cols = [t.robust for t in self.threats.values()]
        return [all(r) for r in zip(*cols, strict=True)]

    def outcome(self, index: int) -> dict[str, Any]:
        """Everything known about example ``index``: label, prediction, per-threat outcome."""
        return {
            "index": index,
            "label": self.labels[index],
            "clean_pred": self.clean_pred[index],
            "clean_correct": self.clean_correct[index],
            "threats": {
                k: {
                    "robust": t.robust[index],
                    "broken_by": t.broken_by[index],
                    "norm": t.norm[index],
                }
                for k, t in self.threats.items()
            },
            "union_robust": self.union_robust[index],
        }

    def check(self, name: str) -> list[Check]:
        """The fired checks called ``name``."""
        return [c for c in self.checks if c.name == name]

    def summary(self) -> str:
        """A plain-text table of the numbers."""
        lines = [
            f"{'threat':<28} {'robust acc':>10}  broken by",
            f"{'(clean)':<28} {self.clean_accuracy:>10.2%}",
        ]
        for text, t in self.threats.items():
            counts = ", ".join(f"{a}: {c}" for a, c in t.broken_counts().items())
            lines.append(f"{text:<28} {self.robust_accuracy[text]:>10.2%}  {counts}")
        lines.append(f"{'union (worst case)':<28} {self.union_accuracy:>10.2%}")
        for norm, md in self.minimal_distortion.items():
            lines.append(
                f"median minimal {norm} distortion: {md['median']:.4g} "
                f"({md['never_broken']:.2%} never broken within {md['max_eps']:.4g})"
            )
        for c in self.checks:
            where = f" [{c.threat}]" if c.threat else ""
            lines.append(f"CHECK {c.name}{where}: {c.message}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``format`` and ``version`` keys added)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        body.pop("adversarial")  # tensors, kept in memory only
        return {"format": FORMAT, "version": VERSION, **_plain(body)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        if data.get("format") != FORMAT:
            raise ValueError(f"Not a multirobust evaluation report (format {data.get('format')!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"Unsupported report version {data.get('version')!r} (need {VERSION})")
        body = {k: v for k, v in data.items() if k not in ("format", "version", "adversarial")}
        body["threats"] = {k: ThreatOutcome(**v) for k, v in body["threats"].items()}
        body["checks"] = [Check(**c) for c in body["checks"]]
        body["examples"] = [AdversarialExample(**e) for e in body.get("examples", [])]
        body["curves"] = [Curve(**c) for c in body.get("curves", [])]
        return cls(**body)

    def _render_html(self) -> str:
        return render(self)


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` for the report's nested dataclasses, lists and dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
