"""The eager (uncompiled) VAE decode on a GPU, whole layers against time-chunked layers:
the decode the CLI and the decode node run, whose default is `DEFAULT_DECODE_TIME_CHUNK`.

`bench_gpu_speed` times the chunks with the compiled decoder; this script times the
eager one, at the GPU benchmark's size (0.9.1 VAE with random weights, 768x512x121, bf16):
per chunk size the fastest of `--repeats` decodes, the peak memory above the weights and
the largest difference from the whole decode (same latent, same decode noise).

    python -m benchmarks.bench_decode_chunks [--chunks 8,16,32] [--out results/decode_time_chunks.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from benchmarks.gpu_measure import GIB, fresh_peak, timed
from ltx_core.models.configs import LTXV_VAE_0_9_1
from ltx_core.models.vae import DEFAULT_DECODE_TIME_CHUNK, CausalVideoVAE

RESULTS = Path(__file__).parent / "results" / "decode_time_chunks.json"


@torch.no_grad()
def decode(vae, latent: torch.Tensor, time_chunk: int | None) -> torch.Tensor:
    """The decode `pipeline.decode_frames` runs (denoising decode at t = 0.05 with noise
    0.025), without its conversion to frames (the GPU image has no PyAV)."""
    return vae.decode(
        latent,
        timestep=0.05,
        decode_noise_scale=0.025,
        generator=torch.Generator().manual_seed(0),
        time_chunk=time_chunk,
    )


def measure(vae, latent: torch.Tensor, time_chunk: int | None, repeats: int, weights: int) -> tuple[dict, torch.Tensor]:
    device = latent.device
    decode(vae, latent, time_chunk)  # warm-up (cuDNN picks its algorithms)
    fresh_peak(device)
    runs = [timed(lambda: decode(vae, latent, time_chunk), device) for _ in range(repeats)]
    frames, times = runs[-1][0], [seconds for _, seconds in runs]
    peak = (torch.cuda.max_memory_allocated(device) - weights) / GIB
    return {"decode_s": round(min(times), 4), "peak_above_weights_gib": round(peak, 3)}, frames.cpu()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_decode_chunks.py times a GPU decode; no CUDA device here")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    vae = CausalVideoVAE(LTXV_VAE_0_9_1).to("cuda", torch.bfloat16).eval().requires_grad_(False)
    weights = torch.cuda.memory_allocated()
    latent = torch.randn(1, 128, 16, 16, 24, generator=torch.Generator().manual_seed(1)).to("cuda", torch.bfloat16)
    rows = {}
    rows["whole"], whole = measure(vae, latent, None, args.repeats, weights)
    print("whole", rows["whole"], flush=True)
    for chunk in (int(c) for c in args.chunks.split(",")):
        rows[f"chunk{chunk}"], frames = measure(vae, latent, chunk, args.repeats, weights)
        rows[f"chunk{chunk}"]["max_abs_vs_whole"] = float((frames.float() - whole.float()).abs().max())
        print(f"chunk {chunk}", rows[f"chunk{chunk}"], flush=True)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "size": "768x512x121", "vae": "0.9.1 config, random weights", "dtype": "bf16", "compiled": False,
        "default_time_chunk": DEFAULT_DECODE_TIME_CHUNK,
        "frames_shape": list(whole.shape),
        "decodes": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
