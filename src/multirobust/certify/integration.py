"""Certified accuracies for the evaluation report and the leaderboard.

The certification layer sits below evaluation, so these functions take an evaluation report
duck-typed (anything with ``settings``) and return plain dicts: the evaluation and leaderboard
code (or the command line, which sits above both) decides where to show them.
"""

from __future__ import annotations

from typing import Any

from .report import CertificationReport

__all__ = ["attach_to_evaluation", "certified_summary", "leaderboard_columns"]


def certified_summary(report: CertificationReport) -> dict[str, Any]:
    """The certified accuracies of a report, per method, threat and union, with fingerprints.

    Returns:
        ``{"model_sha256", "data_sha256", "n", "threats", "methods": {name: {"classifier",
        "certified_accuracy": {threat: fraction}, "union_accuracy", "abstain_rate",
        "settings"}}, "best_base": {threat: fraction, "union": fraction}}``; ``best_base``
        is the best certificate of the network itself (bound methods), the one that bounds
        its empirical robust accuracy from below.
    """
    methods = {
        name: {
            "classifier": m.classifier,
            "certified_accuracy": m.certified_accuracy,
            "union_accuracy": m.union_accuracy,
            "abstain_rate": m.abstain_rate,
            "settings": m.settings,
        }
        for name, m in report.methods.items()
    }
    best: dict[str, float] = {}
    base = [m for m in report.methods.values() if m.classifier == "base"]
    for threat in report.threats:
        values = [m.certified_accuracy[threat] for m in base if threat in m.certified]
        if values:
            best[threat] = max(values)
    if base:
        # Per example, certified for the union by some single bound method (one classifier).
        cols = [m.union for m in base]
        best["union"] = sum(any(c) for c in zip(*cols, strict=True)) / max(report.n, 1)
    return {
        "model_sha256": report.settings.get("model_sha256"),
        "data_sha256": report.settings.get("data_sha256"),
        "n": report.n,
        "threats": list(report.threats),
        "methods": methods,
        "best_base": best,
    }


def attach_to_evaluation(evaluation: Any, report: CertificationReport) -> dict[str, Any]:
    """Store :func:`certified_summary` in ``evaluation.settings["certified"]``.

    Args:
        evaluation: a :class:`multirobust.evaluation.EvaluationReport` of the same model on the
            same examples (its ``settings`` hold ``model_sha256`` and ``data_sha256``).
        report: the certification.

    Returns:
        The summary stored.

    Raises:
        ValueError: when the fingerprints show another model or other examples.
    """
    summary = certified_summary(report)
    for key in ("model_sha256", "data_sha256"):
        mine, theirs = summary.get(key), evaluation.settings.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            what = "model" if key.startswith("model") else "examples"
            raise ValueError(
                f"The certification and the evaluation concern different {what} ({key} "
                f"{mine} vs {theirs}): certify the evaluated model on the evaluated examples"
            )
    evaluation.settings["certified"] = summary
    return summary


def leaderboard_columns(report: CertificationReport) -> dict[str, float]:
    """Flat columns for a leaderboard row: ``"certified[<threat>]"`` and ``"certified[union]"``.

    The values are the best certificates of the network itself (:func:`certified_summary`'s
    ``best_base``), comparable with the row's empirical robust accuracies; smoothing
    certificates, about another classifier, are reported as ``"smoothed[<threat>]"``.
    """
    summary = certified_summary(report)
    out = {f"certified[{k}]": v for k, v in summary["best_base"].items()}
    for m in report.methods.values():
        if m.classifier == "smoothed":
            for threat, acc in m.certified_accuracy.items():
                key = f"smoothed[{threat}]"
                out[key] = max(out.get(key, 0.0), acc)
            out["smoothed[union]"] = max(out.get("smoothed[union]", 0.0), m.union_accuracy)
    return out
