"""Where SE's GPU overhead goes: a kernel profile and an A/B of the excitation FCs (paper Sec. 4).

Run on a CUDA machine: ``python benchmarks/gpu_se_profile.py``. Prints the top CUDA kernels of an
SE-ResNet-50 train step in bf16 + channels_last, then the SE/no-SE step-time ratio with the excitation
FCs run as 1x1 convolutions (as released) and as matrix products on the pooled (N, C) descriptor.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import step_time

from senet import build_model
from senet.se import SqueezeExcite


def excitation_as_linear(self: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    z = self.squeeze(x)
    if self.squeeze.mode == "none":
        return self.gate(self.fc2(self.act(self.fc1(z))))
    n, c = z.shape[:2]
    h = self.act(F.linear(z.flatten(1), self.fc1.weight.flatten(1), self.fc1.bias))
    return self.gate(F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias)).view(n, c, 1, 1)


def main(batch: int = 128, steps: int = 20) -> None:
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | batch {batch}")
    model = build_model("se_resnet50").cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    def train_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: cuDNN's algorithm search, the allocator
        train_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            train_step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=70))
    for label in ("1x1 conv FCs", "linear FCs"):
        if label == "linear FCs":
            SqueezeExcite.excitation = excitation_as_linear
        for cl in (False, True):
            t_base = step_time(build_model("resnet50"), batch, steps, True, cl)
            t_se = step_time(build_model("se_resnet50"), batch, steps, True, cl)
            print(f"{label}, bf16{' + channels_last' if cl else ''}: ResNet-50 {batch / t_base:.0f} img/s, "
                  f"SE-ResNet-50 {batch / t_se:.0f} img/s, ratio {t_se / t_base:.3f}")


if __name__ == "__main__":
    main()
