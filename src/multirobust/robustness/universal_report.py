"""What ``multirobust universal`` reports about a universal perturbation: held-out fooling
rate and accuracies (``universal_summary``) and a picture of it at work (``universal_png``)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_atomic, write_bytes_atomic
from ..attacks.universal import UniversalResult, fooling_rate
from ..data import ImageDataset
from ..pages import figure_png, pyplot, show_image, signed_channel

__all__ = ["universal_png", "universal_summary", "write_universal"]


def universal_summary(
    model: nn.Module, result: UniversalResult, test: ImageDataset, seconds: float
) -> dict[str, Any]:
    """A JSON-ready summary of ``result``, measured on the held-out images ``test``.

    The test fooling rate is against the model's clean predictions (as in the paper); the
    accuracies are against the labels, clean and with the perturbation added (clipped to the
    box).
    """
    v = result.perturbation
    test_rate = fooling_rate(model, test, v)
    with torch.no_grad():
        n_test = test.images.shape[0]
        clean_acc = float((model(test.images).argmax(1) == test.labels).sum()) / n_test
        pert = model((test.images + v).clamp(0, 1)).argmax(1)
        pert_acc = float((pert == test.labels).sum()) / n_test
    return {
        "threat": result.threat,
        "fooling_rate_test": test_rate,
        "fooling_rate_train": result.best_fooling_rate,
        "fooling_rate_history": result.fooling_rate,
        "fooling_rate_checked_at": result.checked_at,
        "passes": result.passes,
        "deepfool_calls": result.deepfool_calls,
        "perturbation_norm": {
            "linf": float(v.abs().max()),
            "l2": float(torch.linalg.vector_norm(v)),
        },
        "test_accuracy_clean": clean_acc,
        "test_accuracy_perturbed": pert_acc,
        "seconds": seconds,
        "settings": dict(result.settings),
    }


def universal_png(
    model: nn.Module, v: torch.Tensor, x: torch.Tensor, names: tuple[str, ...], k: int
) -> bytes:
    """The perturbation ``v`` beside ``k`` images of ``x``, clean and perturbed, with the
    model's predictions (red where the perturbation changed it), as PNG bytes."""
    plt = pyplot()
    k = min(k, x.shape[0])
    pert = (x[:k] + v).clamp(0, 1)
    with torch.no_grad():
        before = model(x[:k]).argmax(1).tolist()
        after = model(pert).argmax(1).tolist()
    fig, axes = plt.subplots(2, k + 1, figsize=(1.5 * (k + 1), 3.4), squeeze=False)
    scale = float(v.abs().max()) or 1.0
    show_image(axes[0, 0], signed_channel(v), cmap="seismic", vmin=-scale, vmax=scale)
    axes[0, 0].set_title("perturbation", fontsize=8)
    axes[1, 0].axis("off")

    def label(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    for j in range(k):
        show_image(axes[0, j + 1], x[j], cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(f"clean: {label(before[j])}", fontsize=8)
        show_image(axes[1, j + 1], pert[j], cmap="gray", vmin=0, vmax=1)
        fooled = before[j] != after[j]
        axes[1, j + 1].set_title(
            f"→ {label(after[j])}", fontsize=8, color="#b00" if fooled else "black"
        )
    return figure_png(fig)


def write_universal(summary: dict[str, Any], v: torch.Tensor, png: bytes, out: Path) -> None:
    """Write ``out/universal.pt`` (the tensor), ``universal.json`` and ``universal.png``."""
    buffer = io.BytesIO()
    torch.save(v.detach().cpu().clone(), buffer)
    write_bytes_atomic(out / "universal.pt", buffer.getvalue())
    write_atomic(out / "universal.json", json.dumps(summary, indent=2))
    write_bytes_atomic(out / "universal.png", png)
