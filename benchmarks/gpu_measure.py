"""Measuring helpers shared by the GPU benchmarks: synchronized wall-clock timing, peak
memory, what Python still holds on the GPU, the error between two outputs, a results file's
opening keys, and keys merged into a results file that several benchmarks share."""

from __future__ import annotations

import datetime
import gc
import json
import platform
import time
import warnings
from pathlib import Path

import torch

GIB = 2**30


def report_header(benchmark: str, on_gpu: bool) -> dict:
    """The keys every results file opens with: what ran, when (UTC), where, on which torch."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
    }


def merge_results(path: Path, values: dict) -> None:
    """`values` written over their keys in the JSON file at `path`, its other keys kept
    (gpu_speed.json holds the keys of several benchmarks)."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(values)
    path.write_text(json.dumps(merged, indent=2) + "\n")


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


def peak_gib(device: torch.device) -> dict:
    """Peak allocated and reserved GiB since `fresh_peak`; {} off the GPU."""
    if device.type != "cuda":
        return {}
    return dict(
        peak_allocated_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 3),
        peak_reserved_gib=round(torch.cuda.max_memory_reserved(device) / GIB, 3),
    )


def max_peak(*peaks: dict) -> dict:
    """The larger of each `peak_gib` reading."""
    return {k: max(p[k] for p in peaks) for k in peaks[0]}


def module_gib(*modules) -> float:
    """GiB of the modules' parameters and buffers."""
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]) / GIB


def error_stats(ours: torch.Tensor, reference: torch.Tensor) -> dict:
    """Largest and relative L2 difference of two outputs, beside the reference's range."""
    ours, reference = ours.float().flatten(), reference.float().flatten().to(ours.device)
    diff = ours - reference
    return dict(
        max_abs=diff.abs().max().item(),
        rel_l2=(diff.norm() / reference.norm()).item(),
        ref_max_abs=reference.abs().max().item(),
    )


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
            except Exception:
                continue
            if pointer not in seen:
                seen.add(pointer)
                found.append((storage.nbytes(), tuple(obj.shape), str(obj.dtype)))
    found.sort(reverse=True)
    return {
        "total_gib": round(sum(f[0] for f in found) / GIB, 3),
        "count": len(found),
        "largest": [{"shape": list(s), "dtype": d, "gib": round(n / GIB, 3)} for n, s, d in found[:top]],
    }
