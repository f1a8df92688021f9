"""SE overhead in step time: SE-ResNet-50 over ResNet-50, fused, unfused, compiled, and timm's (paper Sec. 4: 1.10).

The paper timed one forward and backward pass of a 256-image minibatch on 8 Titan X GPUs (209 ms / 190 ms).
This measures the same ratio for one SGD step (forward, backward, update) and for one inference forward:
our baseline, our SE model with its scale fused into the residual sum (``torch.addcmul``, the default), the
same SE model unfused (``senet.blocks.set_fused_se``; same weights), optionally both compiled
(``--compile``: ``torch.compile``, the ``train.compile`` path), and timm's ``resnet50`` / ``legacy_seresnet50``
(the same networks as timm builds them) when timm is installed, so every ratio has its peer beside it.
On the CPU by default at a small batch, so it runs in minutes on two cores; ``--device cuda --amp bf16
--channels-last --batch 256`` is the GPU setting users train in. Machines are noisy (other jobs come and go),
so the models are timed alternately, several rounds, and each ratio is the median over rounds of that
round's ratio: a load that changes between rounds cancels out of it. ``--out FILE`` writes the report as
markdown, headed by the command that made it.

    python benchmarks/bench_se_overhead.py [--arch resnet50] [--batch 8] [--size 224] [--steps 2] [--rounds 9]
                                           [--channels-last] [--amp bf16] [--compile] [--no-timm]
                                           [--device cpu] [--out results/perf/cpu.md]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ablations.reporting.tables import invocation, publish
from senet import build_model
from senet.blocks import set_fused_se
from senet.complexity import complexity

PAPER_MS = {"resnet50": (190.0, 209.0)}  # Sec. 4, "a single pass forwards and backwards", batch 256, 8 Titan X
TIMM = {"resnet50": ("resnet50", "legacy_seresnet50"), "resnext50_32x4d": ("resnext50_32x4d", "legacy_seresnext50_32x4d")}


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def _autocast(x: torch.Tensor, amp: str | None):
    return torch.autocast(x.device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp: str | None = None) -> float:
    """Mean seconds per SGD step (forward, backward, update), after one warm-up step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(x, amp):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()
    _sync(x)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def infer_seconds(model: nn.Module, x: torch.Tensor, steps: int, amp: str | None = None) -> float:
    """Mean seconds per eval-mode forward, after one warm-up forward."""
    model.eval()
    with _autocast(x, amp):
        model(x)
        _sync(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
    _sync(x)
    return (time.perf_counter() - start) / steps


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median of the per-round ratios a / b: a load that drifts between rounds cancels within each round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def make_models(arch: str, *, timm_too: bool, compiled: bool) -> dict[str, nn.Module]:
    """The models to time, by label; the first is our baseline, the second our (fused) SE model."""
    se = f"se_{arch}"
    models = {f"ours {arch}": build_model(arch), f"ours {se} fused": build_model(se)}
    models[f"ours {se} unfused"] = copy.deepcopy(models[f"ours {se} fused"])
    assert set_fused_se(models[f"ours {se} unfused"], False) > 0, f"{se} has no SE that meets a residual sum"
    if compiled:  # compile copies, so the eager models stay eager
        models[f"ours {arch} compiled"] = torch.compile(copy.deepcopy(models[f"ours {arch}"]))
        models[f"ours {se} fused compiled"] = torch.compile(copy.deepcopy(models[f"ours {se} fused"]))
    if timm_too and arch in TIMM:
        try:
            import timm
        except ImportError:
            print("timm is not installed: no peer models (pip install -e '.[dev]')", file=sys.stderr)
        else:
            base, with_se = TIMM[arch]
            models[f"timm {base}"] = timm.create_model(base, pretrained=False)
            models[f"timm {with_se}"] = timm.create_model(with_se, pretrained=False)
    return models


def _pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """(what, numerator, denominator) of every ratio the report gives, for the models present."""
    base, fused, unfused = names[:3]
    out = [("SE / no-SE, ours fused (default)", fused, base), ("SE / no-SE, ours unfused", unfused, base),
           ("fused / unfused", fused, unfused)]
    comp = [n for n in names if n.endswith("compiled")]
    if comp:
        out += [("SE / no-SE, ours compiled", comp[1], comp[0]), ("compiled / eager, SE fused", comp[1], fused)]
    peers = [n for n in names if n.startswith("timm ")]
    if peers:
        out += [("SE / no-SE, timm", peers[1], peers[0]), ("ours SE fused / timm SE", fused, peers[1]),
                ("ours no-SE / timm no-SE", base, peers[0])]
    return out


def report(args: argparse.Namespace, models: dict[str, nn.Module], train: dict, infer: dict) -> str:
    """The markdown report: per-model medians, the ratios, GMACs, the paper's figure."""
    names = list(models)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    setting = (f"batch {args.batch} at {args.size}x{args.size}, {args.amp or 'fp32'}"
               f"{', channels_last' if args.channels_last else ''}; {args.rounds} rounds x {args.steps} steps")
    lines = [f"Device: {dev}; torch {torch.__version__}; {setting}; medians.", "",
             "| model | train step (ms) | inference (ms) | train img/s |", "|---|---|---|---|"]
    for n in names:
        t, i = statistics.median(train[n]), statistics.median(infer[n])
        lines.append(f"| {n} | {1e3 * t:.1f} | {1e3 * i:.1f} | {args.batch / t:,.1f} |")
    lines += ["", "| ratio (medians of per-round ratios) | training step | inference |", "|---|---|---|"]
    lines += [f"| {what} | {ratio(train, a, b):.3f} | {ratio(infer, a, b):.3f} |" for what, a, b in _pairs(names)]
    cx = {n: complexity(models[n], input_size=(3, args.size, args.size)) for n in names[:2]}
    base, fused = names[:2]
    lines += ["", (f"Params {cx[base].params / 1e6:.2f} M -> {cx[fused].params / 1e6:.2f} M; GMACs/image "
                   f"{cx[base].gmacs:.3f} -> {cx[fused].gmacs:.3f} (ratio {cx[fused].gmacs / cx[base].gmacs:.3f}).")]
    if args.arch in PAPER_MS:
        plain, with_se = PAPER_MS[args.arch]
        lines.append(f"Paper (8 Titan X, batch 256, forward + backward): {with_se:.0f} / {plain:.0f} ms = "
                     f"{with_se / plain:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="a registered architecture (its se_ twin is the SE model)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round, model and mode")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds; medians are reported")
    parser.add_argument("--channels-last", action="store_true", help="models and input in channels_last")
    parser.add_argument("--amp", choices=["bf16"], help="autocast to bfloat16 (fp32 without)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd copies (slow to compile)")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's models")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write the markdown report here too")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    models = make_models(args.arch, timm_too=not args.no_timm, compiled=args.compile)
    models = {n: m.to(device, memory_format=fmt) for n, m in models.items()}
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    names = list(models)
    train: dict[str, list[float]] = {n: [] for n in names}
    infer: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # one untimed round: first-touch allocations and lazy initialisation
        step_seconds(models[name], x, y, 1, args.amp)
        infer_seconds(models[name], x, 1, args.amp)
    for r in range(args.rounds):
        # Alternate, and rotate who goes first, so load from other processes hits every model alike.
        for name in names[r % len(names):] + names[:r % len(names)]:
            train[name].append(step_seconds(models[name], x, y, args.steps, args.amp))
            infer[name].append(infer_seconds(models[name], x, args.steps, args.amp))
    text = report(args, models, train, infer)
    publish(text, args.out, f"SE overhead: {args.arch}", invocation("benchmarks/bench_se_overhead.py", argv))


if __name__ == "__main__":
    main()
