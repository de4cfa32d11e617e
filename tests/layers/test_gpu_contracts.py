"""PBN, StochNorm, DSBN and BNE under the contracts of PyTorch's CUDA kernels and of autocast.

CI has no GPU. These tests hold on CPU what the CUDA kernels and AMP require: the batch-norm
backward's preconditions (``conftest.CudaPreconditionMode``), statistics in float32 under
autocast, and no float32 copy of a half-precision input kept for the backward.
"""

import pytest
import torch
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.layers import DSBN2d, PatchBatchNorm2d, StochNorm2d, set_domains
from reid_pbn.modeling import build_model, build_resnet


def _norm(kind, c):
    if kind == "PBN-stochastic":
        return PatchBatchNorm2d(c, mix="stochastic")
    if kind == "PBN-weighted":
        return PatchBatchNorm2d(c, mix="weighted", lam=0.3)
    if kind == "StochNorm":
        return StochNorm2d(c)
    return DSBN2d(c, num_domains=2, inner="PBN")


@pytest.mark.parametrize("kind", ["PBN-stochastic", "PBN-weighted", "StochNorm", "DSBN-PBN"])
def test_forward_backward_meets_cuda_preconditions(kind, cuda_contracts):
    torch.manual_seed(0)
    m = _norm(kind, 6)
    if isinstance(m, DSBN2d):
        set_domains(m, torch.tensor([0, 1, 0, 1]))
    x = torch.randn(4, 6, 12, 10, requires_grad=True)
    with cuda_contracts:
        m(x).square().sum().backward()
    assert cuda_contracts.calls >= 1
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bne_model_step_meets_cuda_preconditions(cuda_contracts):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.NORM = "DSBN"
    cfg.MODEL.BACKBONE.DSBN.INNER = "PBN"
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=4, num_domains=2).train()
    pids = torch.arange(8) // 2
    batch = {"images": torch.randn(8, 3, 64, 32), "pids": pids, "camids": pids * 0,
             "domains": torch.tensor([0, 1] * 4)}
    with cuda_contracts:
        sum(model(batch).values()).backward()
    assert cuda_contracts.calls > 0


def test_resnet50_pbn_forward_backward_meets_cuda_preconditions(cuda_contracts):
    torch.manual_seed(0)
    net = build_resnet(50, norm="PBN").train()
    x = torch.randn(2, 3, 64, 32)
    with cuda_contracts:
        net(x).mean().backward()
    # Every PBN of the ResNet-50 ran its backward through the checked kernel.
    assert cuda_contracts.calls >= sum(isinstance(m, PatchBatchNorm2d) for m in net.modules())
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def _same_draws(m, seed):
    m.generator = torch.Generator().manual_seed(seed)
    return m


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mix", ["stochastic", "weighted"])
def test_autocast_statistics_match_fp32(mix, half):
    """Under CPU autocast PBN keeps float32 statistics: running_var within 1e-4 relative of the
    float32 run on the same (half-representable) input with the same draws."""
    torch.manual_seed(0)
    ref = PatchBatchNorm2d(16, mix=mix, lam=0.3)
    with torch.no_grad():
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
    amp = PatchBatchNorm2d(16, mix=mix, lam=0.3)
    amp.load_state_dict(ref.state_dict())
    # Scale 30: the pooled second moments overflow when computed in fp16.
    x = (torch.randn(8, 16, 16, 8) * 30 + 5).to(half)
    for step in range(3):
        y_ref = _same_draws(ref, step)(x.float())
        with torch.autocast("cpu", dtype=half):
            y_amp = _same_draws(amp, step)(x)
        assert y_amp.dtype == half
        assert torch.isfinite(y_amp.float()).all()
        assert ref.last_splits == amp.last_splits
        torch.testing.assert_close(amp.running_var, ref.running_var, rtol=1e-4, atol=0)
        torch.testing.assert_close(amp.running_mean, ref.running_mean, rtol=1e-4, atol=1e-5)
        # The output is bf16: one rounding of a float32 result.
        torch.testing.assert_close(y_amp.float(), y_ref, rtol=2 ** -7, atol=2 ** -7)


def test_fp32_input_under_autocast_stays_fp32():
    m = PatchBatchNorm2d(4, mix="weighted")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 4, 8, 8))
    assert y.dtype == torch.float32


def test_half_input_keeps_no_float32_copy_for_backward():
    """The backward keeps the bf16 input itself, not a float32 copy of the map."""
    m = PatchBatchNorm2d(8)
    x = torch.randn(4, 8, 16, 8).bfloat16().requires_grad_()
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    big = [d for d, n in saved if n >= x.numel()]
    assert big and all(d == torch.bfloat16 for d in big), saved
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    assert m.weight.grad.dtype == torch.float32


def test_half_input_gradients_match_fp32():
    torch.manual_seed(1)
    ref = PatchBatchNorm2d(8)
    amp = PatchBatchNorm2d(8)
    x = (torch.randn(4, 8, 16, 8) * 3 + 2).bfloat16()
    g = torch.randn(4, 8, 16, 8).bfloat16()
    x_ref = x.float().requires_grad_()
    x_amp = x.clone().requires_grad_()
    (_same_draws(ref, 3)(x_ref) * g.float()).sum().backward()
    (_same_draws(amp, 3)(x_amp).float() * g.float()).sum().backward()
    torch.testing.assert_close(amp.weight.grad, ref.weight.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(amp.bias.grad, ref.bias.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(x_amp.grad.float(), x_ref.grad, rtol=2 ** -6, atol=2 ** -6)


def test_demo_model_bf16_autocast_step_matches_fp32():
    """One bf16-autocast training step of the demo model (ResNet-18 + PBN): finite loss, and the
    running statistics and loss close to the float32 step with the same draws."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/Demo/synthetic_cross_domain.yml")
    cfg.MODEL.BACKBONE.PRETRAIN = False
    pids = torch.arange(8) // 2
    batch = {"images": torch.randn(8, 3, 64, 32), "pids": pids, "camids": pids * 0}
    runs = []
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=4).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = model(batch)
        loss = sum(losses.values())
        loss.backward()
        assert torch.isfinite(loss)
        stats = torch.cat([m.running_var for m in model.modules()
                           if isinstance(m, nn.BatchNorm2d)])
        runs.append((float(loss.detach()), stats))
    (loss32, var32), (loss16, var16) = runs
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    # bf16 convolutions move the activations by ~2^-8 relative; the statistics follow them.
    rel = ((var16 - var32).abs() / var32).median()
    assert rel < 1e-2, rel
