"""Batch Normalization Embeddings (BNE): the math of domain-aware inference.

Each domain is embedded by its population statistics per layer, read as a diagonal Gaussian;
a sample by its instance statistics at the same layers. Distances are squared 2-Wasserstein
distances between the Gaussians; domain weights are normalized inverse distances (or a
softmax), and the output is the weighted combination of the domain-specific outputs.
"""

from __future__ import annotations

import torch


def instance_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and (biased) variance over the spatial dimensions.

    Args:
        x: feature map (N, C, H, W) (or (N, C, *) with any number of spatial dimensions).

    Returns:
        ``(mean, var)``, each (N, C).
    """
    flat = x.flatten(2)
    var, mean = torch.var_mean(flat, dim=2, correction=0)
    return mean, var


def wasserstein2_diag(
    mu1: torch.Tensor, var1: torch.Tensor, mu2: torch.Tensor, var2: torch.Tensor
) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians.

    ``W2^2 = sum_c (mu1 - mu2)^2 + (sqrt(var1) - sqrt(var2))^2``, summed over the last (channel)
    dimension after broadcasting the leading ones: pass ``(N, 1, C)`` sample statistics and
    ``(1, D, C)`` domain statistics to get the (N, D) matrix of distances.

    Args:
        mu1: means of the first Gaussians (..., C).
        var1: variances of the first Gaussians (..., C); negative values count as 0.
        mu2: means of the second Gaussians (..., C).
        var2: variances of the second Gaussians (..., C).

    Returns:
        The distances, with the broadcast leading shape.
    """
    d_mu = (mu1 - mu2).square()
    d_sigma = (var1.clamp_min(0).sqrt() - var2.clamp_min(0).sqrt()).square()
    return (d_mu + d_sigma).sum(-1)


def domain_weights(
    distances: torch.Tensor,
    weighting: str = "inverse",
    temperature: float = 1.0,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Turn sample-to-domain distances into combination weights that sum to 1 per sample.

    Args:
        distances: (N, D) non-negative distances.
        weighting: ``"inverse"`` (``w_d`` proportional to ``1 / (distance_d + eps)``) or
            ``"softmax"`` (softmax of ``-distance / temperature``).
        temperature: temperature of the ``"softmax"`` weighting.
        eps: keeps the ``"inverse"`` weighting finite at zero distance.

    Returns:
        (N, D) weights, each row summing to 1.
    """
    if weighting == "inverse":
        inv = 1.0 / (distances.clamp_min(0) + eps)
        return inv / inv.sum(-1, keepdim=True)
    if weighting == "softmax":
        return torch.softmax(-distances / temperature, dim=-1)
    raise ValueError(f"Unknown weighting '{weighting}' (expected 'inverse' or 'softmax')")
