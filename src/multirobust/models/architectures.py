"""Image-classifier architectures, each an :class:`ImageClassifier` beginning with Normalize.

Every network here takes raw images in ``[0, 1]`` of shape ``(N, C, H, W)`` and returns
logits of shape ``(N, num_classes)`` (never probabilities). The builders assume validated
arguments; :func:`multirobust.models.create` does the validation and is the public entry point.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .activations import make_activation
from .normalize import Normalize

__all__ = [
    "ImageClassifier",
    "PreActBlock",
    "WideBasicBlock",
    "madry_cnn",
    "preact_resnet18",
    "small_cnn",
    "wide_resnet",
]


class ImageClassifier(nn.Sequential):
    """A classifier built as a named sequence of layers, the first one being ``normalize``.

    All architectures of :mod:`multirobust.models` are sequential at the top level, so
    ``model[0]`` (or ``model.normalize``) is the :class:`Normalize` layer and ``model[-1]``
    the final linear layer producing logits.
    """


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial size after a convolution or pooling layer."""
    return (size + 2 * padding - kernel) // stride + 1


def small_cnn(
    num_classes: int,
    in_channels: int,
    input_size: int,
    activation: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ImageClassifier:
    """A small, fast CNN for MNIST-sized images (28x28 or 32x32).

    Layout: conv 5x5/2 (16) - conv 3x3/2 (32) - conv 3x3/1 (64) - fc 128 - fc ``num_classes``,
    each hidden layer followed by the activation. Downsampling early keeps it cheap: a
    forward+backward pass on 1000 MNIST images takes tens of milliseconds on two CPU cores.

    Args:
        num_classes: Number of output logits.
        in_channels: Image channels.
        input_size: Height (= width) of the images.
        activation: Activation name (see :func:`multirobust.models.activations`).
        mean: Per-channel mean for the Normalize layer, or ``None``.
        std: Per-channel std for the Normalize layer, or ``None``.

    Returns:
        The network.
    """
    size = _conv_out(_conv_out(input_size, 5, 2, 2), 3, 2, 1)  # third conv keeps the size
    return ImageClassifier(
        OrderedDict(
            normalize=Normalize(mean, std),
            conv1=nn.Conv2d(in_channels, 16, 5, stride=2, padding=2),
            act1=make_activation(activation),
            conv2=nn.Conv2d(16, 32, 3, stride=2, padding=1),
            act2=make_activation(activation),
            conv3=nn.Conv2d(32, 64, 3, stride=1, padding=1),
            act3=make_activation(activation),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * size * size, 128),
            act4=make_activation(activation),
            fc2=nn.Linear(128, num_classes),
        )
    )


def madry_cnn(
    num_classes: int,
    in_channels: int,
    input_size: int,
    activation: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ImageClassifier:
    """The MNIST network of Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018 (arXiv:1706.06083).

    Layout: conv 5x5 (32, padding 2) - maxpool 2 - conv 5x5 (64, padding 2) - maxpool 2 -
    fc 1024 - fc ``num_classes``, each hidden layer followed by the activation.

    Args:
        num_classes: Number of output logits.
        in_channels: Image channels.
        input_size: Height (= width) of the images.
        activation: Activation name (see :func:`multirobust.models.activations`).
        mean: Per-channel mean for the Normalize layer, or ``None``.
        std: Per-channel std for the Normalize layer, or ``None``.

    Returns:
        The network.
    """
    size = (input_size // 2) // 2
    return ImageClassifier(
        OrderedDict(
            normalize=Normalize(mean, std),
            conv1=nn.Conv2d(in_channels, 32, 5, padding=2),
            act1=make_activation(activation),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, 5, padding=2),
            act2=make_activation(activation),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * size * size, 1024),
            act3=make_activation(activation),
            fc2=nn.Linear(1024, num_classes),
        )
    )


def _init_resnet(model: nn.Module) -> None:
    """He-normal convolutions, unit batch-norm scales, zero biases."""
    if any(p.is_meta for p in model.parameters()):
        return  # shape-only model (checkpoint validation): initialising is pointless and slow
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-act-conv3x3-BN-act-conv3x3 plus a shortcut.

    He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027).
    When the shape changes, the shortcut is a strided 1x1 convolution of the pre-activated input.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the shortcut).
        activation: Activation name.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = make_activation(activation)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(N, in_planes, H, W)``."""
        out = self.act1(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + residual


def preact_resnet18(
    num_classes: int,
    in_channels: int,
    input_size: int,
    activation: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ImageClassifier:
    """Pre-activation ResNet-18 for CIFAR-sized images.

    He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027).
    3x3 stem with 64 channels, four stages of two :class:`PreActBlock` each (64, 128, 256,
    512 channels; strides 1, 2, 2, 2), final BN-act, global average pooling, linear layer.
    Adaptive pooling makes it work on 28x28 inputs as well as 32x32.

    Args:
        num_classes: Number of output logits.
        in_channels: Image channels.
        input_size: Height (= width) of the images (only validated; pooling is adaptive).
        activation: Activation name (see :func:`multirobust.models.activations`).
        mean: Per-channel mean for the Normalize layer, or ``None``.
        std: Per-channel std for the Normalize layer, or ``None``.

    Returns:
        The network.
    """
    del input_size  # global pooling adapts to any size
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        normalize=Normalize(mean, std),
        conv1=nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
    )
    in_planes = 64
    for stage, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
        blocks = [
            PreActBlock(in_planes, planes, stride, activation),
            PreActBlock(planes, planes, 1, activation),
        ]
        layers[f"layer{stage}"] = nn.Sequential(*blocks)
        in_planes = planes
    layers["bn"] = nn.BatchNorm2d(in_planes)
    layers["act"] = make_activation(activation)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_planes, num_classes)
    model = ImageClassifier(layers)
    _init_resnet(model)
    return model


class WideBasicBlock(nn.Module):
    """Wide-ResNet basic block: BN-act-conv3x3-BN-act-(dropout)-conv3x3 plus a shortcut.

    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146).
    When the shape changes, the shortcut is a strided 1x1 convolution of the pre-activated input.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the shortcut).
        dropout: Dropout probability between the two convolutions.
        activation: Activation name.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, dropout: float, activation: str
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = make_activation(activation)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(N, in_planes, H, W)``."""
        out = self.act1(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return out + residual


def wide_resnet(
    num_classes: int,
    in_channels: int,
    input_size: int,
    activation: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> ImageClassifier:
    """WideResNet-``depth``-``widen_factor`` for CIFAR-sized images.

    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146).
    3x3 stem with 16 channels, three groups of ``(depth - 4) / 6`` :class:`WideBasicBlock`
    each (``16k``, ``32k``, ``64k`` channels for ``k = widen_factor``; strides 1, 2, 2),
    final BN-act, global average pooling, linear layer.

    Args:
        num_classes: Number of output logits.
        in_channels: Image channels.
        input_size: Height (= width) of the images (only validated; pooling is adaptive).
        activation: Activation name (see :func:`multirobust.models.activations`).
        mean: Per-channel mean for the Normalize layer, or ``None``.
        std: Per-channel std for the Normalize layer, or ``None``.
        depth: Total depth, with ``(depth - 4) % 6 == 0``.
        widen_factor: Width multiplier ``k``.
        dropout: Dropout probability inside each block.

    Returns:
        The network.
    """
    del input_size  # global pooling adapts to any size
    n = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        normalize=Normalize(mean, std),
        conv1=nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False),
    )
    in_planes = 16
    for group, (planes, stride) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
        blocks = []
        for i in range(n):
            blocks.append(
                WideBasicBlock(in_planes, planes, stride if i == 0 else 1, dropout, activation)
            )
            in_planes = planes
        layers[f"block{group}"] = nn.Sequential(*blocks)
    layers["bn"] = nn.BatchNorm2d(in_planes)
    layers["act"] = make_activation(activation)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_planes, num_classes)
    model = ImageClassifier(layers)
    _init_resnet(model)
    return model
