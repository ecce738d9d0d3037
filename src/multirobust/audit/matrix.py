"""The audit's matrix: attacker knowledge × attack surface × goal, each cell the findings of
the parts that cover it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .result import PartResult

__all__ = ["GOALS", "KNOWLEDGE", "SURFACES", "Finding", "findings"]

KNOWLEDGE = ("white box", "black box")
SURFACES = ("data", "training", "inference")
GOALS = ("confidence reduction", "misclassification", "targeted", "source/target", "membership")

# Where each part's findings go: (knowledge, surface, goal) per finding kind.
_PLACES: dict[str, tuple[str, str, str]] = {
    "evasion": ("white box", "inference", "misclassification"),
    "certify": ("white box", "inference", "misclassification"),
    "goals:confidence-reduction": ("white box", "inference", "confidence reduction"),
    "goals:targeted": ("white box", "inference", "targeted"),
    "goals:source-target": ("white box", "inference", "source/target"),
    "api": ("black box", "inference", "misclassification"),
    "membership": ("black box", "inference", "membership"),
    "poisoning": ("black box", "data", "targeted"),
    "poisoning:detectors": ("black box", "data", "targeted"),
    "poisoning:defences": ("black box", "training", "targeted"),
}


@dataclass
class Finding:
    """One line of a cell: what a part measured (or why it did not), with its evidence.

    Attributes:
        knowledge, surface, goal: the cell.
        part: the part it comes from.
        label: what was measured, e.g. ``"robust accuracy (quick preset)"``.
        text: the result, e.g. ``"linf:0.3 0.0%, union 0.0%"``, or the reason it is missing.
        status: the part's status.
        evidence: files behind it (relative to the audit folder, or absolute).
    """

    knowledge: str
    surface: str
    goal: str
    part: str
    label: str
    text: str
    status: str
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TITLES = {
    "evasion": "evasion (evaluation runner)",
    "goals": "attacks with other goals",
    "membership": "membership inference",
    "poisoning": "backdoor poisoning",
    "certify": "certificates",
    "api": "attacks through the API",
}


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _place(kind: str, part: PartResult, label: str, text: str) -> Finding:
    k, s, g = _PLACES[kind]
    return Finding(k, s, g, part.part, label, text, part.status, list(part.evidence))


def _missing(part: PartResult) -> list[Finding]:
    """A part that did not run still shows in each of its cells, with the reason."""
    kinds = [k for k in _PLACES if k.split(":")[0] == part.part]
    text = f"{part.status}: {part.reason}" if part.reason else part.status
    return [_place(k, part, _TITLES[part.part], text) for k in kinds]


def _evasion(p: PartResult) -> list[Finding]:
    s = p.summary
    per = ", ".join(f"{t} {_pct(a)}" for t, a in s["robust_accuracy"].items())
    text = f"clean {_pct(s['clean_accuracy'])}; {per}; union {_pct(s['union_accuracy'])}"
    if s.get("checks"):
        text += f" (checks fired: {', '.join(s['checks'])})"
    return [_place("evasion", p, f"robust accuracy, {s['preset']} preset, n={s['n']}", text)]


def _goals(p: PartResult) -> list[Finding]:
    out = []
    for goal in ("confidence-reduction", "targeted", "source-target"):
        rows = [r for r in p.summary["results"] if r["goal"] == goal]
        text = ", ".join(
            f"{r['threat']} {_pct(r['success_rate'])} of {r['attacked']}" for r in rows
        )
        out.append(_place(f"goals:{goal}", p, "PGD success rate", text or "no supported threat"))
    return out


def _membership(p: PartResult) -> list[Finding]:
    lt = p.summary["loss_threshold"]
    text = (
        f"AUC {lt['auc']:.3f}, best balanced accuracy {_pct(lt['balanced_accuracy'])}, "
        f"TPR {_pct(lt['oracle_tpr']['0.001'])} at 0.1% FPR (oracle threshold)"
    )
    if "yeom" in lt:
        y = lt["yeom"]
        text += f"; at the training loss: TPR {_pct(y['tpr'])}, FPR {_pct(y['fpr'])}"
    out = [_place("membership", p, f"loss threshold, {lt['members']} members", text)]
    if "lira" in p.summary:
        li = p.summary["lira"]
        parts = []
        for name, a in li["attacks"].items():
            first = a["operating_points"][0]
            parts.append(f"{name} AUC {a['auc']:.3f}, TPR {_pct(first['tpr'])} at "
                         f"{_pct(first['fpr'])} FPR")  # fmt: skip
        label = f"LiRA, {li['shadows']} shadows (thresholds from shadows only)"
        out.append(_place("membership", p, label, "; ".join(parts)))
    return out


def _poisoning(p: PartResult) -> list[Finding]:
    s = p.summary
    m = s["metrics"]
    pm = m["poisoned"]
    text = f"ASR {_pct(pm['attack_success_rate'])}, clean accuracy {_pct(pm['clean_accuracy'])}"
    if "baseline" in m:
        b = m["baseline"]
        text += (
            f" (clean model: ASR {_pct(b['attack_success_rate'])}, "
            f"clean accuracy {_pct(b['clean_accuracy'])})"
        )
    label = f"{s['attack']} backdoor, {_pct(s['rate'])} poisoned, target {s['target']}"
    out = [_place("poisoning", p, label, text)]
    if s["detectors"]:
        det = "; ".join(
            f"{k}: flagged none"
            if v.get("flagged") == 0
            # precision of an empty selection is a convention, not a finding
            else f"{k}: precision {_pct(v['precision'])}, recall {_pct(v['recall'])}"
            for k, v in s["detectors"].items()
        )
        out.append(_place("poisoning:detectors", p, "detectors of poisoned examples", det))
    if s["defences"]:
        dfn = "; ".join(
            f"after {k}: ASR {_pct(v['attack_success_rate'])}, clean {_pct(v['clean_accuracy'])}"
            for k, v in s["defences"].items()
        )
        out.append(_place("poisoning:defences", p, "defences on the trained model", dfn))
    return out


def _certify(p: PartResult) -> list[Finding]:
    out = []
    for name, m in p.summary["methods"].items():
        acc = m.get("certified_accuracy") or {}
        per = ", ".join(f"{t} {_pct(a)}" for t, a in acc.items())
        text = f"{per}; union {_pct(m.get('union_accuracy'))}"
        out.append(_place("certify", p, f"certified accuracy ({name})", text))
    return out or _missing(PartResult("certify", "not-assessed", "the report holds no method"))


def _api(p: PartResult) -> list[Finding]:
    out = []
    for r in p.summary["runs"]:
        label = f"{r['attack']} through the API ({r['output']})"
        text = (
            f"{r['threat']}: robust accuracy {_pct(r['robust_accuracy'])} at {r['queries']} queries"
        )
        out.append(_place("api", p, label, text))
    return out or _missing(PartResult("api", "not-assessed", "the report holds no attack run"))


_DONE = {
    "evasion": _evasion,
    "goals": _goals,
    "membership": _membership,
    "poisoning": _poisoning,
    "certify": _certify,
    "api": _api,
}


def findings(parts: dict[str, PartResult]) -> list[Finding]:
    """Every finding of the audit's parts, placed in its cell."""
    out: list[Finding] = []
    for name, part in parts.items():
        out += _DONE[name](part) if part.status == "done" else _missing(part)
    return out
