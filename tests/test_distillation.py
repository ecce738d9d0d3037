"""Defensive distillation: the losses by hand, the method in the fit loop, and the standard
evaluation showing that the distilled model only masks gradients (Carlini & Wagner 2016)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multirobust import attacks, evaluate
from multirobust.training import ConfigError, TrainConfig, fit, methods
from multirobust.training.objectives import distillation_loss, temperature_loss


def test_losses_by_hand():
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 3), nn.Linear(6, 3)
    x, y = torch.rand(5, 6), torch.tensor([0, 1, 2, 1, 0])
    t = 7.0
    assert temperature_loss(student, x, y, temperature=t).item() == pytest.approx(
        F.cross_entropy(student(x) / t, y).item()
    )
    soft = (teacher(x) / t).softmax(1).detach()
    want = -(soft * (student(x) / t).log_softmax(1)).sum(1).mean()
    teacher.train()
    stats = {}
    got = distillation_loss(student, x, y, teacher=teacher, temperature=t, stats=stats)
    assert got.item() == pytest.approx(want.item())
    assert torch.allclose(stats["soft_labels"], soft)
    # Only the student receives gradients; the teacher's flags and mode are restored.
    got.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="Invalid temperature"):
            temperature_loss(student, x, y, temperature=bad)


def test_method_registered_and_config_checked(tmp_path):
    assert "distillation" in methods()
    with pytest.raises(ConfigError, match="Invalid temperature"):
        TrainConfig(method="distillation", temperature=0.0, out=str(tmp_path)).validate(
            check_data=False
        )


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """small_cnn distilled at T = 50 from a teacher trained with it, 3 epochs on 4000 images."""
    cfg = TrainConfig(
        dataset="mnist",
        arch="small_cnn",
        method="distillation",
        threats=["linf:0.3"],
        temperature=50.0,
        epochs=3,
        batch_size=64,
        limit=4000,
        eval_n=50,
        eval_steps=3,
        optimiser="adam",
        schedule="constant",
        seed=0,
        out=str(tmp_path_factory.mktemp("distill")),
        progress=False,
    )
    return fit(cfg)


def test_distilled_model_is_not_robust_and_the_checks_say_why(distilled, mnist_test):
    model = distilled.model
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).values
    clean = float((logits.argmax(1) == y).float().mean())
    assert clean >= 0.6
    # Deployed at T = 1 the logit gaps are huge: the softmax saturates.
    assert float((top2[:, 0] - top2[:, 1]).median()) > 30
    # The teacher trained alongside is checkpointed with the method state.
    assert set(distilled.history[-1]) >= {"clean_accuracy", "union_accuracy"}

    report = evaluate(model, x, y, threats=["linf:0.3"], preset="quick", progress=False)
    # The margin/DLR attacks of the standard ensemble break it ...
    assert report.robust_accuracy["linf:0.3"] <= 0.05
    assert report.threats["linf:0.3"].broken_counts()["apgd-t"] > 0
    # ... and the checks flag the masked cross-entropy gradients.
    names = {c.name for c in report.checks}
    assert "zero-gradients" in names
    assert "large-eps-not-zero" in names  # the naive CE attack fails even at ε = 0.5

    # The naive attack alone would have reported robustness that is not there.
    naive = attacks.create("pgd", threat="linf:0.3", steps=20, loss="ce")(model, x, y)
    strong = attacks.create("pgd", threat="linf:0.3", steps=20, loss="margin")(model, x, y)
    correct = logits.argmax(1) == y
    naive_acc = float((naive.robust & correct).float().mean())
    strong_acc = float((strong.robust & correct).float().mean())
    assert naive_acc >= 0.2 and strong_acc <= 0.05
    # The fit loop's per-epoch PGD-CE metric shows the same illusion.
    assert distilled.history[-1]["robust_accuracy[linf:0.3]"] >= 0.2


@pytest.mark.slow
def test_paper_temperature_100_on_more_data(tmp_path, mnist_test):
    cfg = TrainConfig(
        dataset="mnist",
        method="distillation",
        temperature=100.0,
        epochs=5,
        limit=20000,
        eval_n=100,
        eval_steps=5,
        schedule="constant",
        out=str(tmp_path),
        progress=False,
    )
    model = fit(cfg).model
    x, y = mnist_test.images[:200], mnist_test.labels[:200]
    report = evaluate(model, x, y, threats=["linf:0.3"], preset="standard", progress=False)
    assert report.clean_accuracy >= 0.9
    assert report.robust_accuracy["linf:0.3"] <= 0.05
    assert report.check("zero-gradients")
