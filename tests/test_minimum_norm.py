"""Minimum-norm attacks (Carlini–Wagner ℓ2 / ℓ∞, DeepFool ℓ2 / ℓ∞): known answers on affine
classifiers, honest results, the budget semantics, options, and behaviour on MNIST."""

import pytest
import torch
from torch import nn

from multirobust import attacks
from multirobust.attacks.deepfool import deepfool, goal_margin
from multirobust.threats import parse

D = 100


class Affine(nn.Module):
    """Logits W x + b (C classes); with C = 2 and W = [0; w], b = 0 the binary score w·x."""

    def __init__(self, W, b):
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, x):
        return x.flatten(1) @ self.W.T + self.b


def _binary(n=4, seed=0):
    """Binary linear classifier; inputs near 0.5, boundary near enough that the box is inactive.

    Each example is shifted along w so that its score w·x takes a chosen value (on either side).
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    W = torch.stack([torch.zeros_like(w), w])
    model = Affine(W, torch.zeros(2, dtype=torch.float64)).double().eval()
    x = 0.5 + 0.02 * torch.rand(n, D, generator=g, dtype=torch.float64)
    score = torch.tensor([1.5, -2.0, 0.7, -3.0][:n], dtype=torch.float64)
    x = x + ((score - x @ w) / (w @ w)).unsqueeze(1) * w
    y = (score > 0).long()
    return model, w, x, y, score


def _multiclass(n=6, classes=5, seed=1):
    """A 5-class affine classifier and ``n`` inputs of several predicted classes, each at an
    ℓ2 distance of 0.25 to 1 from its closest boundary (neither tiny nor reaching the box)."""
    g = torch.Generator().manual_seed(seed)
    W = 0.3 * torch.randn(classes, D, generator=g, dtype=torch.float64)
    W = W - W.mean(1, keepdim=True)  # no class favoured by overall brightness
    b = torch.zeros(classes, dtype=torch.float64)
    pool = 0.1 + 0.8 * torch.rand(400, D, generator=g, dtype=torch.float64)
    model = Affine(W, b).double().eval()
    with torch.no_grad():
        logits = model(pool)
    y = logits.argmax(1)
    dist = _closest_boundary(W, logits, y, 2)
    fine = ((dist > 0.25) & (dist < 1.0)).nonzero().flatten().tolist()
    # Round-robin over the predicted classes, so that several classes are attacked.
    by_class = {}
    for i in fine:
        by_class.setdefault(int(y[i]), []).append(i)
    pick = [i for group in zip(*by_class.values(), strict=False) for i in group][:n]
    x = pool[pick]
    return model, W, x, y[pick], logits[pick]


def _closest_boundary(W, logits, y, dual_ord):
    """Exact distance to misclassification of an affine classifier (box inactive):
    min over k ≠ y of (z_y − z_k) / ‖w_y − w_k‖_dual."""
    gap = logits.gather(1, y.unsqueeze(1)) - logits
    dw = W.unsqueeze(0) - W[y].unsqueeze(1)
    dist = gap / torch.linalg.vector_norm(dw, ord=dual_ord, dim=2)
    dist[torch.arange(len(y)), y] = float("inf")
    return dist.min(1).values


# ---------------------------------------------------------------- known answers: DeepFool


def _aim(score):
    """Where DeepFool's linearised step aims: 2m past the boundary, m = √ε · max(1, max |Z|)
    (the goal margin, see multirobust.attacks.deepfool; the logits at x are (0, score)), so the
    score at the returned point is −sign(score)·2m instead of 0 — a shift of ~10⁻⁷ in float64."""
    return score + score.sign() * 2 * goal_margin(torch.stack([torch.zeros_like(score), score], 1))


def test_deepfool_l2_binary_lands_on_the_boundary():
    model, w, x, y, score = _binary()
    res = attacks.create_minimum_norm("deepfool-l2", overshoot=0.0)(model, x, y)
    assert res.found.all()
    assert torch.allclose(res.distance, score.abs() / w.norm(), rtol=1e-6)
    assert torch.allclose(res.distance, _aim(score).abs() / w.norm(), rtol=1e-12, atol=0)
    assert torch.allclose(res.x_adv @ w, score - _aim(score), rtol=1e-6, atol=0)
    assert torch.allclose(res.x_adv - x, -(_aim(score) / (w @ w)).unsqueeze(1) * w, atol=1e-12)


def test_deepfool_linf_binary_lands_on_the_boundary():
    model, w, x, y, score = _binary()
    res = attacks.create_minimum_norm("deepfool-linf", overshoot=0.0)(model, x, y)
    assert res.found.all()
    assert torch.allclose(res.distance, score.abs() / w.abs().sum(), rtol=1e-6)
    expected = _aim(score).abs() / w.abs().sum()  # 2m past the boundary, see _aim
    assert torch.allclose(res.distance, expected, rtol=1e-12, atol=0)
    assert torch.allclose(res.x_adv @ w, score - _aim(score), rtol=1e-6, atol=0)
    # Every coordinate moves by the full ℓ∞ distance, against sign(w)·sign(score).
    step = -(score.sign() * expected).unsqueeze(1) * w.sign()
    assert torch.allclose(res.x_adv - x, step, atol=1e-12)


@pytest.mark.parametrize("name, dual", [("deepfool-l2", 2), ("deepfool-linf", 1)])
def test_deepfool_multiclass_finds_the_closest_boundary(name, dual):
    model, W, x, y, logits = _multiclass()
    assert len(set(y.tolist())) > 1
    res = attacks.create_minimum_norm(name, overshoot=0.0)(model, x, y)
    assert torch.allclose(res.distance, _closest_boundary(W, logits, y, dual), rtol=1e-7)


def test_deepfool_overshoot_crosses_in_one_step():
    model, W, x, y, logits = _multiclass()
    attack = attacks.create_minimum_norm("deepfool-l2", overshoot=0.02, refine_steps=0)
    res = attack(model, x, y)
    assert res.found.all()
    # rtol: the step aims 2m ≈ 10⁻⁷ past the boundary (the goal margin), then 2% further.
    assert torch.allclose(res.distance, 1.02 * _closest_boundary(W, logits, y, 2), rtol=1e-7)
    # One linearisation each: the contract's clean pass, DeepFool's step and its goal check,
    # and the contract's evaluation of the result; far from the 50 steps allowed.
    assert res.queries == 4 * len(y)
    # The default refinement bisects back to the boundary, at 12 more passes of each example.
    refined = attack.with_options(refine_steps=12)(model, x, y)
    assert refined.found.all()
    assert torch.allclose(refined.distance, _closest_boundary(W, logits, y, 2), rtol=1.02 * 2**-12)
    assert refined.queries == (4 + 12) * len(y)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_is_box_aware(norm):
    """Half the coordinates sit at 0 and the boundary lies in the direction that would push them
    below 0: the exact box-constrained minimum moves only the free half, in one step."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    w[: D // 2] = -w[: D // 2].abs()  # blocked: +w lowers them, and they are at 0
    x = torch.full((1, D), 0.5, dtype=torch.float64)
    x[0, : D // 2] = 0.0
    free = w[D // 2 :]
    x[0, D // 2 :] += ((-0.4 - x[0] @ w) / (free @ free)) * free  # score −0.4: class 0
    model = Affine(torch.stack([torch.zeros_like(w), w]), torch.zeros(2, dtype=torch.float64))
    y = torch.zeros(1, dtype=torch.long)
    out = deepfool(model.double(), x, y, norm=norm, overshoot=0.02, steps=50)
    delta = out.x_adv - x
    assert out.found.all() and int(out.iterations[0]) == 1  # across in one step
    assert torch.equal(delta[0, : D // 2], torch.zeros(D // 2, dtype=torch.float64))
    dual = free.norm() if norm == "l2" else free.abs().sum()
    got = delta.norm() if norm == "l2" else delta.abs().max()
    assert torch.allclose(got, 1.02 * 0.4 / dual, rtol=1e-9)


def test_deepfool_function_reports_its_passes():
    model, W, x, y, logits = _multiclass()
    out = deepfool(model, x, y, norm="l2", overshoot=0.02, candidates=3)
    assert out.found.all() and (out.iterations == 1).all()
    # Two forward passes (step, then the goal check) and K − 1 = 2 backward passes.
    assert (out.forward_passes, out.backward_passes) == (2, 2)
    # The refinement adds one forward pass per bisection step and no backward pass.
    out = deepfool(model, x, y, norm="l2", overshoot=0.02, candidates=3, refine_steps=4)
    assert (out.forward_passes, out.backward_passes) == (6, 2)
    with pytest.raises(ValueError, match="Invalid norm: 'l3'"):
        deepfool(model, x, y, norm="l3")


# ---------------------------------------------------------------- known answers: Carlini–Wagner


def test_cw_l2_binary_is_within_a_few_percent_of_the_minimum():
    model, w, x, y, score = _binary()
    res = attacks.create_minimum_norm("cw-l2")(model, x, y)
    expected = score.abs() / w.norm()
    assert res.found.all()
    assert (res.distance >= expected * (1 - 1e-6)).all()  # nothing beats the exact minimum
    assert (res.distance <= expected * 1.03).all()


def test_cw_l2_multiclass_is_within_a_few_percent_of_the_minimum():
    model, W, x, y, logits = _multiclass()
    res = attacks.create_minimum_norm("cw-l2")(model, x, y)
    expected = _closest_boundary(W, logits, y, 2)
    assert res.found.all()
    assert (res.distance >= expected * (1 - 1e-6)).all()
    assert (res.distance <= expected * 1.03).all()


def test_cw_l2_confidence_adds_kappa_to_the_margin():
    model, w, x, y, score = _binary()
    kappa = 2.0
    res = attacks.create_minimum_norm("cw-l2", confidence=kappa)(model, x, y)
    s = res.x_adv @ w
    margin = torch.where(y == 1, -s, s)  # the other logit minus the true one
    assert (margin >= kappa - 1e-9).all()
    expected = (score.abs() + kappa) / w.norm()
    assert (res.distance >= expected * (1 - 1e-6)).all() and (res.distance <= expected * 1.03).all()


def test_cw_linf_multiclass_is_close_to_the_minimum():
    model, W, x, y, logits = _multiclass(n=4)
    res = attacks.create_minimum_norm("cw-linf")(model, x, y)
    expected = _closest_boundary(W, logits, y, 1)
    assert res.found.all()
    assert (res.distance >= expected * (1 - 1e-6)).all()
    # τ shrinks by 10% per accepted trial, so the answer is within about that of the minimum.
    assert (res.distance <= expected * 1.12).all()


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad", "ftrl", "sgd"])
def test_cw_l2_every_optimizer_finds_the_boundary(optimizer):
    model, w, x, y, score = _binary()
    res = attacks.create_minimum_norm("cw-l2", optimizer=optimizer)(model, x, y)
    expected = score.abs() / w.norm()
    assert res.found.all()
    assert (res.distance >= expected * (1 - 1e-6)).all() and (res.distance <= expected * 1.15).all()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cw_first_step_is_the_chosen_optimisers(optimizer):
    """One C&W update, from u = 0, measured in the tanh variables of the returned iterate.

    At u = 0 the distance term has zero gradient (x'(w0) = x), so the gradient of the objective
    is −c · ∂margin/∂x · ∂x'/∂w, with ∂x'/∂w_i = (1 + m)/2 · sech²(w0_i) and, for the binary
    score w·x, ∂margin/∂x = ±w. SGD moves u_i = −lr · g_i, proportional to w_i · sech²(w0_i);
    Adam's first step is −lr · g_i / (|g_i| + 10⁻⁸) = ∓lr in every coordinate. The step is
    tiny, so the example is not broken and the best-effort point (the iterate with the highest
    margin, iterate 1) comes back from the budgeted run (l2:10, the diagonal of [0, 1]^100: no
    budget at all).
    """
    model, w, x, y, score = _binary()
    lr, m = 1e-3, 0.05
    atk = attacks.create(
        "cw-l2",
        threat="l2:10",
        optimizer=optimizer,
        learning_rate=lr,
        steps=2,
        binary_search_steps=1,
        box_margin=m,
    )
    res = atk(model, x, y)
    assert not res.success.any()
    w0 = torch.atanh((2 * x - 1) / (1 + m))
    u = torch.atanh((2 * res.x_adv - 1) / (1 + m)) - w0
    # |g_i| = c · (1 + m)/2 · sech²(w0_i) · |w_i|, with initial_const c = 0.01.
    g = 0.01 * (1 + m) / 2 * (1 - torch.tanh(w0).pow(2)) * w.abs()
    if optimizer == "adam":
        expected = lr * g / (g + 1e-8)  # lr in every coordinate but the tiniest gradients
        assert torch.allclose(u.abs(), expected, rtol=1e-6)
        assert (u.abs() > 0.9 * lr).float().mean() > 0.9
    else:
        assert torch.allclose(u.abs(), lr * g, rtol=1e-6)


def test_cw_paper_box_map_with_zero_margin():
    """box_margin=0 is the paper's exact tanh map; on inputs away from the box it works too."""
    model, w, x, y, score = _binary()
    res = attacks.create_minimum_norm("cw-l2", box_margin=0.0)(model, x, y)
    expected = score.abs() / w.norm()
    assert res.found.all() and (res.distance <= expected * 1.03).all()


# ---------------------------------------------------------------- honesty and budget semantics


def _mlp(n=40, classes=5, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, classes))
    x = torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model.eval(), x, y


FAST = {
    "cw-l2": {"steps": 50, "binary_search_steps": 4},
    "cw-linf": {"steps": 100, "search_steps": 10},
    "deepfool-l2": {},
    "deepfool-linf": {},
}
L2 = {"cw-l2", "deepfool-l2"}


@pytest.mark.parametrize("name", sorted(FAST))
def test_minimum_norm_finds_nearly_everything_and_its_distances_are_honest(name):
    model, x, y = _mlp()
    atk = attacks.create_minimum_norm(name, **FAST[name])
    res = atk(model, x, y)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.found, pred != y)
    ball = atk.ball_for(x)
    assert torch.allclose(res.distance[res.found], ball.norm(res.x_adv - x)[res.found])
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.found.float().mean() > 0.9


@pytest.mark.parametrize("name", sorted(FAST))
def test_a_small_budget_is_honest(name):
    """Within a budget ε the minimum-norm attack is a fixed-ε attack: success means
    misclassified at a point within ε, and only some examples fit."""
    model, x, y = _mlp()
    eps = 0.3 if name in L2 else 0.03
    threat = parse(f"{'l2' if name in L2 else 'linf'}:{eps}")
    res = attacks.create(name, threat=threat, **FAST[name])(model, x, y)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert torch.allclose(res.norm, threat.norm(res.x_adv - x))
    assert (res.norm <= eps * (1 + 1e-5)).all()
    assert 0 < res.success.float().mean() < 1


@pytest.mark.parametrize("name", sorted(FAST))
def test_budget_keeps_every_minimal_example_that_fits(name):
    """ε is a budget: what the minimum-norm attack finds within ε stays broken under ε."""
    model, x, y = _mlp()
    norm = "l2" if name in L2 else "linf"
    eps = 0.4 if name in L2 else 0.04
    free = attacks.create_minimum_norm(name, **FAST[name])(model, x, y)
    capped = attacks.create(name, threat=f"{norm}:{eps}", **FAST[name])(model, x, y)
    fits = free.success_at(eps)
    assert fits.any() and (~fits).any()
    assert capped.success[fits].all()
    # The robust accuracy the minimum-norm answer implies is never below the budgeted run's.
    assert int(free.robust_at(eps).sum()) >= int(capped.robust.sum())
    if name.startswith("deepfool"):
        # Deterministic and blind to ε until the final projection: the very same points.
        assert torch.equal(capped.x_adv[fits], free.x_adv[fits])


@pytest.mark.parametrize("name", sorted(FAST))
def test_targeted(name):
    model, x, y = _mlp()
    targets = (y + 1) % 5
    res = attacks.create_minimum_norm(name, **FAST[name])(model, x, y, targets=targets)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.found, pred == targets)
    assert res.found.float().mean() > 0.9


def test_cw_l2_is_reproducible_and_leaves_inputs_alone():
    model, x, y = _mlp(n=8)
    x0 = x.clone()
    atk = attacks.create_minimum_norm("cw-l2", steps=20, binary_search_steps=2)
    a, b = atk(model, x, y), atk(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(x, x0)


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "cw-l2",
            {"binary_search_steps": 0},
            r"Invalid binary_search_steps: 0 \(must be an integer >= 1\)",
        ),
        ("cw-l2", {"steps": -5}, r"Invalid steps: -5 \(must be an integer >= 1\)"),
        ("cw-l2", {"learning_rate": 0.0}, r"Invalid learning_rate: 0.0 \(must be a number > 0\)"),
        ("cw-l2", {"initial_const": -1.0}, r"Invalid initial_const"),
        ("cw-l2", {"confidence": -1.0}, r"Invalid confidence: -1.0 \(must be a number >= 0\)"),
        ("cw-l2", {"confidence": float("nan")}, r"Invalid confidence"),
        ("cw-l2", {"optimizer": "lbfgs"}, r"Unknown optimizer 'lbfgs' \(must be one of adam, sgd"),
        ("cw-l2", {"optimizer_options": {"momentm": 0.9}}, r"Invalid optimizer_options for 'adam'"),
        ("cw-l2", {"optimizer": "ftrl", "optimizer_options": {"l1": -1}}, r"Invalid l1: -1"),
        ("cw-l2", {"lr_schedule": "step"}, r"Invalid lr_schedule: 'step'"),
        ("cw-l2", {"box_margin": -0.1}, r"Invalid box_margin"),
        ("cw-l2", {"abort_early": "yes"}, r"Invalid abort_early"),
        ("cw-linf", {"tau_decrease": 1.5}, r"Invalid tau_decrease: 1.5 \(must be in \(0, 1\)\)"),
        ("cw-linf", {"const_factor": 1.0}, r"Invalid const_factor: 1.0 \(must be a number > 1\)"),
        ("cw-linf", {"search_steps": 0}, r"Invalid search_steps"),
        ("cw-linf", {"confidence": -2}, r"Invalid confidence"),
        ("deepfool-l2", {"candidates": 1}, r"Invalid candidates: 1 \(must be an integer >= 2\)"),
        ("deepfool-l2", {"overshoot": -0.1}, r"Invalid overshoot"),
        ("deepfool-linf", {"steps": 2.5}, r"Invalid steps"),
        ("deepfool-linf", {"steps": -1}, r"Invalid steps"),
    ],
)
def test_bad_options(name, options, message):
    threat = "l2:1" if name in L2 else "linf:0.1"
    with pytest.raises(ValueError, match=message):
        attacks.create(name, threat=threat, **options)


@pytest.mark.parametrize(
    "name, threat, message",
    [
        ("cw-l2", "linf:0.3", r"does not support threat linf:0.3 \(supported: l2:EPS\)"),
        ("deepfool-l2", "l1:5", "does not support threat l1"),
        ("cw-linf", "l2:1", r"supported: linf:EPS"),
        ("deepfool-linf", "union(linf:0.1,l2:1)", "does not support threat l2:1"),
    ],
)
def test_unsupported_threats(name, threat, message):
    with pytest.raises(ValueError, match=message):
        attacks.create(name, threat=threat)


def test_attack_objects_stay_hashable_with_optimizer_options():
    atk = attacks.create_minimum_norm("cw-l2", optimizer="sgd", optimizer_options={"momentum": 0.9})
    assert atk.optimizer_options == (("momentum", 0.9),)
    hash(atk)


# ---------------------------------------------------------------- real MNIST


def test_mnist_deepfool_and_cw_l2(mnist_model, mnist_test):
    x, y = mnist_test.images[:40], mnist_test.labels[:40]
    df = attacks.create_minimum_norm("deepfool-l2")(mnist_model, x, y)
    cw = attacks.create_minimum_norm("cw-l2", steps=50, binary_search_steps=3)(mnist_model, x, y)
    medians = {}
    for name, res in (("deepfool-l2", df), ("cw-l2", cw)):
        assert res.found.float().mean() >= 0.9, name
        medians[name] = float(res.distance[res.found & (res.distance > 0)].median())
        assert 0.3 < medians[name] < 4, name
    # DeepFool overshoots a linearisation; C&W optimises the distance itself.
    assert medians["cw-l2"] < medians["deepfool-l2"]
