"""Training. For now: plain empirical risk minimisation with a time or epoch budget."""

from .standard import train_standard

__all__ = ["train_standard"]
