"""Inner optimisers of the penalised attacks (FTRL-Proximal and the torch ones) and the
``optimizer-study`` command."""

import json
import re

import pytest
import torch
from click.testing import CliRunner

from multirobust.attacks.optimizers import (
    FTRL,
    OPTIMIZERS,
    check_optimizer,
    make_optimizer,
    subset_optimizer,
)
from multirobust.cli import main

# ---------------------------------------------------------------- FTRL-Proximal


def test_ftrl_first_step_matches_the_closed_form():
    g = torch.tensor([3.0, -0.2, 0.5, -2.0], dtype=torch.float64)
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    alpha, beta, l1, l2 = 0.1, 1.0, 0.5, 0.25
    opt = FTRL([w], lr=alpha, l1=l1, l2=l2, beta=beta)
    w.grad = g.clone()
    opt.step()
    # n = g², σ = |g|/α, z = g − σ·0 = g;  w = 0 if |z| ≤ λ1 else −(z − sgn(z)λ1)/((β+|g|)/α+λ2)
    expected = torch.where(
        g.abs() <= l1,
        torch.zeros_like(g),
        -(g - g.sign() * l1) / ((beta + g.abs()) / alpha + l2),
    )
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-15)
    assert w[1].item() == 0.0  # |g| = 0.2 ≤ λ1: exactly zero


def _minimise(opt_factory, a, steps=200):
    w = torch.zeros_like(a, requires_grad=True)
    opt = opt_factory(w)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (w - a).pow(2).sum()).backward()
        opt.step()
    return w.detach()


def test_ftrl_minimises_a_quadratic_and_l1_gives_exact_zeros():
    a = torch.tensor([2.0, -1.5, 0.003, -0.002, 0.8], dtype=torch.float64)
    plain = _minimise(lambda w: FTRL([w], lr=0.5, beta=0.0), a)
    assert torch.allclose(plain, a, atol=1e-3)
    sparse = _minimise(lambda w: FTRL([w], lr=0.5, l1=1.0, beta=0.0), a)
    # Coordinates whose accumulated gradient never exceeds λ1 (|a_i|·200 < 1) are exactly 0 ...
    assert sparse[2].item() == 0.0 and sparse[3].item() == 0.0
    # ... while the large ones are still found.
    assert torch.allclose(sparse[[0, 1, 4]], a[[0, 1, 4]], atol=0.05)
    # AdaGrad, the same without the ℓ1 term, leaves the small coordinates non-zero.
    ada = _minimise(lambda w: torch.optim.Adagrad([w], lr=0.5), a)
    assert (ada[2:4] != 0).all()


def test_ftrl_without_regularisation_is_adagrad():
    """With β = λ1 = λ2 = 0 and a constant α, FTRL-Proximal's iterates are AdaGrad's."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, generator=g, dtype=torch.float64)
    ftrl = _minimise(lambda w: FTRL([w], lr=0.3, beta=0.0), a, steps=15)
    ada = _minimise(lambda w: torch.optim.Adagrad([w], lr=0.3, eps=0.0), a, steps=15)
    assert torch.allclose(ftrl, ada, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0}, r"Invalid lr: 0.0 \(must be a finite number > 0\)"),
        ({"l1": -1.0}, r"Invalid l1: -1.0 \(must be a finite number >= 0\)"),
        ({"l2": float("nan")}, r"Invalid l2"),
        ({"beta": -0.5}, r"Invalid beta"),
        ({"initial_accumulator_value": -1}, r"Invalid initial_accumulator_value"),
    ],
)
def test_ftrl_rejects_bad_options(kwargs, message):
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        FTRL([w], **kwargs)


def test_make_optimizer_names_and_errors():
    w = torch.zeros(3, requires_grad=True)
    assert OPTIMIZERS == ("adam", "sgd", "rmsprop", "adagrad", "ftrl")
    assert isinstance(make_optimizer("ftrl", [w], lr=0.1), FTRL)
    assert isinstance(make_optimizer("rmsprop", [w], lr=0.1), torch.optim.RMSprop)
    assert make_optimizer("sgd", [w], lr=0.1, options={"momentum": 0.9}).defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match=r"Unknown optimizer 'lbfgs' \(must be one of adam"):
        make_optimizer("lbfgs", [w], lr=0.1)
    with pytest.raises(ValueError, match="Invalid optimizer_options for 'adam'"):
        check_optimizer("adam", {"momentum": 0.9})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_subset_optimizer_keeps_rows_independent(name):
    """Dropping rows mid-run gives the kept rows exactly the updates they get when run alone:
    the batched attacks rely on this to let finished examples leave the batch."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 5, generator=g, dtype=torch.float64)

    def factory(p):
        return make_optimizer(
            name, [p], lr=0.05, options={"momentum": 0.5} if name == "sgd" else {}
        )

    def grad_step(p, opt, target):
        p.grad = None
        (0.5 * (p - target).pow(2).sum() + p.pow(3).sum()).backward()
        opt.step()

    both = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    opt = factory(both)
    for _ in range(4):
        grad_step(both, opt, a)
    keep = torch.tensor([0, 2])
    sub, sub_opt = subset_optimizer(opt, both, keep, factory)
    for _ in range(4):
        grad_step(sub, sub_opt, a[keep])

    alone = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)
    opt2 = factory(alone)
    for _ in range(8):
        grad_step(alone, opt2, a[keep])
    assert torch.allclose(sub.detach(), alone.detach(), atol=1e-12)


# ---------------------------------------------------------------- the optimizer-study command


def test_optimizer_study_command(mnist_checkpoint, tmp_path):
    out = tmp_path / "study"
    r = CliRunner().invoke(
        main,
        [
            "optimizer-study",
            "--checkpoint",
            str(mnist_checkpoint),
            "--dataset",
            "mnist",
            "--attack",
            "cw-l2",
            "--n",
            "6",
            "--examples",
            "3",
            "--option",
            "steps=6",
            "--option",
            "binary_search_steps=2",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "study.json").read_text())
    assert result["attack"] == "cw-l2" and result["threat"] == "l2:2" and result["n"] == 6
    assert [row["optimizer"] for row in result["rows"]] == list(OPTIMIZERS)
    for row in result["rows"]:
        assert 0.0 <= row["robust_accuracy"] <= 1.0
        assert len(row["norms"]) == 6 and all(0 <= v <= 2 + 1e-4 for v in row["norms"])
        assert row["seconds"] > 0 and row["queries_per_example"] > 0
        broken = [v for v, s in zip(row["norms"], row["success"], strict=True) if s and v > 0]
        if broken:
            assert min(broken) <= row["median_norm"] <= max(broken)
    page = (out / "study.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""src=["']?https?:""", page)  # self-contained
    for name in OPTIMIZERS:
        assert name in page
    assert "cw-l2" in r.output and "ftrl" in r.output


def test_optimizer_study_command_errors(mnist_checkpoint, tmp_path):
    runner = CliRunner()
    base = ["optimizer-study", "--checkpoint", str(mnist_checkpoint), "--n", "2"]
    base += ["--out", str(tmp_path), "--quiet"]
    r = runner.invoke(main, base + ["--optimizers", "adam,lbfgs"])
    assert r.exit_code != 0 and "Unknown optimizer(s) lbfgs" in r.output
    r = runner.invoke(main, base + ["--attack", "pgd"])
    assert r.exit_code != 0 and "has no optimizer option" in r.output
    r = runner.invoke(main, base + ["--option", "optimizer=sgd"])
    assert r.exit_code != 0 and "Do not pass optimizer" in r.output
    r = runner.invoke(main, base + ["--option", "confidence=-1"])
    assert r.exit_code != 0 and "Invalid confidence" in r.output
    assert not (tmp_path / "study.json").exists()
