"""SE overhead in training-step time: SE-ResNet-50 over ResNet-50 (paper Sec. 4: 209 ms / 190 ms = 1.10).

The paper timed one forward and backward pass of a 256-image minibatch on 8 Titan X GPUs. This measures the
same ratio for one SGD step (forward, backward, update) of our two models, on the CPU by default at a small
batch so that it runs in about a minute on two cores; ``--device cuda`` runs it on a GPU. Both models are
timed alternately, several rounds, and the median of each is reported, because the machines are noisy.

    python benchmarks/bench_se_overhead.py [--arch resnet50] [--batch 8] [--size 224] [--steps 4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from senet import build_model
from senet.complexity import complexity

PAPER_MS = {"resnet50": (190.0, 209.0)}  # Sec. 4, "a single pass forwards and backwards", batch 256, 8 Titan X


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Mean seconds per SGD step (forward, backward, update), after one warm-up step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="a registered architecture (its se_ twin is the SE model)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round and model")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    models = {name: build_model(name).to(device).train() for name in (args.arch, f"se_{args.arch}")}
    classes = models[args.arch].fc.out_features
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, classes, (args.batch,), device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(step_seconds(model, x, y, args.steps))

    base, se = (statistics.median(times[n]) for n in models)
    cx = {n: complexity(m, input_size=(3, args.size, args.size)) for n, m in models.items()}
    print(f"device {args.device} ({torch.get_num_threads()} threads), batch {args.batch} at {args.size}x{args.size}, "
          f"{args.rounds} rounds x {args.steps} steps, median per model")
    for name in models:
        print(f"  {name:<16} {1e3 * statistics.median(times[name]):8.1f} ms/step   "
              f"rounds: {', '.join(f'{1e3 * t:.1f}' for t in times[name])}   "
              f"{cx[name].params / 1e6:.2f} M params, {cx[name].gmacs:.3f} GMACs/image")
    print(f"SE / no-SE training-step time: {se / base:.3f}   (GMACs ratio {cx[f'se_{args.arch}'].gmacs / cx[args.arch].gmacs:.3f})")
    if args.arch in PAPER_MS:
        plain, with_se = PAPER_MS[args.arch]
        print(f"paper (8 Titan X, batch 256, forward + backward): {with_se:.0f} / {plain:.0f} ms = {with_se / plain:.3f}")


if __name__ == "__main__":
    main()
