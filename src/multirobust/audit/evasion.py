"""The white-box evasion part: the evaluation runner's per-example worst case."""

from __future__ import annotations

from pathlib import Path

from ..evaluation import evaluate
from .result import AuditContext, PartResult

__all__ = ["run_evasion"]


def run_evasion(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """Run :func:`multirobust.evaluation.evaluate` (the configured preset) on the first ``n``
    test examples under every threat and their union; writes ``report.json`` and
    ``report.html`` in ``folder`` (finished batches kept in ``folder/partial`` for resume).

    Returns:
        Summary: clean, per-threat and union accuracy, the checks that fired.
    """
    cfg = ctx.config
    report = evaluate(
        ctx.model,
        ctx.test,
        threats=cfg.threats,
        preset=cfg.preset,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
        resume_dir=folder / "partial",
    )
    report.settings["checkpoint"] = ctx.name
    report.to_json(folder / "report.json")
    report.to_html(folder / "report.html")
    return PartResult(
        part="evasion",
        status="done",
        summary={
            "n": report.n,
            "preset": cfg.preset if isinstance(cfg.preset, str) else cfg.preset.name,
            "clean_accuracy": report.clean_accuracy,
            "robust_accuracy": dict(report.robust_accuracy),
            "union_accuracy": report.union_accuracy,
            "checks": [c.name + (f" ({c.threat})" if c.threat else "") for c in report.checks],
        },
        evidence=["evasion/report.html", "evasion/report.json"],
    )
