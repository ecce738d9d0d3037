"""multirobust: adversarial robustness of PyTorch image classifiers under many threat models."""

from . import attacks, losses, threats

__version__ = "0.1.0"
__all__ = ["attacks", "losses", "threats", "__version__"]
