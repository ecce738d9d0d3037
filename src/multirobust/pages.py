"""Self-contained HTML pages and their figures, shared by every report multirobust writes.

No network is needed to view a page: the CSS is inline and figures are PNG (or SVG) images
embedded as data URIs, drawn with matplotlib's non-interactive Agg backend. Evaluation reports,
comparisons, certificates, API attacks, landscapes and audits all build on these pieces so that
they look alike and escape text the same way.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CSS",
    "esc",
    "figure_png",
    "figure_svg",
    "img",
    "page",
    "pct",
    "pyplot",
    "show_image",
    "signed_channel",
    "table",
]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.check{border-left:4px solid #d9822b;background:#fff7ec;padding:.5em 1em;margin:.6em 0}
.ok{border-left:4px solid #3c9d3c;background:#f0faf0;padding:.5em 1em;margin:.6em 0}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
img{max-width:100%}.muted{color:#666}
"""


def esc(value: object) -> str:
    """HTML-escape the text of ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


def pct(value: float, digits: int = 2) -> str:
    """A fraction as a percentage: ``0.1234 -> '12.34%'``."""
    return f"{100 * value:.{digits}f}%"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def figure_svg(fig: Any) -> bytes:
    """Render a matplotlib figure to SVG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def img(data: bytes, alt: str, *, mime: str = "image/png", attrs: str = "") -> str:
    """An ``<img>`` tag embedding ``data`` as a base64 data URI."""
    encoded = base64.b64encode(data).decode()
    extra = f" {attrs}" if attrs else ""
    return f'<img alt="{esc(alt)}" src="data:{mime};base64,{encoded}"{extra}>'


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    table_id: str | None = None,
    numeric: Sequence[int] = (),
    raw: bool = False,
) -> str:
    """An HTML table; cells are escaped unless ``raw`` (for cells that already hold HTML).

    Args:
        header: column titles.
        rows: one sequence of cells per row.
        table_id: ``id`` attribute, for tests and links.
        numeric: indices of right-aligned numeric columns.
        raw: cells are trusted HTML.
    """
    nums = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell) if raw else esc(cell)
            cls = ' class="num"' if i in nums else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, body: str, *, css: str = "") -> str:
    """A complete HTML document with the shared CSS (plus ``css``) and ``body`` inside."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{css}</style></head><body>{body}</body></html>"
    )


def show_image(ax: Any, image: Any, **imshow: Any) -> None:
    """Draw one ``(C, H, W)`` image (tensor or array) on ``ax`` without ticks.

    One channel is drawn through the colour map ``cmap``, three as RGB; ``imshow`` goes to
    ``ax.imshow`` (``cmap``, ``vmin``, ``vmax``).
    """
    import numpy as np

    arr = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    ax.imshow(arr, **imshow)
    ax.set_xticks([])
    ax.set_yticks([])


def signed_channel(delta: Any) -> Any:
    """A ``(C, H, W)`` perturbation as one channel (summed), for a diverging colour map."""
    return delta.sum(0, keepdim=True) if delta.shape[0] > 1 else delta
