"""ResNet-18/34/50/101 with IBN-a / IBN-b options and any normalization of the norm factory.

Module and parameter names follow torchvision's ``ResNet`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``/``.1``, ...) and, for the IBN variants, IBN-Net's
published checkpoints (``bn1.IN.*``/``bn1.BN.*`` for IBN-a, ``layerX.Y.IN.*`` for IBN-b), so both
load with ``strict=True``. The classifier (``avgpool``/``fc``) is left out: re-ID heads pool
the last feature map themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from reid_pbn.layers import IBN, get_norm

__all__ = ["STAGES", "BasicBlock", "Bottleneck", "ResNet", "build_resnet"]

#: Names of the backbone stages, as used by ``norm_stages`` and ``MODEL.BACKBONE.PBN.STAGES``.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")

NormLayer = Callable[[int], nn.Module]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first 3x3 convolution.
        downsample: projection of the identity path, or None.
        norm_layer: builds the normalization for a channel count.
        ibn_a: make ``bn1`` an IBN-a layer (InstanceNorm on half of the channels).
        instance_norm_out: apply an affine InstanceNorm (``IN``) after the residual sum, as
            IBN-b does in the last block of layer1 and layer2.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        norm_layer: NormLayer,
        ibn_a: bool = False,
        instance_norm_out: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = IBN(planes, norm=norm_layer) if ibn_a else norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.IN = nn.InstanceNorm2d(planes, affine=True) if instance_norm_out else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class Bottleneck(nn.Module):
    """The 1x1-3x3-1x1 residual block of ResNet-50/101 (stride on the 3x3, as torchvision).

    Args:
        inplanes: input channels.
        planes: width of the block; the output has ``planes * 4`` channels.
        stride: stride of the 3x3 convolution.
        downsample: projection of the identity path, or None.
        norm_layer: builds the normalization for a channel count.
        ibn_a: make ``bn1`` an IBN-a layer (InstanceNorm on half of the channels).
        instance_norm_out: apply an affine InstanceNorm (``IN``) after the residual sum, as
            IBN-b does in the last block of layer1 and layer2.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        norm_layer: NormLayer,
        ibn_a: bool = False,
        instance_norm_out: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = IBN(planes, norm=norm_layer) if ibn_a else norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.IN = (
            nn.InstanceNorm2d(planes * self.expansion, affine=True) if instance_norm_out else None
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + identity
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


_ARCHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet body (stem and four stages) returning the last feature map.

    Args:
        depth: 18, 34, 50 or 101.
        norm: normalization of the stages listed in ``norm_stages``: a name of
            ``reid_pbn.layers.get_norm`` or a callable ``(num_channels, **kw) -> nn.Module``.
        ibn: None (plain ResNet), "a" (IBN-a: ``bn1`` of every block of layer1-3 is an IBN
            layer) or "b" (IBN-b: InstanceNorm stem, InstanceNorm after the residual sum of the
            last block of layer1 and layer2).
        last_stride: stride of layer4 (1 doubles the final map's size, the re-ID default).
        norm_stages: stages (of ``STAGES``) whose norms are ``norm``; the others use plain BN.
            None means every stage. A block's downsample norm follows its stage.
        mixers: modules applied to the output of a stage (of ``STAGES``; "stem" is after the
            max pool), e.g. MixStyle after layer1; they must hold no parameters or buffers, so
            the key layout stays torchvision's.
        **norm_kwargs: passed to ``norm`` (not to the plain-BN stages).

    Attributes:
        out_channels: channels of the returned feature map (512 or 2048).
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        norm: str | Callable[..., nn.Module] = "BN",
        ibn: str | None = None,
        last_stride: int = 1,
        norm_stages: Sequence[str] | None = None,
        mixers: Mapping[str, nn.Module] | None = None,
        **norm_kwargs,
    ) -> None:
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(_ARCHS)}")
        ibn = ibn.lower() if ibn else None
        if ibn not in (None, "a", "b"):
            raise ValueError(f"ibn must be None, 'a' or 'b', got {ibn!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        stages = STAGES if norm_stages is None else tuple(norm_stages)
        mixers = dict(mixers or {})
        unknown = sorted((set(stages) | set(mixers)) - set(STAGES))
        if unknown:
            raise ValueError(f"Unknown backbone stages {unknown}; valid stages: {STAGES}")

        block, layers = _ARCHS[depth]
        self.depth = depth
        self.ibn = ibn
        chosen = functools.partial(get_norm, norm, **norm_kwargs)
        plain = functools.partial(get_norm, "BN")

        def stage_norm(stage: str) -> NormLayer:
            return chosen if stage in stages else plain

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.InstanceNorm2d(64, affine=True) if ibn == "b" else stage_norm("stem")(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 2, last_stride)
        for i, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), layers, strides)):
            name = f"layer{i + 1}"
            layer = self._make_layer(
                block,
                planes,
                blocks,
                stride,
                norm_layer=stage_norm(name),
                ibn_a=ibn == "a" and i < 3,
                ibn_b=ibn == "b" and i < 2,
            )
            self.add_module(name, layer)
        self.out_channels = 512 * block.expansion
        self.mixers = nn.ModuleDict(mixers)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init with fan_out, as torchvision and IBN-Net initialize their convolutions.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self,
        block: type[nn.Module],
        planes: int,
        blocks: int,
        stride: int,
        *,
        norm_layer: NormLayer,
        ibn_a: bool,
        ibn_b: bool,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        layers = []
        for j in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if j == 0 else 1,
                    downsample if j == 0 else None,
                    norm_layer=norm_layer,
                    ibn_a=ibn_a,
                    # IBN-Net puts IN only after the last block of an IBN-b stage.
                    instance_norm_out=ibn_b and j == blocks - 1 and j > 0,
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the last feature map.

        Args:
            x: images (N, 3, H, W).

        Returns:
            Features (N, out_channels, H', W'), with H' = H / 16 for last_stride 1, H / 32 for 2.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in STAGES:
            if stage != "stem":
                x = getattr(self, stage)(x)
            if stage in self.mixers:
                x = self.mixers[stage](x)
        return x


def build_resnet(
    depth: int = 50,
    *,
    norm: str | Callable[..., nn.Module] = "BN",
    ibn: str | None = None,
    last_stride: int = 1,
    norm_stages: Sequence[str] | None = None,
    mixers: Mapping[str, nn.Module] | None = None,
    **norm_kwargs,
) -> ResNet:
    """Build a ResNet body whose state_dict follows torchvision's / IBN-Net's key layout.

    Args:
        depth: 18, 34, 50 or 101.
        norm: normalization, a name of ``reid_pbn.layers.get_norm`` ("BN", "PBN", "DSBN", ...)
            or a callable ``(num_channels, **kw) -> nn.Module``.
        ibn: None (or ""), "a" or "b" for IBN-Net's IBN-a / IBN-b layouts.
        last_stride: stride of layer4; 2 gives torchvision's ResNet body exactly.
        norm_stages: stages of ``STAGES`` that use ``norm``; the others use plain BN (the PBN
            STAGES option). None means all stages.
        mixers: parameter-free modules applied after the named stages (MixStyle, EFDMix).
        **norm_kwargs: keyword arguments of ``norm``.

    Returns:
        The ``ResNet`` module; ``forward`` maps (N, 3, H, W) to (N, out_channels, H', W').
    """
    return ResNet(
        depth,
        norm=norm,
        ibn=ibn,
        last_stride=last_stride,
        norm_stages=norm_stages,
        mixers=mixers,
        **norm_kwargs,
    )
