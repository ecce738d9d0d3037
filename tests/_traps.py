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
