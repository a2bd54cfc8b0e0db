"""ResNet backbones written out with DECA's state-dict key names (torchvision is not usable here).

DECA's ``E_flame`` (``decalib/models/encoders.py`` + ``resnet.py``) is ``ResnetEncoder``: an attribute
``encoder`` holding a ResNet-50 whose classification ``fc`` is *dropped* (no ``encoder.fc.*`` keys) and whose
7×7 average pool has no parameters, followed by ``layers = Sequential(Linear(2048, 1024), ReLU, Linear(1024,
out))``. Keys therefore read ``encoder.conv1.weight``, ``encoder.bn1.{weight,bias,running_mean,running_var,
num_batches_tracked}``, ``encoder.layer{1..4}.{i}.{conv,bn}{1,2,3}.*``, ``encoder.layer{1..4}.0.downsample.
{0,1}.*`` and ``layers.{0,2}.{weight,bias}``. :class:`ResNet` reproduces that module tree exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 bottleneck, expansion 4; residual through ``downsample`` when shapes change."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34 block), expansion 1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without the classifier: (B, 3, H, W) → (B, C) globally average-pooled features.

    Args:
        block: :class:`Bottleneck` or :class:`BasicBlock`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        widths: planes per stage (ResNet: 64, 128, 256, 512); ``stem`` = channels of the 7×7 stem.

    DECA pools with ``AvgPool2d(7)``, which only gives a vector for 224×224 inputs; this module uses a global
    mean, identical at 224 and defined at other sizes (callers validate the input size).
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...] = (3, 4, 6, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512), stem: int = 64):
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (n_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, n_blocks, 1 if i == 0 else 2))
        self.num_stages = len(layers)
        self.feature_size = self.inplanes

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


def resnet50() -> ResNet:
    """DECA's backbone: bottleneck 3-4-6-3, 2048-d features."""
    return ResNet(Bottleneck, (3, 4, 6, 3))


class ResnetRegressor(nn.Module):
    """DECA's ``ResnetEncoder``: ``encoder`` (ResNet-50) → ``layers`` (Linear 2048→1024, ReLU, Linear →out).

    (B, 3, 224, 224) → (B, out_dim).
    """

    def __init__(self, out_dim: int):
        super().__init__()
        self.encoder = resnet50()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, out_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))


@torch.no_grad()
def deterministic_init(module: nn.Module, seed: int, last_gain: float = 1.0) -> None:
    """Initialise every conv/linear/BN of ``module`` from ``seed`` alone (order = module registration order).

    Convs: He normal (fan-out, as DECA's ResNet); linears: uniform ±1/sqrt(fan_in); BN: weight 1, bias 0,
    running mean 0 / var 1. The last Linear is scaled by ``last_gain``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            gain = last_gain if linears and m is linears[-1] else 1.0
            m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound * gain)
            m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * bound * gain)
