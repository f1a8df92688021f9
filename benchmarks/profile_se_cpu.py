"""Where SE's extra time goes on a CPU: one SE-ResNet-50 training step against ResNet-50's, per aten op (Sec. 4).

torch.profiler over two SGD steps of each model (after two warm-up steps), self CPU time per op, and the
ops whose time differs most between the two: the SE overhead's profile, for when a ratio in
``bench_se_overhead.py`` misses its target. Ops whose difference is not SE's (convolutions, batch norm) show
the machine's noise between the two profiles.

    python benchmarks/profile_se_cpu.py [--batch 8] [--size 224] [--top 15] [--out results/perf/cpu_se_profile.md]
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ablations.reporting.tables import invocation, publish
from senet import build_model


def op_ms(name: str, x: torch.Tensor, y: torch.Tensor, steps: int = 2) -> dict[str, float]:
    """Self CPU milliseconds per training step, by aten op."""
    model = build_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    out: dict[str, float] = collections.Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            out[event.key] += event.self_cpu_time_total / steps / 1e3
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 1000, (args.batch,))
    base, se = op_ms("resnet50", x, y), op_ms("se_resnet50", x, y)
    rows = sorted(((se[k] - base[k], k) for k in set(base) | set(se)), reverse=True)[: args.top]
    lines = [(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch} at "
             f"{args.size}x{args.size}; aten self time per training step, ms."), "",
             f"Total: ResNet-50 {sum(base.values()):.0f} ms, SE-ResNet-50 {sum(se.values()):.0f} ms.", "",
             "| op | ResNet-50 | SE-ResNet-50 | difference |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {base[k]:.1f} | {se[k]:.1f} | {d:+.1f} |" for d, k in rows]
    text = "\n".join(lines) + "\n"
    publish(text, args.out, "SE overhead, CPU profile", invocation("benchmarks/profile_se_cpu.py", argv))


if __name__ == "__main__":
    main()
