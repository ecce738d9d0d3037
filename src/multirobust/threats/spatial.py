"""Spatial threat model: rotations and translations (Engstrom et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Threat, ThreatParams, flat, require_params
from .text import fmt, number


@dataclass(frozen=True)
class SpatialParams(ThreatParams):
    """Per-example rotation and shifts: ``values`` (N, 3) = angle in degrees, tx, ty in pixels."""

    values: torch.Tensor

    def select(self, rows: torch.Tensor) -> SpatialParams:
        return SpatialParams(self.values[rows])

    def place(self, rows: torch.Tensor, n: int) -> SpatialParams:
        full = self.values.new_zeros((n, 3))
        full[rows] = self.values
        return SpatialParams(full)


class Spatial(Threat):
    """Rotate by at most ``max_rotation`` degrees and shift by at most ``max_translation`` pixels.

    A member of the set is ``apply(x, params)`` with per-example ``params`` (N, 3) holding the angle
    in degrees and the horizontal and vertical shifts in pixels. Resampling is bilinear with zero
    (black) padding, through ``affine_grid``/``grid_sample``.

    Args:
        max_rotation: largest rotation, in degrees, either way.
        max_translation: largest shift along each axis, in pixels, either way.
    """

    syntax = "spatial:DEGREES,PIXELS"

    def __init__(self, max_rotation: float, max_translation: float) -> None:
        for label, value in (("max_rotation", max_rotation), ("max_translation", max_translation)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Invalid {label}: {value!r} (must be a finite number >= 0)")
        if max_rotation > 180:
            raise ValueError(f"Invalid max_rotation: {max_rotation!r} (must be <= 180 degrees)")
        self.max_rotation = float(max_rotation)
        self.max_translation = float(max_translation)

    def __str__(self) -> str:
        return f"{self.name}:{fmt(self.max_rotation)},{fmt(self.max_translation)}"

    @classmethod
    def from_text(cls, args: str, where: str) -> Threat:
        pieces = args.split(",")
        if len(pieces) != 2:
            raise ValueError(f"Invalid threat {where!r}: spatial takes 'DEGREES,PIXELS'")
        return cls(number(pieces[0], where), number(pieces[1], where))

    @property
    def is_trivial(self) -> bool:
        return self.max_rotation == 0 and self.max_translation == 0

    @property
    def limits(self) -> tuple[float, float, float]:
        """Bounds on |angle|, |tx|, |ty|."""
        return (self.max_rotation, self.max_translation, self.max_translation)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Rotate and shift each image of ``x`` (N, C, H, W) by its row of ``params`` (N, 3)."""
        if x.dim() != 4:
            raise ValueError(
                f"Spatial threats need images of shape (N, C, H, W), got {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        params = params.to(device=x.device, dtype=x.dtype)
        angle = params[:, 0] * (math.pi / 180.0)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        # affine_grid maps output coordinates to input coordinates in [-1, 1]; the inverse of
        # "rotate by a, then shift by t" is used: positive angles turn the image anticlockwise.
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * h / w
        theta[:, 1, 0] = sin * w / h
        theta[:, 1, 1] = cos
        theta[:, 0, 2] = -2.0 * params[:, 1] / w
        theta[:, 1, 2] = -2.0 * params[:, 2] / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.clamp(0.0, 1.0)

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        """The member ``apply(x, params)``, the parameters clipped to their ranges first."""
        values = require_params(self, params, SpatialParams).values
        lim = torch.tensor(self.limits, device=values.device, dtype=values.dtype)
        return self.apply(x, torch.maximum(torch.minimum(values, lim), -lim)).to(x_adv.dtype)

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ThreatParams | None]:
        """A uniformly random rotation and shift per example, applied to ``x``."""
        values = self.random_params(x.shape[0], generator, device=x.device).to(x.dtype)
        return self.apply(x, values), SpatialParams(values)

    def params_row(self, params: ThreatParams | None, index: int) -> list[float] | None:
        """``[angle, tx, ty]`` of example ``index``."""
        values = require_params(self, params, SpatialParams).values
        return [float(v) for v in values[index].tolist()]

    def largest(
        self, norms: Sequence[float | None], rows: Sequence[list[float] | None]
    ) -> dict[str, float]:
        """The largest |angle| (degrees) and |shift| (pixels) among the reported examples."""
        kept = [r for r in rows if r is not None]
        if not kept:
            return {}
        return {
            "rotation": max(abs(r[0]) for r in kept),
            "translation": max(max(abs(r[1]), abs(r[2])) for r in kept),
        }

    def random_params(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Uniformly random parameters (n, 3) within the limits."""
        u = torch.rand((n, 3), generator=generator, device=device)
        lim = torch.tensor(self.limits, device=device)
        return (2 * u - 1) * lim

    def grid(
        self, rotations: int = 31, translations: int = 5, *, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """All combinations of evenly spaced angles and shifts, (rotations·translations², 3).

        The default 31 × 5 × 5 grid is the one of Engstrom et al. (2019).
        """
        angles = torch.linspace(-self.max_rotation, self.max_rotation, max(rotations, 1))
        shifts = torch.linspace(-self.max_translation, self.max_translation, max(translations, 1))
        if self.max_rotation == 0:
            angles = torch.zeros(1)
        if self.max_translation == 0:
            shifts = torch.zeros(1)
        mesh = torch.cartesian_prod(angles, shifts, shifts).reshape(-1, 3)
        # Put the identity first so that ties keep the clean image.
        ident = (mesh.abs().sum(1) == 0).nonzero().flatten()
        if ident.numel():
            order = torch.cat([ident[:1], torch.arange(mesh.shape[0])[mesh.abs().sum(1) != 0]])
            mesh = mesh[order]
        else:
            mesh = torch.cat([torch.zeros(1, 3), mesh])
        return mesh.to(device)

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: ThreatParams | None = None,
    ) -> torch.Tensor:
        """Membership needs the parameters: ``x_adv == apply(x, params)`` with params in range.

        Without ``params`` only the clean image itself is recognised as a member.
        """
        if params is None:
            return (flat(x_adv) - flat(x)).abs().amax(1) <= atol
        values = require_params(self, params, SpatialParams).values
        if values.shape != (x.shape[0], 3):
            raise ValueError("Spatial.contains needs params of shape (N, 3): angle, tx, ty")
        lim = torch.tensor(self.limits, device=values.device, dtype=values.dtype)
        in_range = (values.abs() <= lim * (1 + atol) + atol).all(1).to(x.device)
        recon = self.apply(x, values)
        close = (flat(recon) - flat(x_adv)).abs().amax(1) <= max(atol, 1e-4)
        return in_range & close & self.in_box(x_adv, atol)
