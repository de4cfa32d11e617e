"""Meta-architectures: how backbone, head and losses make a model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..layers import MIX_LAYERS, DSBN2d, set_domains, set_mix_domains
from ..utils.registry import Registry
from .backbones import build_backbone
from .bne import BatchNormEmbedding
from .heads import build_head
from .losses import build_losses

__all__ = ["META_ARCH_REGISTRY", "Baseline"]

META_ARCH_REGISTRY = Registry("meta-architecture")
META_ARCH_REGISTRY.__doc__ = """Meta-architectures, by ``MODEL.META_ARCHITECTURE``.

A registered object is an ``nn.Module`` class with a classmethod
``from_config(cfg, num_classes, num_domains=1)``, attributes ``backbone`` and ``heads`` and a
``device`` property. In training its ``forward(batch)`` takes the data loader's batch dict and
returns a dict of named scalar losses; in eval it takes images (N, 3, H, W) or a batch dict and
returns features (N, D).
"""


@META_ARCH_REGISTRY.register()
class Baseline(nn.Module):
    """Backbone + embedding head + losses (the bag-of-tricks strong baseline).

    Images arrive normalized (the data pipeline applies INPUT.PIXEL_MEAN/STD), so the model
    does no pixel normalization of its own.

    With domain-specific norms (``DSBN2d``), training routes every sample through its own
    domain (``batch["domains"]``), or, with several domains and ``bne_train``, through every
    domain path combined by Batch Normalization Embeddings (``BatchNormEmbedding``); in eval, a
    single-domain model uses its one path and a multi-domain model combines its domain paths
    with BNE weights (kept in ``last_domain_weights``, (N, D), after every eval forward).

    Args:
        backbone: maps (N, 3, H, W) to (N, C, H', W').
        heads: maps the feature map to the head's outputs (see ``HEAD_REGISTRY``).
        losses: loss modules (see ``LOSS_REGISTRY``), each with a ``key``.
        bne: keyword arguments of ``BatchNormEmbedding`` (layers, weighting, temperature,
            combine), used when the model has DSBN layers with several domains.
        bne_train: use the BNE mapping in training too (the paper's choice); else each
            sample trains only its own domain path.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: nn.Module,
        losses: Iterable[nn.Module],
        *,
        bne: Mapping | None = None,
        bne_train: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.losses = nn.ModuleList(losses)
        domain_norms = [m for m in self.modules() if isinstance(m, DSBN2d)]
        # Domain-specific norms need each sample's domain (training) or BNE (eval).
        self._has_domain_norms = bool(domain_norms)
        # MixStyle / EFDMix in "crossdomain" mode pick partners by the batch's domain labels.
        self._has_mixers = any(isinstance(m, tuple(MIX_LAYERS.values())) for m in self.modules())
        self.num_domains = max((m.num_domains for m in domain_norms), default=1)
        self._bne = BatchNormEmbedding(self, **(bne or {})) if self.num_domains > 1 else None
        self.bne_train = bne_train
        self.last_domain_weights: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg, num_classes: int, num_domains: int = 1) -> Baseline:
        """Build backbone (with its pretrained weights), head and losses from ``cfg.MODEL``.

        Args:
            cfg: the config.
            num_classes: training identities (0: no classifier).
            num_domains: source domains (for domain-specific norms).

        Returns:
            The model.
        """
        backbone = build_backbone(cfg, num_domains=num_domains)
        heads = build_head(cfg, backbone.out_channels, num_classes)
        b = cfg.MODEL.BNE
        bne = {
            "layers": tuple(b.LAYERS),
            "weighting": b.WEIGHTING,
            "temperature": b.TEMPERATURE,
            "combine": b.COMBINE,
        }
        return cls(backbone, heads, build_losses(cfg), bne=bne, bne_train=b.TRAIN_MAPPING)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def forward(
        self, batch: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Losses in training, features in eval.

        Args:
            batch: in training, the loader's dict with at least "images" (N, 3, H, W) and
                "pids" (N,), plus "domains" (N,) for domain-specific norms. In eval, that dict
                or an images tensor.

        Returns:
            Training: ``{loss.key: value}`` for every loss (e.g. "loss_cls", "loss_triplet").
            Eval: features (N, D) (with BNE "concat", D is num_domains times the head's width).
        """
        if not self.training:
            images = batch["images"] if isinstance(batch, Mapping) else batch
            images = images.to(self.device, non_blocking=True)
            if self._bne is not None:
                feats, self.last_domain_weights = self._bne.infer(
                    self, images, lambda x: self.heads(self.backbone(x)))
                return feats
            if self._has_domain_norms:
                set_domains(self, 0)
            return self.heads(self.backbone(images))

        if not isinstance(batch, Mapping):
            raise TypeError("In training mode the model takes the loader's batch dict")
        device = self.device
        images = batch["images"].to(device, non_blocking=True)
        targets = batch["pids"].to(device, non_blocking=True)
        if self._has_mixers:
            set_mix_domains(self, batch.get("domains"))
        if self._bne is not None and self.bne_train:
            domains = batch["domains"].to(device, non_blocking=True)
            outputs, _ = self._bne.train_outputs(
                self, images, domains, lambda x, t: self.heads(self.backbone(x), t), targets)
            return {loss.key: loss(outputs, targets) for loss in self.losses}
        if self._has_domain_norms:
            set_domains(self, batch["domains"].to(device, non_blocking=True))
        outputs = self.heads(self.backbone(images), targets)
        return {loss.key: loss(outputs, targets) for loss in self.losses}
