"""OSNet (Zhou et al., ICCV 2019; TPAMI 2021) with any normalization of the norm factory.

Six architectures, named as in torchreid (KaiyangZhou/deep-person-reid): ``osnet_x1_0``,
``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25`` (widths 1.0 to 0.25), ``osnet_ibn_x1_0``
(InstanceNorm in the stem and after the residual sum of every block of ``conv2``) and
``osnet_ain_x1_0`` (OSNet-AIN: InstanceNorm stem, and "INin" blocks whose last 1x1 convolution is
followed by InstanceNorm instead of BN, inside the residual branch).

Module and parameter names follow torchreid's ``osnet.py`` / ``osnet_ain.py`` exactly, so
``state_dict()`` keys and shapes equal torchreid's for the same architecture, its ImageNet
classifier ``classifier.*`` aside. The two torchreid files use different layouts:

* ``osnet.py`` (x1_0 ... x0_25, ibn): the four streams of a block are ``conv2a`` ... ``conv2d``;
  the transition (1x1 conv + 2x2 average pool) closes ``conv2`` and ``conv3`` as their last
  element (``conv2.2.0.conv.weight``); an IBN block has ``IN`` after the residual sum.
* ``osnet_ain.py``: the streams are ``conv2.<t>.layers.<i>`` (a ModuleList); the transitions are
  separate modules ``pool2`` and ``pool3``; an INin block has ``conv3.conv`` without BN and
  ``IN`` inside the residual branch.

torchreid's ``fc`` (Linear 512 + BatchNorm1d + ReLU after global average pooling) belongs to its
backbone and keeps its name here (``fc.0.*``, ``fc.1.*``): with ``feature_dim=512`` the forward
returns the fc output as an (N, 512, 1, 1) map, so every head of this toolkit (which pools the
map) sees torchreid's test feature. ``feature_dim=0`` leaves fc out; the forward then returns the
conv5 map (N, C, H/16, W/16) and the state_dict has no ``fc.*`` keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reid_pbn.layers import get_norm

__all__ = ["OSNET_ARCHS", "OSNET_STAGES", "OSNet", "build_osnet", "resolve_stages"]

#: Stages of OSNet, as used by ``norm_stages`` and the mixing-layer positions. ``conv1`` ends
#: with the max pool; ``conv2`` and ``conv3`` end with their transition (1x1 conv + avg pool).
OSNET_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")

#: ResNet stage names accepted for OSNet's stages: the published MixStyle/EFDMix code puts its
#: layers after ResNet's layer1-2 and after OSNet's conv2-3, the same positions by this map, so
#: one ``PBN.STAGES`` / ``MIX.STAGES`` value serves both backbones.
_RESNET_ALIASES = {"stem": "conv1", "layer1": "conv2", "layer2": "conv3", "layer3": "conv4",
                   "layer4": "conv5"}

NormLayer = Callable[[int], nn.Module]


class _Arch(NamedTuple):
    channels: tuple[int, int, int, int]
    variant: str  # "plain", "ibn" or "ain"


#: The architectures by torchreid name: stage widths and block variant.
OSNET_ARCHS: dict[str, _Arch] = {
    "osnet_x1_0": _Arch((64, 256, 384, 512), "plain"),
    "osnet_x0_75": _Arch((48, 192, 288, 384), "plain"),
    "osnet_x0_5": _Arch((32, 128, 192, 256), "plain"),
    "osnet_x0_25": _Arch((16, 64, 96, 128), "plain"),
    "osnet_ibn_x1_0": _Arch((64, 256, 384, 512), "ibn"),
    "osnet_ain_x1_0": _Arch((64, 256, 384, 512), "ain"),
}

# OSNet-AIN's block kinds per stage (True: INin block), as torchreid's osnet_ain_x1_0.
_AIN_BLOCKS = ((True, True), (False, True), (True, False))


def resolve_stages(stages: Sequence[str] | None) -> tuple[str, ...]:
    """OSNet stage names for ``stages`` (its own names or ResNet's aliases); None gives all.

    Args:
        stages: stage names of ``OSNET_STAGES`` or ResNet's ``stem``, ``layer1``-``layer4``.

    Returns:
        The OSNet stage names.

    Raises:
        ValueError: for a name that is neither.
    """
    if stages is None:
        return OSNET_STAGES
    resolved = tuple(_RESNET_ALIASES.get(s, s) for s in stages)
    unknown = sorted(set(resolved) - set(OSNET_STAGES))
    if unknown:
        raise ValueError(f"Unknown OSNet stages {unknown}; valid stages: {OSNET_STAGES} "
                         f"(or ResNet's {tuple(_RESNET_ALIASES)})")
    return resolved


class ConvLayer(nn.Module):
    """Convolution, norm, ReLU (torchreid's ConvLayer / Conv1x1 / Conv1x1Linear: ``conv``, ``bn``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution size.
        norm_layer: builds the norm for a channel count; None leaves the norm out (``bn=False``
            of torchreid's Conv1x1Linear).
        stride: convolution stride.
        padding: convolution padding.
        relu: end with a ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 norm_layer: NormLayer | None, *, stride: int = 1, padding: int = 0,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = norm_layer(out_channels) if norm_layer is not None else None
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x) if self.relu is not None else x


class LightConv3x3(nn.Module):
    """1x1 linear convolution, depth-wise 3x3 convolution, norm, ReLU.

    Args:
        channels: input and output channels.
        norm_layer: builds the norm for a channel count.
    """

    def __init__(self, channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=channels)
        self.bn = norm_layer(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """The unified aggregation gate: a sigmoid channel gate from the pooled input (``fc1``,
    ``fc2`` are 1x1 convolutions with bias, reduction 16).

    Args:
        channels: channels of the gated map.
        reduction: bottleneck reduction of the gate.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class _Stream(nn.Module):
    """osnet_ain.py's LightConvStream: ``depth`` LightConv3x3 under ``layers``."""

    def __init__(self, channels: int, depth: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(LightConv3x3(channels, norm_layer) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1-4 lightweight 3x3 convolutions, one
    shared channel gate, a 1x1 expansion and a residual sum.

    Args:
        in_channels: input channels.
        out_channels: output channels (the streams have ``out_channels // 4``).
        norm_layer: builds the norms.
        layout: "osnet" (streams ``conv2a``-``conv2d``) or "ain" (streams ``conv2.<t>``), the
            key layouts of torchreid's two files.
        instance_norm: None; "out" (IBN: affine InstanceNorm ``IN`` after the residual sum) or
            "in" (AIN's INin: ``conv3`` without norm, then ``IN`` inside the residual branch).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer, *,
                 layout: str = "osnet", instance_norm: str | None = None) -> None:
        super().__init__()
        mid = out_channels // 4
        self.layout = layout
        self.instance_norm = instance_norm
        self.conv1 = ConvLayer(in_channels, mid, 1, norm_layer)
        if layout == "osnet":
            self.conv2a = LightConv3x3(mid, norm_layer)
            for name, depth in (("conv2b", 2), ("conv2c", 3), ("conv2d", 4)):
                self.add_module(name, nn.Sequential(
                    *(LightConv3x3(mid, norm_layer) for _ in range(depth))))
        else:
            self.conv2 = nn.ModuleList(_Stream(mid, t, norm_layer) for t in range(1, 5))
        self.gate = ChannelGate(mid)
        inside = instance_norm == "in"
        self.conv3 = ConvLayer(mid, out_channels, 1, None if inside else norm_layer, relu=False)
        self.downsample = (ConvLayer(in_channels, out_channels, 1, norm_layer, relu=False)
                           if in_channels != out_channels else None)
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if instance_norm else None

    def _streams(self) -> list[nn.Module]:
        if self.layout == "osnet":
            return [self.conv2a, self.conv2b, self.conv2c, self.conv2d]
        return list(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = sum(self.gate(stream(x1)) for stream in self._streams())
        x3 = self.conv3(x2)
        if self.instance_norm == "in":
            x3 = self.IN(x3)
        identity = x if self.downsample is None else self.downsample(x)
        out = x3 + identity
        if self.instance_norm == "out":
            out = self.IN(out)
        return torch.relu(out)


def _transition(channels: int, norm_layer: NormLayer) -> nn.Sequential:
    return nn.Sequential(ConvLayer(channels, channels, 1, norm_layer), nn.AvgPool2d(2, stride=2))


class OSNet(nn.Module):
    """OSNet body (stem, three omni-scale stages, conv5) and, optionally, torchreid's fc.

    Args:
        arch: a name of ``OSNET_ARCHS``.
        norm: normalization of the stages in ``norm_stages``: a ``get_norm`` name or a
            callable ``(num_channels, **kw) -> nn.Module``. InstanceNorms of the IBN / AIN
            variants stay InstanceNorms, fc's BatchNorm1d stays BatchNorm1d.
        norm_stages: stages (``OSNET_STAGES`` or ResNet aliases) whose norms are ``norm``; the
            others use plain BN. None means every stage.
        feature_dim: width of torchreid's fc (Linear + BatchNorm1d + ReLU after global average
            pooling); the forward then returns (N, feature_dim, 1, 1). 0 leaves fc out and
            returns the conv5 map.
        mixers: modules applied to the output of a stage (e.g. MixStyle after ``conv2``), by
            stage name; they must not hold parameters or buffers, so keys stay torchreid's.
        **norm_kwargs: passed to ``norm`` (not to the plain-BN stages).

    Attributes:
        out_channels: channels of the returned map (feature_dim, or the conv5 width).
    """

    def __init__(self, arch: str = "osnet_x1_0", *, norm: str | Callable[..., nn.Module] = "BN",
                 norm_stages: Sequence[str] | None = None, feature_dim: int = 512,
                 mixers: Mapping[str, nn.Module] | None = None, **norm_kwargs) -> None:
        super().__init__()
        if arch not in OSNET_ARCHS:
            raise ValueError(f"Unknown OSNet architecture '{arch}'; choose one of "
                             f"{sorted(OSNET_ARCHS)}")
        if feature_dim < 0:
            raise ValueError(f"feature_dim must be >= 0, got {feature_dim}")
        self.arch = arch
        c0, c1, c2, c3 = OSNET_ARCHS[arch].channels
        variant = OSNET_ARCHS[arch].variant
        chosen_stages = resolve_stages(norm_stages)
        chosen = functools.partial(get_norm, norm, **norm_kwargs)
        plain = functools.partial(get_norm, "BN")

        def stage_norm(stage: str) -> NormLayer:
            return chosen if stage in chosen_stages else plain

        stem_norm = ((lambda c: nn.InstanceNorm2d(c, affine=True)) if variant != "plain"
                     else stage_norm("conv1"))
        self.conv1 = ConvLayer(3, c0, 7, stem_norm, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = ((c0, c1), (c1, c2), (c2, c3))
        for i, (cin, cout) in enumerate(widths):
            name = f"conv{i + 2}"
            nl = stage_norm(name)
            if variant == "ain":
                blocks = [OSBlock(cin if j == 0 else cout, cout, nl, layout="ain",
                                  instance_norm="in" if inin else None)
                          for j, inin in enumerate(_AIN_BLOCKS[i])]
            else:
                ibn = "out" if variant == "ibn" and i == 0 else None
                blocks = [OSBlock(cin if j == 0 else cout, cout, nl, instance_norm=ibn)
                          for j in range(2)]
            if i < 2 and variant != "ain":
                blocks.append(_transition(cout, nl))
            self.add_module(name, nn.Sequential(*blocks))
            if i < 2 and variant == "ain":
                self.add_module(f"pool{i + 2}", _transition(cout, nl))
        self.conv5 = ConvLayer(c3, c3, 1, stage_norm("conv5"))
        self.fc = None
        if feature_dim > 0:
            self.fc = nn.Sequential(nn.Linear(c3, feature_dim), nn.BatchNorm1d(feature_dim),
                                    nn.ReLU(inplace=True))
        self.out_channels = feature_dim if feature_dim > 0 else c3
        self.mixers = nn.ModuleDict(
            {resolve_stages([stage])[0]: m for stage, m in (mixers or {}).items()})
        self._init_params()

    def _init_params(self) -> None:
        # torchreid's initialization (what its ImageNet training started from).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, name)(x)
        pool = getattr(self, f"pool{name[-1]}", None)
        if pool is not None:
            x = pool(x)
        if name in self.mixers:
            x = self.mixers[name](x)
        return x

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        """The conv5 map, as torchreid's ``featuremaps``.

        Args:
            x: images (N, 3, H, W).

        Returns:
            (N, C, H / 16, W / 16) (rounded as the pools round).
        """
        x = self.maxpool(self.conv1(x))
        if "conv1" in self.mixers:
            x = self.mixers["conv1"](x)
        for name in ("conv2", "conv3", "conv4", "conv5"):
            x = self._stage(name, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output map.

        Args:
            x: images (N, 3, H, W).

        Returns:
            With fc: its output (N, feature_dim, 1, 1) (torchreid's test feature); without:
            the conv5 map.
        """
        x = self.featuremaps(x)
        if self.fc is None:
            return x
        v = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return v[:, :, None, None]


def build_osnet(arch: str = "osnet_x1_0", *, norm: str | Callable[..., nn.Module] = "BN",
                norm_stages: Sequence[str] | None = None, feature_dim: int = 512,
                mixers: Mapping[str, nn.Module] | None = None, **norm_kwargs) -> OSNet:
    """Build an OSNet whose state_dict follows torchreid's key layout for ``arch``.

    Args:
        arch: "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0" or
            "osnet_ain_x1_0".
        norm: normalization, a ``get_norm`` name ("BN", "PBN", "DSBN", ...) or a callable.
        norm_stages: stages that use ``norm`` (others plain BN); None means all.
        feature_dim: width of torchreid's fc layer; 0 returns the conv5 map instead.
        mixers: parameter-free modules applied after the named stages (MixStyle, EFDMix).
        **norm_kwargs: keyword arguments of ``norm``.

    Returns:
        The ``OSNet`` module.
    """
    return OSNet(arch, norm=norm, norm_stages=norm_stages, feature_dim=feature_dim,
                 mixers=mixers, **norm_kwargs)
