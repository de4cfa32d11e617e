"""Training-step cost of PBN against BN in a torchvision ResNet-50.

Times forward + backward of the same ResNet-50 (random init) with BN and with PBN in every BN
layer (``convert_norm(model, "PBN")``), alternating the two models so that both see the same
machine load, and prints both median step times and the ratio PBN / BN.

Example:
    python benchmarks/norm_overhead.py --batch 16 --iters 20 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torchvision
from torch import nn

from reid_pbn.layers import convert_norm


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--height", type=int, default=256, help="input height")
    parser.add_argument("--width", type=int, default=128, help="input width")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: leave torch's default)")
    parser.add_argument("--norm", default="PBN", help="norm compared with BN (get_norm name)")
    parser.add_argument("--device", default="cpu", help="device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="torch seed")
    return parser.parse_args(argv)


def train_step(model: nn.Module, images: torch.Tensor) -> None:
    """One forward + backward pass (gradients are dropped afterwards)."""
    model.zero_grad(set_to_none=True)
    out = model(images)
    out.float().square().mean().backward()


def time_step(model: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one training step."""
    if images.is_cuda:
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    train_step(model, images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    bn_model = torchvision.models.resnet50(weights=None)
    bn_model.fc = nn.Identity()
    other = convert_norm(copy.deepcopy(bn_model), args.norm)
    bn_model.to(device).train()
    other.to(device).train()
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)

    for _ in range(args.warmup):
        train_step(bn_model, images)
        train_step(other, images)
    # Alternate the two models so that both see the same background load.
    times: dict[str, list[tuple[float, float]]] = {"BN": [], args.norm: []}
    for _ in range(args.iters):
        times["BN"].append(time_step(bn_model, images))
        times[args.norm].append(time_step(other, images))

    summary = {}
    for name, runs in times.items():
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        summary[name] = {"median": statistics.median(wall), "min": min(wall),
                         "cpu": statistics.median(cpu)}
    # Each PBN step against the BN step just before it: robust to slow drifts of the machine.
    paired = statistics.median(o[0] / b[0] for b, o in zip(times["BN"], times[args.norm]))
    print(f"ResNet-50 train step (fwd+bwd), batch {args.batch} at {args.height}x{args.width}, "
          f"{device}, {torch.get_num_threads()} threads, {args.iters} steps per model")
    print(f"{'':6}{'median ms':>11}{'min ms':>10}{'CPU ms':>10}")
    for name, row in summary.items():
        print(f"{name:<6}{row['median'] * 1e3:11.1f}{row['min'] * 1e3:10.1f}"
              f"{row['cpu'] * 1e3:10.1f}")
    ratios = {key: summary[args.norm][key] / summary["BN"][key]
              for key in ("median", "min", "cpu")}
    ratios["paired"] = paired
    print(f"ratio {args.norm}/BN: {paired:.3f} (median of paired steps; medians "
          f"{ratios['median']:.3f}, minima {ratios['min']:.3f}, CPU time {ratios['cpu']:.3f})")
    return ratios


if __name__ == "__main__":
    main()
