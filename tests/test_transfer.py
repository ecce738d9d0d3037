"""Transfer attacks and surrogate distillation: the fallback when the target's gradients are
blocked. The attack contract is covered by test_attack_contracts.py."""

import pytest
import torch
from _traps import ZeroGradient, binary_linear
from torch import nn

from multirobust import attacks
from multirobust.attacks.transfer import distill_surrogate


def _binary():
    """Binary linear model, scores ±(0.5…1): breakable at ε∞ = 0.1, not by chance
    (:func:`_traps.binary_linear`; APGD never leaves its random start on a zero gradient)."""
    model, x, y, _ = binary_linear()
    return model, x, y


def test_blocked_gradients_stop_apgd_but_not_a_transfer_from_the_twin():
    model, x, y = _binary()
    trap = ZeroGradient(model)
    with torch.no_grad():
        assert torch.equal(trap(x).argmax(1), y)
    apgd = attacks.create("apgd", threat="linf:0.1", steps=20)(trap, x, y)
    assert apgd.robust.float().mean() >= 0.9
    res = attacks.create("transfer", threat="linf:0.1", surrogate=model, steps=20)(trap, x, y)
    assert res.success.all()
    assert (res.norm <= 0.1 + 1e-6).all()


def test_success_is_judged_on_the_target_only():
    model, x, y = _binary()
    # A surrogate that disagrees with the target: its weight on class 1 points the other way
    # on half of the coordinates, so what fools it need not fool the target.
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        wrong[1].weight.copy_(model[1].weight)
        wrong[1].weight[1, ::2] *= -1
        wrong[1].bias.zero_()
    res = attacks.create("transfer", threat="linf:0.1", surrogate=wrong, steps=20)(model, x, y)
    with torch.no_grad():
        fools_target = model(res.x_adv).argmax(1) != y
        fools_surrogate = wrong(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, fools_target)
    assert (fools_surrogate & ~fools_target).any()  # the surrogate's word was not taken


def test_distilled_surrogate_imitates_the_target_and_leaves_it_alone():
    model, x, y = _binary()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    gen = torch.Generator().manual_seed(0)
    net = distill_surrogate(model, x, surrogate=student, steps=150, lr=0.05, generator=gen)
    with torch.no_grad():
        agree = (net(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree >= 0.9
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # Same generator seed, same surrogate.
    again = distill_surrogate(
        model, x, surrogate=student, steps=150, lr=0.05, generator=torch.Generator().manual_seed(0)
    )
    # The surrogate given is copied, not trained in place.
    assert not any(
        torch.equal(a, b) for a, b in zip(net.parameters(), student.parameters(), strict=True)
    )
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters(), strict=True))


def test_invalid_options():
    with pytest.raises(ValueError, match="Invalid surrogate"):
        attacks.create("transfer", threat="linf:0.1", surrogate="resnet")
    with pytest.raises(ValueError, match="Invalid attack: 'transfer'"):
        attacks.create("transfer", threat="linf:0.1", attack="transfer")
    with pytest.raises(ValueError, match="Unknown attack"):
        attacks.create("transfer", threat="linf:0.1", attack="nope")
    with pytest.raises(TypeError, match="Unknown option"):
        attacks.create("transfer", threat="linf:0.1", options={"stepz": 3})


@pytest.mark.slow
def test_mnist_transfer_breaks_what_apgd_cannot(mnist_model, mnist_test):
    """MNIST behind a zero-gradient layer, ℓ∞ 0.2: APGD cannot move; the twin breaks what
    APGD breaks on the bare model; a surrogate distilled from 50 images' outputs alone
    still breaks a good share of them."""
    x, y = mnist_test.images[:50], mnist_test.labels[:50]
    trap = ZeroGradient(mnist_model)
    apgd = attacks.create("apgd", threat="linf:0.2", steps=20)(trap, x, y)
    truth = attacks.create("apgd", threat="linf:0.2", steps=20)(mnist_model, x, y)
    twin = attacks.create("transfer", threat="linf:0.2", surrogate=mnist_model, steps=20)
    twin_res = twin(trap, x, y)
    assert twin_res.success.sum() >= truth.success.sum() - 2
    distilled = attacks.create("transfer", threat="linf:0.2", steps=20, distill_steps=150)
    res = distilled(trap, x, y)
    broken_only_by_transfer = res.success & apgd.robust
    assert broken_only_by_transfer.sum() >= 10, (res.success.sum(), apgd.robust.sum())
