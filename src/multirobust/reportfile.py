"""The file side of every report: JSON text or file in, JSON and self-contained HTML out.

Evaluation, certification and API-attack reports each define how they become a dict
(``to_dict``), how they are rebuilt from one (``from_dict``, which checks the ``format`` key)
and how their page is drawn (``_render_html``); this mixin adds the same
``to_json``, ``from_json`` and ``to_html`` to all of them, writing atomically so that an
interrupted run never leaves half a report behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Self

from .atomic import write_atomic

__all__ = ["ReportFile"]


class ReportFile:
    """``to_json`` / ``from_json`` / ``to_html`` on top of ``to_dict`` / ``from_dict``."""

    #: Whether the JSON may hold NaN and ±Infinity (evaluation reports keep an infinite
    #: minimum-norm distance for examples never broken; the others refuse them, as strict JSON
    #: readers do).
    json_allow_nan: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        raise NotImplementedError

    def _render_html(self) -> str:
        raise NotImplementedError

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The report as JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=self.json_allow_nan)
        if path is not None:
            write_atomic(Path(path), text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> Self:
        """Read a report from JSON text or from a file path."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML page (inline CSS, plots as inline images); written to ``path``."""
        page = self._render_html()
        if path is not None:
            write_atomic(Path(path), page)
        return page
