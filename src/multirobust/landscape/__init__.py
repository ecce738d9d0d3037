"""Loss landscapes in input and weight space, and the masking evidence they give.

Input space (:func:`input_surface`, :func:`input_slice`): the loss and the predicted class on a
plane through an example spanned by the threat's steepest-ascent direction and a random
orthogonal one, both scaled to the threat's ball; and the loss along the line to an adversarial
example. Weight space (:func:`weight_surface`): the loss around the trained weights along the
filter-normalised random directions of Li et al. (2018). Masking evidence
(:func:`masking_evidence`, :func:`landscape_check`): grid points inside the ball that the attacks
missed, and a roughness score per example. Trap models (:mod:`.traps`) mask gradients on purpose.

    from multirobust import landscape, models

    model = models.load("zoo/standard.pt")
    surface = landscape.input_surface(model, x[:8], y[:8], "linf:0.3", points=51)
    evidence = landscape.masking_evidence(model, surface, attack_loss=loss_reached)
    curve = landscape.weight_surface(model, (x, y), dims=1)
"""

from .html import LandscapeFigure, build_figures, evidence_table, render_section
from .input_space import InputSlice, InputSurface, input_slice, input_surface
from .masking import (
    CHECK_NAME,
    ExampleEvidence,
    MaskingEvidence,
    landscape_check,
    masking_evidence,
)
from .plane import SOURCES, Plane, ascent_plane, finite_difference_gradient
from .run import LandscapeReport, ThreatLandscape, run_landscapes
from .storage import load_npz, save_npz
from .traps import TRAPS, GaussianNoise, GradientBlock, QuantisedInput, SaturatedLogits, make_trap
from .weight_space import WeightSurface, filter_normalised_direction, weight_surface

__all__ = [
    "CHECK_NAME",
    "SOURCES",
    "TRAPS",
    "ExampleEvidence",
    "GaussianNoise",
    "GradientBlock",
    "InputSlice",
    "LandscapeFigure",
    "LandscapeReport",
    "InputSurface",
    "MaskingEvidence",
    "Plane",
    "QuantisedInput",
    "SaturatedLogits",
    "ThreatLandscape",
    "WeightSurface",
    "ascent_plane",
    "build_figures",
    "evidence_table",
    "filter_normalised_direction",
    "finite_difference_gradient",
    "input_slice",
    "input_surface",
    "landscape_check",
    "load_npz",
    "make_trap",
    "masking_evidence",
    "render_section",
    "run_landscapes",
    "save_npz",
    "weight_surface",
]
