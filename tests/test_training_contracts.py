"""Contracts every registered training method keeps, generated from ``training.methods()``.

A method added to the registry is tested here without editing this file: one batch step on a
small model gives a finite loss, moves the weights, leaves the mode and ``requires_grad``
flags of every model it attacks as they were, and is reproduced exactly by the same seed.
"""

import math

import pytest
import torch

from multirobust import models
from multirobust.training import TrainConfig, get_method, methods

THREATS = ["linf:0.1", "l2:1", "l1:5"]


def _config(name: str) -> TrainConfig:
    """Settings for ``name`` with as many threats as it takes (two where it takes several)."""
    low, high = get_method(name).threat_count
    count = low if high == low else min(2, high or 2)
    return TrainConfig(method=name, threats=THREATS[:count], steps=2, replays=2, lr=1e-3)


def _model() -> torch.nn.Module:
    """small_cnn in training mode, with one layer in eval mode and one parameter frozen."""
    model = models.for_dataset("small_cnn", "mnist").train()
    model.conv1.eval()  # a caller's deliberate choice the attack must not undo
    model.conv1.bias.requires_grad_(False)
    return model


def _state(model: torch.nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _one_step(name: str, seed: int = 0):
    """One batch step of ``name``; returns (loss, model, static model, states before)."""
    torch.manual_seed(seed)
    model = _model()
    static = _model()
    cfg = _config(name)
    step = get_method(name).build(cfg, [static])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 1, 28, 28, generator=gen)
    y = torch.randint(10, (8,), generator=gen)
    before = {"model": _state(model), "static": _state(static)}
    weights = [p.detach().clone() for p in model.parameters()]
    loss = step(model, optimizer, x, y, gen)
    return loss, model, static, before, weights


@pytest.mark.parametrize("name", methods())
def test_one_step_is_finite_moves_the_weights_and_restores_modes(name):
    loss, model, static, before, weights = _one_step(name)
    assert loss.dim() == 0 and math.isfinite(float(loss))
    assert not loss.requires_grad  # the step returns the detached loss
    moved = [not torch.equal(w, p) for w, p in zip(weights, model.parameters(), strict=True)]
    assert any(moved), f"{name}: one optimiser step left every weight as it was"
    # The frozen parameter stays frozen (and untouched), every module keeps its own mode.
    assert not moved[[n for n, _ in model.named_parameters()].index("conv1.bias")]
    assert _state(model) == before["model"]
    assert _state(static) == before["static"]


@pytest.mark.parametrize("name", methods())
def test_one_step_is_reproduced_by_the_seed(name):
    loss_a, model_a, *_ = _one_step(name, seed=5)
    loss_b, model_b, *_ = _one_step(name, seed=5)
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_contract_runs_configurations_that_validate(tmp_path):
    """The settings above are ones ``validate`` accepts (with a fixed model on disk for the
    methods that take one), so the contract exercises real configurations."""
    path = tmp_path / "static.pt"
    models.save(_model(), path, dataset="mnist")
    for name in methods():
        cfg = _config(name)
        cfg.static_models = [str(path)]
        cfg.validate(check_data=False)
