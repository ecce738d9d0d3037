"""One security audit of a model across its attack surfaces.

``run_audit`` gathers, for one model, white-box evasion (the evaluation runner and attacks
with other goals), membership leakage (the loss threshold; LiRA with shadow models),
poisoning susceptibility (its recipe retrained on poisoned data, detectors and defences),
and, where available, certificates and black-box attacks through an API, into one page
ordered by attacker knowledge, attack surface and goal::

    from multirobust import audit, data, models

    model = models.load("zoo/standard.pt")
    body = audit.run_audit(model, data.load("mnist", "test", limit=200),
                           audit.AuditConfig(preset="quick"), "runs/audit")
    body["parts"]["evasion"]["summary"]["union_accuracy"]

Layout of the folder: ``audit.json``, ``audit.html`` and one folder per part
(``evasion/report.html``, ``goals/goals.json``, ``membership/membership.json``,
``poisoning/report.html``, ``certify/``), each with its ``part.json``.
"""

from .config import DEFAULT_THREATS, PARTS, AuditConfig, AuditError
from .matrix import GOALS, KNOWLEDGE, SURFACES, Finding, findings
from .page import audit_html
from .recipe import recipe_of
from .result import STATUSES, AuditContext, PartResult
from .run import FORMAT, run_audit

__all__ = [
    "DEFAULT_THREATS",
    "FORMAT",
    "GOALS",
    "KNOWLEDGE",
    "PARTS",
    "STATUSES",
    "SURFACES",
    "AuditConfig",
    "AuditContext",
    "AuditError",
    "Finding",
    "PartResult",
    "audit_html",
    "findings",
    "recipe_of",
    "run_audit",
]
