"""Measuring helpers shared by the GPU benchmarks (imported from beside them)."""

from __future__ import annotations

import gc

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_peak(device: torch.device) -> None:
    """Free what Python holds, hand cached blocks back, and restart the peak counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
