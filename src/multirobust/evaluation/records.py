"""The typed record of one evaluated batch, and its JSON form (the resume store's files)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .report import AdversarialExample


@dataclass
class ThreatBatch:
    """One batch's outcome under one threat model.

    Attributes:
        robust: per example, clean-correct and not broken by any attack.
        broken_by: per example, the label of the attack that broke it (None otherwise).
        norm: per example, the perturbation's size in the threat's norm where broken.
        params: per example, the threat's report row of the breaking attack's parameters.
        queries, forward_passes, backward_passes: single-example model passes spent.
        seconds: time spent attacking.
        outside: attack label -> results rejected for leaving the threat model.
        errors: attack label -> the first line of the error that stopped it.
        examples: clean/adversarial pairs kept for the report's pictures.
    """

    robust: list[bool]
    broken_by: list[str | None]
    norm: list[float | None]
    params: list[list[float] | None]
    queries: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    seconds: float = 0.0
    outside: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    examples: list[AdversarialExample] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThreatBatch:
        body = dict(data)
        body["examples"] = [AdversarialExample(**e) for e in body.get("examples", [])]
        return cls(**body)


@dataclass
class BatchRecord:
    """Everything one batch contributes to a report.

    Attributes:
        labels, clean_pred, clean_correct: per example.
        threats: threat text -> :class:`ThreatBatch`.
        rank: the process that computed it (a resumed batch keeps its own).
        adversarial: threat text -> the batch's inputs with the adversarial ones where broken
            (only when asked for; never saved).
    """

    labels: list[int]
    clean_pred: list[int]
    clean_correct: list[bool]
    threats: dict[str, ThreatBatch]
    rank: int = 0
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_json(self) -> str:
        """The JSON text saved by the resume store (without ``adversarial``)."""
        body = {
            "labels": self.labels,
            "clean_pred": self.clean_pred,
            "clean_correct": self.clean_correct,
            "threats": {k: asdict(t) for k, t in self.threats.items()},
            "rank": self.rank,
        }
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str, *, n: int, threats: list[str]) -> BatchRecord:
        """Read a record of ``n`` examples under ``threats``; ``ValueError`` saying what is
        wrong for anything else (truncated file, missing key, wrong length)."""
        try:
            data = json.loads(text)
            record = cls(
                labels=[int(v) for v in data["labels"]],
                clean_pred=[int(v) for v in data["clean_pred"]],
                clean_correct=[bool(v) for v in data["clean_correct"]],
                threats={k: ThreatBatch.from_dict(data["threats"][k]) for k in threats},
                rank=int(data.get("rank", 0)),
            )
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err})") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"missing or malformed entry {err}") from None
        lengths = {len(record.labels), len(record.clean_pred), len(record.clean_correct)}
        lengths |= {len(t.robust) for t in record.threats.values()}
        if lengths != {n}:
            raise ValueError(f"holds {sorted(lengths)} examples where the batch has {n}")
        return record
