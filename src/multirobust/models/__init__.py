"""Image-classifier architectures taking raw ``[0, 1]`` images, and safe checkpoints.

Every model starts with a :class:`Normalize` layer (the dataset's mean/std standardisation
lives inside the network) and returns logits. Build models by name with :func:`create` (or
:func:`for_dataset`), save them with :func:`save` and rebuild them with :func:`load`::

    from multirobust import models

    net = models.create("small_cnn", mean=[0.1307], std=[0.3081], activation="softplus")
    models.save(net, "runs/mnist.pt", dataset="mnist", metadata={"epochs": 1})
    net2 = models.load("runs/mnist.pt")  # eval mode, torch.load(weights_only=True) only

Your own architecture: ``from_factory("package.module:factory", kwargs)`` builds it and
``load_weights(model, "weights.safetensors")`` (or a ``torch.save``'d state dict) fills it.

Architectures: ``small_cnn`` (fast MNIST CNN), ``madry_cnn`` (Madry et al., ICLR 2018),
``preact_resnet18`` (He et al., ECCV 2016), ``wide_resnet`` (Zagoruyko & Komodakis, BMVC
2016). Activations: relu, softplus, silu/swish, gelu (Xie et al., "Smooth Adversarial
Training", 2020).
"""

from __future__ import annotations

from .activations import activations, make_activation
from .architectures import ImageClassifier
from .checkpoint import (
    FORMAT,
    SAFETENSORS_SUFFIX,
    VERSION,
    CheckpointError,
    load,
    read_checkpoint,
    save,
    unwrap,
)
from .external import ModelSourceError, from_factory, load_weights, read_weights
from .normalize import Normalize
from .registry import create, for_dataset, names
from .state import attack_mode, model_state

__all__ = [
    "FORMAT",
    "SAFETENSORS_SUFFIX",
    "VERSION",
    "CheckpointError",
    "ImageClassifier",
    "ModelSourceError",
    "Normalize",
    "activations",
    "attack_mode",
    "create",
    "for_dataset",
    "from_factory",
    "load",
    "load_weights",
    "make_activation",
    "model_state",
    "names",
    "read_checkpoint",
    "read_weights",
    "save",
    "unwrap",
]
