"""Safe, atomic model checkpoints: :func:`save`, :func:`load`, :func:`read_checkpoint`.

:func:`save` writes two files: ``model.pt`` (below; it can also carry training state) and,
for a model alone, ``model.safetensors`` beside it: the weights in the ecosystem's safe format,
with the same metadata (format, version, arch, kwargs, dataset, metadata as JSON) in its
header, so any tool reads the weights and :func:`load` rebuilds the model from either file.

A ``.pt`` checkpoint is a ``torch.save``'d dict::

    {"format": "multirobust-checkpoint", "version": 1,
     "arch": <registered name>, "kwargs": <create() arguments>,
     "dataset": <str or None>, "metadata": <JSON-like dict>,
     "state_dict": <parameters and buffers>,
     ...extra keys (tensors / primitives), e.g. "optimizer", "scheduler", "rng"}

It holds only tensors and primitive values, so it is read with
``torch.load(..., weights_only=True)``: no arbitrary Python object is ever unpickled, and a
file that needs one is refused as unsafe. The model is rebuilt from ``arch``/``kwargs`` with
:func:`multirobust.models.create`, never from pickled code.
"""

from __future__ import annotations

import collections
import contextlib
import json
import numbers
import os
import pickle
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_bytes_atomic
from .registry import create, names

__all__ = [
    "FORMAT",
    "SAFETENSORS_SUFFIX",
    "VERSION",
    "CheckpointError",
    "load",
    "read_checkpoint",
    "save",
    "unwrap",
]

FORMAT = "multirobust-checkpoint"
"""Value of the ``"format"`` key marking a multirobust checkpoint."""

VERSION = 1
"""Checkpoint format version written by :func:`save`."""

_RESERVED = ("format", "version", "arch", "kwargs", "dataset", "metadata", "state_dict")

PathLike = str | os.PathLike[str]
MapLocation = str | torch.device | dict[str, str] | Callable[[Any, str], Any] | None


class CheckpointError(ValueError):
    """A file is not a valid, safe multirobust checkpoint (corrupt, unsafe or mismatched)."""


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``DataParallel``/``DistributedDataParallel`` and ``torch.compile`` wrappers.

    Args:
        model: A model, possibly wrapped (any number of times, in any order).

    Returns:
        The underlying module, which carries ``multirobust_spec``.
    """
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
            continue
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module) and inner is not model:
            model = inner
            continue
        return model


# --------------------------------------------------------------------------- value checks


def _json_like(value: Any, where: str) -> Any:
    """Copy ``value`` as plain JSON-like data (None/bool/int/float/str/list/dict[str, ...]).

    Number subclasses (e.g. NumPy scalars) become plain ``int``/``float`` and tuples become
    lists, so the result pickles without any global and reloads under ``weights_only``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple):
        return [_json_like(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be strings (got {k!r})")
            out[str(k)] = _json_like(v, f"{where}[{k!r}]")
        return out
    hint = (
        " (use .item() or .tolist(), or pass tensors via extra=)"
        if isinstance(value, torch.Tensor)
        else ""
    )
    raise ValueError(
        f"{where} must contain only JSON-like values (None, bool, int, float, str, list, "
        f"dict with str keys); got {type(value).__name__}{hint}"
    )


_EXTRA_ATOMS = (torch.dtype, torch.device, torch.Size)


def _safe_extra(value: Any, where: str) -> Any:
    """Copy ``value`` keeping only what ``torch.load(weights_only=True)`` can read back.

    Allowed: tensors, None, bool, int, float, complex, str, bytes, ``torch.dtype``,
    ``torch.device``, ``torch.Size``, and lists/tuples/sets/dicts of these (dict keys may be
    any allowed scalar). Number subclasses are converted to plain Python numbers.
    """
    if value is None or isinstance(value, (torch.Tensor, *_EXTRA_ATOMS)):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, numbers.Complex):
        return complex(value)
    if isinstance(value, list):
        return [_safe_extra(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_safe_extra(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, set | frozenset):
        return {_safe_extra(v, f"{where} item") for v in value}
    if isinstance(value, dict):
        items = [
            (_safe_extra(k, f"{where} key"), _safe_extra(v, f"{where}[{k!r}]"))
            for k, v in value.items()
        ]
        return (
            collections.OrderedDict(items)
            if isinstance(value, collections.OrderedDict)
            else dict(items)
        )
    raise ValueError(
        f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which the safe "
        "checkpoint loader cannot read; use tensors, numbers, strings, and lists/tuples/dicts "
        "of them (e.g. convert NumPy arrays with torch.from_numpy)"
    )


# --------------------------------------------------------------------------- state-dict checks


def _expected_shapes(arch: str, kwargs: dict[str, Any]) -> dict[str, torch.Size]:
    """Parameter/buffer shapes of ``create(arch, **kwargs)``, built on the meta device."""
    with torch.device("meta"):
        model = create(arch, **kwargs)
    return {k: v.shape for k, v in model.state_dict().items()}


def _state_dict_problems(state_dict: dict[str, Any], expected: dict[str, torch.Size]) -> list[str]:
    """Describe how ``state_dict`` differs from the expected keys and shapes (empty if equal)."""
    problems = []

    def _list(keys: list[str]) -> str:
        shown = ", ".join(keys[:8])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    not_tensors = sorted(
        k for k in expected if k in state_dict and not isinstance(state_dict[k], torch.Tensor)
    )
    if not_tensors:
        problems.append(f"non-tensor values for keys: {_list(not_tensors)}")
    wrong = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(shape)})"
        for k, shape in expected.items()
        if isinstance(state_dict.get(k), torch.Tensor) and state_dict[k].shape != shape
    ]
    if wrong:
        problems.append(f"shape mismatch: {_list(wrong)}")
    return problems


# --------------------------------------------------------------------------- save


def save(
    model: nn.Module,
    path: PathLike,
    *,
    dataset: str | None = None,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    safetensors: bool = True,
) -> None:
    """Write a model checkpoint atomically (and, for a model alone, its safetensors twin).

    The file is written to a temporary file in the same folder, flushed and fsync'd, then
    moved over ``path`` with ``os.replace``: readers see either the old file or the complete
    new one, and a failure part-way leaves any previous file intact. Missing parent folders
    are created.

    Args:
        model: A model built by :func:`multirobust.models.create` (so it carries
            ``multirobust_spec``), possibly wrapped in ``DataParallel``,
            ``DistributedDataParallel`` or ``torch.compile``.
        path: Destination file.
        dataset: Name of the dataset the model was trained on, if any.
        metadata: JSON-like information (None/bool/int/float/str, lists, dicts with string
            keys), e.g. training settings or accuracies.
        extra: Additional top-level entries (e.g. ``"optimizer"``, ``"scheduler"``,
            ``"rng"``) made of tensors and primitive values, returned as-is by
            :func:`read_checkpoint`. Keys must not clash with the standard ones.
        safetensors: also write ``path`` with the suffix ``.safetensors``: the weights as
            safetensors, the other entries as JSON in its header. Only without ``extra``
            (training state is not weights); a ``path`` that already ends in
            ``.safetensors`` is written in that format alone.

    Raises:
        ValueError: If the model lacks ``multirobust_spec`` or no longer matches it, or
            ``dataset``/``metadata``/``extra`` hold unsupported values.
    """
    model = unwrap(model)
    spec = getattr(model, "multirobust_spec", None)
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("arch"), str)
        or not isinstance(spec.get("kwargs"), dict)
    ):
        raise ValueError(
            "save() needs a model with a multirobust_spec attribute; "
            "build it with multirobust.models.create(...) (or for_dataset/load)"
        )
    arch = spec["arch"]
    kwargs = _json_like(spec["kwargs"], "multirobust_spec['kwargs']")
    if dataset is not None and not isinstance(dataset, str):
        raise ValueError(f"dataset must be a string or None (got {dataset!r})")
    meta = _json_like({} if metadata is None else metadata, "metadata")
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a dict")
    extras: dict[str, Any] = {}
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError("extra must be a dict of additional top-level entries")
        for key, value in extra.items():
            if not isinstance(key, str) or key in _RESERVED:
                raise ValueError(
                    f"extra key {key!r} is not allowed: keys must be strings other than "
                    f"{', '.join(_RESERVED)}"
                )
            extras[key] = _safe_extra(value, f"extra[{key!r}]")

    state_dict = model.state_dict()
    problems = _state_dict_problems(state_dict, _expected_shapes(arch, kwargs))
    if problems:
        raise ValueError(
            f"The model no longer matches its multirobust_spec ({arch}): {'; '.join(problems)}; "
            "it could not be rebuilt from the checkpoint"
        )

    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "kwargs": kwargs,
        "dataset": dataset,
        "metadata": meta,
        "state_dict": state_dict,
        **extras,
    }
    target = Path(path).expanduser()
    if target.suffix == SAFETENSORS_SUFFIX:
        if extras:
            raise ValueError(
                f"extra entries ({', '.join(extras)}) cannot go into a .safetensors file "
                "(weights only): save them to a .pt path"
            )
        write_bytes_atomic(target, _safetensors_bytes(payload))
        return
    _atomic_torch_save(payload, target)
    if safetensors and not extras:
        write_bytes_atomic(target.with_suffix(SAFETENSORS_SUFFIX), _safetensors_bytes(payload))


SAFETENSORS_SUFFIX = ".safetensors"
_HEADER_KEYS = ("arch", "kwargs", "dataset", "metadata")


def _safetensors_bytes(payload: dict[str, Any]) -> bytes:
    """The weights of ``payload`` as safetensors, its other entries as JSON in the header."""
    from safetensors.torch import save as save_safetensors

    # safetensors refuses tensors that share memory; a contiguous copy of each is independent.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in payload["state_dict"].items()}
    header = {"format": FORMAT, "version": str(payload["version"])}
    header.update({k: json.dumps(payload[k]) for k in _HEADER_KEYS})
    return save_safetensors(tensors, metadata=header)


def _read_safetensors(path: Path, map_location: MapLocation) -> dict[str, Any]:
    """A ``.safetensors`` file written by :func:`save`, as the dict a ``.pt`` one holds."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"Cannot read checkpoint {path}: corrupt safetensors file ({e})"
        ) from e
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file without multirobust metadata (format "
            f"{header.get('format')!r}): load its weights into your own model with "
            "--model package.module:factory --weights FILE"
        )
    try:
        ckpt: dict[str, Any] = {k: json.loads(header[k]) for k in _HEADER_KEYS}
        ckpt["version"] = int(header["version"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {path}: invalid multirobust header ({e})") from e
    if isinstance(map_location, str | torch.device):
        state_dict = {k: v.to(map_location) for k, v in state_dict.items()}
    ckpt["format"] = FORMAT
    ckpt["state_dict"] = state_dict
    return ckpt


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling of ``path``, fsync, then ``os.replace``."""
    path = path.expanduser()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open honours the umask, so the final file gets ordinary permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Make the rename itself durable (best effort; not possible on every platform).
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------- load


def _unpickling_detail(error: BaseException) -> str:
    """The informative line of a weights-only unpickler error message."""
    for line in str(error).splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported" in line or "blocked" in line:
            return line.removeprefix("WeightsUnpickler error:").strip()
    return f"{type(error).__name__}: {str(error).strip()[:200]}"


def read_checkpoint(path: PathLike, map_location: MapLocation = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save`, returning the raw dict.

    Only ``torch.load(path, map_location=..., weights_only=True)`` (or, for a ``.safetensors``
    file, the safetensors reader) is used, so no arbitrary Python object is unpickled. The
    dict is checked for the format marker and version, a registered architecture with valid
    arguments, and a ``state_dict`` whose keys and shapes match that architecture. Extra
    top-level keys written via ``save(extra=...)`` are kept.

    Args:
        path: Checkpoint file.
        map_location: Passed to ``torch.load`` (default ``"cpu"``).

    Returns:
        The checkpoint dict (``format``, ``version``, ``arch``, ``kwargs``, ``dataset``,
        ``metadata``, ``state_dict`` and any extra keys).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is corrupt, unsafe (needs arbitrary pickled objects),
            not a multirobust checkpoint, of an unsupported version, names an unknown
            architecture, or its ``state_dict`` does not match the architecture.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"Cannot read checkpoint {path}: not a regular file")
    if path.suffix == SAFETENSORS_SUFFIX:
        return _validate(_read_safetensors(path, map_location), path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(e)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"Refusing to load checkpoint {path}: untrusted/unsafe file. It contains "
                f"pickled Python objects that the safe loader (torch.load weights_only=True) "
                f"does not allow ({detail}); loading them could run arbitrary code. "
                "multirobust checkpoints hold only tensors and primitive values."
            ) from e
        raise CheckpointError(
            f"Cannot read checkpoint {path}: corrupt or not a multirobust checkpoint "
            f"(rejected by the safe weights-only loader: {detail}; arbitrary pickled objects "
            "are never loaded, as they would be unsafe)"
        ) from e
    except Exception as e:  # truncated zip, random bytes, empty file, ...
        raise CheckpointError(
            f"Cannot read checkpoint {path}: corrupt or not a multirobust checkpoint "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from e

    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"Cannot read checkpoint {path}: corrupt or not a multirobust checkpoint "
            f"(contains a {type(ckpt).__name__}, not a dict)"
        )
    return _validate(ckpt, path)


def _validate(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """Check the entries of a checkpoint read from ``path``; return it."""
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a multirobust checkpoint: format marker is "
            f"{ckpt.get('format')!r}, expected {FORMAT!r}"
        )
    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"Checkpoint {path} has an invalid format version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format version {version}, newer than this multirobust "
            f"reads (version {VERSION}); upgrade multirobust"
        )
    arch = ckpt.get("arch")
    if arch not in names():
        raise CheckpointError(
            f"Checkpoint {path} names an unknown architecture {arch!r}; "
            f"available: {', '.join(names())}"
        )
    kwargs = ckpt.get("kwargs")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"Checkpoint {path}: 'kwargs' must be a dict with string keys")
    dataset = ckpt.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise CheckpointError(f"Checkpoint {path}: 'dataset' must be a string or None")
    if not isinstance(ckpt.get("metadata"), dict):
        raise CheckpointError(f"Checkpoint {path}: 'metadata' must be a dict")
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(
            f"Checkpoint {path}: 'state_dict' is missing or not a dict of named tensors"
        )
    try:
        expected = _expected_shapes(arch, kwargs)
    except (ValueError, TypeError) as e:
        raise CheckpointError(
            f"Checkpoint {path}: invalid arguments for architecture {arch!r}: {e}"
        ) from e
    problems = _state_dict_problems(state_dict, expected)
    if problems:
        raise CheckpointError(
            f"Checkpoint {path}: state_dict does not match architecture {arch!r}: "
            + "; ".join(problems)
        )
    return ckpt


def load(path: PathLike, *, map_location: MapLocation = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint written by :func:`save`.

    The architecture is re-created with :func:`multirobust.models.create` from the stored
    name and arguments, and the weights are loaded strictly. Reading is safe: see
    :func:`read_checkpoint`.

    Args:
        path: Checkpoint file.
        map_location: Passed to ``torch.load``; when it is a device (string or
            ``torch.device``) the model is also moved there. Default ``"cpu"``.

    Returns:
        The model in eval mode, with ``multirobust_spec`` set and
        ``multirobust_checkpoint = {"dataset": ..., "metadata": ...}``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is not a valid, safe multirobust checkpoint.
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    try:
        model = create(ckpt["arch"], **ckpt["kwargs"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"Checkpoint {path}: cannot load weights: {e}") from e
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    model.eval()
    info = {"dataset": ckpt["dataset"], "metadata": ckpt["metadata"]}
    model.multirobust_checkpoint = info  # type: ignore[assignment]  # plain attribute
    return model
