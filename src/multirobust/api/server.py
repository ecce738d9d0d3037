"""The model server: Open Inference Protocol v2 over HTTP (FastAPI on uvicorn).

Endpoints (OIP v2 REST, plus one extension):

- ``GET /v2/health/live``, ``GET /v2/health/ready``: liveness and readiness (no key needed).
- ``GET /v2``: server metadata (name, version, extensions, the model served).
- ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``: model metadata (the input tensor
  ``input``, FP32 [−1, C, H, W]; the outputs of the configured mode; the server's limits under
  ``parameters``).
- ``POST /v2/models/{name}/infer``: inference (see :mod:`multirobust.api.protocol`).
- ``GET /v2/usage`` (extension): the caller's key id, queries answered, budget left.

What a deployment controls (:class:`ServerSettings`): the output mode and rounding
(:class:`multirobust.api.outputs.OutputSpec`), 8-bit input quantisation, API keys
(``Authorization: Bearer KEY``; none: 401, unknown: 403), a per-key query budget and rate limit
(429, with the budget left in the body), the largest body and batch (413). Every answered query
is in the ledger (:mod:`multirobust.api.ledger`); the budget is reserved atomically before the
model runs and given back if the request fails, so nothing is counted that was not answered.

Request bodies are parsed as JSON only, never unpickled. Errors are JSON objects
``{"error": "..."}`` naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "The model server needs FastAPI and uvicorn: pip install 'multirobust[api]'"
    ) from err

from .. import __version__
from . import protocol
from .ledger import (
    ANONYMOUS,
    Ledger,
    LedgerError,
    RateLimited,
    Replay,
    retry_seconds,
)
from .outputs import OutputSpec

log = logging.getLogger(__name__)

SERVER_NAME = "multirobust"
#: OIP extensions this server implements beyond the core protocol.
EXTENSIONS = ("usage", "request-id-replay")


@dataclass(frozen=True)
class ServerSettings:
    """How a model is served.

    Args:
        name: the model's name in URLs (``/v2/models/{name}``).
        input_shape: (C, H, W) of one image.
        num_classes: C, the number of classes the model scores.
        output: what responses reveal (mode, k, rounding).
        quantize_input: round inputs to 8 bits (x ← round(255 x)/255) before the model.
        keys: SHA-256 digest of each accepted key -> its key id (from
            :func:`multirobust.api.ledger.read_keys`); None: no keys, every caller is
            ``anonymous`` and shares one budget.
        budget: queries each key may spend in all (None: unlimited).
        rate_limit: queries each key may spend per ``rate_window`` seconds (None: unlimited).
        rate_window: length of the rate-limit window in seconds.
        max_body_bytes: the largest request body accepted.
        max_batch: the most images one request may hold.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    output: OutputSpec = field(default_factory=OutputSpec)
    quantize_input: bool = False
    keys: Mapping[str, str] | None = None
    budget: int | None = None
    rate_limit: int | None = None
    rate_window: float = 60.0
    max_body_bytes: int = 16 * 2**20
    max_batch: int = 256

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or not self.name.isprintable():
            raise ValueError(f"Invalid model name: {self.name!r} (printable, no '/')")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"Invalid input_shape: {self.input_shape} (must be (C, H, W))")
        if self.num_classes < 2:
            raise ValueError(f"Invalid num_classes: {self.num_classes} (must be >= 2)")
        self.output.check_classes(self.num_classes)
        for label, value, low in (
            ("budget", self.budget, 1),
            ("rate_limit", self.rate_limit, 1),
            ("max_body_bytes", self.max_body_bytes, 1024),
            ("max_batch", self.max_batch, 1),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(f"Invalid {label}: {value!r} (must be an integer >= {low})")
        if (
            not (isinstance(self.rate_window, int | float) and math.isfinite(self.rate_window))
            or self.rate_window <= 0
        ):
            raise ValueError(f"Invalid rate_window: {self.rate_window!r} (must be > 0 seconds)")
        if self.keys is not None and not self.keys:
            raise ValueError("keys must hold at least one key (or be None for no keys)")
        if self.rate_limit is not None and self.rate_limit < self.max_batch:
            log.warning(
                "rate limit %d is below the maximum batch %d: larger batches are always refused",
                self.rate_limit,
                self.max_batch,
            )


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message, **details}``."""

    def __init__(
        self,
        status: int,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.details = details or {}
        self.headers = headers or {}


class Service:
    """The work behind the endpoints, independent of the web framework (thread-safe).

    Args:
        model: the classifier (logits for inputs in [0, 1]); put in eval mode.
        settings: how it is served.
        ledger: where queries are recorded.
    """

    def __init__(self, model: nn.Module, settings: ServerSettings, ledger: Ledger) -> None:
        self.model = model.eval()
        self.settings = settings
        self.ledger = ledger
        self._lock = threading.Lock()
        self.ready = False

    def warm_up(self) -> None:
        """One forward pass on a blank batch, checking the model's output shape."""
        x = torch.zeros(1, *self.settings.input_shape)
        with self._lock, torch.inference_mode():
            out = self.model(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, self.settings.num_classes):
            raise ValueError(
                f"The model returns {getattr(out, 'shape', type(out).__name__)} for one image; "
                f"the server expects (1, {self.settings.num_classes}) logits"
            )
        self.ready = True

    # ------------------------------------------------------------------ keys
    def authenticate(self, header: str | None) -> str:
        """The key id of an ``Authorization`` header (401 without a key, 403 for a wrong one)."""
        keys = self.settings.keys
        if keys is None:
            return ANONYMOUS
        challenge = {"WWW-Authenticate": 'Bearer realm="multirobust"'}
        if not header:
            raise ApiError(
                401,
                "Missing API key: send the header 'Authorization: Bearer KEY'",
                headers=challenge,
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "Malformed Authorization header (expected 'Authorization: Bearer KEY')",
                headers=challenge,
            )
        found = keys.get(_digest(token))
        if found is None:
            raise ApiError(403, "Unknown API key")
        return found

    def check_model(self, name: str) -> None:
        if name != self.settings.name:
            raise ApiError(
                404, f"Unknown model {name!r} (this server serves {self.settings.name!r})"
            )

    # ------------------------------------------------------------------ metadata
    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": __version__,
            "extensions": list(EXTENSIONS),
            "models": [self.settings.name],
        }

    def model_metadata(self) -> dict[str, Any]:
        s = self.settings
        return {
            "name": s.name,
            "versions": ["1"],
            "platform": "pytorch",
            "inputs": [
                {
                    "name": protocol.INPUT_NAME,
                    "datatype": protocol.DATATYPE,
                    "shape": [-1, *s.input_shape],
                }
            ],
            "outputs": s.output.metadata(s.num_classes),
            "parameters": {
                "output": s.output.mode,
                "top_k": s.output.top_k if s.output.mode == "top-k" else None,
                "decimals": s.output.decimals,
                "quantize_input": s.quantize_input,
                "num_classes": s.num_classes,
                "max_batch": s.max_batch,
                "max_body_bytes": s.max_body_bytes,
                "budget": s.budget,
                "rate_limit": s.rate_limit,
                "rate_window": s.rate_window,
                "auth": s.keys is not None,
            },
        }

    def usage(self, key: str) -> dict[str, Any]:
        spent = self.ledger.spent(key)
        queries, requests = self.ledger.answered(key)
        budget = self.settings.budget
        return {
            "key_id": key,
            "queries_answered": queries,
            "requests_answered": requests,
            "queries_spent": spent,
            "budget": budget,
            "budget_remaining": None if budget is None else max(budget - spent, 0),
        }

    # ------------------------------------------------------------------ inference
    def infer(self, key: str, body: bytes) -> bytes:
        """Answer one inference request body for key id ``key``; the JSON response bytes.

        Raises:
            ApiError: 4xx for a request refused (nothing counted), 500 if the model fails
                (nothing counted).
        """
        s = self.settings
        try:
            req = protocol.parse_infer_request(
                body, input_shape=s.input_shape, max_batch=s.max_batch
            )
        except protocol.ProtocolError as err:
            raise ApiError(err.status, err.message) from None
        names = s.output.metadata(s.num_classes)
        available = [o["name"] for o in names]
        if req.outputs is not None:
            unknown = [n for n in req.outputs if n not in available]
            if unknown:
                raise ApiError(
                    400,
                    f"Unknown output(s) {', '.join(map(repr, unknown))} "
                    f"(available: {', '.join(available)})",
                )
        images = req.images
        if s.quantize_input:
            images = np.round(images * 255.0) / np.float32(255.0)
        n = images.shape[0]
        try:
            held = self.ledger.reserve(
                key,
                n,
                budget=s.budget,
                rate_limit=s.rate_limit,
                rate_window=s.rate_window,
                request_id=req.request_id,
                digest=req.digest,
            )
        except RateLimited as err:
            raise ApiError(
                429, str(err), err.details(), {"Retry-After": retry_seconds(err.retry_after)}
            ) from None
        except LedgerError as err:
            raise ApiError(err.status, str(err), err.details()) from None
        if isinstance(held, Replay):
            return self._response(req.request_id, held.returned, req.outputs)
        try:
            with self._lock, torch.inference_mode():
                logits = self.model(torch.from_numpy(images))
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n, s.num_classes):
                raise RuntimeError(f"the model returned shape {getattr(logits, 'shape', None)}")
            if not bool(torch.isfinite(logits).all()):
                raise RuntimeError("the model returned NaN or infinite logits")
            returned = json.dumps(s.output.encode(logits), separators=(",", ":"), allow_nan=False)
            self.ledger.answer(held, output=s.output.mode, returned=returned)
        except BaseException as err:
            self.ledger.fail(held, f"{type(err).__name__}: {err}")
            log.exception("inference failed")
            raise ApiError(500, "Inference failed on the server (nothing was counted)") from None
        return self._response(req.request_id, returned, req.outputs)

    def _response(
        self, request_id: str | None, returned: str, wanted: tuple[str, ...] | None
    ) -> bytes:
        if wanted is not None:
            outputs = [o for o in json.loads(returned) if o["name"] in wanted]
            returned = json.dumps(outputs, separators=(",", ":"))
        head = json.dumps(
            {"model_name": self.settings.name, "model_version": "1", "id": request_id}
        )
        return (head[:-1] + ',"outputs":' + returned + "}").encode()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, f"Invalid Content-Length header: {length!r}") from None
        if declared > limit:
            raise ApiError(
                413, f"Request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(model: nn.Module, settings: ServerSettings, ledger: Ledger) -> FastAPI:
    """The FastAPI application serving ``model`` (call :meth:`Service.warm_up` first, or let
    :func:`serve` do it; until then readiness answers 503)."""
    service = Service(model, settings, ledger)
    app = FastAPI(title="multirobust model server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message, **err.details}, err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"Invalid request: {err.errors()}"}, 400)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, 200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return service.server_metadata()

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str, request: Request) -> dict[str, Any]:
        service.authenticate(request.headers.get("authorization"))
        service.check_model(name)
        return service.model_metadata()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, request: Request) -> JSONResponse:
        service.authenticate(request.headers.get("authorization"))
        service.check_model(name)
        return JSONResponse({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    @app.get("/v2/usage")
    async def usage(request: Request) -> dict[str, Any]:
        key = service.authenticate(request.headers.get("authorization"))
        result: dict[str, Any] = await run_in_threadpool(service.usage, key)
        return result

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        # Cheap refusals first: key, model name, content type, size; the body is read last.
        key = service.authenticate(request.headers.get("authorization"))
        service.check_model(name)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype.lower() != "application/json":
            raise ApiError(415, f"Unsupported Content-Type {ctype!r} (send application/json)")
        if not service.ready:
            raise ApiError(503, "The model is not ready yet")
        body = await _read_body(request, settings.max_body_bytes)
        payload = await run_in_threadpool(service.infer, key, body)
        return Response(payload, media_type="application/json")

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    return sock


def serve(
    model: nn.Module,
    settings: ServerSettings,
    ledger: Ledger,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    access_log: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve ``model`` until interrupted (Ctrl-C or SIGTERM).

    The model is warmed up and the ledger's leftovers of a crash recovered before the socket
    is announced: ``announce(url)`` is called with the base URL once the port is bound (port 0
    picks a free one), then uvicorn serves on that socket.
    """
    try:
        import uvicorn
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "The model server needs FastAPI and uvicorn: pip install 'multirobust[api]'"
        ) from err
    recovered = ledger.recover()
    if recovered:
        log.warning(
            "ledger: %d request(s) left unanswered by a previous run marked interrupted", recovered
        )
    ledger.set_meta(model=settings.name, output=settings.output.mode, server=__version__)
    app = create_app(model, settings, ledger)
    app.state.service.warm_up()
    if host not in ("127.0.0.1", "localhost", "::1") and settings.keys is None:
        log.warning(
            "serving on %s without API keys: anyone who can reach it can query the model", host
        )
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if announce is not None:
        announce(f"http://{shown}:{bound}")
    config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="off", timeout_keep_alive=30
    )
    uvicorn.Server(config).run(sockets=[sock])
