"""Certificates and black-box attacks over an API: run by their packages when this
installation has them, else read from a result folder given on the command line."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from .. import threats as _threats
from .result import AuditContext, PartResult

__all__ = ["EXPECTED", "package_available", "report_in", "run_api", "run_certify"]

CERTIFY_FORMAT = "multirobust-certification"
API_FORMAT = "multirobust-remote-attack"
_FORMATS = {"certify": CERTIFY_FORMAT, "api": API_FORMAT}
EXPECTED = {
    "certify": f"`multirobust certify --out DIR` (format {CERTIFY_FORMAT!r})",
    "api": f"an attack through the model's API (format {API_FORMAT!r})",
}


def package_available(name: str) -> bool:
    """Whether ``multirobust.<name>`` can be imported (it is imported only when used)."""
    try:
        importlib.import_module(f"multirobust.{name}")
    except ImportError:
        return False
    return True


def _reports(folder: Path, prefix: str) -> list[tuple[Path, dict[str, Any]]]:
    """The JSON files directly in ``folder`` whose ``format`` starts with ``prefix``."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and str(body.get("format", "")).startswith(prefix):
            found.append((path, body))
    return found


def report_in(folder: str | Path, part: str) -> bool:
    """Whether ``folder`` holds a report the ``certify`` or ``api`` part can read."""
    return bool(_reports(Path(folder), _FORMATS[part]))


def _evidence(path: Path) -> list[str]:
    """The report's HTML page (same stem) first when there is one, then the JSON."""
    page = path.with_suffix(".html")
    return [str(p.resolve()) for p in (page, path) if p.is_file()]


def _certify_summary(body: dict[str, Any]) -> dict[str, Any]:
    methods = body.get("methods", {})
    return {
        "n": body.get("n"),
        "threats": body.get("threats"),
        "methods": {
            name: {
                "certified_accuracy": m.get("certified_accuracy"),
                "union_accuracy": m.get("union_accuracy"),
                "classifier": m.get("classifier"),
            }
            for name, m in methods.items()
            if isinstance(m, dict)
        },
    }


def run_certify(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """Certified accuracy per threat and for the union.

    From ``--certify DIR`` (a ``multirobust certify`` folder: ``certify.json``) when given;
    else, when :mod:`multirobust.certify` is installed, interval bound propagation on the
    first ``n`` test examples under the ℓp threats (``certify.json`` / ``certify.html`` in
    ``folder``); else not run.
    """
    cfg = ctx.config
    if cfg.certify_dir is not None:
        found = _reports(Path(cfg.certify_dir), CERTIFY_FORMAT)
        if not found:
            raise ValueError(
                f"{cfg.certify_dir} holds no certification report (a JSON file of format "
                f"{CERTIFY_FORMAT!r}, as `multirobust certify --out DIR` writes)"
            )
        path, body = found[0]
        return PartResult(
            part="certify",
            status="done",
            summary={**_certify_summary(body), "source": str(path.resolve())},
            evidence=_evidence(path),
        )
    if not package_available("certify"):
        return PartResult(
            part="certify",
            status="not-run",
            reason="multirobust.certify is not in this installation; pass --certify DIR with "
            "the folder of a `multirobust certify` run",
        )
    balls = [t for t in cfg.threats if _threats.parse(t).additive]
    if not balls:
        return PartResult(
            part="certify", status="not-assessed", reason="no ℓp threat model to certify"
        )
    certify: Any = importlib.import_module("multirobust.certify")
    report = certify.certify(
        ctx.model,
        ctx.test,
        threats=balls,
        bounds=["ibp"],
        seed=cfg.seed,
        progress=cfg.progress,
        resume_dir=folder / "partial",
    )
    report.to_json(folder / "certify.json")
    report.to_html(folder / "certify.html")
    body = json.loads((folder / "certify.json").read_text())
    return PartResult(
        part="certify",
        status="done",
        summary=_certify_summary(body),
        evidence=["certify/certify.html", "certify/certify.json"],
    )


def _api_summary(body: dict[str, Any]) -> dict[str, Any]:
    budgets = body.get("budgets") or []
    top = str(max(budgets)) if budgets else None
    runs = []
    for run in body.get("runs", []):
        if not isinstance(run, dict):
            continue
        s = run.get("summary", {}) if isinstance(run.get("summary"), dict) else {}
        robust = s.get("robust_accuracy", {})
        runs.append(
            {
                "attack": run.get("attack"),
                "output": run.get("output"),
                "threat": run.get("threat"),
                "source": run.get("source"),
                "queries": top,
                "robust_accuracy": robust.get(top) if isinstance(robust, dict) else None,
                "clean_accuracy": s.get("clean_accuracy"),
            }
        )
    return {"budgets": budgets, "runs": runs}


def run_api(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """Black-box attacks through the model's API, from ``--api DIR`` (the folder of an attack
    run against the served model: a ``multirobust-remote-attack`` report); else not run."""
    cfg = ctx.config
    if cfg.api_dir is None:
        hint = (
            "serve the model and attack it through its API, then pass --api DIR"
            if package_available("api")
            else "multirobust.api is not in this installation; pass --api DIR with the "
            "folder of an attack through the model's API"
        )
        return PartResult(part="api", status="not-run", reason=hint)
    found = _reports(Path(cfg.api_dir), API_FORMAT)
    if not found:
        raise ValueError(
            f"{cfg.api_dir} holds no report of attacks through an API (a JSON file of format "
            f"{API_FORMAT!r})"
        )
    path, body = found[0]
    return PartResult(
        part="api",
        status="done",
        summary={**_api_summary(body), "source": str(path.resolve())},
        evidence=_evidence(path),
    )
