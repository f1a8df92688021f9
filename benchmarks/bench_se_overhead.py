"""SE overhead in step time: SE-ResNet-50 over ResNet-50, fused and unfused SE (paper Sec. 4: 209 ms / 190 ms = 1.10).

The paper timed one forward and backward pass of a 256-image minibatch on 8 Titan X GPUs. This measures the
same ratio for one SGD step (forward, backward, update) and for one inference forward, for three models: the
baseline, the SE model with its scale fused into the residual sum (``torch.addcmul``, the default) and the same
SE model unfused (``senet.blocks.set_fused_se``; same weights). On the CPU by default at a small batch, so it
runs in a few minutes on two cores; ``--device cuda`` runs it on a GPU. The machines are noisy (other jobs
come and go), so the models are timed alternately, several rounds, and each ratio is the median over rounds
of that round's ratio: a load that changes between rounds cancels out of it.

    python benchmarks/bench_se_overhead.py [--arch resnet50] [--batch 8] [--size 224] [--steps 2] [--rounds 9]
                                           [--channels-last] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from senet import build_model
from senet.blocks import set_fused_se
from senet.complexity import complexity

PAPER_MS = {"resnet50": (190.0, 209.0)}  # Sec. 4, "a single pass forwards and backwards", batch 256, 8 Titan X


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Mean seconds per SGD step (forward, backward, update), after one warm-up step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    _sync(x)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def infer_seconds(model: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Mean seconds per eval-mode forward, after one warm-up forward."""
    model.eval()
    model(x)
    _sync(x)
    start = time.perf_counter()
    for _ in range(steps):
        model(x)
    _sync(x)
    return (time.perf_counter() - start) / steps


def _ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median of the per-round ratios a / b: a load that drifts between rounds cancels within each round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="a registered architecture (its se_ twin is the SE model)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round, model and mode")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds; medians are reported")
    parser.add_argument("--channels-last", action="store_true", help="models and input in channels_last")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    se_name = f"se_{args.arch}"
    models = {args.arch: build_model(args.arch), f"{se_name} fused": build_model(se_name)}
    models[f"{se_name} unfused"] = copy.deepcopy(models[f"{se_name} fused"])
    assert set_fused_se(models[f"{se_name} unfused"], False) > 0, f"{se_name} has no SE that meets a residual sum"
    models = {n: m.to(device, memory_format=fmt) for n, m in models.items()}
    classes = models[args.arch].fc.out_features
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (args.batch,), device=device)
    train: dict[str, list[float]] = {name: [] for name in models}
    infer: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(args.rounds):
        # Alternate, and rotate who goes first, so load from other processes hits every model alike.
        for name in names[r % len(names):] + names[:r % len(names)]:
            model = models[name]
            train[name].append(step_seconds(model, x, y, args.steps))
            infer[name].append(infer_seconds(model, x, args.steps))

    cx = {n: complexity(m, input_size=(3, args.size, args.size)) for n, m in list(models.items())[:2]}
    med = {kind: {n: statistics.median(t[n]) for n in models} for kind, t in (("train", train), ("infer", infer))}
    print(f"device {args.device} ({torch.get_num_threads()} threads), batch {args.batch} at {args.size}x{args.size}"
          f"{', channels_last' if args.channels_last else ''}, {args.rounds} rounds x {args.steps} steps, "
          f"median per model")
    for name in models:
        print(f"  {name:<26} train {1e3 * med['train'][name]:8.1f} ms/step   infer {1e3 * med['infer'][name]:8.1f} ms"
              f"   train rounds: {', '.join(f'{1e3 * t:.0f}' for t in train[name])}")
    base, fused, unfused = models
    gmacs = cx[fused].gmacs / cx[base].gmacs
    print(f"params {cx[base].params / 1e6:.2f} M -> {cx[fused].params / 1e6:.2f} M, GMACs/image "
          f"{cx[base].gmacs:.3f} -> {cx[fused].gmacs:.3f} (ratio {gmacs:.3f})")
    for kind, t in (("training-step", train), ("inference", infer)):
        print(f"SE / no-SE {kind} time: fused {_ratio(t, fused, base):.3f}, unfused {_ratio(t, unfused, base):.3f}"
              f"   (fused / unfused {_ratio(t, fused, unfused):.3f}; medians of per-round ratios)")
    if args.arch in PAPER_MS:
        plain, with_se = PAPER_MS[args.arch]
        print(f"paper (8 Titan X, batch 256, forward + backward): {with_se:.0f} / {plain:.0f} ms = {with_se / plain:.3f}")


if __name__ == "__main__":
    main()
