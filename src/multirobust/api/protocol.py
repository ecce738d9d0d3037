"""Open Inference Protocol v2 messages (the REST protocol of KServe and Triton), parsed strictly.

An inference request is JSON, never a pickle::

    {"id": "optional-request-id",
     "inputs": [{"name": "input", "shape": [N, C, H, W], "datatype": "FP32",
                 "data": [... N·C·H·W numbers in [0, 1], row-major, flat or nested ...]}],
     "outputs": [{"name": "probabilities"}]}            # optional: a subset of the outputs

and a response ``{"model_name": ..., "id": ..., "outputs": [{"name", "shape", "datatype",
"data"}, ...]}``. :func:`parse_infer_request` turns a request body into a float32 array or raises
:class:`ProtocolError` with the HTTP status and a message naming what is wrong and what is
allowed; the client side builds requests with :func:`infer_request` and reads responses with
:func:`parse_infer_response`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_NAME = "input"
"""The name of the one input tensor, by convention."""
DATATYPE = "FP32"
"""The only input datatype: 32-bit floats."""
MAX_ID_LENGTH = 256
_MAX_NESTING = 8
_NUMBER_TYPES = (int, float)


class ProtocolError(Exception):
    """A request the server must refuse: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """A validated inference request.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        request_id: the client's ``id``, which makes a retry idempotent (None: none given).
        outputs: names of the outputs asked for (None: all).
        digest: SHA-256 of the shape and the float32 bytes (a retry must send the same images).
    """

    images: np.ndarray
    request_id: str | None
    outputs: tuple[str, ...] | None
    digest: str


def _reject_constant(name: str) -> Any:
    raise ProtocolError(
        400, f"Invalid JSON number {name}: NaN and infinities are not allowed in input data"
    )


def _flatten(data: list[Any], depth: int = 0) -> list[Any]:
    """Row-major flattening of nested lists (OIP allows both forms)."""
    if depth > _MAX_NESTING:
        raise ProtocolError(400, f"Input data nested deeper than {_MAX_NESTING} levels")
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item, depth + 1))
        else:
            out.append(item)
    return out


def _shape_text(input_shape: tuple[int, ...], max_batch: int) -> str:
    return f"[N, {', '.join(map(str, input_shape))}] with 1 <= N <= {max_batch}"


def parse_infer_request(
    body: bytes, *, input_shape: tuple[int, ...], max_batch: int
) -> InferRequest:
    """Parse and validate an OIP v2 inference request body (JSON only).

    Args:
        body: the raw request body.
        input_shape: (C, H, W) of one image.
        max_batch: the most images one request may hold.

    Returns:
        An :class:`InferRequest`.

    Raises:
        ProtocolError: 400 for malformed JSON, a wrong name, datatype, shape or element type,
            NaN, infinities, values outside [0, 1] or an empty batch; 413 for a batch over
            ``max_batch``.
    """
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(400, f"Malformed JSON in the request body: {err}") from None
    except RecursionError:
        raise ProtocolError(400, "Malformed JSON in the request body: nested too deeply") from None
    if not isinstance(payload, dict):
        raise ProtocolError(
            400, 'The request body must be a JSON object with an "inputs" list (OIP v2)'
        )
    request_id = payload.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_LENGTH
    ):
        raise ProtocolError(400, f'"id" must be a string of 1 to {MAX_ID_LENGTH} characters')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else "no"
        raise ProtocolError(
            400,
            f'"inputs" must be a list holding exactly one tensor named {INPUT_NAME!r} '
            f"(got {count} tensors)",
        )
    tensor = inputs[0]
    name = tensor.get("name")
    if name != INPUT_NAME:
        raise ProtocolError(
            400, f"Unknown input {name!r} (this model has one input, named {INPUT_NAME!r})"
        )
    datatype = tensor.get("datatype")
    if datatype != DATATYPE:
        raise ProtocolError(
            400, f"Unsupported datatype {datatype!r} for input {INPUT_NAME!r} (allowed: FP32)"
        )
    shape = tensor.get("shape")
    expected = _shape_text(input_shape, max_batch)
    if (
        not isinstance(shape, list)
        or len(shape) != 1 + len(input_shape)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
        or tuple(shape[1:]) != tuple(input_shape)
        or shape[0] < 0
    ):
        raise ProtocolError(
            400, f"Invalid shape {shape!r} for input {INPUT_NAME!r} (must be {expected})"
        )
    n = shape[0]
    if n == 0:
        raise ProtocolError(400, "Empty input: the batch holds no images (N = 0)")
    if n > max_batch:
        raise ProtocolError(
            413, f"Batch of {n} images exceeds the maximum batch size {max_batch} of this server"
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise ProtocolError(400, f'"data" of input {INPUT_NAME!r} must be a list of numbers')
    types = set(map(type, data))
    if list in types:
        data = _flatten(data)
        types = set(map(type, data))
    if not types <= set(_NUMBER_TYPES):
        bad = sorted(t.__name__ for t in types - set(_NUMBER_TYPES))
        shown = {"NoneType": "null", "str": "string", "bool": "boolean", "dict": "object"}
        raise ProtocolError(
            400,
            f"Input {INPUT_NAME!r} holds {', '.join(shown.get(b, b) for b in bad)} values "
            "(must be numbers)",
        )
    size = math.prod(shape)
    if len(data) != size:
        raise ProtocolError(
            400,
            f"Input {INPUT_NAME!r} holds {len(data)} values but its shape {shape} needs {size}",
        )
    try:
        images = np.asarray(data, dtype=np.float64)
    except OverflowError:
        images = np.array([math.inf])  # an integer too large for a float: reported below
    if not np.isfinite(images).all():
        raise ProtocolError(400, f"Input {INPUT_NAME!r} holds NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ProtocolError(
            400, f"Input values must lie in [0, 1] (found min {lo:.6g}, max {hi:.6g})"
        )
    floats = images.astype(np.float32).reshape(shape)
    outputs = payload.get("outputs")
    names: tuple[str, ...] | None = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise ProtocolError(400, '"outputs" must be a list of objects with a "name"')
        names = tuple(o["name"] for o in outputs)
    digest = hashlib.sha256(repr(tuple(shape)).encode() + floats.tobytes()).hexdigest()
    return InferRequest(images=floats, request_id=request_id, outputs=names, digest=digest)


def infer_request(images: np.ndarray, request_id: str | None = None) -> dict[str, Any]:
    """The request body (as a dict for ``json=``) for images (N, C, H, W) in [0, 1].

    float32 values are sent as the doubles that represent them exactly, so the server reads back
    the same bits.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": list(images.shape),
                "datatype": DATATYPE,
                "data": images.ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def parse_infer_response(payload: Any) -> dict[str, np.ndarray]:
    """Output name -> array, from an OIP v2 inference response (checked, not trusted)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("outputs"), list):
        raise ValueError('The server\'s response is not an OIP v2 response (no "outputs" list)')
    out: dict[str, np.ndarray] = {}
    for tensor in payload["outputs"]:
        if not isinstance(tensor, dict):
            raise ValueError("The server's response holds an output that is not an object")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or datatype not in _DTYPES or not isinstance(shape, list):
            raise ValueError(f"The server's response holds a malformed output {name!r}")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ValueError(f"Output {name!r} of the server's response has no data list")
        array = np.asarray(data, dtype=_DTYPES[datatype])
        if array.size != math.prod(shape):
            raise ValueError(f"Output {name!r} holds {array.size} values for its shape {shape}")
        out[name] = array.reshape(shape)
    return out
