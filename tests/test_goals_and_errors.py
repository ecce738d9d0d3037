"""Adversarial goals (targeted, random, least-likely, source/target, confidence) and bad inputs."""

import pytest
import torch
from torch import nn

from multirobust import attacks
from multirobust.attacks import LeastLikely, RandomTarget, ReduceConfidence, SourceToTarget


def _model_and_data(n=40, classes=5, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, classes))
    x = torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)  # everything starts correctly classified
    return model.eval(), x, y


def test_targeted_attack_reaches_the_targets():
    model, x, y = _model_and_data()
    targets = (y + 1) % 5
    res = attacks.create("pgd", threat="linf:1", steps=30)(model, x, y, targets=targets)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == targets)
    assert res.success.float().mean() > 0.9


def test_random_targets_differ_from_labels_and_follow_the_seed():
    model, x, y = _model_and_data()
    atk = attacks.create("pgd", threat="linf:1", steps=20)
    a = atk(model, x, y, goal=RandomTarget(), generator=torch.Generator().manual_seed(1))
    b = atk(model, x, y, goal=RandomTarget(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.x_adv, b.x_adv)
    pred = model(a.x_adv).argmax(1)
    assert (pred[a.success] != y[a.success]).all()
    # The targets are the goal's draw from the call's generator: every one another class.
    drawn = RandomTarget().resolve(model(x), y, torch.Generator().manual_seed(1)).targets
    assert (drawn != y).all() and torch.equal(a.success, pred == drawn)


def test_least_likely_targets():
    model, x, y = _model_and_data()
    with torch.no_grad():
        ll = model(x).argmin(1)
    res = attacks.create("pgd", threat="linf:1", steps=40)(model, x, y, goal=LeastLikely())
    pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == ll)
    assert res.success.any()


def test_source_target_leaves_other_classes_alone():
    model, x, y = _model_and_data()
    src = int(y[0])
    dst = (src + 1) % 5
    goal = SourceToTarget(src, dst)
    res = attacks.create("pgd", threat="linf:1", steps=30)(model, x, y, goal=goal)
    others = y != src
    assert torch.equal(res.x_adv[others], x[others])
    assert not res.success[others].any()
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success[~others], pred[~others] == dst)
    assert res.success[~others].any()
    with pytest.raises(ValueError, match="must differ"):
        SourceToTarget(1, 1)
    with pytest.raises(ValueError, match=r"Invalid target: 9 \(the model has 5 classes\)"):
        attacks.create("pgd", threat="linf:1")(model, x, y, goal=SourceToTarget(0, 9))


def test_reduce_confidence_goal():
    model, x, y = _model_and_data()
    atk = attacks.create("pgd", threat="linf:0.2")
    res = atk(model, x, y, goal=ReduceConfidence(0.3))
    with torch.no_grad():
        p = model(res.x_adv).softmax(1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert torch.equal(res.success, p < 0.3)


@pytest.fixture
def setup():
    return _model_and_data(n=4)


def _atk():
    return attacks.create("pgd", threat="linf:0.1", steps=2)


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (
            lambda x, y: (
                x.masked_fill(
                    torch.zeros_like(x).bool().index_fill(0, torch.tensor([0]), True), float("nan")
                ),
                y,
            ),
            ValueError,
            "NaN",
        ),
        (lambda x, y: (x * 255, y), ValueError, r"outside \[0, 1\].*Normalize"),
        (lambda x, y: (x - 0.5, y), ValueError, r"outside \[0, 1\]"),
        (lambda x, y: (x, y[:2]), ValueError, "y must have shape"),
        (lambda x, y: (x[0], y), ValueError, "y must have shape"),
        (lambda x, y: (x, y.float()), ValueError, "integer class indices"),
        (lambda x, y: (x, y + 10), ValueError, "Labels out of range"),
        (lambda x, y: (x, y - 10), ValueError, "Labels out of range"),
        (lambda x, y: ((x * 255).to(torch.uint8), y), ValueError, "floating-point"),
        (lambda x, y: (x.numpy(), y), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(setup, mutate, error, message):
    model, x, y = setup
    bx, by = mutate(x, y)
    with pytest.raises(error, match=message):
        _atk()(model, bx, by)


def test_model_returning_probabilities_is_refused(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="probabilities"):
        _atk()(nn.Sequential(model, nn.Softmax(dim=1)), x, y)


def test_model_with_bad_output(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="logits of shape"):
        _atk()(nn.Sequential(model, nn.Flatten(0)), x, y)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        _atk()(nn.Sequential(model, _Inf()), x, y)


class _Inf(nn.Module):
    def forward(self, z):
        return z * float("inf")


def test_bad_targets(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="equal the true label"):
        _atk()(model, x, y, targets=y)
    with pytest.raises(ValueError, match="Targets out of range"):
        _atk()(model, x, y, targets=torch.full_like(y, 7))
    with pytest.raises(ValueError, match="Invalid targets"):
        _atk()(model, x, y, targets="most_likely")
    with pytest.raises(ValueError, match=r"Invalid threshold: 1.5 \(must be in \(0, 1\]\)"):
        ReduceConfidence(1.5)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("pgd", {"threat": "linf:-1"}, "Invalid eps"),
        (
            "pgd",
            {"threat": "linf:0.3", "steps": 0},
            r"Invalid steps: 0 \(must be an integer >= 1\)",
        ),
        ("pgd", {"threat": "linf:0.3", "steps": 2.5}, "Invalid steps"),
        ("pgd", {"threat": "linf:0.3", "step_size": -1.0}, r"Invalid step_size: -1.0 \(must be"),
        ("pgd", {"threat": "linf:0.3", "restarts": 0}, "Invalid restarts"),
        ("pgd", {"threat": "linf:0.3", "loss": "hinge"}, "Unknown loss 'hinge'"),
        ("pgd", {"threat": "spatial:30,3"}, "does not support threat spatial"),
        ("spatial-grid", {"threat": "linf:0.3"}, "does not support threat linf"),
        ("slide", {"threat": "l2:1"}, "does not support"),
        ("apgd", {"threat": "linf:0.3", "rho": 2.0}, "Invalid rho"),
        ("nope", {"threat": "linf:0.3"}, "Unknown attack 'nope'"),
        ("pgd", {"threat": "lx:3"}, "Unknown threat type"),
    ],
)
def test_bad_configs(name, options, message):
    with pytest.raises(ValueError, match=message):
        attacks.create(name, **options)


def test_attacks_are_immutable():
    atk = _atk()
    with pytest.raises(AttributeError):
        atk.steps = 10  # type: ignore[misc]
    assert atk.with_options(steps=10).steps == 10 and atk.steps == 2
