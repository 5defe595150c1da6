"""Where a run's time goes: wall-clock marks at the moments of a run (models loaded, text
encoded, first step, sampled, decoded, written), for `--timings` and the benchmarks that
run the CLI as a user does. On CUDA each mark waits for the device first, so a mark is
when the work before it finished, not when it was queued, and the report gives the run's
peak GPU memory (tensors allocated, as torch counts them)."""

from __future__ import annotations

import json
import time
from pathlib import Path


class RunClock:
    """Marks by name, each the first time it is reached: epoch seconds (`time.time()`, so a
    parent process can set them against its own clock) and seconds since `start`."""

    def __init__(self, device=None):
        self.device = device
        self.marks: dict[str, float] = {}
        self.mark("start")

    def on_cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", str(self.device)).startswith("cuda")

    def mark(self, name: str) -> None:
        if name in self.marks:
            return
        if self.on_cuda():
            import torch

            torch.cuda.synchronize(self.device)
        self.marks[name] = time.time()

    def seconds(self) -> dict[str, float]:
        """Each mark's seconds since start, in the order reached."""
        start = self.marks["start"]
        return {name: round(at - start, 4) for name, at in self.marks.items()}

    def write(self, path: Path) -> None:
        stages = self.seconds()
        report = {"epoch": self.marks, "seconds_since_start": stages}
        if "text" in stages and "decode" in stages:
            report["after_text_s"] = round(stages["decode"] - stages["text"], 4)
        report["peak_gpu_memory_gib"] = self.peak_gpu_memory_gib()
        Path(path).write_text(json.dumps(report, indent=2) + "\n")

    def peak_gpu_memory_gib(self) -> float | None:
        """The most GPU memory the run's tensors held at once; None off a GPU."""
        if not self.on_cuda():
            return None
        import torch

        return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
