"""Writing the mp4, the last step of every CLI run and of the pack's save node: the same
clips written with each libx264 preset `ltx_core.video` allows, at the default quality
(CRF), timed, sized and read back.

    python -m benchmarks.mp4_write [--threads 2] [--repeats 2] [--tiny]

Clips, 768x512x121 (the published models' default size): a scene of the demo world
(`ltx_core.training.data`: a shape moving over a textured background) and smooth random
motion (noise drawn at 24x16 and upscaled), a harder case for the encoder. A row's seconds
are the best of `--repeats` of `write_mp4` (conversion to 8 bits, encoding, the file);
its PSNR is the decoded file against the frames given. `ltx_core.video.DEFAULT_X264_PRESET`
is the fastest preset whose files stay within 0.1 dB and 5% in size of libx264's own
default ("medium") on both clips. The default preset's encode is timed again with PyAV's
default thread type ("SLICE") and the writer's (`ENCODER_THREAD_TYPE`).

Writes benchmarks/results/mp4_write.json. `--tiny`: 64x64x9 clips (the script's test).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ltx_core import video
from ltx_core.training import data
from ltx_core.video import DEFAULT_CRF, DEFAULT_X264_PRESET, X264_PRESETS, read_video_frames, write_mp4

RESULTS = Path(__file__).parent / "results"
FPS = 24.0
BASELINE = "medium"  # libx264's own default
MAX_PSNR_LOSS_DB, MAX_SIZE_GAIN = 0.1, 0.05
THREAD_TYPES = ("SLICE", video.ENCODER_THREAD_TYPE)  # PyAV's default, the writer's


def clips(size: dict) -> dict[str, torch.Tensor]:
    """(F, H, W, 3) float frames in [0, 1] of each kind."""
    frames, height, width = size["frames"], size["height"], size["width"]
    spec = data.sample_clip_spec(seed=0, index=3)
    scene = (data.render_clip(spec, frames, height, width) + 1) / 2
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(frames, 3, max(2, height // 32), max(2, width // 32), generator=g)
    noise = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return {"scene": scene.permute(1, 2, 3, 0).contiguous(), "smooth_noise": noise.permute(0, 2, 3, 1).contiguous()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return round(10 * math.log10(1 / mse), 2) if mse > 0 else float("inf")


def measure(frames: torch.Tensor, preset: str, repeats: int, folder: Path) -> dict:
    path = folder / f"{preset}.mp4"
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        write_mp4(frames, path, FPS, overwrite=True, x264_preset=preset)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": round(min(seconds), 3),
        "kib": round(path.stat().st_size / 1024, 1),
        "psnr_db": psnr(read_video_frames(path), frames),
    }


def measure_threads(frames: torch.Tensor, thread_type: str, repeats: int, folder: Path) -> dict:
    """The default preset's encode with PyAV's `thread_type` (the writer's choice against
    PyAV's default, "SLICE"); the conversion to 8 bits is outside the time."""
    path = folder / f"threads_{thread_type}.mp4"
    pixels = video._frames_to_uint8(frames)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        video._encode(pixels, str(path), video._frame_rate(FPS), {}, DEFAULT_CRF, DEFAULT_X264_PRESET, thread_type)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": round(min(seconds), 3),
        "kib": round(path.stat().st_size / 1024, 1),
        "psnr_db": psnr(read_video_frames(path), frames),
    }


def choose(rows: dict) -> str:
    """The fastest preset within the PSNR and size margins of the baseline on every clip."""
    fits = [
        p
        for p in X264_PRESETS
        if all(
            r[p]["psnr_db"] >= r[BASELINE]["psnr_db"] - MAX_PSNR_LOSS_DB
            and r[p]["kib"] <= r[BASELINE]["kib"] * (1 + MAX_SIZE_GAIN)
            for r in rows.values()
        )
    ]
    return min(fits, key=lambda p: sum(r[p]["seconds"] for r in rows.values()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the 8-bit conversion)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "mp4_write.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = dict(width=64, height=64, frames=9) if args.tiny else dict(width=768, height=512, frames=121)
    rows, threads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, frames in clips(size).items():
            rows[name] = {preset: measure(frames, preset, args.repeats, Path(tmp)) for preset in X264_PRESETS}
            threads[name] = {kind: measure_threads(frames, kind, args.repeats, Path(tmp)) for kind in THREAD_TYPES}
    chosen = choose(rows)
    report = {
        "benchmark": "mp4_write",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores), torch threads {args.threads}",
        "size": size,
        "crf": DEFAULT_CRF,
        "rows": rows,
        "chosen": chosen,
        "default_preset": DEFAULT_X264_PRESET,
        "cpu_count": os.cpu_count(),
        "thread_types": threads,
        "thread_type": video.ENCODER_THREAD_TYPE,
        "rule": f"fastest preset within {MAX_PSNR_LOSS_DB} dB and {MAX_SIZE_GAIN:.0%} size of {BASELINE} on every clip",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, by_preset in rows.items():
        for preset, row in by_preset.items():
            print(f"{name:13} {preset:9} {row['seconds']:.3f} s {row['kib']:8.1f} KiB {row['psnr_db']:.2f} dB")
    for name, by_kind in threads.items():
        for kind, row in by_kind.items():
            print(f"{name:13} threads {kind:5} {row['seconds']:.3f} s {row['kib']:8.1f} KiB {row['psnr_db']:.2f} dB")
    print(f"chosen: {chosen} (ltx_core.video's default: {DEFAULT_X264_PRESET})")
    return report


if __name__ == "__main__":
    main()
