"""multirobust: adversarial robustness of PyTorch image classifiers under many threat models."""

__version__ = "0.1.0"  # first: subpackages read it while the package is initialising

from . import attacks, losses, threats  # noqa: E402
from .evaluation import evaluate  # noqa: E402

__all__ = ["attacks", "evaluate", "losses", "threats", "__version__"]
