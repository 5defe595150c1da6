"""What the Triton kernels of `speed` share: whether they run under Triton's CPU interpreter
(TRITON_INTERPRET=1, set before Triton is imported: the CPU tests of the kernels) and how a
launch reaches the tensors' GPU."""

from __future__ import annotations

import inspect
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


def autotuned(kernel, warps: tuple[int, ...], key: list[str]):
    """`kernel` with its warps per program chosen by timing each of `warps` on first use, once
    per value of the `key` arguments. The timings go to Triton's on-disk cache (keyed on
    Triton's version, the GPU, the kernel's source and the key), so a later process on the
    machine reads the choice instead of timing again (a Triton older than 3.2 times it in
    every process). Unchanged under the interpreter, which has no timer."""
    if interpreting():
        return kernel
    import triton

    configs = [triton.Config({}, num_warps=w) for w in warps]
    kept = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    return triton.autotune(configs=configs, key=key, **kept)(kernel)
