"""Behaviour on real MNIST: a normally trained CNN falls to PGD; longer attacks never help it."""

import torch

from multirobust import attacks
from multirobust.evaluation.attack_run import run_attack
from multirobust.threats import parse


def test_clean_model_is_accurate(mnist_model, mnist_test):
    with torch.no_grad():
        acc = (mnist_model(mnist_test.images).argmax(1) == mnist_test.labels).float().mean()
    assert acc > 0.93


def test_pgd_linf_03_breaks_a_normally_trained_model(mnist_model, mnist_test):
    x, y = mnist_test.images[:500], mnist_test.labels[:500]
    res = attacks.create("pgd", threat="linf:0.3", steps=40)(mnist_model, x, y)
    assert res.robust.float().mean() < 0.05
    assert (res.norm <= 0.3 + 1e-6).all()


def test_longer_attack_never_raises_robust_accuracy(mnist_model, mnist_test):
    """Same start and step size: the first 10 steps of PGD-40 are PGD-10, and an example once
    broken stays broken, so the robust set can only shrink."""
    x, y = mnist_test.images[:300], mnist_test.labels[:300]
    short = attacks.create("pgd", threat="linf:0.1", steps=10, step_size=0.01)
    long = short.with_options(steps=40)
    r10 = short(mnist_model, x, y).robust
    r40 = long(mnist_model, x, y).robust
    assert not (r40 & ~r10).any()
    assert r40.float().mean() < r10.float().mean()
    more_restarts = attacks.create("pgd", threat="linf:0.1", steps=10, step_size=0.01, restarts=3)
    r10x3 = more_restarts(mnist_model, x, y).robust
    assert not (r10x3 & ~r10).any()


def test_l2_l1_and_union(mnist_model, mnist_test):
    x, y = mnist_test.images[:200], mnist_test.labels[:200]
    threats = [parse(t) for t in ("linf:0.1", "l2:2", "l1:10")]
    result = run_attack(mnist_model, x, y, threats, "pgd", {}, progress=False)
    per = {k: v["robust_accuracy"] for k, v in result["threats"].items()}
    assert per["l2:2"] < 0.5 and per["l1:10"] < 0.5
    assert result["union_accuracy"] <= min(per.values())
    robust = torch.stack(list(result["_robust"].values()))
    assert result["union_accuracy"] == robust.all(0).float().mean().item()


def test_apgd_is_at_least_as_strong_as_fgsm(mnist_model, mnist_test):
    x, y = mnist_test.images[:200], mnist_test.labels[:200]
    fgsm = attacks.create("fgsm", threat="linf:0.1")(mnist_model, x, y).robust.float().mean()
    apgd = attacks.create("apgd", threat="linf:0.1", steps=20)(mnist_model, x, y)
    assert apgd.robust.float().mean() <= fgsm
