"""Peak activation memory of the 0.9.1 VAE decode, whole layers against time-chunked
layers (`CausalVideoVAE.decode(..., time_chunk=N)`), with the real decoder config.

Two measurements, both counting the bytes of the tensors the decode creates
(`benchmarks.memory_probe.PeakLiveBytes`; weights and the latent are not counted):

1. the GPU benchmark's size, 768x512x121 in bf16, on the meta device: shapes only, so it
   takes seconds and no memory; beside it the budget the decode has (`BUDGET_GIB`: the peak
   memory target less the transformer's and the VAE's weights);
2. a real CPU run with random weights at a small size (default 256x256x49, fp32): the
   same accounting on real tensors, the wall time of each decode (the fastest of
   `--repeats`, whole and chunked taking turns) and the largest difference between the
   two videos.

GPU numbers (`torch.cuda.max_memory_allocated`) read somewhat higher: cuDNN workspaces
and the caching allocator are not tensors the probe sees.

    python -m benchmarks.vae_decode_memory [--size 256x256x49] [--time-chunk 8] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks.memory_probe import PeakLiveBytes
from ltx_core.models.configs import LTXV_VAE_0_9_1
from ltx_core.models.vae import CausalVideoVAE

RESULTS = Path(__file__).parent / "results" / "vae_decode_memory.json"
GPU_BENCH_SIZE = (768, 512, 121)  # bench_gpu_speed's clip
PEAK_TARGET_GIB, WEIGHTS_GIB = 8.0, 5.3  # the peak memory target; the 2B transformer's + VAE's bf16 weights
BUDGET_GIB = PEAK_TARGET_GIB - WEIGHTS_GIB
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GIB = 2**30


def latent_shape(width: int, height: int, frames: int) -> tuple[int, ...]:
    return (1, 128, (frames - 1) // 8 + 1, height // 32, width // 32)


def decode(vae: CausalVideoVAE, latent: torch.Tensor, time_chunk: int | None) -> tuple[torch.Tensor, int, float]:
    """(video, peak bytes created, seconds) of one seeded decode."""
    start = time.perf_counter()
    with torch.no_grad(), PeakLiveBytes() as probe:
        video = vae.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(0), time_chunk=time_chunk)
    return video, probe.peak, time.perf_counter() - start


def on_meta(chunks: list[int]) -> dict:
    """Peak GiB at the GPU benchmark's size in bf16, whole and for each chunk size."""
    with torch.device("meta"):
        vae = CausalVideoVAE(LTXV_VAE_0_9_1).to(torch.bfloat16).eval()
    latent = torch.empty(latent_shape(*GPU_BENCH_SIZE), device="meta", dtype=torch.bfloat16)
    peaks = {str(chunk): round(decode(vae, latent, chunk)[1] / GIB, 3) for chunk in [None, *chunks]}
    return {
        "size": "x".join(map(str, GPU_BENCH_SIZE)),
        "dtype": "bf16",
        "peak_gib": peaks,
        "budget_gib": round(BUDGET_GIB, 2),
    }


def random_vae(dtype: torch.dtype) -> CausalVideoVAE:
    torch.manual_seed(0)
    vae = CausalVideoVAE(LTXV_VAE_0_9_1).eval().requires_grad_(False)
    for name, param in vae.decoder.named_parameters():
        if "per_channel_scale" in name:  # zero in a fresh model; make the noise act
            param.normal_(0.0, 0.1)
    return vae.to(dtype)


def on_cpu(size: tuple[int, int, int], time_chunk: int, dtype: torch.dtype, repeats: int) -> dict:
    """Real decodes at `size`, whole and chunked in turns: peak MiB, the fastest of
    `repeats` seconds each, largest difference."""
    vae = random_vae(dtype)
    latent = torch.randn(latent_shape(*size), generator=torch.Generator().manual_seed(1)).to(dtype)
    whole_s, chunked_s = [], []
    for _ in range(repeats):
        whole, whole_peak, seconds = decode(vae, latent, None)
        whole_s.append(seconds)
        chunked, chunked_peak, seconds = decode(vae, latent, time_chunk)
        chunked_s.append(seconds)
    whole_s, chunked_s = min(whole_s), min(chunked_s)
    return {
        "size": "x".join(map(str, size)),
        "dtype": str(dtype).removeprefix("torch."),
        "time_chunk": time_chunk,
        "repeats": repeats,
        "peak_mib": {"whole": round(whole_peak / 2**20, 1), "chunked": round(chunked_peak / 2**20, 1)},
        "peak_ratio_chunked_over_whole": round(chunked_peak / whole_peak, 3),
        "seconds": {"whole": round(whole_s, 2), "chunked": round(chunked_s, 2)},
        "time_ratio_chunked_over_whole": round(chunked_s / whole_s, 3),
        "max_abs_difference": float((chunked.float() - whole.float()).abs().max()),
        "video_max_abs": float(whole.float().abs().max()),
    }


def parse_size(text: str) -> tuple[int, int, int]:
    width, height, frames = (int(v) for v in text.split("x"))
    return width, height, frames


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(256, 256, 49), help="WIDTHxHEIGHTxFRAMES of the CPU run")
    parser.add_argument("--time-chunk", type=int, default=8, help="frames per chunk in the CPU run")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="of the CPU run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="decodes of each kind in the CPU run (fastest kept)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the meta-device accounting")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.processor() or platform.machine()}), torch threads {args.threads}",
        "torch": torch.__version__,
        "issue_size_on_meta": on_meta([1, 2, 4, 8, 16, 32]),  # the key earlier results have
    }
    print("0.9.1 decode at 768x512x121, bf16 (meta): peak GiB by time_chunk", result["issue_size_on_meta"]["peak_gib"])
    if not args.skip_cpu:
        result["cpu_run"] = on_cpu(args.size, args.time_chunk, DTYPES[args.dtype], args.repeats)
        print("CPU run:", json.dumps(result["cpu_run"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
