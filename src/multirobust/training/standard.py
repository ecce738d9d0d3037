"""Standard training (empirical risk minimisation) with a wall-clock or epoch budget."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import ImageDataset

log = logging.getLogger(__name__)


def train_standard(
    model: nn.Module,
    data: ImageDataset,
    *,
    epochs: int | None = None,
    seconds: float | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` on ``data`` with Adam and cross-entropy until a budget runs out.

    Args:
        epochs: passes over the data (default 1 when ``seconds`` is not given).
        seconds: wall-clock budget; training stops after the batch that crosses it.
        seed: shuffling order.
        progress: show a bar over every image of every epoch (titled with the epoch, with
            an ETA to the end of training); with only ``seconds`` its total is the budget in
            seconds instead.

    Returns:
        ``{"steps", "examples", "seconds", "last_loss"}``.
    """
    if epochs is None and seconds is None:
        epochs = 1
    if epochs is not None and epochs < 1:
        raise ValueError(f"Invalid epochs: {epochs!r} (must be an integer >= 1)")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"Invalid seconds: {seconds!r} (must be > 0)")
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    steps, seen, last = 0, 0, float("nan")
    epoch = 0
    by_time = epochs is None
    bar = tqdm(
        total=float(seconds or 0) if by_time else (epochs or 0) * len(data),
        unit="s" if by_time else "img",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
        if by_time
        else None,
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        while epochs is None or epoch < epochs:
            bar.set_description(
                f"train epoch {epoch + 1}" + ("" if by_time else f"/{epochs}"), refresh=False
            )
            for xb, yb in data.loader(batch_size, shuffle=True, generator=generator):
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                seen += xb.shape[0]
                elapsed = time.perf_counter() - start
                bar.update(min(elapsed, bar.total) - bar.n if by_time else xb.shape[0])
                if steps % 50 == 0:
                    last = float(loss.detach())
                    bar.set_postfix(loss=f"{last:.3f}")
                if seconds is not None and elapsed >= seconds:
                    break
            else:
                epoch += 1
                continue
            break
        bar.refresh()  # the last state, drawn even between display intervals
    model.eval()
    elapsed = time.perf_counter() - start
    log.info("trained %d steps (%d examples) in %.1f s", steps, seen, elapsed)
    return {"steps": steps, "examples": seen, "seconds": elapsed, "last_loss": float(loss.detach())}
