"""ε warm-up: the threats of a training step shrink by the fit loop's scale, ramping to 1."""

from functools import partial
from typing import Any

import pytest
import torch

from multirobust.threats import L1Ball, L2Ball, LinfBall
from multirobust.training import ConfigError, TrainConfig, fit
from multirobust.training.methods import BatchStep, scale_threat


def test_scale_threat_keeps_kind_and_sparsity():
    assert scale_threat("linf:0.3", 0.5) == LinfBall(0.15)
    assert scale_threat(L2Ball(2.0), 0.25) == L2Ball(0.5)
    ball = scale_threat(L1Ball(10.0, sparsity=95.0), 0.1)
    assert isinstance(ball, L1Ball) and ball.eps == pytest.approx(1.0) and ball.sparsity == 95.0


def test_batch_step_passes_scaled_threats_and_step_size():
    seen: list[dict[str, Any]] = []

    def loss_fn(model, x, y, *, threat, step_size, generator=None, stats=None):
        seen.append({"threat": threat, "step_size": step_size})
        return model(x).sum() * 0.0 + 1.0

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = BatchStep(partial(loss_fn, threat="linf:0.3", step_size=0.1))
    x, y = torch.rand(3, 4), torch.zeros(3, dtype=torch.long)
    step(model, opt, x, y, torch.Generator())
    step.eps_scale = 0.5
    step(model, opt, x, y, torch.Generator())
    assert seen[0] == {"threat": "linf:0.3", "step_size": 0.1}
    assert seen[1]["threat"] == LinfBall(0.15)
    assert seen[1]["step_size"] == pytest.approx(0.05)

    multi: list[Any] = []
    mstep = BatchStep(
        partial(
            lambda m, x, y, *, threats, **kw: multi.append(threats) or m(x).sum(),
            threats=["l2:2", "l1:10"],
        )
    )
    mstep.eps_scale = 0.5
    mstep(model, opt, x, y, torch.Generator())
    assert multi[0] == [L2Ball(1.0), L1Ball(5.0)]


def test_fit_ramps_the_scale_batch_by_batch(tmp_path, monkeypatch):
    scales: list[float] = []
    original = BatchStep.__call__

    def spy(self, *args, **kwargs):
        scales.append(self.eps_scale)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BatchStep, "__call__", spy)
    cfg = TrainConfig(
        method="pgd",
        threats=["linf:0.1"],
        epochs=2,
        eps_warmup=1,
        batch_size=50,
        limit=200,
        steps=1,
        eval_n=20,
        eval_steps=1,
        out=str(tmp_path / "run"),
        progress=False,
    )
    fit(cfg)
    # 4 batches per epoch: the first epoch ramps 1/4 .. 4/4, the second stays at full ε.
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"eps_warmup": -1}, "eps_warmup"),
        ({"eps_warmup": 5, "epochs": 2}, "at most epochs"),
        ({"eps_warmup": 1, "method": "free"}, "does not support"),
    ],
)
def test_bad_warmup_is_a_config_error(kw, needle):
    cfg = TrainConfig(**{"method": "pgd", "epochs": 2, **kw})
    with pytest.raises(ConfigError, match=needle):
        cfg.validate(check_data=False)
