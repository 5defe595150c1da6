"""The memory a run may use on its device, read without importing torch for the CPU."""

from __future__ import annotations

from pathlib import Path


def available_memory(device: str) -> int | None:
    """Bytes the run may use on `device`: a GPU's free memory as its driver reports it, the
    machine's available memory for the CPU (/proc/meminfo's MemAvailable, else psutil);
    None where neither can be read."""
    if str(device).startswith("cuda"):
        import torch  # only a GPU run asks, and it imports torch anyway

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return _meminfo_available() or _psutil_available()


def device_capacity(device: str) -> int | None:
    """All the memory of `device`, used or not: what a run may count on where a memory
    manager (ComfyUI's) frees other models first. A GPU's total as its driver reports it,
    the machine's MemTotal for the CPU; None where it cannot be read."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return _meminfo_available(key="MemTotal:")


def _meminfo_available(path: Path = Path("/proc/meminfo"), key: str = "MemAvailable:") -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _psutil_available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)
