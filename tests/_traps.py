"""Models built to mask gradients, for the tests of the attacks that see through them."""

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """Adds N(0, σ²) noise to the input at every call: a randomised defence (EOT's target).

    The noise comes from a private generator, so runs are reproducible without touching the
    global seed; each call draws fresh noise.
    """

    def __init__(self, model: nn.Module, sigma: float = 0.1, seed: int = 0):
        super().__init__()
        self.model, self.sigma = model, sigma
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        return self.model(x + self.sigma * noise)


class _ZeroGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroGradient(nn.Module):
    """Passes the input on unchanged and returns a zero gradient: white-box attacks see a flat
    loss everywhere, while the model's decisions are those of the model behind it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(_ZeroGrad.apply(x))


def binary_linear(n=40, seed=0, low=0.5, high=1.0, noise=0.05):
    """A binary linear classifier on 1×8×8 inputs and ``n`` examples near 0.5 (± ``noise``)
    placed at scores ±(``low`` … ``high``), alternating in sign: class 1 where the score is
    positive. The weights w ~ N(0, I) give ‖w‖₁ ≈ 51 and ‖w‖₂ ≈ 8, so the best ℓ∞ step of 0.1
    moves a score by ≈ 5 while a random ±0.1 step moves it by ≈ 0.8 in standard deviation:
    only an attack that follows the slope breaks every example.

    Returns (model in eval mode, x, y, w).
    """
    d = 64
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(d), w]))
        model[1].bias.zero_()
    x = 0.5 + noise * torch.rand(n, 1, 8, 8, generator=g)
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    score = sign * (low + (high - low) * torch.rand(n, generator=g))
    x = x + ((score - x.flatten(1) @ w) / (w @ w)).view(-1, 1, 1, 1) * w.view(1, 1, 8, 8)
    y = (score > 0).long()
    return model.eval(), x.clamp(0, 1), y, w
