"""Registry of architectures by name: :func:`names`, :func:`create`, :func:`for_dataset`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import architectures as arch
from .activations import canonical_activation

__all__ = ["create", "for_dataset", "names"]


def _check_int(value: Any, what: str, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _wrn_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate WideResNet's ``depth``, ``widen_factor`` and ``dropout``."""
    depth = _check_int(kwargs["depth"], "wide_resnet depth", 10)
    if (depth - 4) % 6 != 0:
        raise ValueError(
            f"wide_resnet depth must satisfy (depth - 4) % 6 == 0, e.g. 10, 16, 22, 28, 34, 40 "
            f"(got {depth})"
        )
    widen_factor = _check_int(kwargs["widen_factor"], "wide_resnet widen_factor", 1)
    dropout = kwargs["dropout"]
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0.0 <= float(dropout) < 1.0
    ):
        raise ValueError(f"wide_resnet dropout must be a number in [0, 1) (got {dropout!r})")
    return {"depth": depth, "widen_factor": widen_factor, "dropout": float(dropout)}


@dataclass(frozen=True)
class _Arch:
    """How to build and validate one registered architecture."""

    builder: Callable[..., nn.Module]
    min_input_size: int
    defaults: dict[str, Any] = field(default_factory=dict)
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_REGISTRY: dict[str, _Arch] = {
    "small_cnn": _Arch(arch.small_cnn, min_input_size=8),
    "madry_cnn": _Arch(arch.madry_cnn, min_input_size=4),
    "preact_resnet18": _Arch(arch.preact_resnet18, min_input_size=8),
    "wide_resnet": _Arch(
        arch.wide_resnet,
        min_input_size=8,
        defaults={"depth": 28, "widen_factor": 10, "dropout": 0.0},
        validate=_wrn_kwargs,
    ),
}


def names() -> list[str]:
    """List the registered architecture names.

    Returns:
        Sorted names: ``["madry_cnn", "preact_resnet18", "small_cnn", "wide_resnet"]``.
    """
    return sorted(_REGISTRY)


def _check_stats(values: Sequence[float] | None, what: str, in_channels: int) -> list[float] | None:
    """Validate a per-channel mean/std and return it as a JSON-friendly list of floats."""
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise ValueError(f"{what} must be a sequence of {in_channels} number(s), got {values!r}")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{what} must be a sequence of {in_channels} number(s), got {values!r}"
        ) from e
    if len(out) != in_channels:
        raise ValueError(
            f"{what} must have one value per input channel: {in_channels} value(s) "
            f"for in_channels={in_channels}, got {len(out)}"
        )
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must contain only finite numbers (got {out})")
    return out


def create(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    activation: str = "relu",
    **kwargs: Any,
) -> nn.Module:
    """Build a registered image classifier taking raw ``[0, 1]`` images and returning logits.

    The model's first layer is :class:`~multirobust.models.Normalize` with ``mean``/``std``
    (the identity when both are ``None``). The creation arguments are attached as
    ``model.multirobust_spec = {"arch": name, "kwargs": {...}}`` (JSON-serialisable, with
    defaults filled in and the activation name canonicalised), so that
    ``create(spec["arch"], **spec["kwargs"])`` rebuilds the same architecture; this is what
    :func:`multirobust.models.save` stores.

    Architectures: ``small_cnn`` (fast MNIST CNN), ``madry_cnn`` (Madry et al. 2018),
    ``preact_resnet18`` (He et al. 2016), ``wide_resnet`` (Zagoruyko & Komodakis 2016; extra
    keyword arguments ``depth=28``, ``widen_factor=10``, ``dropout=0.0``).

    Args:
        name: One of :func:`names`.
        num_classes: Number of output logits (>= 2).
        in_channels: Image channels (1 for grayscale, 3 for RGB).
        input_size: Image height (= width) in pixels.
        mean: Per-channel mean, one value per channel, or ``None``.
        std: Per-channel standard deviation (> 0), or ``None``.
        activation: One of :func:`multirobust.models.activations`; used by every hidden layer
            (smooth activations as in Xie et al., "Smooth Adversarial Training", 2020).
        **kwargs: Architecture-specific options (only ``wide_resnet`` has any).

    Returns:
        The model (in training mode, on the default device).

    Raises:
        ValueError: For an unknown name or any invalid argument; the message says what is
            allowed.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown architecture {name!r}; available: {', '.join(names())}")
    entry = _REGISTRY[name]
    num_classes = _check_int(num_classes, "num_classes", 2)
    in_channels = _check_int(in_channels, "in_channels", 1)
    if isinstance(input_size, bool) or not isinstance(input_size, numbers.Integral):
        raise ValueError(f"input_size must be an integer (got {input_size!r})")
    if input_size < entry.min_input_size:
        raise ValueError(
            f"input_size must be an integer >= {entry.min_input_size} for {name} "
            f"(got {input_size}); it is designed for 28x28 or 32x32 images"
        )
    input_size = int(input_size)
    activation = canonical_activation(activation)
    if (mean is None) != (std is None):
        raise ValueError("Give both mean and std, or neither (no normalisation)")
    mean_l = _check_stats(mean, "mean", in_channels)
    std_l = _check_stats(std, "std", in_channels)
    if std_l is not None and any(s <= 0 for s in std_l):
        raise ValueError(f"std must be > 0 for every channel (got {std_l})")

    unexpected = sorted(set(kwargs) - set(entry.defaults))
    if unexpected:
        allowed = ", ".join(sorted(entry.defaults)) or "none"
        raise ValueError(
            f"Unexpected argument(s) for {name}: {', '.join(unexpected)}; "
            f"architecture-specific arguments allowed: {allowed}"
        )
    extra = {**entry.defaults, **kwargs}
    if entry.validate is not None:
        extra = entry.validate(extra)

    model = entry.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        activation=activation,
        mean=mean_l,
        std=std_l,
        **extra,
    )
    model.multirobust_spec = {
        "arch": name,
        "kwargs": {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": input_size,
            "mean": mean_l,
            "std": std_l,
            "activation": activation,
            **extra,
        },
    }
    return model


def for_dataset(name: str, dataset: str, **kwargs: Any) -> nn.Module:
    """Build a model whose input format and normalisation match a registered dataset.

    ``in_channels``, ``input_size``, ``num_classes``, ``mean`` and ``std`` are taken from
    ``multirobust.data.spec(dataset)``; any of them given in ``kwargs`` overrides the
    dataset's value. Other ``kwargs`` go to :func:`create` unchanged.

    Args:
        name: One of :func:`names`.
        dataset: A dataset name known to :func:`multirobust.data.spec`.
        **kwargs: Further arguments for :func:`create`.

    Returns:
        The model, as from :func:`create`.

    Raises:
        ImportError: If :mod:`multirobust.data` is not available.
        ValueError: For invalid arguments, or non-square dataset images.
    """
    from multirobust.data import spec as dataset_spec  # lazy: optional sibling subpackage

    ds = dataset_spec(dataset)
    channels, height, width = (int(v) for v in ds.input_shape)
    if height != width and "input_size" not in kwargs:
        raise ValueError(
            f"Dataset {dataset!r} has non-square images ({height}x{width}); "
            "the architectures here expect square inputs"
        )
    args: dict[str, Any] = {
        "num_classes": int(ds.num_classes),
        "in_channels": channels,
        "input_size": height,
        "mean": None if ds.mean is None else tuple(ds.mean),
        "std": None if ds.std is None else tuple(ds.std),
    }
    args.update(kwargs)
    return create(name, **args)
