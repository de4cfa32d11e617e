"""Domain-specific batch normalization (one set of statistics per source domain)."""

from __future__ import annotations

import torch
from torch import nn

from .bne import instance_statistics
from .norm import get_norm, register_norm


@register_norm("DSBN")
class DSBN2d(nn.Module):
    """Domain-specific BN (Chang et al., CVPR 2019), the building block of BN embeddings.

    One inner batch-style norm per domain (``bns.<d>``, each with its own running statistics)
    and, by default, one affine shared by all domains (``weight``/``bias`` on this module, inner
    norms built with ``affine=False``). The domain(s) of the next forwards are set with
    ``set_domains``: an int routes the whole batch to one domain; an int64 tensor (N,) of
    per-sample domain ids splits the batch by domain, normalizes every group with its domain's
    norm and puts the samples back in their order. With ``num_domains=1`` it computes the same
    as its inner norm with a plain affine (``nn.BatchNorm2d`` for ``inner="BN"``).

    When ``record_stats`` is True, every forward stores the per-sample instance statistics of
    its input (mean and variance over H, W, each (N, C), detached) in ``instance_stats``.

    Args:
        num_features: number of channels C.
        num_domains: number of domains D.
        inner: the per-domain norm, a ``get_norm`` spec ("BN", "PBN", "StochNorm", ...); it
            must accept ``eps``, ``momentum`` and ``affine``.
        per_domain_affine: give every domain its own affine (inside the inner norms).
        eps: added to the variance.
        momentum: running-statistics momentum of the inner norms.
        affine: learn an affine at all (``False``: neither shared nor per-domain).
        **inner_kwargs: further arguments of the inner norm (e.g. PBN options).
    """

    def __init__(
        self,
        num_features: int,
        num_domains: int = 2,
        inner="BN",
        per_domain_affine: bool = False,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        **inner_kwargs,
    ):
        super().__init__()
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}")
        self.num_features = num_features
        self.num_domains = num_domains
        self.per_domain_affine = per_domain_affine = per_domain_affine and affine
        self.eps, self.momentum = eps, momentum
        self.bns = nn.ModuleList(
            get_norm(inner, num_features, eps=eps, momentum=momentum, affine=per_domain_affine,
                     **inner_kwargs)
            for _ in range(num_domains)
        )
        if per_domain_affine or not affine:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self.domains: int | torch.Tensor | None = 0 if num_domains == 1 else None
        self.record_stats = False
        self.instance_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_domains={self.num_domains}, "
                f"per_domain_affine={self.per_domain_affine}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record_stats:
            self.instance_stats = tuple(t.detach() for t in instance_statistics(x))
        domains = self.domains
        if domains is None:
            raise RuntimeError(
                "DSBN2d: no domain set; call reid_pbn.layers.set_domains(model, domains) first")
        if isinstance(domains, torch.Tensor):
            domains = domains.to(x.device)
            if domains.shape != (x.shape[0],):
                raise ValueError(f"DSBN2d: domain ids of shape {tuple(domains.shape)} for a "
                                 f"batch of {x.shape[0]}")
            present = torch.unique(domains).tolist()
            if len(present) == 1:
                domains = present[0]
        if isinstance(domains, int):
            y = self._domain_norm(domains)(x)
        else:
            parts, order = [], []
            for d in present:
                idx = (domains == d).nonzero().squeeze(1)
                parts.append(self._domain_norm(d)(x.index_select(0, idx)))
                order.append(idx)
            y = torch.cat(parts).index_select(0, torch.argsort(torch.cat(order)))
        if self.weight is not None:
            y = torch.addcmul(self.bias[:, None, None], y, self.weight[:, None, None])
        return y

    def _domain_norm(self, d: int) -> nn.Module:
        if not 0 <= d < self.num_domains:
            raise IndexError(f"DSBN2d: domain {d} out of range [0, {self.num_domains})")
        return self.bns[d]

    def domain_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Running mean and variance of every domain.

        Returns:
            ``(mean, var)``, each (D, C).
        """
        return (torch.stack([bn.running_mean for bn in self.bns]),
                torch.stack([bn.running_var for bn in self.bns]))

    def load_bn_state(self, bn: nn.BatchNorm2d) -> None:
        """Take over a BN layer: its running statistics go to every domain, its affine to the
        shared affine (or to every domain's affine).

        Args:
            bn: the ``nn.BatchNorm2d`` being replaced.
        """
        state = bn.state_dict()
        affine = {k: state.pop(k) for k in ("weight", "bias") if k in state}
        with torch.no_grad():
            for inner in self.bns:
                inner.load_state_dict({**state, **(affine if self.per_domain_affine else {})},
                                      strict=False)
            if not self.per_domain_affine:
                for name, value in affine.items():
                    if getattr(self, name) is not None:
                        getattr(self, name).copy_(value)


def set_domains(module: nn.Module, domains: int | torch.Tensor | None) -> int:
    """Route the next forwards of every ``DSBN2d`` in ``module`` to ``domains``.

    Args:
        module: a model (or a single ``DSBN2d``).
        domains: an int (the whole batch belongs to that domain), an int64 tensor (N,) of
            per-sample domain ids, or ``None`` to unset.

    Returns:
        The number of ``DSBN2d`` layers updated.
    """
    if isinstance(domains, torch.Tensor):
        if domains.dim() == 0:
            domains = int(domains)
        elif domains.dim() != 1 or domains.is_floating_point():
            raise ValueError("set_domains: expected an int or an integer tensor of shape (N,)")
    elif domains is not None:
        domains = int(domains)
    count = 0
    for m in module.modules():
        if isinstance(m, DSBN2d):
            m.domains = domains
            count += 1
    return count
