"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten


class CudaPreconditionMode(TorchDispatchMode):
    """Rejects calls that PyTorch's CPU kernels accept but its CUDA kernels refuse.

    CI has no GPU, so the CUDA-only preconditions of the operators the toolkit calls directly
    are enforced here, on CPU. From ATen's ``native/cuda/Normalization.cu``:

    * ``batch_norm_backward_cuda`` asserts ``save_mean`` and ``save_invstd`` are defined
      (``TORCH_INTERNAL_ASSERT(save_mean->defined(), ...)``) whenever it does not take the
      fused path (which needs the input gradient); an empty ``save_mean`` further requires
      ``train=False`` and defined running statistics.
    * with mixed precision, the input may be reduced precision only when every other tensor
      argument is float32 (``batch_norm_use_channels_last_kernels`` aside).

    Attributes:
        calls: the batch-norm backward calls seen (to check that the test reached them).
    """

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _aten.native_batch_norm_backward.default:
            self.calls += 1
            _check_bn_backward(*args, **kwargs)
        return func(*args, **kwargs)


def _check_bn_backward(grad_out, x, weight, running_mean, running_var, save_mean, save_invstd,
                       train, eps, output_mask):
    fused = (train or output_mask[1] or output_mask[2]) and output_mask[0]
    if not fused:
        assert save_mean is not None, "CUDA: save_mean should always be defined"
        assert save_invstd is not None, "CUDA: save_invstd should always be defined"
        for saved, running in ((save_mean, running_mean), (save_invstd, running_var)):
            if saved.numel() == 0:
                assert not train and running is not None, (
                    "CUDA: empty saved statistics need train=False and running statistics")
    reduced = x.dtype in (torch.float16, torch.bfloat16)
    others = [t for t in (weight, running_mean, running_var, save_mean, save_invstd)
              if t is not None and t.numel() > 0]
    if reduced:
        dtypes = {t.dtype for t in others}
        assert dtypes <= {x.dtype} or dtypes <= {torch.float32}, (
            f"CUDA: mixed-precision batch norm needs float32 parameters, got {dtypes}")
    assert grad_out.dtype == x.dtype, "CUDA: grad_out and input must share a dtype"


@pytest.fixture
def cuda_contracts():
    """A fresh :class:`CudaPreconditionMode`; use as ``with cuda_contracts: ...``."""
    return CudaPreconditionMode()
