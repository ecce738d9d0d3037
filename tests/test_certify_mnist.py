"""Certificates against attacks on real MNIST models: no certified example is ever broken.

Bound propagation certifies the network itself, so every example certified in a ball must
survive every attack of the evaluation ensemble in that ball (deterministically), and certified
accuracy is at most the empirical robust accuracy, per threat and for the union. Randomized
smoothing certifies the smoothed classifier: its certified examples are attacked through the
Monte-Carlo soft classifier (SmoothAdv-style), and the attack points are judged by PREDICT with
fresh noise; a certified-but-broken example may occur with probability at most about 2α.
"""

from pathlib import Path

import pytest
import torch

from multirobust import attacks, certify, data, models
from multirobust.certify import ABSTAIN, Smooth, SmoothedSoft
from multirobust.evaluation import evaluate, presets

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _zoo(name):
    path = ZOO / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return models.load(path).eval()


def _check_sound(report, evaluation):
    """Certified ⊆ robust per threat and union; certified accuracy ≤ empirical accuracy."""
    report.attach_empirical(evaluation)
    assert report.checks == [], report.checks
    union_robust = evaluation.union_robust
    for m in report.methods.values():
        for threat, flags in m.certified.items():
            robust = evaluation.threats[threat].robust
            assert all(r for c, r in zip(flags, robust, strict=True) if c)
            assert m.certified_accuracy[threat] <= evaluation.robust_accuracy[threat]
        assert all(r for c, r in zip(m.union, union_robust, strict=True) if c)
        assert m.union_accuracy <= evaluation.union_accuracy


THREATS = ["linf:0.008", "l2:0.02", "l1:0.03"]


def test_bound_certificates_survive_white_box_attacks_on_a_zoo_model():
    model = _zoo("pgd-linf")
    test = data.load("mnist", "test", limit=16)
    report = certify.certify(
        model, test, threats=THREATS, bounds=["ibp", "crown-ibp"], radius_steps=0, progress=False
    )
    crown = report.methods["crown-ibp"]
    # Margins: at these radii CROWN-IBP certifies about half of the examples (measured radii
    # have medians 0.012 / 0.023 / 0.031), so the check below is not vacuous.
    assert all(v >= 0.2 for v in crown.certified_accuracy.values())
    # APGD with CE and DLR only (the standard preset's white-box members, fewer steps): the
    # default suite stays fast; the slow tests below run the whole standard preset.
    white_box = presets.get("quick").with_options(queries=0, target_classes=0, steps=20)
    evaluation = evaluate(
        model, test, threats=THREATS, preset=white_box, progress=False, run_checks=False
    )
    _check_sound(report, evaluation)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["standard", "pgd-linf", "pgd-l2", "pgd-l1", "max", "msd"])
def test_bound_certificates_survive_the_standard_preset_on_every_zoo_model(name):
    model = _zoo(name)
    test = data.load("mnist", "test", limit=40)
    report = certify.certify(
        model, test, threats=THREATS, bounds=["ibp", "crown-ibp"], radius_steps=0, progress=False
    )
    evaluation = evaluate(
        model, test, threats=THREATS, preset="standard", progress=False, run_checks=False
    )
    _check_sound(report, evaluation)


@pytest.mark.slow
def test_ibp_trained_model_certificates_survive_the_standard_preset_at_linf_0_1():
    model = _zoo("ibp-0.4")
    test = data.load("mnist", "test", limit=100)
    threats = ["linf:0.1", "linf:0.3"]
    report = certify.certify(
        model, test, threats=threats, bounds=["ibp", "crown-ibp"], radius_steps=0, progress=False
    )
    assert report.methods["ibp"].certified_accuracy["linf:0.1"] >= 0.8
    evaluation = evaluate(
        model, test, threats=threats, preset="standard", progress=False, run_checks=False
    )
    _check_sound(report, evaluation)


def _attack_smoothed(model, noise, x, y, eps, *, samples=32, seed=0):
    """The standard preset's white-box attacks on the soft smoothed classifier; the points."""
    soft = SmoothedSoft(model, noise, samples=samples, seed=seed)
    threat = certify.ibp.as_ball(f"l2:{eps}")
    points = []
    for spec in presets.get("standard").attacks_for(threat, 10):
        if not spec.white_box:
            continue  # black-box queries through m noisy copies are too costly for a test
        options = {**spec.options, "steps": 20}
        attack = attacks.create(spec.attack, threat=threat, **options)
        res = attack(soft, x, y, generator=torch.Generator().manual_seed(seed))
        points.append(res.x_adv)
    return points


def _smoothing_soundness(model, noise, n_images, eps, n, predict_n):
    test = data.load("mnist", "test", limit=n_images)
    x, y = test.images, test.labels
    smooth = Smooth(model, noise, batch_size=1000)
    res = smooth.certify(x, n0=100, n=n, alpha=0.001, generator=torch.Generator().manual_seed(0))
    certified = [
        i for i in range(len(y)) if res.prediction[i] == int(y[i]) and res.radius[i] >= eps
    ]
    assert len(certified) >= n_images // 2  # the check below is not vacuous
    rows = torch.tensor(certified)
    broken = torch.zeros(len(y), dtype=torch.bool)
    for x_adv in _attack_smoothed(model, noise, x[rows], y[rows], eps):
        assert bool(((x_adv - x[rows]).flatten(1).norm(dim=1) <= eps * (1 + 1e-4)).all())
        pred = smooth.predict(
            x_adv, n=predict_n, alpha=0.001, generator=torch.Generator().manual_seed(7)
        )
        wrong = (pred != y[rows]) & (pred != ABSTAIN)
        broken[rows[wrong]] = True
    # Certified-but-broken can only happen when a certificate or a prediction fails, each with
    # probability ≤ α = 0.001 per example: over these examples, none.
    assert int(broken.sum()) == 0
    # Certified accuracy ≤ empirical robust accuracy of the smoothed classifier.
    correct = [res.prediction[i] == int(y[i]) for i in range(len(y))]
    empirical = sum(c and not bool(b) for c, b in zip(correct, broken, strict=True))
    assert len(certified) <= empirical


@pytest.mark.slow
def test_smoothing_certificates_survive_attacks_on_the_smoothed_classifier():
    _smoothing_soundness(_zoo("pgd-l2"), "gaussian:0.25", 30, 0.3, 2000, 1000)


@pytest.mark.slow
def test_smoothing_certificates_of_the_noise_trained_model_survive_attacks():
    _smoothing_soundness(_zoo("noise-0.25"), "gaussian:0.25", 30, 0.5, 2000, 1000)
