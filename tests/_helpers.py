"""Small pieces shared by several test files: a gradient-blocking model wrapper and the
settings of a tiny training run."""

from typing import Any

from torch import nn


class Detached(nn.Module):
    """A model through which no gradient flows: only a black-box attack can work on it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.detach())


def tiny_run(out, **overrides: Any) -> dict[str, Any]:
    """Settings of a seconds-long PGD training run on 384 MNIST images, as a dict."""
    settings: dict[str, Any] = dict(
        dataset="mnist",
        arch="small_cnn",
        method="pgd",
        threats=["linf:0.3"],
        epochs=2,
        batch_size=64,
        limit=384,
        steps=3,
        eval_n=64,
        eval_steps=3,
        optimiser="sgd",
        lr=0.05,
        schedule="onecycle",
        seed=3,
        out=str(out),
        progress=False,
    )
    settings.update(overrides)
    return settings
