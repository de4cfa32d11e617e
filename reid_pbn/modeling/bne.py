"""Batch Normalization Embeddings (Segu, Tonioni, Tombari, 2020) for models with DSBN layers.

A model with domain-specific norms (``DSBN2d``) has one path per source domain. For an image,
every domain's path is run; at the chosen DSBN layers the image's instance statistics
(per-channel mean and variance of the layer's input on that path) are compared with that
domain's population statistics (its running statistics) by the squared 2-Wasserstein distance
between diagonal Gaussians, summed over layers. Normalized inverse distances (or a softmax)
weight the domain paths' outputs.

The paths are batched: the images are repeated once per domain and routed in one forward pass
(each ``DSBN2d`` splits the batch by domain), so the network runs once on D x N images instead of
D times. The same mapping is used in training: a sample's own domain path normalizes with batch
statistics (and updates that domain's running statistics), the other paths with their running
statistics, and the losses see the weighted combination.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..layers import DSBN2d, domain_weights, set_domains, wasserstein2_diag
from ..utils.registry import Registry

__all__ = ["COMBINES", "BatchNormEmbedding"]

#: How the per-domain test features (D, N, F) and weights (N, D) form the output.
COMBINES = Registry(
    "BNE combine",
    doc="BNE combiners: ``fn(feats (D, N, F), weights (N, D)) -> (N, F')``.",
    items={
        "weighted": lambda feats, w: torch.einsum("dnf,nd->nf", feats, w),
        "concat": lambda feats, w: torch.cat(
            [w[:, d : d + 1] * f for d, f in enumerate(feats)], 1
        ),
    },
)

Outputs = torch.Tensor | dict[str, torch.Tensor]


class BatchNormEmbedding:
    """Runs a model's domain paths and combines them with BNE weights.

    Args:
        model: the model holding the DSBN layers (e.g. a ``Baseline``).
        layers: names (as in ``model.named_modules()``, or relative to ``model.backbone``) of
            the DSBN layers whose statistics embed domains; empty means all of them.
        weighting: "inverse" (w_d proportional to 1 / distance) or "softmax".
        temperature: temperature of the "softmax" weighting.
        combine: test features: "weighted" (sum of w_d * features_d, (N, F)) or "concat"
            (the weighted features side by side, (N, D * F)). Training always uses the
            weighted sum.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] = (),
        weighting: str = "inverse",
        temperature: float = 1.0,
        combine: str = "weighted",
    ) -> None:
        COMBINES.get(combine)  # an unknown name fails here, before any work
        if weighting not in ("inverse", "softmax"):
            raise ValueError(f"Unknown BNE weighting '{weighting}' (inverse or softmax)")
        named = dict(model.named_modules())
        all_dsbn = [m for m in named.values() if isinstance(m, DSBN2d)]
        if layers:
            chosen = []
            for name in layers:
                module = named.get(name, named.get(f"backbone.{name}"))
                if not isinstance(module, DSBN2d):
                    raise ValueError(f"MODEL.BNE.LAYERS: '{name}' is not a DSBN layer of the model")
                chosen.append(module)
        else:
            chosen = all_dsbn
        if not chosen:
            raise ValueError("BNE needs DSBN layers (MODEL.BACKBONE.NORM 'DSBN')")
        self.layers = chosen
        self.all_dsbn = all_dsbn
        self.num_domains = max(m.num_domains for m in chosen)
        self.weighting = weighting
        self.temperature = temperature
        self.combine = combine

    # -- pieces -----------------------------------------------------------------------------
    def _routed(self, model: nn.Module, x: torch.Tensor, domains: torch.Tensor,
                run: Callable[[torch.Tensor], Outputs]) -> tuple[Outputs, torch.Tensor]:
        """Run ``run(x)`` with sample i on domain path ``domains[i]``; return the outputs and
        each sample's summed W2 distance to its path's domain."""
        for m in self.layers:
            m.record_stats = True
        set_domains(model, domains)
        try:
            out = run(x)
            dist = x.new_zeros(x.size(0), dtype=torch.float32)
            for m in self.layers:
                mean, var = m.instance_stats
                pop_mean, pop_var = (s.float() for s in m.domain_statistics())
                dist = dist + wasserstein2_diag(mean.float(), var.float(),
                                                pop_mean[domains], pop_var[domains])
        finally:
            for m in self.layers:
                m.record_stats = False
                m.instance_stats = None
            set_domains(model, None)
        return out, dist

    def _weights(self, dist: torch.Tensor, n: int) -> torch.Tensor:
        return domain_weights(dist.view(self.num_domains, n).t(), weighting=self.weighting,
                              temperature=self.temperature)

    @contextmanager
    def _running_statistics(self):
        """Domain norms use their running statistics (no update) inside the block."""
        inner = [bn for m in self.all_dsbn for bn in m.bns]
        modes = [bn.training for bn in inner]
        for bn in inner:
            bn.eval()
        try:
            yield
        finally:
            for bn, mode in zip(inner, modes):
                bn.train(mode)

    # -- public -----------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, model: nn.Module, images: torch.Tensor,
              run: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time features: all domain paths in one batched pass, combined by BNE weights.

        Args:
            model: the model whose DSBN layers are routed.
            images: (N, 3, H, W).
            run: maps images to features (N, F) (backbone + head in eval mode).

        Returns:
            ``(features, weights)``: combined features and the (N, D) domain weights.
        """
        n, d = images.size(0), self.num_domains
        domains = torch.arange(d, device=images.device).repeat_interleave(n)
        feats, dist = self._routed(model, images.repeat(d, 1, 1, 1), domains, run)
        weights = self._weights(dist, n)
        return COMBINES[self.combine](feats.view(d, n, -1), weights.to(feats.dtype)), weights

    def train_outputs(self, model: nn.Module, images: torch.Tensor, domains: torch.Tensor,
                      run: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                      targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Training outputs under the BNE mapping.

        Each sample runs its own domain path with batch statistics (updating that domain's
        running statistics) and every other path with running statistics; each output
        tensor is the BNE-weighted sum over paths (weights carry no gradient).

        Args:
            model: the model whose DSBN layers are routed.
            images: (N, 3, H, W).
            domains: (N,) each sample's source domain.
            run: maps (images, targets) to the head's training output dict.
            targets: (N,) identity labels.

        Returns:
            ``(outputs, weights)``.
        """
        n, d = images.size(0), self.num_domains
        path = torch.arange(d, device=images.device).repeat_interleave(n)
        own = path == domains.repeat(d)
        own_out, own_dist = self._routed(model, images, domains, lambda x: run(x, targets))
        if d == 1:
            return own_out, images.new_ones(n, 1)
        foreign = (~own).nonzero().squeeze(1)
        with self._running_statistics():
            f_out, f_dist = self._routed(
                model, images.repeat(d, 1, 1, 1)[foreign], path[foreign],
                lambda x: run(x, targets.repeat(d)[foreign]))
        own_idx = domains * n + torch.arange(n, device=images.device)
        dist = own_dist.new_empty(d * n).index_put((own_idx,), own_dist)
        dist = dist.index_put((foreign,), f_dist)
        weights = self._weights(dist, n).detach()
        combined = {}
        for key, value in own_out.items():
            full = value.new_empty(d * n, *value.shape[1:])
            full = full.index_put((own_idx,), value).index_put((foreign,), f_out[key])
            combined[key] = torch.einsum("dn...,nd->n...", full.view(d, n, *value.shape[1:]),
                                         weights.to(value.dtype))
        return combined, weights
