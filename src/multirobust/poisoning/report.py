"""The HTML page of a backdoor experiment (``report.html`` beside ``report.json``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from .. import pages
from ..pages import esc, pct

if TYPE_CHECKING:
    from .experiment import BackdoorRun

__all__ = ["render_html"]


def _metric_rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = []
    m = rep["metrics"]
    if "baseline" in m:
        b = m["baseline"]
        rows.append(
            [
                "clean model (no poisoning)",
                pct(b["clean_accuracy"]),
                pct(b["attack_success_rate"]),
                pct(b["robust_accuracy"]),
            ]
        )
    p = m["poisoned"]
    rows.append(
        [
            "poisoned model, no defence",
            pct(p["clean_accuracy"]),
            pct(p["attack_success_rate"]),
            pct(p["robust_accuracy"]),
        ]
    )
    for name, d in rep["defences"].items():
        a = d["after"]
        rows.append(
            [
                f"after {name}",
                pct(a["clean_accuracy"]),
                pct(a["attack_success_rate"]),
                pct(a["robust_accuracy"]),
            ]
        )
    return rows


def detection_line(name: str, score: dict[str, Any]) -> str:
    """One line on a detector's score (a :class:`DetectionScore` as a dict) for the terminal.

    A detector that flagged nothing has no precision to speak of (it is 1.0 by convention: no
    false alarm); the line says it flagged nothing instead of printing "precision 100%".
    """
    found = f"{score['true_positives']} of {score['poisoned']} poisoned"
    if score["flagged"] == 0:
        return f"{name}: flagged nothing ({found} found), recall {score['recall']:.2%}"
    return (
        f"{name}: precision {score['precision']:.2%}, recall {score['recall']:.2%} "
        f"({found} among {score['flagged']} flagged)"
    )


def _detector_rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in rep["detectors"].items():
        s = d["poisoned"]
        clean = d.get("clean")
        rows.append(
            [
                name,
                pct(s["precision"]) if s["flagged"] else "— (none flagged)",
                pct(s["recall"]),
                f"{s['true_positives']} / {s['flagged']}",
                str(s["poisoned"]),
                pct(s["chance_precision"]),
                "—" if clean is None else f"{clean['flagged']} ({pct(clean['flagged_fraction'])})",
                ", ".join(map(str, d["suspicious_classes"])) or "none",
            ]
        )
    return rows


def _examples(run: BackdoorRun) -> str:
    """Five test images, clean and triggered, with the poisoned model's predictions."""
    from .metrics import predict

    plt = pages.pyplot()
    test = run.test
    attack = run.attack
    idx = (test.labels != attack.target).nonzero().flatten()[:5]
    x = test.images[idx]
    xt = attack.apply_trigger(x)
    model = run.model("train")
    pc, pt = predict(model, x), predict(model, xt)
    fig, axes = plt.subplots(2, len(idx), figsize=(1.6 * len(idx), 3.6))
    for j in range(len(idx)):
        for row, (img, pred) in enumerate(((x[j], pc[j]), (xt[j], pt[j]))):
            ax = axes[row][j]
            im = img.permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(im, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_title(f"pred {int(pred)}", fontsize=9)
            ax.axis("off")
    axes[0][0].text(-8, 14, "clean", rotation=90, va="center", fontsize=9)
    axes[1][0].text(-8, 14, "triggered", rotation=90, va="center", fontsize=9)
    return pages.img(pages.figure_png(fig), "clean and triggered test images")


def _neural_cleanse(run: BackdoorRun) -> str:
    path = run.out / "defend" / "neural-cleanse" / "result.json"
    if not path.is_file():
        return ""
    entry = json.loads(path.read_text())
    d = entry["details"]
    plt = pages.pyplot()
    k = len(d["l1"])
    fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 3.2), gridspec_kw={"height_ratios": [1, 1]})
    for t in range(k):
        ax = axes[0][t]
        ax.imshow(torch.tensor(d["masks"][t]).numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"class {t}", fontsize=8)
        ax.axis("off")
    gs = axes[1][0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    bar = fig.add_subplot(gs[1, :])
    colours = ["#c0392b" if t in d["flagged"] else "#7f8c8d" for t in range(k)]
    bar.bar(range(k), d["l1"], color=colours)
    bar.set_xticks(range(k))
    bar.set_ylabel("‖mask‖₁")
    bar.set_xlabel("class (red: flagged, anomaly index > 2)")
    rows = [
        [
            str(t),
            f"{d['l1'][t]:.1f}",
            pct(d["success"][t]),
            "∞" if d["anomaly_index"][t] is None else f"{d['anomaly_index'][t]:.2f}",
            "yes" if t in d["flagged"] else "",
        ]
        for t in range(k)
    ]
    return (
        "<h2>Neural Cleanse: reversed triggers</h2>"
        "<p>Smallest mask per class that sends clean inputs of other classes to it (top), their "
        "sizes (bottom). A class whose mask is anomalously small (anomaly index over "
        f"{d['threshold']:g}, below the median) is a backdoor target; flagged: "
        f"{esc(', '.join(map(str, d['flagged'])) or 'none')}.</p>"
        + pages.img(pages.figure_png(fig), "reversed trigger masks")
        + pages.table(
            ["class", "‖mask‖₁", "success", "anomaly index", "flagged"],
            rows,
            table_id="neural-cleanse",
            numeric=(1, 2, 3),
        )
    )


def _fine_pruning(run: BackdoorRun) -> str:
    path = run.out / "defend" / "fine-pruning" / "result.json"
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())["details"]
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(d["curve"]) + 1), [100 * a for a in d["curve"]], marker=".")
    ax.axhline(100 * d["accuracy_before"], ls="--", color="gray", lw=1)
    ax.set_xlabel("channels pruned (least active first)")
    ax.set_ylabel("clean accuracy (%)")
    return (
        "<h2>Fine-pruning</h2>"
        f"<p>{len(d['pruned'])} of {d['channels']} channels of the last convolution pruned "
        f"(clean-set accuracy {pct(d['accuracy_before'])} → {pct(d['accuracy_pruned'])} after "
        f"pruning → {pct(d['accuracy_after'])} after fine-tuning).</p>"
        + pages.img(pages.figure_png(fig), "fine-pruning accuracy curve")
    )


def render_html(rep: dict[str, Any], run: BackdoorRun) -> str:
    """The report page of a backdoor run."""
    attack = rep["attack"]
    title = f"Backdoor: {attack['name']} on {rep['dataset']}"
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>{rep['poisoned']} of {rep['training_size']} training examples poisoned "
        f"({pct(rep['poisoned'] / max(rep['training_size'], 1))}), mode "
        f"{esc(attack.get('mode'))}, target {esc(attack.get('target'))}. Metrics on "
        f"{rep['metrics']['poisoned']['n_clean']} test images; ASR and robust accuracy on "
        f"{rep['metrics']['poisoned']['n_triggered']} triggered ones.</p>",
        "<h2>Clean accuracy, attack success rate, robust accuracy</h2>",
        pages.table(
            ["model", "clean accuracy", "ASR", "robust accuracy"],
            _metric_rows(rep),
            table_id="metrics",
            numeric=(1, 2, 3),
        ),
        _examples(run),
    ]
    if rep["detectors"]:
        body += [
            "<h2>Detectors of poisoned training examples</h2>",
            pages.table(
                [
                    "detector",
                    "precision",
                    "recall",
                    "true / flagged",
                    "poisoned",
                    "chance precision",
                    "flagged on clean data",
                    "suspicious classes",
                ],
                _detector_rows(rep),
                table_id="detectors",
                numeric=(1, 2, 4, 5),
            ),
        ]
    body += [_fine_pruning(run), _neural_cleanse(run)]
    body += [
        "<h2>Settings</h2>",
        f"<pre>{esc(json.dumps(rep['config'], indent=2))}</pre>",
    ]
    return pages.page(title, "".join(body))
