"""A model's recipe: the training configuration a multirobust checkpoint carries."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["recipe_of", "training_set_size"]


def recipe_of(model: nn.Module) -> dict[str, Any] | None:
    """The :class:`~multirobust.training.TrainConfig` fields the model was trained with, or
    None when it was not trained by ``multirobust train`` (a zoo model is: ``models.save``
    records the config in the checkpoint's metadata; a user's factory model is not).

    Returns:
        A copy of the config, plus ``"final_train_loss"`` (the last epoch's mean training loss,
        the figure a loss-threshold attacker is assumed to know) when the history has it.
    """
    meta = getattr(model, "multirobust_checkpoint", None)
    if not isinstance(meta, dict):
        return None
    inner = meta.get("metadata")
    config = inner.get("config") if isinstance(inner, dict) else None
    if not isinstance(config, dict) or "dataset" not in config:
        return None
    out = dict(config)
    history = inner.get("history") if isinstance(inner, dict) else None
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        loss = history[-1].get("train_loss")
        if isinstance(loss, int | float):
            out["final_train_loss"] = float(loss)
    return out


def training_set_size(recipe: dict[str, Any], split_size: int) -> int:
    """How many examples of the training split the recipe trained on (the first ``limit``)."""
    limit = recipe.get("limit")
    return split_size if limit is None else min(int(limit), split_size)
