"""Carlini & Wagner's seven objectives f1–f7 as losses (to maximise, −f): hand-computed values,
the targeted sign flip, and their use in C&W and PGD."""

import math

import pytest
import torch

from multirobust import attacks, losses

# z = (2, 1, 0): F = softmax(z) = (0.665241, 0.244728, 0.090031), by hand:
# e² = 7.389056, e¹ = 2.718282, e⁰ = 1, sum 11.107338.
Z = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([0])
T = torch.tensor([2])
F0, F1, F2 = 0.6652409557748219, 0.24472847105479764, 0.09003057317038046

# −f_k for the untargeted goal (y = 0): P_good = 1 − F_0, lead = F_0 − F_1 (probabilities),
# z_0 − z_1 = 1 (logits).
UNTARGETED = {
    "f1": math.log2(1 - F0) + 1,  # −0.578805
    "f2": -(F0 - F1),  # −0.420512
    "f3": math.log(2) - math.log1p(math.exp(F0 - F1)),  # −0.232199
    "f4": -(F0 - 0.5),  # −0.165241
    "f5": -math.log(2 * F0),  # −0.285541
    "f6": -1.0,
    "f7": math.log(2) - math.log1p(math.e),  # −0.620115
}
# Targeted at t = 2: P_good = F_2, lead = F_0 − F_2 (probabilities), z_0 − z_2 = 2 (logits).
TARGETED = {
    "f1": math.log2(F2) + 1,  # −2.473441
    "f2": -(F0 - F2),  # −0.575210
    "f3": math.log(2) - math.log1p(math.exp(F0 - F2)),  # −0.328406
    "f4": -(0.5 - F2),  # −0.409969
    "f5": -math.log(2 - 2 * F2),  # −0.598803
    "f6": -2.0,
    "f7": math.log(2) - math.log1p(math.exp(2.0)),  # −1.433781
}


@pytest.mark.parametrize("name", losses.CW_OBJECTIVES)
def test_hand_computed_values(name):
    fn = losses.get(name)
    assert fn(Z, Y).item() == pytest.approx(UNTARGETED[name], abs=1e-9)
    assert fn(Z, Y, T).item() == pytest.approx(TARGETED[name], abs=1e-9)


def test_after_success_the_hinged_objectives_are_flat_and_the_others_keep_rising():
    # z = (0, 3, 1), y = 0: class 1 already wins. F = (0.042010, 0.843795, 0.114195).
    z = torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64)
    f0 = 0.04201006613406605
    expected = {
        "f1": math.log2(1 - f0) + 1,  # 0.938082
        "f2": 0.0,
        "f3": math.log(2) - math.log1p(math.exp(f0 - 0.8437947344813395)),  # 0.322599
        "f4": 0.0,
        "f5": -math.log(2 * f0),  # 2.476699
        "f6": 0.0,
        "f7": math.log(2) - math.log1p(math.exp(-3.0)),  # 0.644560
    }
    for name, value in expected.items():
        assert losses.get(name)(z, Y).item() == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("name", losses.CW_OBJECTIVES)
def test_each_rises_as_the_target_gains(name):
    # Raising the target's logit step by step moves every objective up (weakly for the hinged
    # ones, which stop at 0 once the target wins): the sign flip lives in the loss.
    fn = losses.get(name)
    values = [fn(torch.tensor([[2.0, 1.0, s]]), Y, T).item() for s in (-1.0, 0.0, 1.0, 1.9)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    values = [fn(torch.tensor([[s, 1.0, 0.0]]), Y).item() for s in (3.0, 2.0, 1.5, 1.1)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


@pytest.mark.parametrize("name", ["f1", "f4", "f5"])
def test_the_probability_objectives_cross_zero_where_the_target_reaches_one_half(name):
    # F_t = 1/2 exactly: z_t = log(1/2 · Σ others / (1/2)) = log(e² + e¹) over the others' sum.
    zt = math.log(math.exp(2.0) + math.exp(1.0))
    z = torch.tensor([[2.0, 1.0, zt]], dtype=torch.float64)
    assert losses.get(name)(z, Y, T).item() == pytest.approx(0.0, abs=1e-12)
    # ... and a little either side they are on opposite sides of 0 (a 0.1 logit margin).
    lo = torch.tensor([[2.0, 1.0, zt - 0.1]], dtype=torch.float64)
    hi = torch.tensor([[2.0, 1.0, zt + 0.1]], dtype=torch.float64)
    assert losses.get(name)(lo, Y, T).item() < -1e-3
    assert losses.get(name)(hi, Y, T).item() > -1e-12  # the hinge f4 is exactly 0 there


def test_no_underflow_on_confident_logits():
    z = torch.tensor([[200.0, 0.0, 0.0]])
    for name in losses.CW_OBJECTIVES:
        for t in (None, T):
            value = losses.get(name)(z, Y, t)
            assert torch.isfinite(value).all(), name
    # log(1 − F_0) = log(2e^−200) to float precision, computed without forming 1 − F_0 (which
    # is 0 in float32); −f5 = −log(2·F_0) = −log 2 there.
    assert losses.get("f5")(z, Y).item() == pytest.approx(-math.log(2))
    assert losses.get("f1")(z, Y).item() == pytest.approx((math.log(2) - 200) / math.log(2) + 1)


def test_f6_is_the_margin_with_its_confidence():
    z = torch.tensor([[2.0, 1.0, 0.0]])
    for t in (None, T):
        assert torch.equal(losses.get("f6")(z, Y, t), losses.get("margin")(z, Y, t))
    assert losses.get("f6", confidence=5.0)(z, Y, T).item() == pytest.approx(-2.0)


def _linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()


@pytest.mark.parametrize("name", losses.CW_OBJECTIVES)
def test_usable_by_pgd_and_cw(name):
    model = _linear()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    pgd = attacks.create("pgd", threat="linf:0.5", steps=20, loss=name)(model, x, y)
    # The attack maximised the named loss: its reported loss is that loss at x_adv.
    with torch.no_grad():
        assert torch.allclose(pgd.loss, losses.get(name)(model(pgd.x_adv), y))
    targets = (y + 1) % 4
    cw = attacks.create("cw-l2", threat="l2:100", steps=50, binary_search_steps=6, objective=name)
    res = cw(model, x, y, targets=targets)
    # Targeted, as in the paper's table: every objective reaches the target on a linear model
    # (6 search steps take c from 0.01 to 1000, enough for the small softmax gradients of f2/f3).
    assert res.success.all(), name


def test_untargeted_f4_stops_where_the_true_class_falls_below_one_half():
    # (F_y − 0.5)⁺ is flat once F_y ≤ 1/2, classified correctly or not: on this 4-class linear
    # model every F_y is below 1/2 at x, so C&W with f4 has nothing to descend.
    model = _linear()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    with torch.no_grad():
        assert (model(x).softmax(1).amax(1) < 0.5).all()
    res = attacks.create("cw-l2", threat="l2:100", steps=25, objective="f4")(model, x, y)
    assert not res.success.any()
    # The untargeted f6 breaks them all with the same budget.
    assert attacks.create("cw-l2", threat="l2:100", steps=25)(model, x, y).success.all()


def test_cw_objective_changes_what_is_minimised():
    model = _linear()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    a = attacks.create("cw-l2", threat="l2:100", steps=30, objective="f6")(model, x, y)
    b = attacks.create("cw-l2", threat="l2:100", steps=30, objective="f2")(model, x, y)
    assert not torch.equal(a.x_adv, b.x_adv)


def test_invalid_objective():
    with pytest.raises(ValueError, match="Invalid objective: 'f8'"):
        attacks.create("cw-l2", threat="l2:1", objective="f8")


def test_objective_study_compares_the_seven_on_the_same_targets():
    from multirobust.robustness.objective_study import (
        objective_study,
        rows_to_json,
        rows_to_markdown,
    )

    model = _linear()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()
    y[0] = (y[0] + 1) % 4  # one misclassified example: left out
    names = ("f1", "f4", "f6")
    rows = objective_study(
        model, x, y, objectives=names, steps=30, binary_search_steps=4, progress=False
    )
    assert [r.objective for r in rows] == list(names)
    for r in rows:
        assert len(r.norms) == 5 and 0.0 <= r.success_rate <= 1.0
        finite = [v for v in r.norms if v != float("inf")]
        assert r.success_rate == pytest.approx(len(finite) / 5)
        if finite:
            assert r.mean_l2 == pytest.approx(sum(finite) / len(finite))
    assert rows[2].success_rate == 1.0  # f6, the paper's choice, on a linear model
    # The paired mean is over the examples all three broke, so it is a mean of fewer values.
    common = [i for i in range(5) if all(r.norms[i] != float("inf") for r in rows)]
    if common:
        assert rows[2].mean_l2_common == pytest.approx(
            sum(rows[2].norms[i] for i in common) / len(common)
        )
    table = rows_to_markdown(rows)
    assert table[0].startswith("| objective | success |") and len(table) == 2 + 3
    assert all(v is None or v >= 0 for d in rows_to_json(rows) for v in d["norms"])
    with pytest.raises(ValueError, match="Unknown objective"):
        objective_study(model, x, y, objectives=("f9",), progress=False)
    with pytest.raises(ValueError, match="Invalid targeting"):
        objective_study(model, x, y, targeting="worst", progress=False)
