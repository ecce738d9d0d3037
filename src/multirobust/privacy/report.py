"""The HTML page of a membership-inference experiment: the ROC on log-log axes and the TPRs."""

from __future__ import annotations

import json
from typing import Any

from .. import pages
from ..pages import esc, pct

__all__ = ["render_html", "roc_figure"]

_LABELS = {
    "loss": "loss threshold (Yeom et al. 2018)",
    "lira-offline": "LiRA offline",
    "lira-online": "LiRA online",
}


def roc_figure(attacks: dict[str, Any], title: str = "") -> bytes:
    """PNG of the ROC curves on log-log axes, with the chance diagonal."""
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    floor = 1e-5
    for name, a in attacks.items():
        fpr = [max(v, floor) for v in a["roc"]["fpr"]]
        tpr = [max(v, floor) for v in a["roc"]["tpr"]]
        ax.plot(fpr, tpr, label=f"{_LABELS.get(name, name)} (AUC {a['auc']:.3f})")
    ax.plot([floor, 1], [floor, 1], ls="--", color="gray", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return pages.figure_png(fig)


def _accuracy_text(rep: dict[str, Any]) -> str:
    """The target's accuracy on its members and on the rest of the pool (reports written
    before it was recorded have none)."""
    acc = rep.get("target_accuracy")
    if acc is None:
        return ""
    return (
        f'<p id="target-accuracy">The target classifies {acc["members"]:.2%} of its members and '
        f"{acc['non_members']:.2%} of the other pool examples correctly: a gap of "
        f"{100 * (acc['members'] - acc['non_members']):.1f} points, what the attacks feed on.</p>"
    )


def render_html(rep: dict[str, Any]) -> str:
    """The report page of a membership run."""
    res = rep["result"]
    attacks = res["attacks"]
    title = f"Membership inference on {rep['dataset']}: {rep['target']}"
    rows = []
    fprs = [p["fpr"] for p in next(iter(attacks.values()))["operating_points"]]
    for name, a in attacks.items():
        cells = [_LABELS.get(name, name), f"{a['auc']:.4f}", pct(a["balanced_accuracy"])]
        for p in a["operating_points"]:
            cells += [pct(p["tpr"], 3), pct(p["achieved_fpr"], 3), pct(p["oracle_tpr"], 3)]
        rows.append(cells)
    header = ["attack", "AUC", "balanced acc."]
    for f in fprs:
        header += [f"TPR @ {pct(f, 2)} FPR", "FPR reached", "oracle TPR"]
    cost = rep["cost"]
    secs = cost["shadow_train_seconds"]
    walls = [s for s in cost["stages"] if s["stage"] == "shadows"]
    cost_text = (
        f"{len(secs)} shadow models, {sum(secs) / 60:.1f} min of training in total "
        f"({(sum(secs) / max(len(secs), 1)) / 60:.1f} min each, from their logs)"
    )
    if walls:
        cost_text += (
            f"; the shadows stage ran {sum(w['wall_seconds'] for w in walls) / 60:.1f} min of "
            f"wall time with {walls[-1]['workers']} worker process(es)"
        )
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>{rep['pool']} examples attacked ({rep['target_members']} members of the target, "
        f"membership {esc(rep['members'])}); {res['shadows']} shadow models, each trained on a "
        "random half; LiRA with "
        + ("fixed (global) variances" if res["fixed_variance"] else "per-example variances")
        + " on logit-scaled confidences φ = log(p/(1−p)).</p>",
        _accuracy_text(rep),
        pages.img(roc_figure(attacks, title), "ROC curves, log-log"),
        "<h2>True-positive rate at low false-positive rates</h2>",
        "<p>TPR with thresholds chosen on the shadow models only (each shadow in turn plays the "
        "target; its non-members fix the threshold), the FPR that threshold reaches on the "
        "target, and the oracle TPR read off the target's ROC (the number papers report).</p>",
        pages.table(header, rows, table_id="tpr", numeric=tuple(range(1, len(header)))),
        "<h2>Cost</h2>",
        f"<p>{esc(cost_text)}.</p>",
        "<h2>Settings</h2>",
        f"<pre>{esc(json.dumps(rep['config'], indent=2))}</pre>",
    ]
    return pages.page(title, "".join(body))
