"""The audit's HTML page: the matrix by attacker knowledge, attack surface and goal, each
finding linked to its evidence, then the parts and the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import pages
from .matrix import GOALS, KNOWLEDGE, SURFACES, Finding

__all__ = ["audit_html"]

_CSS = """
.cell { vertical-align: top; min-width: 9em; }
.finding { margin: 0 0 .5em 0; }
.finding .label { font-weight: 600; display: block; }
.status-not-run, .status-not-assessed { color: #8a6d00; }
.status-failed { color: #b00020; }
.empty { color: #999; }
"""


def _href(evidence: str) -> str:
    """A link to a file: relative inside the audit folder, a file URI outside it."""
    path = Path(evidence)
    return path.as_uri() if path.is_absolute() else evidence


def _links(evidence: list[str]) -> str:
    return " ".join(
        f'<a href="{pages.esc(_href(e))}">{pages.esc(Path(e).name or e)}</a>' for e in evidence
    )


def _finding(f: Finding) -> str:
    links = _links(f.evidence)
    return (
        f'<div class="finding status-{pages.esc(f.status)}" data-part="{pages.esc(f.part)}">'
        f'<span class="label">{pages.esc(f.label)}</span>{pages.esc(f.text)}'
        + (f' <span class="evidence">[{links}]</span>' if links else "")
        + "</div>"
    )


def _matrix(found: list[Finding], knowledge: str) -> str:
    rows = []
    for surface in SURFACES:
        cells = [f"<th>{pages.esc(surface)}</th>"]
        for goal in GOALS:
            here = [
                f for f in found if (f.knowledge, f.surface, f.goal) == (knowledge, surface, goal)
            ]
            inner = "".join(_finding(f) for f in here) or '<span class="empty">—</span>'
            cells.append(f'<td class="cell">{inner}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<tr><th>surface \\ goal</th>" + "".join(f"<th>{pages.esc(g)}</th>" for g in GOALS)
    ident = "matrix-" + knowledge.replace(" ", "-")
    return f'<table id="{ident}">{head}</tr>{"".join(rows)}</table>'


def audit_html(body: dict[str, Any]) -> str:
    """The page of an audit from its ``audit.json`` body."""
    found = [Finding(**f) for f in body["findings"]]
    parts_rows = [
        (
            pages.esc(name),
            f'<span class="status-{pages.esc(p["status"])}">{pages.esc(p["status"])}</span>',
            pages.esc(p["reason"]),
            f"{p['seconds']:.1f}",
            _links(p["evidence"]),
        )
        for name, p in body["parts"].items()
    ]
    model = body["model"]
    intro = (
        f"<h1>Security audit of {pages.esc(model['name'])}</h1>"
        f"<p>Dataset {pages.esc(model['dataset'])}; "
        + (
            f"trained by multirobust from a recorded recipe ({pages.esc(model['recipe_summary'])})."
            if model["recipe"]
            else "no recipe (the model was not trained by <code>multirobust train</code>): "
            "poisoning and membership are not assessed."
        )
        + "</p><p>Each cell holds what the audit measured for an attacker with that knowledge, "
        "attacking that surface with that goal; the links lead to the evidence. A dash marks "
        "a combination this audit has no attack for. White-box numbers are upper bounds on "
        "robustness (a stronger attack may do better); certified numbers are lower bounds.</p>"
    )
    sections = [intro]
    for knowledge in KNOWLEDGE:
        sections.append(f"<h2>{pages.esc(knowledge.capitalize())} attacker</h2>")
        sections.append(_matrix(found, knowledge))
    sections.append("<h2>Parts</h2>")
    sections.append(
        pages.table(
            ["part", "status", "reason", "seconds", "evidence"],
            parts_rows,
            table_id="parts",
            numeric=[3],
            raw=True,
        )
    )
    settings = [(pages.esc(k), pages.esc(v)) for k, v in body["settings"].items()]
    sections.append("<h2>Settings</h2>")
    sections.append(pages.table(["setting", "value"], settings, table_id="settings", raw=True))
    sections.append('<p><a href="audit.json">audit.json</a></p>')
    return pages.page(f"Audit: {model['name']}", "".join(sections), css=_CSS)
