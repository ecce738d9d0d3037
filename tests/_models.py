"""Small model wrappers shared by several test files."""

from torch import nn


class Detached(nn.Module):
    """A model through which no gradient flows: only a black-box attack can work on it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.detach())
