"""GPU readiness check: what CI cannot run, in a few minutes on a machine with a CUDA GPU.

Runs each check, catches its failure, and prints one table (check, result, figure, status):

1. PBN forward + backward on the device against the CPU in float64, with the same draws.
2. AMP: PBN under fp16 and bf16 autocast, finite outputs and the running-statistics error
   against float32.
3. The PBN / BN training-step time ratio of a ResNet-50 (batch 64, 256 x 128), timed with CUDA
   events, the two models alternating.
4. Host-device synchronizations of one PBN ResNet-50 training step, counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` (and of the BN model, for reference).
5. FAISS exact k-NN on the GPU against the CPU.
6. ``FeatureExtractor`` on the device (images and a device tensor) against the CPU.
7. With two or more GPUs: a ``torchrun`` smoke run of ``tools/train_net.py`` with PBN and
   ``MODEL.BACKBONE.PBN.SYNC True``, checking that every rank ends with the same parameters
   and buffers.

Without CUDA it runs the checks that make sense on the CPU (``--device cpu``: the device side
is then the CPU too, which checks the script itself) and says what it skipped.

Example:
    python benchmarks/gpu_check.py                 # everything, on cuda when present
    python benchmarks/gpu_check.py --quick         # smaller timing run
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reid_pbn.config import get_cfg
from reid_pbn.evaluation.index import exact_knn
from reid_pbn.layers import PatchBatchNorm2d
from reid_pbn.modeling import build_resnet

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--device", default="auto", help="cuda[:N], cpu or auto")
    parser.add_argument("--quick", action="store_true",
                        help="batch 16 and 5 timed steps instead of batch 64 and 20")
    parser.add_argument("--skip-ddp", action="store_true", help="skip the torchrun smoke run")
    return parser.parse_args(argv)


def _pbn_pair(c: int, mix: str) -> tuple[PatchBatchNorm2d, PatchBatchNorm2d]:
    torch.manual_seed(0)
    ref = PatchBatchNorm2d(c, mix=mix, lam=0.3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
    return ref, copy.deepcopy(ref)


def _draws(m: PatchBatchNorm2d, seed: int) -> PatchBatchNorm2d:
    m.generator = torch.Generator().manual_seed(seed)  # CPU generator: same draws anywhere
    return m


def check_pbn_against_cpu(device: torch.device) -> tuple[str, str]:
    """Max relative error of the device's output, input gradient and running variance."""
    worst = 0.0
    for mix in ("stochastic", "weighted"):
        ref, dev = _pbn_pair(32, mix)
        ref.double()
        dev.to(device)
        for step in range(3):
            x = torch.randn(8, 32, 24, 12, dtype=torch.float64) * 3 + 1
            g = torch.randn_like(x)
            xr = x.clone().requires_grad_()
            xd = x.float().to(device).requires_grad_()
            yr = _draws(ref, step)(xr)
            yd = _draws(dev, step)(xd)
            (yr * g).sum().backward()
            (yd * g.float().to(device)).sum().backward()
            for a, b in ((yd, yr), (xd.grad, xr.grad), (dev.running_var, ref.running_var)):
                a = a.detach().double().cpu()
                b = b.detach()
                worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return f"max rel. error {worst:.1e}", "ok" if worst < 1e-4 else "FAIL"


def check_amp(device: torch.device) -> list[tuple[str, str, str]]:
    """Finite outputs and float32-level statistics under fp16 and bf16 autocast."""
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        worst, finite = 0.0, True
        for mix in ("stochastic", "weighted"):
            ref, amp = _pbn_pair(64, mix)
            ref.to(device)
            amp.to(device)
            for step in range(3):
                # Scale 30: pooled second moments overflow when computed in fp16.
                x = (torch.randn(16, 64, 32, 16, device=device) * 30 + 5).to(dtype)
                _draws(ref, step)(x.float())
                with torch.autocast(device.type, dtype=dtype):
                    y = _draws(amp, step)(x.requires_grad_())
                y.float().square().mean().backward()
                finite &= bool(torch.isfinite(y).all() and torch.isfinite(x.grad).all())
                rel = (amp.running_var - ref.running_var).abs() / ref.running_var
                worst = max(worst, float(rel.max()))
        ok = finite and worst < 1e-4
        rows.append((f"AMP {str(dtype).split('.')[1]}: PBN finite, running_var rel. error",
                     f"finite={finite}, {worst:.1e}", "ok" if ok else "FAIL"))
    return rows


def _resnet50(norm: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return build_resnet(50, norm=norm).to(device).train()


def _step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).float().square().mean().backward()


def check_step_ratio(device: torch.device, batch: int, iters: int) -> tuple[str, str]:
    """Median PBN / BN step-time ratio of a ResNet-50, the two models alternating."""
    models = {"BN": _resnet50("BN", device), "PBN": _resnet50("PBN", device)}
    x = torch.randn(batch, 3, 256, 128, device=device)
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(iters + 3):
        for name, model in models.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True)
                start.record()
                _step(model, x)
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1000
            else:
                t0 = time.perf_counter()
                _step(model, x)
                seconds = time.perf_counter() - t0
            if i >= 3:
                times[name].append(seconds)
    bn, pbn = (float(np.median(times[k])) for k in ("BN", "PBN"))
    return f"BN {bn * 1e3:.1f} ms, PBN {pbn * 1e3:.1f} ms, ratio {pbn / bn:.3f}", "ok"


def check_syncs(device: torch.device) -> tuple[str, str]:
    """Synchronizations of one training step (after a warm-up step), PBN and BN ResNet-50."""
    if device.type != "cuda":
        return "needs CUDA", "skipped"
    counts = {}
    for norm in ("BN", "PBN"):
        model = _resnet50(norm, device)
        x = torch.randn(8, 3, 256, 128, device=device)
        _step(model, x)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _step(model, x)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[norm] = sum("synchroniz" in str(w.message) for w in caught)
    return f"BN {counts['BN']}, PBN {counts['PBN']} per step", "ok"


def check_faiss(device: torch.device) -> tuple[str, str]:
    import faiss

    if device.type != "cuda" or faiss.get_num_gpus() == 0:
        return "FAISS sees no GPU", "skipped"
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20000, 256)).astype(np.float32)
    queries = rng.standard_normal((500, 256)).astype(np.float32)
    for k in (10, 3000):  # 3000 > FAISS's GPU limit: the CPU fallback
        dg, ig = exact_knn(base, queries, k, use_gpu=True)
        dc, ic = exact_knn(base, queries, k, use_gpu=False)
        agree = float((ig == ic).mean())
        if agree < 0.999 or not np.allclose(dg, dc, rtol=1e-4, atol=1e-3):
            return f"k={k}: index agreement {agree:.4f}", "FAIL"
    return "k=10 and k=3000 equal to CPU", "ok"


def check_feature_extractor(device: torch.device) -> tuple[str, str]:
    from reid_pbn import FeatureExtractor
    from reid_pbn.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.NORM = "PBN"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=4).eval()
    on_dev = FeatureExtractor(cfg=cfg, model=copy.deepcopy(model), device=str(device))
    on_cpu = FeatureExtractor(cfg=cfg, model=model, device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 140, 3), dtype=np.uint8) for _ in range(6)]
    a, b = on_dev(images), on_cpu(images)
    tensor = torch.from_numpy(np.stack([im[:256, :128] for im in images])).permute(0, 3, 1, 2)
    c = on_dev(tensor.to(device))
    cos = float(torch.nn.functional.cosine_similarity(a, b).min())
    ok = cos > 1 - 1e-4 and c.shape == a.shape
    return f"min cosine to CPU {cos:.6f}, device tensor input ok", "ok" if ok else "FAIL"


def check_ddp_sync_pbn(device: torch.device) -> tuple[str, str]:
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return "needs 2 GPUs", "skipped"
    with tempfile.TemporaryDirectory() as tmp:
        opts = {
            "MODEL.BACKBONE.DEPTH": "18", "MODEL.BACKBONE.PRETRAIN": "False",
            "MODEL.BACKBONE.NORM": "PBN", "MODEL.BACKBONE.PBN.SYNC": "True",
            "INPUT.SIZE_TRAIN": "(128, 64)", "INPUT.SIZE_TEST": "(128, 64)",
            "DATASETS.ROOT": os.path.join(tmp, "data"), "DATASETS.SYNTHETIC.NUM_IDS": "40",
            "DATASETS.SYNTHETIC.SIZE": "(128, 64)", "SOLVER.MAX_EPOCH": "1",
            "SOLVER.ITERS_PER_EPOCH": "10", "SOLVER.AMP": "True", "OUTPUT_DIR": tmp + "/out",
            "DATALOADER.NUM_WORKERS": "2",
        }
        cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file",
               str(ROOT / "configs" / "Demo" / "synthetic_cross_domain.yml"), "--num-gpus",
               "2", *[v for kv in opts.items() for v in kv]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        if proc.returncode != 0:
            return f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", "FAIL"
        sums = []
        for log in sorted(Path(tmp, "out").glob("log.txt*")):
            found = re.findall(r"final weights checksum: (\S+), buffers checksum: (\S+)",
                               log.read_text())
            sums.append(found[-1] if found else None)
        ok = len(sums) == 2 and sums[0] is not None and sums[0] == sums[1]
        return f"rank checksums {sums}", "ok" if ok else "FAIL"


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = args.device
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    batch, iters = (16, 5) if args.quick else (64, 20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"reid_pbn GPU check on {name}, torch {torch.__version__}")
    rows: list[tuple[str, str, str]] = []
    checks = [
        ("PBN fwd/bwd vs CPU float64", lambda: check_pbn_against_cpu(device)),
        ("AMP", lambda: check_amp(device)),
        (f"ResNet-50 step, batch {batch}, 256x128", lambda: check_step_ratio(device, batch,
                                                                            iters)),
        ("stream synchronizations", lambda: check_syncs(device)),
        ("FAISS GPU exact k-NN vs CPU", lambda: check_faiss(device)),
        ("FeatureExtractor on device", lambda: check_feature_extractor(device)),
    ]
    if not args.skip_ddp:
        checks.append(("torchrun x2, PBN.SYNC, AMP", lambda: check_ddp_sync_pbn(device)))
    for title, fn in checks:
        try:
            out = fn()
            rows.extend(out if isinstance(out, list) else [(title, *out)])
        except Exception as e:  # noqa: BLE001 - the table reports every failure
            traceback.print_exc()
            rows.append((title, f"{type(e).__name__}: {e}"[:90], "FAIL"))
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'check'.ljust(width)} | result | status |\n|{'-' * (width + 2)}|---|---|")
    for title, result, status in rows:
        print(f"| {title.ljust(width)} | {result} | {status} |")
    return 1 if any(r[2] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
