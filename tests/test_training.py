"""Training objectives: behaviour on MNIST, known answers, attack mode, overfitting detection."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multirobust import data, models
from multirobust.attacks import pgd_perturb
from multirobust.threats import parse
from multirobust.training import (
    FreeAT,
    OverfittingDetector,
    attack_mode,
    ensemble_at_loss,
    fast_at_loss,
    fit,
    msd_loss,
    multi_avg_loss,
    multi_max_loss,
    multi_random_loss,
    pgd_at_loss,
    robust_accuracy,
    standard_loss,
    trades_loss,
)

THREATS = ["linf:0.2", "l2:1.5", "l1:8"]
STEPS = 32  # optimiser steps per model, the same for every objective


@pytest.fixture(scope="module")
def train_set():
    return data.load("mnist", "train", limit=2048)


@pytest.fixture(scope="module")
def held_out():
    return data.load("mnist", "test", limit=256)


def _train(train_set, loss_fn=None, free=None):
    """STEPS Adam steps on batches of 64, seeded; ``free`` does its own optimiser steps."""
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    model.train()
    done = 0
    while done < STEPS:
        for x, y in train_set.loader(64, shuffle=True, generator=gen):
            if free is not None:
                free.step(model, opt, x, y)
                done += free.replays
            else:
                loss = loss_fn(model, x, y, gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
            if done >= STEPS:
                break
    return model.eval()


def _robust_loss(model, held_out, threats):
    """Mean over examples of the worst cross-entropy under a fixed PGD-10 per threat."""
    gen = torch.Generator().manual_seed(0)
    x, y = held_out.images, held_out.labels
    values = []
    with attack_mode(model):
        for t in threats:
            x_adv = pgd_perturb(model, x, y, t, steps=10, generator=gen)
            with torch.no_grad():
                values.append(F.cross_entropy(model(x_adv), y, reduction="none"))
    return float(torch.stack(values).amax(0).mean())


@pytest.fixture(scope="module")
def standard_model(train_set):
    return _train(train_set, lambda m, x, y, g: standard_loss(m, x, y))


_OBJECTIVES = {
    "pgd": (lambda m, x, y, g: pgd_at_loss(m, x, y, THREATS[0], steps=5, generator=g), 1),
    "trades": (lambda m, x, y, g: trades_loss(m, x, y, THREATS[0], steps=5, generator=g), 1),
    "fast": (lambda m, x, y, g: fast_at_loss(m, x, y, THREATS[0], generator=g), 1),
    "max": (lambda m, x, y, g: multi_max_loss(m, x, y, THREATS, steps=5, generator=g), 3),
    "avg": (lambda m, x, y, g: multi_avg_loss(m, x, y, THREATS, steps=5, generator=g), 3),
    "random": (lambda m, x, y, g: multi_random_loss(m, x, y, THREATS, steps=5, generator=g), 3),
    "msd": (lambda m, x, y, g: msd_loss(m, x, y, THREATS, steps=4, generator=g), 3),
}


@pytest.mark.slow  # minutes under load; run with -m slow
@pytest.mark.parametrize("name", list(_OBJECTIVES))
def test_objective_lowers_its_robust_loss(name, train_set, held_out, standard_model):
    loss_fn, k = _OBJECTIVES[name]
    model = _train(train_set, loss_fn)
    threats = THREATS[:k]
    ours = _robust_loss(model, held_out, threats)
    baseline = _robust_loss(standard_model, held_out, threats)
    assert ours < baseline - 0.5, (ours, baseline)
    with torch.no_grad():
        clean = (model(held_out.images).argmax(1) == held_out.labels).float().mean()
    assert clean > 0.3  # it learned the task, not just a flat output


@pytest.mark.slow  # minutes under load; run with -m slow
def test_free_at_lowers_its_robust_loss(train_set, held_out, standard_model):
    free = FreeAT(THREATS[0], replays=4)
    model = _train(train_set, free=free)
    ours = _robust_loss(model, held_out, THREATS[:1])
    assert ours < _robust_loss(standard_model, held_out, THREATS[:1]) - 0.5
    # The perturbation is carried from batch to batch and stays in the threat model.
    assert free.delta is not None and free.delta.abs().max() > 0
    assert free.delta.abs().max() <= 0.2 + 1e-6


@pytest.mark.slow  # minutes under load; run with -m slow
def test_ensemble_lowers_the_loss_on_transferred_examples(train_set, held_out, standard_model):
    """Its own robust loss: FGSM examples crafted on the fixed model, transferred."""
    model = _train(
        train_set,
        lambda m, x, y, g: ensemble_at_loss(
            m, x, y, THREATS[0], [standard_model], include_self=False, generator=g
        ),
    )
    tm = parse(THREATS[0])
    x, y = held_out.images, held_out.labels
    with attack_mode(standard_model):
        x_req = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(standard_model(x_req), y), x_req)[0]
    x_adv = tm.project(x + 0.2 * grad.sign(), x)
    with torch.no_grad():
        ours = F.cross_entropy(model(x_adv), y)
        base = F.cross_entropy(standard_model(x_adv), y)
    assert ours < base - 0.5, (float(ours), float(base))


# --------------------------------------------------------------------------- known answers


class _Linear(nn.Module):
    """Two logits (0, s·Σx + b): with label 0 the loss grows with Σx, linearly in the input."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.01))
        self.bias = nn.Parameter(torch.tensor(-4.0))

    def forward(self, x):
        z = self.scale * x.flatten(1).sum(1) + self.bias
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _two_examples():
    """A: every pixel at 0.5 (ℓ∞ 0.1 moves all 784: Σx + 78.4; ℓ2 1.0 gives Σx + 28).
    B: every pixel at 1 but one at 0 (only that one can rise: ℓ∞ +0.1, ℓ2 +1.0)."""
    a = torch.full((1, 1, 28, 28), 0.5)
    b = torch.ones(1, 1, 28, 28)
    b[0, 0, 5, 5] = 0.0
    return torch.cat([a, b]), torch.zeros(2, dtype=torch.long)


def test_max_picks_the_worst_threat_per_example():
    model = _Linear()
    x, y = _two_examples()
    stats = {}
    loss = multi_max_loss(model, x, y, ["linf:0.1", "l2:1.0"], steps=20, stats=stats)
    assert stats["threat_index"].tolist() == [0, 1]
    # The analytic optimum of each chosen threat: Σx rises by 78.4 (A) and by 1.0 (B).
    z = stats["adv_logits"][:, 1]
    expected = 0.01 * torch.tensor([392.0 + 78.4, 783.0 + 1.0]) - 4.0
    assert torch.allclose(z, expected, atol=1e-4)
    assert torch.allclose(loss, F.softplus(expected).mean(), atol=1e-4)
    # AVG trains on both threats for both examples; random on one threat for all.
    stats = {}
    multi_avg_loss(model, x, y, ["linf:0.1", "l2:1.0"], steps=20, stats=stats)
    assert stats["threat_index"].tolist() == [0, 0, 1, 1]
    picks = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        stats = {}
        multi_random_loss(
            model, x, y, "union(linf:0.1,l2:1.0)", steps=2, generator=gen, stats=stats
        )
        assert stats["threat_index"].unique().numel() == 1
        picks.add(int(stats["threat_index"][0]))
    assert picks == {0, 1}


def test_msd_keeps_the_best_step_per_example():
    model = _Linear()
    x, y = _two_examples()
    stats = {}
    msd_loss(model, x, y, ["linf:0.1", "l2:1.0"], steps=1, stats=stats)
    assert stats["threat_index"].tolist() == [0, 1]
    z = stats["adv_logits"][:, 1]
    assert torch.allclose(z, 0.01 * torch.tensor([470.4, 784.0]) - 4.0, atol=1e-4)


def test_trades_with_beta_zero_is_clean_cross_entropy_and_kl_is_nonnegative():
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist").eval()
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(
        trades_loss(model, x, y, "linf:0.3", beta=0.0, generator=gen), standard_loss(model, x, y)
    )
    stats = {}
    trades_loss(model, x, y, "linf:0.3", steps=3, generator=gen, stats=stats)
    assert stats["kl"] > 0


# --------------------------------------------------------------------------- attack mode


def test_objectives_attack_in_eval_mode_and_restore_flags():
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    model.train()
    model.conv2.eval()  # a module deliberately in eval mode stays so
    model.conv1.weight.requires_grad_(False)  # a frozen parameter stays frozen
    seen = []
    model.fc1.register_forward_hook(lambda mod, inp, out: seen.append(mod.training))
    x = torch.rand(4, 1, 28, 28)
    y = torch.randint(0, 10, (4,))
    loss = pgd_at_loss(model, x, y, "linf:0.1", steps=3)
    # 3 attack passes in eval mode, then the training pass in train mode.
    assert seen == [False, False, False, True]
    assert all(p.grad is None for p in model.parameters())  # the attack left no gradients
    assert model.training and not model.conv2.training and model.fc1.training
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    loss.backward()
    assert model.conv1.weight.grad is None and model.conv2.weight.grad is not None
    with pytest.raises(RuntimeError), attack_mode(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError
    assert model.training and model.conv2.weight.requires_grad


def test_free_at_state_round_trip_and_batch_size_change():
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    free = FreeAT("l2:1.0", replays=2)
    x = torch.rand(6, 1, 28, 28)
    y = torch.randint(0, 10, (6,))
    free.step(model, opt, x, y)
    state = free.state_dict()
    other = FreeAT("l2:1.0", replays=2)
    other.load_state_dict(state)
    assert torch.equal(other.delta, free.delta)
    free.step(model, opt, x[:4], y[:4])  # smaller last batch: rows are cut
    free.step(model, opt, x, y)  # and padded again
    assert free.delta.shape == x.shape
    assert (free.delta.flatten(1).norm(dim=1) <= 1.0 + 1e-4).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, x, y: trades_loss(m, x, y, "linf:0.3", beta=-1.0), r"Invalid beta: -1.0"),
        (lambda m, x, y: pgd_at_loss(m, x, y, "linf:0.3", steps=0), r"Invalid steps: 0"),
        (lambda m, x, y: pgd_at_loss(m, x, y, "spatial:30,3"), r"must be an ℓp ball"),
        (lambda m, x, y: fast_at_loss(m, x, y, "linf:0.3", step_size=-1), r"Invalid step_size"),
        (lambda m, x, y: multi_max_loss(m, x, y, []), r"Invalid threats: \[\]"),
        (
            lambda m, x, y: multi_avg_loss(m, x, y, ["linf:0.1", "l2:1"], step_sizes=[0.1]),
            r"1 value\(s\) for 2 threat\(s\)",
        ),
        (lambda m, x, y: FreeAT("linf:0.3", replays=0), r"Invalid replays: 0"),
        (
            lambda m, x, y: ensemble_at_loss(m, x, y, "linf:0.3", [], include_self=False),
            r"need at least one source model",
        ),
    ],
)
def test_invalid_arguments(call, match):
    model = models.for_dataset("small_cnn", "mnist")
    x = torch.rand(2, 1, 28, 28)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


# --------------------------------------------------------------------------- overfitting


def test_detector_flags_a_collapse_of_robust_accuracy():
    det = OverfittingDetector(drop=0.2)
    flags = [det.update(a) for a in (0.30, 0.45, 0.52, 0.40, 0.31, 0.05, 0.04)]
    assert flags == [False, False, False, False, True, True, True]
    assert det.best == 0.52 and det.best_index == 2 and det.collapsed
    floor = OverfittingDetector(drop=0.9, floor=0.2)
    assert [floor.update(a) for a in (0.1, 0.25, 0.15)] == [False, False, True]
    again = OverfittingDetector(drop=0.2)
    again.load_state_dict(det.state_dict())
    assert again.best_index == 2 and again.collapsed
    with pytest.raises(ValueError, match=r"Invalid drop: 0 \(must be a fraction in \(0, 1\]\)"):
        OverfittingDetector(drop=0)
    with pytest.raises(ValueError, match=r"Invalid accuracy: 1.5"):
        det.update(1.5)


def test_detector_flags_fgsm_robustness_without_pgd_robustness():
    """Catastrophic overfitting before any PGD robustness was built: nothing to fall from, but
    the model resists the single step and not the iterated attack."""
    det = OverfittingDetector(drop=0.2, gap=0.5)
    flags = [
        det.update(pgd, fgsm)
        for pgd, fgsm in ((0.0, 0.05), (0.10, 0.55), (0.15, 0.62), (0.02, 0.99))
    ]
    assert flags == [False, False, False, True]
    assert det.best == 0.15 and det.best_index == 2
    # A healthy robust model (FGSM a little above PGD) and no single-step number: no flag.
    healthy = OverfittingDetector(gap=0.5)
    assert not healthy.update(0.71, 0.87) and not healthy.update(0.72) and not healthy.collapsed
    again = OverfittingDetector(gap=0.5)
    again.load_state_dict(det.state_dict())
    assert again.single_step_history == [0.05, 0.55, 0.62, 0.99] and again.collapsed
    with pytest.raises(ValueError, match=r"Invalid gap: 0 \(must be a fraction in \(0, 1\]\)"):
        OverfittingDetector(gap=0)
    with pytest.raises(ValueError, match=r"Invalid single_step_accuracy: 2"):
        det.update(0.5, 2)


def test_robust_accuracy_single_step_numbers(standard_model, held_out):
    x, y = held_out.images[:64], held_out.labels[:64]
    plain = robust_accuracy(standard_model, x, y, ["linf:0.1", "l2:1"], steps=5)
    both = robust_accuracy(standard_model, x, y, ["linf:0.1", "l2:1"], steps=5, single_step=True)
    assert set(plain) == {"clean", "linf:0.1", "l2:1", "union"}
    assert {k: both[k] for k in plain} == plain  # the PGD numbers do not change
    assert set(both) - set(plain) == {"fgsm[linf:0.1]", "fgsm[l2:1]", "fgsm_union"}
    assert both["fgsm_union"] <= min(both["fgsm[linf:0.1]"], both["fgsm[l2:1]"]) <= both["clean"]
    # One step from the clean input is weaker than PGD with 5 steps on a standard model.
    assert both["fgsm[linf:0.1]"] >= both["linf:0.1"]


def test_robust_accuracy_is_deterministic_and_union_is_the_minimum(standard_model, held_out):
    x, y = held_out.images[:64], held_out.labels[:64]
    a = robust_accuracy(standard_model, x, y, ["linf:0.1", "l2:1"], steps=5)
    b = robust_accuracy(standard_model, x, y, ["linf:0.1", "l2:1"], steps=5)
    assert a == b
    assert a["union"] <= min(a["linf:0.1"], a["l2:1"]) <= a["clean"]


@pytest.mark.slow
@pytest.mark.parametrize("eps, collapses", [(0.3, True), (0.2, False)])
def test_fast_training_with_a_huge_step_overfits_catastrophically(tmp_path, eps, collapses):
    """Wong et al.: FGSM training with too large a step ends robust to FGSM but not to PGD.
    At ε = 0.3 on MNIST (α = 2.5ε, ε ramped over 1.5 epochs, one-cycle Adam up to 5·10⁻³) the
    held-out FGSM accuracy climbs past 75% while PGD's stays near 10%; the fit loop's detector
    flags it, stops, and keeps the best epoch's weights. The same run at ε = 0.2 becomes robust
    to both (FGSM 96%, PGD 76% when measured) and must not be flagged."""
    result = fit(
        dict(
            method="fast",
            threats=[f"linf:{eps}"],
            step_size=2.5 * eps,
            epochs=6,
            eps_warmup=1.5,
            limit=8192,
            batch_size=128,
            lr=5e-3,
            schedule="onecycle",
            eval_n=200,
            eval_steps=10,
            out=str(tmp_path),
            progress=False,
        )
    )
    last = result.history[-1]
    assert result.stopped_early is collapses, result.history
    assert last["catastrophic_overfitting"] is collapses
    if collapses:
        assert last["fgsm_union_accuracy"] - last["union_accuracy"] > 0.5, last
        assert len(result.history) < 6  # stopped before the planned end
    else:
        assert len(result.history) == 6 and last["union_accuracy"] > 0.5, last
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "model.pt").is_file()
