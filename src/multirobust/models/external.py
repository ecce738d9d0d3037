"""Your own architecture: a model from an importable factory, with weights from a safe file.

multirobust's own checkpoints name a registered architecture. A researcher's model is built by
their own code instead::

    model = models.from_factory("mypackage.nets:build", {"width": 64})
    models.load_weights(model, "weights.safetensors")   # or a state dict saved by torch.save

``from_factory`` imports ``package.module`` and calls ``factory(**kwargs)``; the result must be
an ``nn.Module`` taking images in [0, 1] and returning logits (put any normalisation inside it).
``load_weights`` reads safetensors, or a plain state dict with ``torch.load(...,
weights_only=True)`` (never arbitrary pickled objects), checks every name and shape against the
model and loads them strictly. Each way this can fail raises :class:`ModelSourceError` saying
what was wrong.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import SAFETENSORS_SUFFIX, _state_dict_problems

__all__ = ["ModelSourceError", "from_factory", "load_weights", "read_weights"]

_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")


class ModelSourceError(ValueError):
    """A model could not be built or given its weights; the message says why and what to do."""


def from_factory(spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """``factory(**kwargs)`` for ``spec = "package.module:factory"``, in eval mode.

    Args:
        spec: the module's import path and the callable's name, separated by a colon.
        kwargs: keyword arguments of the factory.

    Returns:
        The module the factory returned, in eval mode.

    Raises:
        ModelSourceError: for a malformed spec, a module that cannot be imported (or fails while
            importing), a missing or non-callable attribute, a factory that raises, or one that
            returns something other than an ``nn.Module``.
    """
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ModelSourceError(
            f"Invalid model {spec!r}: write package.module:factory (an importable module, a "
            "colon, and the name of a callable in it that returns an nn.Module)"
        )
    module_name, attr = match["module"], match["attr"]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        raise ModelSourceError(
            f"Cannot import {module_name!r} for --model {spec}: no module named {missing!r} "
            "(install it, or run from the folder that holds it / add that folder to PYTHONPATH)"
        ) from None
    except Exception as err:  # the user's module failed while it was being imported
        raise ModelSourceError(
            f"Importing {module_name!r} for --model {spec} failed: {type(err).__name__}: {err}"
        ) from err
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ModelSourceError(
            f"Module {module_name!r} has no attribute {attr!r} (it defines: "
            f"{', '.join(public[:20]) or 'nothing public'})"
        )
    if not callable(factory):
        raise ModelSourceError(f"{spec} is a {type(factory).__name__}, not a callable")
    kwargs = dict(kwargs or {})
    try:
        model = factory(**kwargs)
    except Exception as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelSourceError(
            f"The factory {spec}({shown}) raised {type(err).__name__}: {err}"
        ) from err
    if not isinstance(model, nn.Module):
        raise ModelSourceError(
            f"The factory {spec} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model.eval()


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The named tensors in ``path``: safetensors, or a state dict saved with ``torch.save``.

    A ``.pt`` file may hold the state dict itself or a dict with a ``"state_dict"`` entry (a
    multirobust checkpoint, many training frameworks' files). It is read with
    ``torch.load(..., weights_only=True)``: a file that needs arbitrary pickled objects is
    refused, as loading it could run code.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ModelSourceError: for a corrupt or unsafe file, or one without named tensors.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Weights file not found: {p}")
    if p.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelSourceError(f"Cannot read weights {p}: corrupt safetensors ({err})") from err
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelSourceError(
            f"Refusing to load weights {p}: it holds pickled Python objects the safe loader "
            "(torch.load weights_only=True) does not allow. Save a plain state dict "
            "(torch.save(model.state_dict(), path)) or safetensors."
        ) from err
    except Exception as err:  # truncated zip, random bytes, ...
        raise ModelSourceError(
            f"Cannot read weights {p}: not a torch.save file ({type(err).__name__})"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelSourceError(
            f"Weights {p} are not a state dict (a dict of names to tensors, or a dict with a "
            f"'state_dict' entry holding one); found a {type(obj).__name__}"
        )
    return obj


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load the weights in ``path`` into ``model`` strictly, after checking names and shapes.

    Returns:
        ``model`` (its parameters and buffers replaced in place).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ModelSourceError: for an unreadable file, or weights whose names or shapes differ from
            the model's (every difference listed).
    """
    state = read_weights(path)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = _state_dict_problems(state, expected)
    if problems:
        raise ModelSourceError(f"The weights in {path} do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model
