"""``RemoteModel``: a served classifier that attacks call like a local model, query by query.

    model = RemoteModel("http://127.0.0.1:8000", key="...", budget=10_000)
    scores = model(x)                     # (N, C): logits, or log-probabilities, or label scores
    attacks.create("square", threat="linf:0.3", steps=1000)(model, x, y)
    model.queries, model.reconcile()      # what was spent, checked against the server's ledger

Every call sends the images as an OIP v2 request (JSON) and turns the response into scores the
attack contract accepts as logits (:func:`multirobust.api.outputs.scores`: log-probabilities
for probability and top-k outputs, "one-hot minus one" for a label). There are no gradients: a
backward pass through the scores raises :class:`RemoteGradientError`.

Counting: a batch of k images is k queries, counted when the answer arrives. Before a request
is sent the client checks its own ``budget`` and raises :class:`QueryBudgetExceeded` rather than
overspend; the server's 429 for an exhausted key budget raises the same error. Every request
carries a fresh id; a retry (connection error, timeout, 5xx, 429 for the rate limit, after
``Retry-After`` or an exponential back-off) sends the same id, which the server answers from its
ledger if it had already answered it, so neither side counts a retried request twice (a 409
while the first copy is still being answered is retried too).
:meth:`RemoteModel.reconcile` compares the client's count with the server's ledger for the key.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import nn

from . import outputs, protocol

log = logging.getLogger(__name__)


class QueryBudgetExceeded(RuntimeError):
    """A request would spend more queries than the client's or the server's budget allows."""

    def __init__(self, message: str, *, spent: int, budget: int | None, needed: int) -> None:
        super().__init__(message)
        self.spent, self.budget, self.needed = spent, budget, needed


class RemoteError(RuntimeError):
    """The server refused a request or could not be reached (after the retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteGradientError(RuntimeError):
    """Something tried to backpropagate through a remote model's scores."""


class LedgerMismatch(RuntimeError):
    """The client's query count and the server's ledger disagree."""


class _NoGradient(torch.autograd.Function):
    """Identity on the scores whose backward pass raises: a remote model has no gradients."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return scores.clone()

    @staticmethod
    def backward(ctx: Any, *grad: torch.Tensor) -> Any:
        raise RemoteGradientError(
            "A RemoteModel has no gradients: it answers queries over HTTP. Use a score-based "
            "attack (square, sparse-rs), a decision-based one (hopskipjump, rays), or a "
            "transfer attack from a surrogate (multirobust.api.transfer_attack)."
        )


def _split_url(url: str, model: str | None) -> tuple[str, str | None]:
    """(base URL, model name) from ``http://host:port`` or ``http://host:port/v2/models/NAME``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Invalid server URL: {url!r} (must be http://HOST:PORT[/v2/models/NAME])")
    path = parts.path.rstrip("/")
    base = f"{parts.scheme}://{parts.netloc}"
    if path.startswith("/v2/models/"):
        named = path[len("/v2/models/") :]
        if model is not None and model != named:
            raise ValueError(f"The URL names model {named!r} but model={model!r} was given")
        return base, named
    if path not in ("", "/v2"):
        raise ValueError(f"Invalid server URL path {parts.path!r} (use the base URL)")
    return base, model


class RemoteModel(nn.Module):
    """A model behind an OIP v2 server, callable like a local classifier (no gradients).

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``) or the model's
            (``.../v2/models/NAME``).
        key: API key, sent as ``Authorization: Bearer KEY``.
        model: the model's name (default: the one the URL names, else the server's only model).
        output: the output mode expected (default: what the server's metadata says); a server
            configured otherwise is refused, so an attack never runs on outputs it did not plan
            for.
        budget: queries this client may spend in all (None: only the server's limits).
        batch_size: images per request (default: the server's maximum batch).
        timeout: seconds to wait for one response.
        retries: attempts after the first for connection errors, timeouts, 5xx and rate limits.
        backoff: first back-off in seconds, doubled per retry up to ``max_backoff``.
        client: an ``httpx.Client`` to send the requests through instead of a new one (for
            example ``fastapi.testclient.TestClient(app)`` in-process, or one with its own
            transport); ``url`` then only names the model.

    Attributes:
        queries: images answered (= queries spent) through this client.
        requests: requests answered; ``retries_used``: requests sent again.
        input_shape, num_classes, output: what the server's metadata says.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        model: str | None = None,
        output: str | None = None,
        budget: int | None = None,
        batch_size: int | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        client: Any = None,
    ) -> None:
        super().__init__()
        try:
            import httpx
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError("RemoteModel needs httpx: pip install 'multirobust[api]'") from err
        if output is not None and output not in outputs.MODES:
            raise ValueError(f"Invalid output: {output!r} (allowed: {', '.join(outputs.MODES)})")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            raise ValueError(f"Invalid budget: {budget!r} (must be an integer >= 1)")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"Invalid retries: {retries!r} (must be an integer >= 0)")
        self._httpx = httpx
        self.base, name = _split_url(url, model)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._own_client = client is None
        self._client = client or httpx.Client(base_url=self.base, timeout=timeout)
        self.budget = budget
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queries = 0
        self.requests = 0
        self.retries_used = 0
        self._session = secrets.token_hex(8)
        self._sequence = 0

        if name is None:
            models = self._get("/v2").get("models")
            if not isinstance(models, list) or len(models) != 1:
                raise ValueError(
                    f"The server at {self.base} lists models {models!r}: name one with model=..."
                )
            name = str(models[0])
        self.name = name
        meta = self._get(f"/v2/models/{name}")
        try:
            shape = meta["inputs"][0]["shape"]
            self.input_shape = tuple(int(s) for s in shape[1:])
            self.output = outputs.mode_of([o["name"] for o in meta["outputs"]])
            params = meta.get("parameters") or {}
            self.num_classes = int(params["num_classes"])
            server_batch = int(params.get("max_batch") or 256)
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise RemoteError(f"The server's metadata for {name!r} is not usable: {err}") from None
        if output is not None and output != self.output:
            raise ValueError(
                f"The server returns {self.output!r} outputs, not {output!r} as expected"
            )
        self.batch_size = min(batch_size or server_batch, server_batch)
        self.server_parameters = params
        self._baseline = self.server_usage().get("queries_answered", 0)

    # ------------------------------------------------------------------ HTTP
    def _get(self, path: str) -> dict[str, Any]:
        response = self._send("GET", path, None)
        data = response.json()
        if not isinstance(data, dict):
            raise RemoteError(f"GET {path}: the server's answer is not a JSON object")
        return data

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One request with retries; returns the 200 response or raises."""
        httpx = self._httpx
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = self._client.request(method, path, json=body, headers=self._headers)
            except (httpx.TransportError, httpx.TimeoutException) as err:
                problem = f"{type(err).__name__}: {err}"
                status = None
            else:
                status = response.status_code
                if status == 200:
                    return response
                problem = _error_text(response)
                if status == 429:
                    details = _json_or_empty(response)
                    if "retry_after" not in details:
                        # The key's budget is spent: waiting will not help.
                        raise QueryBudgetExceeded(
                            f"The server refused the request: {problem}",
                            spent=self.queries,
                            budget=details.get("budget"),
                            needed=_images(body),
                        )
                    wait = float(details["retry_after"])
                elif status == 409:
                    pass  # the same request id is still being answered: wait and send it again
                elif status < 500:
                    raise RemoteError(f"{method} {path}: HTTP {status}: {problem}", status)
            if attempt >= self.retries:
                raise RemoteError(
                    f"{method} {path} failed after {attempt + 1} attempt(s): {problem}", status
                )
            attempt += 1
            self.retries_used += 1
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            if wait is not None:
                delay = max(delay, wait)
            log.info("retrying %s %s in %.2f s (%s)", method, path, delay, problem)
            time.sleep(delay)

    # ------------------------------------------------------------------ the model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, C) for images x (N, C, H, W) in [0, 1], one query per image."""
        if x.dim() != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"Remote model {self.name!r} takes images of shape (N, "
                f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        n = x.shape[0]
        if n == 0:
            return x.new_zeros((0, self.num_classes))
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"Query budget of this RemoteModel exhausted: {self.queries} of {self.budget} "
                f"spent, the call needs {n} more",
                spent=self.queries,
                budget=self.budget,
                needed=n,
            )
        images = x.detach().to(device="cpu", dtype=torch.float32).numpy()
        parts = []
        for i in range(0, n, self.batch_size):
            parts.append(self._infer(images[i : i + self.batch_size], like=x))
        scores = torch.cat(parts)
        if torch.is_grad_enabled() and x.requires_grad:
            return _NoGradient.apply(scores, x)  # type: ignore[no-any-return]
        return scores

    def _infer(self, images: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        self._sequence += 1
        request_id = f"{self._session}-{self._sequence}"
        body = protocol.infer_request(images, request_id)
        response = self._send("POST", f"/v2/models/{self.name}/infer", body)
        try:
            parsed = protocol.parse_infer_response(response.json())
            out = outputs.scores(parsed, self.output, self.num_classes, like)
        except ValueError as err:
            raise RemoteError(f"Unusable response from {self.base}: {err}") from None
        if out.shape != (images.shape[0], self.num_classes):
            raise RemoteError(
                f"The server answered {tuple(out.shape)} scores for {images.shape[0]} images"
            )
        self.queries += images.shape[0]
        self.requests += 1
        return out

    # ------------------------------------------------------------------ accounting
    def server_usage(self) -> dict[str, Any]:
        """The server's ledger for this key (``GET /v2/usage``)."""
        return self._get("/v2/usage")

    def reconcile(self, *, strict: bool = True) -> dict[str, Any]:
        """Compare this client's query count with the server's ledger for the key.

        The server's count is taken relative to its value when this client was created, so
        the two agree exactly unless another client used the same key meanwhile.

        Returns:
            ``{"client": ..., "server": ..., "difference": server − client, "budget_remaining"}``.

        Raises:
            LedgerMismatch: with ``strict``, when the counts differ.
        """
        usage = self.server_usage()
        server = int(usage.get("queries_answered", 0)) - int(self._baseline)
        result = {
            "client": self.queries,
            "server": server,
            "difference": server - self.queries,
            "budget_remaining": usage.get("budget_remaining"),
            "requests": self.requests,
            "retries": self.retries_used,
        }
        if strict and server != self.queries:
            raise LedgerMismatch(
                f"The client counted {self.queries} queries but the server's ledger has "
                f"{server} for this key since the client started (another client on the same "
                "key?)"
            )
        return result

    def close(self) -> None:
        """Close the HTTP connection pool (unless the client was passed in)."""
        if self._own_client:
            self._client.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def extra_repr(self) -> str:
        return f"{self.base}/v2/models/{self.name}, output={self.output}, queries={self.queries}"


def _json_or_empty(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_text(response: Any) -> str:
    data = _json_or_empty(response)
    return str(data.get("error") or response.text[:300] or response.reason_phrase)


def _images(body: dict[str, Any] | None) -> int:
    try:
        return int(body["inputs"][0]["shape"][0]) if body else 0
    except (KeyError, IndexError, TypeError, ValueError):
        return 0
