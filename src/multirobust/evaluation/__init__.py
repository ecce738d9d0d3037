"""Evaluation: per-example worst case over attacks and threats, checks, curves, reports.

Example::

    from multirobust.evaluation import evaluate
    report = evaluate(model, x, y, threats=["linf:0.3", "l2:2", "spatial:30,3"])
    report.robust_accuracy["linf:0.3"], report.union_accuracy, report.checks
    report.to_json("report.json"); report.to_html("report.html")
"""

from .checks import LogProbabilities
from .curves import curve
from .presets import PRESETS, AttackSpec, Preset
from .report import AdversarialExample, Check, Curve, EvaluationReport, ThreatOutcome
from .runner import evaluate

__all__ = [
    "PRESETS",
    "AdversarialExample",
    "AttackSpec",
    "Check",
    "Curve",
    "EvaluationReport",
    "LogProbabilities",
    "Preset",
    "ThreatOutcome",
    "curve",
    "evaluate",
]
