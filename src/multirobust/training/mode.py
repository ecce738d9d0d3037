"""``attack_mode`` (re-exported from :mod:`multirobust.models.state`, where it lives)."""

from ..models.state import attack_mode

__all__ = ["attack_mode"]
