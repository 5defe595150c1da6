"""What the Triton kernels of `speed` share: whether they run under Triton's CPU interpreter
(TRITON_INTERPRET=1, set before Triton is imported: the CPU tests of the kernels) and how a
launch reaches the tensors' GPU."""

from __future__ import annotations

import os

import torch
from torch import Tensor


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def launch(kernel, grid: tuple[int, ...], x: Tensor, *args, **meta) -> None:
    """`kernel[grid](*args, **meta)` on x's device: Triton launches on the current CUDA
    device, not the tensors'."""
    if x.is_cuda:
        with torch.cuda.device(x.device):
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)
