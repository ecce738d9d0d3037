"""The report of attacks through an API: success and robust accuracy against queries spent.

For each run (an attack against one source, a served model in one output mode or the local
model): clean accuracy, robust accuracy and success rate at each query budget per example,
the median queries per success, the queries spent, the median perturbation norm found within each
budget, and the ledger reconciliation, beside the white-box numbers of ``evaluate`` for the same
model. The gap between the two is what the API setting buys the defender. Saved as JSON (with
the per-example traces, so the numbers can be recomputed at any budget) and as a self-contained
HTML page.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from .. import pages
from ..reportfile import ReportFile
from .lockstep import Trace, norm_at, success_at

FORMAT = "multirobust-remote-attack"
VERSION = 1


@dataclass
class AttackRun:
    """One attack against one source under one threat, with a trace per example.

    Attributes:
        source: where the model was reached (a URL, or ``local``).
        output: what the source reveals (``logits``, ``probabilities``, ``top-k``, ``label``).
        attack: label of the attack (``square``, ``rays``, ``transfer pgd``, ...).
        threat: the threat model (text).
        options: the attack's options.
        traces: one per example.
        seconds: wall time of the run.
        ledger: the client's count reconciled with the server's (remote sources).
    """

    source: str
    output: str
    attack: str
    threat: str
    options: dict[str, Any]
    traces: list[Trace]
    seconds: float = 0.0
    ledger: dict[str, Any] | None = None

    def summary(self, budgets: list[int]) -> dict[str, Any]:
        """The run's numbers at each budget (JSON-ready; None where undefined)."""
        return summarize(self.traces, budgets)

    def to_dict(self, budgets: list[int]) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "attack": self.attack,
            "threat": self.threat,
            "options": self.options,
            "seconds": self.seconds,
            "ledger": self.ledger,
            "summary": self.summary(budgets),
            "traces": [t.to_dict() for t in self.traces],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackRun:
        return cls(
            source=d["source"],
            output=d["output"],
            attack=d["attack"],
            threat=d["threat"],
            options=d["options"],
            traces=[Trace.from_dict(t) for t in d["traces"]],
            seconds=d.get("seconds", 0.0),
            ledger=d.get("ledger"),
        )


def _median(values: list[float]) -> float | None:
    """The median, None for no values; inf counts (more than half inf gives None)."""
    if not values:
        return None
    m = statistics.median(values)
    return None if math.isinf(m) else float(m)


def summarize(traces: list[Trace], budgets: list[int]) -> dict[str, Any]:
    """Clean accuracy, robust accuracy and success rate per budget, median queries and norms."""
    n = len(traces)
    correct = [t for t in traces if t.clean_met is False]
    k = len(correct)
    top = max(budgets) if budgets else 0
    out: dict[str, Any] = {
        "n": n,
        "clean_accuracy": k / n if n else 0.0,
        "robust_accuracy": {},
        "success_rate": {},
        "median_norm": {},
    }
    for b in budgets:
        broken = sum(success_at(traces, b))
        out["robust_accuracy"][str(b)] = (k - broken) / n if n else 0.0
        out["success_rate"][str(b)] = broken / k if k else 0.0
        out["median_norm"][str(b)] = _median([norm_at(t, b) for t in correct])
    wins = [
        t.first_success for t in correct if t.first_success is not None and t.first_success <= top
    ]
    out["median_queries"] = _median([float(q) for q in wins if q is not None])
    out["successes"] = len(wins)
    out["queries_spent"] = sum(t.queries for t in traces)
    out["mean_queries"] = out["queries_spent"] / n if n else 0.0
    return out


@dataclass
class RemoteReport(ReportFile):
    """Runs of black-box attacks, the budgets they are read at, and the white-box reference.

    Attributes:
        budgets: queries per example at which robust accuracy is reported.
        runs: the attack runs.
        white_box: threat -> ``{"robust_accuracy", "clean_accuracy", "source"}`` from
            ``evaluate`` on the same model and images (None if not given).
        settings: how the report was made.
    """

    budgets: list[int]
    runs: list[AttackRun] = field(default_factory=list)
    white_box: dict[str, dict[str, Any]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "budgets": self.budgets,
            "settings": self.settings,
            "white_box": self.white_box,
            "worst_case": self.worst_case(),
            "checks": self.checks(),
            "runs": [r.to_dict(self.budgets) for r in self.runs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RemoteReport:
        """Rebuild a report from :meth:`to_dict`'s output (the derived tables are recomputed)."""
        if d.get("format") != FORMAT:
            raise ValueError(f"Not a {FORMAT} report (format {d.get('format')!r})")
        return cls(
            budgets=[int(b) for b in d["budgets"]],
            runs=[AttackRun.from_dict(r) for r in d["runs"]],
            white_box=d.get("white_box"),
            settings=d.get("settings", {}),
        )

    def worst_case(self) -> list[dict[str, Any]]:
        """Per (threat, source, output): robust accuracy against every attack run there."""
        groups: dict[tuple[str, str, str], list[AttackRun]] = {}
        for r in self.runs:
            groups.setdefault((r.threat, r.source, r.output), []).append(r)
        out = []
        for (threat, source, output), runs in groups.items():
            n = len(runs[0].traces)
            if any(len(r.traces) != n for r in runs):
                continue
            row: dict[str, Any] = {
                "threat": threat,
                "source": source,
                "output": output,
                "attacks": [r.attack for r in runs],
                "robust_accuracy": {},
            }
            for b in self.budgets:
                broken = [
                    any(s) for s in zip(*(success_at(r.traces, b) for r in runs), strict=True)
                ]
                correct = sum(t.clean_met is False for t in runs[0].traces)
                row["robust_accuracy"][str(b)] = (correct - sum(broken)) / n if n else 0.0
            out.append(row)
        return out

    def checks(self) -> list[dict[str, Any]]:
        """``black-box-beats-white-box`` where the black-box attacks through one source leave
        fewer examples robust than the white-box evaluation: the white-box number is not an
        upper bound there (masked gradients; Carlini et al. 2019), or the images differ."""
        out = []
        white = self.white_box or {}
        top = str(max(self.budgets))
        for row in self.worst_case():
            wb = white.get(row["threat"])
            if not wb:
                continue
            n = len(next(r for r in self.runs if r.threat == row["threat"]).traces)
            black = row["robust_accuracy"][top]
            # One example of slack: the two evaluations draw their randomness differently.
            if black < wb["robust_accuracy"] - 1.0 / max(n, 1) + 1e-12:
                out.append(
                    {
                        "name": "black-box-beats-white-box",
                        "threat": row["threat"],
                        "message": (
                            f"Black-box attacks through {row['source']} ({row['output']}) leave "
                            f"{black:.1%} robust, below the white-box {wb['robust_accuracy']:.1%}: "
                            "the white-box evaluation misses examples (gradient masking?)"
                        ),
                        "evidence": {
                            "black_box": black,
                            "white_box": wb["robust_accuracy"],
                            "n": n,
                        },
                    }
                )
        return out

    def _render_html(self) -> str:
        return render(self)


def _pct(v: float | None) -> str:
    return "—" if v is None else pages.pct(v, 1)


def _num(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}" if digits else f"{v:.0f}"


def _curve_figure(report: RemoteReport, threat: str) -> str:
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    top = max(report.budgets)
    for r in report.runs:
        if r.threat != threat:
            continue
        correct = [t for t in r.traces if t.clean_met is False]
        wins = sorted(t.first_success for t in correct if t.first_success is not None)
        if not correct:
            continue
        xs, ys = [1], [0.0]
        for i, q in enumerate(q for q in wins if q <= top):
            xs += [q, q]
            ys += [ys[-1], (i + 1) / len(correct)]
        xs.append(top)
        ys.append(ys[-1])
        ax.plot(xs, ys, label=f"{r.attack} · {r.output}")
    ax.set_xscale("log")
    ax.set_xlabel("queries per example")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title(threat)
    return pages.img(pages.figure_png(fig), f"success rate against queries, {threat}")


def render(report: RemoteReport) -> str:
    """The self-contained HTML page of a :class:`RemoteReport`."""
    budgets = report.budgets
    s = report.settings
    parts = [
        "<h1>Attacks through the API</h1>",
        '<p class="muted">Black-box attacks against a served model, counted in queries per example '
        "(the clean query is number 1; a batch of k images is k queries), beside the white-box "
        "evaluation of the same model. The gap is what the API setting buys.</p>",
        "<h2>Settings</h2>",
        pages.table(
            ["setting", "value"],
            [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in s.items()],
            table_id="settings",
        ),
    ]
    for c in report.checks():
        parts.append(
            f'<div class="check"><b>{pages.esc(c["name"])}</b> [{pages.esc(c["threat"])}]: '
            f"{pages.esc(c['message'])}</div>"
        )
    threats = list(dict.fromkeys(r.threat for r in report.runs))
    for threat in threats:
        parts.append(f"<h2>{pages.esc(threat)}</h2>")
        header = ["source", "output", "attack", "clean"]
        header += [f"robust @ {b:,}" for b in budgets]
        header += [f"success @ {budgets[-1]:,}", "median queries", "queries / example", "ledger"]
        rows = []
        for r in report.runs:
            if r.threat != threat:
                continue
            m = r.summary(budgets)
            ledger = "—"
            if r.ledger:
                c, v = r.ledger["client"], r.ledger["server"]
                ledger = f"{c:,} = server" if c == v else f"client {c:,} ≠ server {v:,}"
            rows.append(
                [r.source, r.output, r.attack, _pct(m["clean_accuracy"])]
                + [_pct(m["robust_accuracy"][str(b)]) for b in budgets]
                + [
                    _pct(m["success_rate"][str(budgets[-1])]),
                    _num(m["median_queries"], 0),
                    f"{m['mean_queries']:.0f}",
                    ledger,
                ]
            )
        for w in report.worst_case():
            if w["threat"] != threat or len(w["attacks"]) < 2:
                continue
            rows.append(
                [w["source"], w["output"], f"worst case of the {len(w['attacks'])} above", ""]
                + [_pct(w["robust_accuracy"][str(b)]) for b in budgets]
                + ["", "", "", ""]
            )
        wb = (report.white_box or {}).get(threat)
        if wb:
            rows.append(
                [
                    wb.get("source", "evaluate"),
                    "gradients",
                    "white-box ensemble",
                    _pct(wb.get("clean_accuracy")),
                ]
                + [_pct(wb["robust_accuracy"])] * len(budgets)
                + ["", "", "", ""]
            )
        numeric = list(range(3, len(header)))
        parts.append(pages.table(header, rows, table_id=f"runs-{threat}", numeric=numeric))
        norms = [r for r in report.runs if r.threat == threat]
        if norms:
            parts.append("<p>Median perturbation norm of the smallest adversarial query found:</p>")
            parts.append(
                pages.table(
                    ["source", "output", "attack"] + [f"≤ {b:,} queries" for b in budgets],
                    [
                        [r.source, r.output, r.attack]
                        + [_num(r.summary(budgets)["median_norm"][str(b)]) for b in budgets]
                        for r in norms
                    ],
                    table_id=f"norms-{threat}",
                    numeric=list(range(3, 3 + len(budgets))),
                )
            )
        parts.append(_curve_figure(report, threat))
    return pages.page("Attacks through the API", "\n".join(parts))


def render_extraction(result: dict[str, Any]) -> str:
    """The HTML page of an extraction (``Extraction.to_dict()``): accuracy and agreement against
    queries, and the transfer attacks from the surrogate."""
    points = result["points"]
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    qs = [p["queries"] for p in points]
    ax.plot(qs, [p["agreement"] for p in points], "o-", label="agreement with the victim")
    ax.plot(qs, [p["accuracy"] for p in points], "s--", label="accuracy (true labels)")
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    s = result["settings"]
    parts = [
        "<h1>Model extraction</h1>",
        '<p class="muted">A surrogate trained from the API\'s answers (Knockoff Nets, random '
        "queries from a pool), measured on held-out images the attacker never queried.</p>",
        pages.table(
            ["setting", "value"], [[k, json.dumps(v)] for k, v in s.items()], table_id="settings"
        ),
        f"<p>Victim accuracy on the held-out images: {pages.pct(result['victim_accuracy'])}</p>",
        pages.table(
            ["queries", "surrogate accuracy", "agreement", "training steps", "seconds"],
            [
                [
                    f"{p['queries']:,}",
                    pages.pct(p["accuracy"]),
                    pages.pct(p["agreement"]),
                    p["train_steps"],
                    f"{p['seconds']:.0f}",
                ]
                for p in points
            ],
            table_id="points",
            numeric=[0, 1, 2, 3, 4],
        ),
        pages.img(pages.figure_png(fig), "agreement and accuracy against queries"),
    ]
    if result.get("transfer"):
        parts.append("<h2>Transfer attacks from the surrogate</h2>")
        parts.append(
            pages.table(
                [
                    "threat",
                    "attack",
                    "n",
                    "victim clean",
                    "success rate",
                    "robust accuracy",
                    "queries",
                ],
                [
                    [
                        t,
                        r["attack"],
                        r["n"],
                        pages.pct(r["victim_clean_accuracy"]),
                        pages.pct(r["success_rate"]),
                        pages.pct(r["robust_accuracy"]),
                        r["queries"],
                    ]
                    for t, r in result["transfer"].items()
                ],
                table_id="transfer",
                numeric=[2, 3, 4, 5, 6],
            )
        )
    return pages.page("Model extraction", "\n".join(parts))
