"""Measuring helpers shared by the GPU benchmarks (imported from beside them)."""

from __future__ import annotations

import gc
import time
import warnings

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), wall seconds), the device synchronized on both ends."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def fresh_peak(device: torch.device) -> None:
    """Free what Python holds, hand cached blocks back, and restart the peak counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def live_cuda_tensors(top: int = 8) -> dict:
    """What Python still holds on the GPU: total GiB of distinct CUDA storages reachable
    from tracked objects, and the largest few (shape, dtype, GiB), to tell a benchmark's
    leftovers from what the pipeline itself needs."""
    if not torch.cuda.is_available():
        return {}
    seen, found = set(), []
    with warnings.catch_warnings():  # touching some tracked objects warns (deprecations)
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if not (isinstance(obj, torch.Tensor) and obj.is_cuda):
                    continue
                storage = obj.untyped_storage()
                pointer = storage.data_ptr()
            except Exception:  # noqa: BLE001 - a fake tensor (compile tracing), a subclass, a freed storage
                continue
            if pointer not in seen:
                seen.add(pointer)
                found.append((storage.nbytes(), tuple(obj.shape), str(obj.dtype)))
    found.sort(reverse=True)
    gib = 1024 ** 3
    return {"total_gib": round(sum(f[0] for f in found) / gib, 3), "count": len(found),
            "largest": [{"shape": list(s), "dtype": d, "gib": round(n / gib, 3)} for n, s, d in found[:top]]}
