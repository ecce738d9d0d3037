"""The layers bound propagation understands, and a model flattened into a list of them.

Interval bound propagation (:mod:`.ibp`) and linear relaxations (:mod:`.crown`) walk a model
layer by layer. :func:`flatten` turns a model of :mod:`multirobust.models` into the list of
leaf layers they visit (nested ``nn.Sequential`` containers opened up; the residual blocks of
the ResNets kept whole as one step), after checking every layer is supported. An unsupported
layer raises :class:`UnsupportedLayerError` naming it, before any bound is computed.
"""

from __future__ import annotations

from torch import nn

from ..models.architectures import PreActBlock, WideBasicBlock
from ..models.normalize import Normalize

__all__ = [
    "AFFINE",
    "MONOTONE",
    "POOLS",
    "QUASICONVEX",
    "RESIDUAL",
    "UnsupportedLayerError",
    "flatten",
    "supported",
]

#: Layers that are affine maps of their input.
AFFINE: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    Normalize,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
)
#: Element-wise non-decreasing activations: the interval maps to ``[f(l), f(u)]``.
MONOTONE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Softplus,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.ReLU6,
)
#: Element-wise activations that fall then rise (one minimum): SiLU/swish and GELU.
QUASICONVEX: tuple[type[nn.Module], ...] = (nn.SiLU, nn.GELU)
#: Pooling layers (non-decreasing in every input).
POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
#: Reshapes and layers that are the identity in eval mode.
SHAPE: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Identity, nn.Dropout)
#: Residual blocks of :mod:`multirobust.models` handled as a whole.
RESIDUAL: tuple[type[nn.Module], ...] = (PreActBlock, WideBasicBlock)

_LEAVES = AFFINE + MONOTONE + QUASICONVEX + POOLS + SHAPE + RESIDUAL


class UnsupportedLayerError(ValueError):
    """The model has a layer bound propagation cannot pass; the message names it."""


def supported() -> list[str]:
    """Names of the layer types bound propagation supports (for error messages and docs)."""
    return sorted({t.__name__ for t in _LEAVES} | {"Sequential"})


def _check_leaf(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.LeakyReLU) and module.negative_slope < 0:
        raise UnsupportedLayerError(
            f"Layer {name!r} (LeakyReLU with negative_slope={module.negative_slope}) is not "
            "monotone; bound propagation supports non-negative slopes"
        )
    if isinstance(module, nn.Hardtanh | nn.ReLU6) and module.min_val > module.max_val:
        raise UnsupportedLayerError(f"Layer {name!r} ({type(module).__name__}) has min > max")
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and (
        module.training or module.running_mean is None or module.running_var is None
    ):
        raise UnsupportedLayerError(
            f"Layer {name!r} ({type(module).__name__}) uses batch statistics (training mode or "
            "track_running_stats=False): bounds need it in eval mode with running statistics"
        )
    if isinstance(module, nn.Dropout) and module.training and module.p > 0:
        raise UnsupportedLayerError(
            f"Layer {name!r} (Dropout, p={module.p}) is random in training mode: bounds need it "
            "in eval mode"
        )
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"Layer {name!r} (Conv2d with padding_mode={module.padding_mode!r}) is not supported "
            "(only zero padding)"
        )
    if isinstance(module, nn.MaxPool2d | nn.AdaptiveMaxPool2d) and getattr(
        module, "return_indices", False
    ):
        raise UnsupportedLayerError(f"Layer {name!r} returns indices: not supported")


def flatten(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of ``model`` in the order they run, each with its qualified name.

    Args:
        model: an ``nn.Sequential`` (every architecture of :mod:`multirobust.models` is one),
            possibly nested, of supported layers (:func:`supported`).

    Returns:
        ``[(name, module), ...]``; residual blocks stay whole.

    Raises:
        UnsupportedLayerError: naming the first layer (or the model class) that bound
            propagation cannot pass, and what is supported.
    """
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        if isinstance(module, _LEAVES):
            _check_leaf(prefix or type(module).__name__, module)
            if isinstance(module, RESIDUAL):
                for sub_name, sub in module.named_children():
                    if sub is not None and not isinstance(sub, _LEAVES):
                        raise UnsupportedLayerError(
                            f"Layer {prefix}.{sub_name!s} ({type(sub).__name__}) is not "
                            f"supported by bound propagation (supported: {', '.join(supported())})"
                        )
                    if sub is not None:
                        _check_leaf(f"{prefix}.{sub_name}", sub)
            out.append((prefix, module))
            return
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                walk(f"{prefix}.{child_name}" if prefix else child_name, child)
            return
        where = (
            f"Layer {prefix!r} ({type(module).__name__})"
            if prefix
            else (f"Model {type(module).__name__}")
        )
        raise UnsupportedLayerError(
            f"{where} is not supported by bound propagation: it needs an nn.Sequential of "
            f"supported layers (supported: {', '.join(supported())})"
        )

    walk("", model)
    if not out:
        raise UnsupportedLayerError("The model has no layers to propagate bounds through")
    return out
