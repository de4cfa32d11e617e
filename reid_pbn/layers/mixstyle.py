"""Feature-statistics mixing for domain generalization: MixStyle and EFDMix.

* **MixStyle** (Zhou et al., "Domain Generalization with MixStyle", ICLR 2021): each sample's
  per-channel mean and standard deviation (over H, W; detached) are mixed with another
  sample's, ``lam * own + (1 - lam) * other``, and the normalized map is re-styled with them.
* **EFDMix** (Zhang et al., "Exact Feature Distribution Matching for Arbitrary Style Transfer
  and Domain Generalization", CVPR 2022): each channel's values are matched by rank with another
  sample's sorted values, ``x + (1 - lam) * (sorted_other[rank(x)] - x.detach())``, which mixes
  whole empirical distributions instead of two moments.

Both follow the published layers (KaiyangZhou/mixstyle-release and YBZh/EFDM, ``reid/models``):
applied with probability ``p`` per forward, ``lam ~ Beta(alpha, alpha)`` per sample, the partner
chosen by a random permutation of the batch (``mix="random"``) or from the other domain
(``mix="crossdomain"``), and the identity in eval mode. The draws come from torch random
generators (a layer's own ``generator``, else the global one) instead of Python's ``random``,
so a seed reproduces a run.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ..utils.registry import Registry

__all__ = [
    "MIX_LAYERS",
    "EFDMix",
    "MixDraw",
    "MixStyle",
    "build_mix_layer",
    "apply_efdmix",
    "apply_mixstyle",
    "sample_beta",
    "set_mix_domains",
]

logger = logging.getLogger(__name__)
_LOGGED: set[str] = set()


def apply_mixstyle(x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor,
             eps: float = 1e-6) -> torch.Tensor:
    """MixStyle's mixing for given draws (the published formula).

    Args:
        x: features (N, C, H, W).
        lam: mixing weights (N,) of each sample's own statistics.
        perm: partner index (N,) of every sample.
        eps: added to the variance before the square root.

    Returns:
        ``(x - mu) / sig * sig_mix + mu_mix`` with ``mu``, ``sig`` the detached per-sample,
        per-channel mean and standard deviation (unbiased variance, as ``Tensor.var``) and
        ``mu_mix = lam * mu + (1 - lam) * mu[perm]`` (likewise ``sig_mix``).
    """
    mu = x.mean(dim=(2, 3), keepdim=True).detach()
    sig = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    lam = lam.to(x.dtype).view(-1, 1, 1, 1)
    mu_mix = mu * lam + mu[perm] * (1 - lam)
    sig_mix = sig * lam + sig[perm] * (1 - lam)
    return (x - mu) / sig * sig_mix + mu_mix


def apply_efdmix(x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """EFDMix's mixing for given draws (the published formula).

    Args:
        x: features (N, C, H, W).
        lam: mixing weights (N,) of each sample's own values.
        perm: partner index (N,) of every sample.

    Returns:
        ``x + (1 - lam) * (other - x.detach())``, where ``other[n, c, i]`` is the value of rank
        ``rank(x[n, c, i])`` among the sorted values of channel c of sample ``perm[n]``. Its
        value is ``lam * x + (1 - lam) * other``; the gradient reaches x through the identity
        and through the partner's sorted values.
    """
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    values, order = torch.sort(flat, dim=-1)
    ranks = order.argsort(dim=-1)
    keep = (1 - lam.to(x.dtype)).view(-1, 1, 1)
    other = values[perm].gather(-1, ranks)
    return (flat + (other * keep - flat.detach() * keep)).view_as(x)


class MixDraw(NamedTuple):
    """The random draws of one mixing forward.

    Attributes:
        lam: mixing weights (N,), float64, on the generator's device.
        perm: partner index (N,), int64, on the generator's device.
    """

    lam: torch.Tensor
    perm: torch.Tensor


def sample_beta(alpha: float, beta: float, n: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws from Beta(alpha, beta) using only ``generator``'s uniform and normal draws.

    ``torch.distributions.Beta`` draws from the global generator only; this draws two Gamma
    variables by Marsaglia and Tsang's method (with the ``U ** (1 / a)`` boost for shapes below
    1) in log space, so tiny ``alpha`` (many draws near 0 or 1) neither underflows nor divides
    0 by 0, and returns ``sigmoid(log G1 - log G2)``.

    Args:
        alpha: first concentration (> 0).
        beta: second concentration (> 0).
        n: number of draws.
        generator: the torch generator to draw from (None: the global one).

    Returns:
        float64 tensor (n,) on the generator's device (the CPU for None); float64 because
        float32 rounds the many draws within 6e-8 of 1 (for alpha = 0.1) to exactly 1.
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"Beta concentrations must be > 0, got {alpha}, {beta}")
    log_g1 = _log_gamma(alpha, n, generator)
    log_g2 = _log_gamma(beta, n, generator)
    return torch.sigmoid(log_g1 - log_g2)


def _log_gamma(shape: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """log of n Gamma(shape, 1) draws, float64 (Marsaglia & Tsang, ACM TOMS 2000)."""
    device = generator.device if generator is not None else torch.device("cpu")
    kw = {"generator": generator, "dtype": torch.float64, "device": device}
    tiny = torch.finfo(torch.float64).tiny
    a = shape + 1.0 if shape < 1.0 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel():
        z = torch.randn(todo.numel(), **kw)
        u = torch.rand(todo.numel(), **kw).clamp_min(tiny)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp_min(tiny).log())
        out[todo[ok]] = math.log(d) + v[ok].log()
        todo = todo[~ok]
    if shape < 1.0:
        # Gamma(a) = Gamma(a + 1) * U ** (1 / a): the boost for shapes below 1.
        out = out + torch.rand(n, **kw).clamp_min(tiny).log() / shape
    return out


class _StatMix(nn.Module, abc.ABC):
    """Shared logic of MixStyle and EFDMix: when to mix, and with whom.

    Args:
        p: probability of mixing in a training forward.
        alpha: both concentrations of the Beta distribution of the mixing weights.
        eps: numerical guard (MixStyle: added to the variance).
        mix: "random" (partner from a random permutation of the batch) or "crossdomain"
            (partner from another domain; see ``draw``).
        generator: torch generator of the draws; None uses the global generator, which the
            trainer seeds.
    """

    _fn: Callable[..., torch.Tensor]

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6,
                 mix: str = "random", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if mix not in ("random", "crossdomain"):
            raise ValueError(f"mix must be 'random' or 'crossdomain', got {mix!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.p, self.alpha, self.eps, self.mix = float(p), float(alpha), float(eps), mix
        self.generator = generator
        #: Domain label (N,) of each sample of the next training forwards (``set_mix_domains``).
        self.domains: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, eps={self.eps}, mix={self.mix}"

    def draw(self, n: int) -> MixDraw | None:
        """The random draws of one training forward on a batch of ``n``.

        First a uniform draw decides whether to mix at all (probability ``p``; nothing more is
        drawn otherwise, as in the published code); then ``lam`` ~ Beta(alpha, alpha) (n,);
        then the partners. "random": ``torch.randperm(n)``. "crossdomain" with domain labels
        (``self.domains``, one per sample) naming at least two domains: each sample's partner
        is drawn uniformly from the samples of the other domains. Without such labels, or with
        one domain in the batch,
        it does what the published code does, which assumes the batch's first and second
        halves come from two domains: each half's partners are a shuffle of the other half
        (with an odd batch, the larger half takes one extra partner at random); this is logged
        once.

        Args:
            n: batch size.

        Returns:
            The draws, or None when this forward does not mix (also for n < 2).
        """
        g = self.generator
        device = g.device if g is not None else torch.device("cpu")
        if torch.rand((), generator=g, device=device) > self.p or n < 2:
            return None
        lam = sample_beta(self.alpha, self.alpha, n, g)
        if self.mix == "random":
            perm = torch.randperm(n, generator=g, device=device)
        else:
            perm = self._crossdomain_partners(n, device)
        return MixDraw(lam, perm)

    def _crossdomain_partners(self, n: int, device: torch.device) -> torch.Tensor:
        g = self.generator
        domains = self.domains
        if domains is not None and domains.shape != (n,):
            # E.g. BNE's training pass over the other domains' paths, a batch of (D - 1) * N.
            _log_once("mismatch", "%s crossdomain: %d domain labels for a batch of %d; "
                      "ignoring them", type(self).__name__, domains.numel(), n)
            domains = None
        if domains is not None:
            domains = domains.to(device)
            if torch.unique(domains).numel() > 1:
                # A uniform choice among the other domains' samples: argmax of uniform scores.
                scores = torch.rand(n, n, generator=g, device=device)
                scores[domains[:, None] == domains[None, :]] = -1.0
                return scores.argmax(dim=1)
            _log_once("one-domain", "%s crossdomain: the batch holds one domain; mixing its two "
                      "halves with each other, as the published code does",
                      type(self).__name__)
        else:
            _log_once("no-labels", "%s crossdomain: no domain labels given; assuming the "
                      "batch's two halves come from two domains and mixing them with each "
                      "other, as the published code does", type(self).__name__)
        h = n // 2
        first = torch.randperm(n - h, generator=g, device=device)[:h] + h
        second = torch.randperm(h, generator=g, device=device)
        if n - h > h:
            extra = torch.randint(h, (n - 2 * h,), generator=g, device=device)
            second = torch.cat([second, extra])
        return torch.cat([first, second])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix in training (with probability ``p``); the identity in eval mode.

        Args:
            x: features (N, C, H, W).

        Returns:
            A tensor of the same shape.
        """
        if not self.training:
            return x
        d = self.draw(x.shape[0])
        if d is None:
            return x
        return self._mix(x, d.lam.to(x.device), d.perm.to(x.device))

    @abc.abstractmethod
    def _mix(self, x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """The mixed features: sample ``i``'s style (its statistics, or its sorted values)
        mixed with sample ``perm[i]``'s, which gets weight ``1 - lam[i]``."""


class MixStyle(_StatMix):
    """MixStyle (Zhou et al., ICLR 2021): mixes per-channel feature means and standard
    deviations between samples in training; the identity in eval mode.

    Args:
        p: probability of mixing in a training forward.
        alpha: both concentrations of the Beta distribution of the mixing weights.
        eps: added to the variance before the square root.
        mix: "random" or "crossdomain" (see ``draw``).
        generator: torch generator of the draws (None: the global generator).
    """

    def _mix(self, x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        return apply_mixstyle(x, lam, perm, self.eps)


class EFDMix(_StatMix):
    """EFDMix (Zhang et al., CVPR 2022): mixes each channel's sorted values between samples
    (exact feature distribution matching) in training; the identity in eval mode.

    Args:
        p: probability of mixing in a training forward.
        alpha: both concentrations of the Beta distribution of the mixing weights.
        eps: kept for the published signature (the sort needs no guard).
        mix: "random" or "crossdomain" (see ``draw``).
        generator: torch generator of the draws (None: the global generator).
    """

    def _mix(self, x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        return apply_efdmix(x, lam, perm)


#: Mixing layers by ``MODEL.BACKBONE.MIX.TYPE`` name; each is called as
#: ``cls(p=..., alpha=..., eps=..., mix=...)`` and has no parameters or buffers.
MIX_LAYERS = Registry(
    "mixing layer",
    doc="Mixing layers: ``cls(p=, alpha=, eps=, mix=)``, no parameters or buffers.",
    items={"MixStyle": MixStyle, "EFDMix": EFDMix},
)


def build_mix_layer(name: str, **kwargs) -> nn.Module:
    """Build a mixing layer by name.

    Args:
        name: a key of ``MIX_LAYERS`` ("MixStyle" or "EFDMix").
        **kwargs: its constructor arguments (p, alpha, eps, mix, generator).

    Returns:
        The layer.
    """
    return MIX_LAYERS.get(name)(**kwargs)


def set_mix_domains(module: nn.Module, domains: torch.Tensor | None) -> int:
    """Give every MixStyle / EFDMix layer in ``module`` the domain labels of the next batch.

    Args:
        module: a model (or a single layer).
        domains: int64 tensor (N,) of per-sample domain labels, or None to unset.

    Returns:
        The number of layers updated.
    """
    if domains is not None and (domains.dim() != 1 or domains.is_floating_point()):
        raise ValueError("set_mix_domains: expected an integer tensor of shape (N,) or None")
    count = 0
    for m in module.modules():
        if isinstance(m, _StatMix):
            m.domains = domains
            count += 1
    return count


def _log_once(key: str, msg: str, *args) -> None:
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.warning(msg, *args)
