"""APGD-T's near-miss runs: more runs towards the nearest class, only on the examples every target
left robust within a small scale-free margin of the boundary. The attack contract (ball, box,
no mutation, seed, model state) is covered by test_attack_contracts.py, which runs them."""

from pathlib import Path

import pytest
import torch
from torch import nn

from multirobust import attacks, data, models
from multirobust.attacks.apgd import APGDTargeted
from multirobust.evaluation import presets

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def _linear(seed=0, classes=10, dim=16):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, classes))
    x = 0.2 + 0.6 * torch.rand(64, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model.eval(), x, y


def _scale_free_margin(logits, y):
    top = logits.sort(1, descending=True).values
    return (logits.gather(1, y[:, None]).squeeze(1) - top[:, 1]) / (top[:, 0] - top[:, 2])


def _spy(monkeypatch):
    calls = []
    original = APGDTargeted._targeted

    def spy(self, sub, targets):
        calls.append((self.restarts, sub.x.clone(), targets.clone()))
        return original(self, sub, targets)

    monkeypatch.setattr(APGDTargeted, "_targeted", spy)
    return calls


def test_near_miss_runs_go_to_exactly_the_examples_left_near_the_boundary(monkeypatch):
    # A radius too small to break anything: every example is left robust, at a margin within
    # 1e-3·‖W‖ of its clean one, so the near misses are the examples whose clean margin is
    # below the threshold (chosen in the middle of a wide gap between two clean margins).
    model, x, y = _linear()
    with torch.no_grad():
        m = _scale_free_margin(model(x), y)
    ordered = m.sort().values
    gaps = ordered[1:] - ordered[:-1]
    i = int(gaps[4:-4].argmax()) + 4  # some below, some above
    assert gaps[i] > 0.01
    tau = float((ordered[i] + ordered[i + 1]) / 2)
    expected = x[m < tau]
    calls = _spy(monkeypatch)
    attack = attacks.create(
        "apgd-t",
        threat="linf:1e-5",
        steps=5,
        target_classes=3,
        near_miss_runs=2,
        near_miss_margin=tau,
        seed=0,
    )
    res = attack(model, x, y)
    assert not res.success.any()
    assert [c[0] for c in calls] == [1, 1, 1, 2]  # three targets, then the near misses
    restarts, rerun, targets = calls[-1]
    assert torch.equal(rerun, expected)
    # Towards a wrong class among the three tried.
    with torch.no_grad():
        logits = model(expected)
    top3 = logits.scatter(1, y[m < tau][:, None], float("-inf")).topk(3, dim=1).indices
    assert (top3 == targets[:, None]).any(1).all()
    # Without near-miss runs, the three targets only.
    calls.clear()
    attacks.create("apgd-t", threat="linf:1e-5", steps=5, target_classes=3, seed=0)(model, x, y)
    assert [c[0] for c in calls] == [1, 1, 1]


def test_near_miss_runs_only_add_to_what_the_targets_broke():
    model, x, y = _linear(seed=3)
    options = {"threat": "l2:0.3", "steps": 10, "target_classes": 4, "seed": 1}
    plain = attacks.create("apgd-t", **options)(model, x, y)
    more = attacks.create("apgd-t", near_miss_runs=3, **options)(model, x, y)
    assert 0 < int(plain.success.sum()) < len(y)  # the test means something
    assert not (plain.success & ~more.success).any()
    # Examples the target runs broke keep the same adversarial point.
    assert torch.equal(more.x_adv[plain.success], plain.x_adv[plain.success])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"near_miss_runs": -1}, "near_miss_runs"),
        ({"near_miss_runs": 1.5}, "near_miss_runs"),
        ({"near_miss_margin": 0.0}, "near_miss_margin"),
        ({"near_miss_margin": 1.5}, "near_miss_margin"),
    ],
)
def test_near_miss_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        attacks.create("apgd-t", threat="linf:0.1", **options)


def test_the_standard_preset_runs_near_misses_and_checks_the_count():
    standard = presets.get("standard")
    specs = [s for s in standard.candidates(10) if s.label == "apgd-t"]
    assert specs and all(s.options["near_miss_runs"] == 3 for s in specs)
    quick = [s for s in presets.get("quick").candidates(10) if s.label == "apgd-t"]
    assert all("near_miss_runs" not in s.options for s in quick)
    with pytest.raises(ValueError, match="near_miss_runs"):
        standard.with_options(near_miss_runs=-1)


@pytest.mark.slow
def test_near_miss_runs_break_more_of_the_coin_toss_examples_of_the_zoo():
    # The avg model at ℓ2 2: examples that one APGD-T run breaks under some seeds and not
    # others (docs/strength.md). Over four seeds, one run per target plus the near-miss runs
    # broke 27 of the 137 examples APGD-CE leaves (7, 7, 6, 7) and one run alone 20; on these
    # ten of them (20 against 23 here), ask for a gain, not an exact count.
    rows = [58, 83, 95, 98, 104, 108, 109, 113, 116, 119]
    test = data.load("mnist", "test", limit=200)
    x, y = test.images[rows], test.labels[rows]
    model = models.load(ZOO / "avg.pt").eval()
    plain = more = 0
    for seed in range(4):
        options = {"threat": "l2:2", "steps": 100, "restarts": 1, "seed": seed}
        a = attacks.create("apgd-t", **options)(model, x, y).success
        b = attacks.create("apgd-t", near_miss_runs=3, **options)(model, x, y).success
        assert not (a & ~b).any()
        plain, more = plain + int(a.sum()), more + int(b.sum())
    assert more >= plain + 1, (plain, more)
