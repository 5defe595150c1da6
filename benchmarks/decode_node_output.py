"""Where the decode node's time goes past the decode: the core's decode (`decode_frames`,
its conversion to frames on the GPU included) and each way of handing the frames to
ComfyUI as an `IMAGE` (float32 on the CPU, (F, H, W, 3)), at the GPU benchmark's size
(0.9.1 VAE with random weights, 768x512x121, bf16, the default time chunk).

The ways, each giving the same values (checked against the first):
- `float_contiguous_cpu`: what `nodes.convert.frames_to_image` does: laid out on the
  GPU, one pageable copy of float32 frames;
- `strided_cpu`: the same copy of the permuted view, its layout left as it is (ComfyUI's
  own VAEDecode hands on a `movedim` view too);
- `bf16_cpu_then_convert`: the decoder's bf16 video copied out (half the bytes), the
  conversion to [0, 1] and the layout done on the CPU, as ComfyUI's VAEDecode does;
- `pinned_chunks`: float32 frames through a reused pinned buffer, a few frames at a time.

    python -m benchmarks.decode_node_output [--repeats 3] [--out results/decode_node_output.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from einops import rearrange

from benchmarks.gpu_measure import report_header, timed
from ltx_core import pipeline
from ltx_core.models.configs import LTXV_VAE_0_9_1
from ltx_core.models.vae import DEFAULT_DECODE_TIME_CHUNK, CausalVideoVAE

RESULTS = Path(__file__).parent / "results" / "decode_node_output.json"
PINNED_FRAMES = 8  # frames per pinned-buffer copy


def core_frames(vae, latent: torch.Tensor) -> torch.Tensor:
    """The node's decode: (1, F, H, W, 3) float32 frames on the GPU."""
    return pipeline.decode_frames(
        vae, latent, generator=torch.Generator().manual_seed(0), time_chunk=DEFAULT_DECODE_TIME_CHUNK
    )


def float_contiguous_cpu(frames: torch.Tensor) -> torch.Tensor:
    return frames.flatten(0, 1).float().contiguous().cpu()


def strided_cpu(frames: torch.Tensor) -> torch.Tensor:
    return frames.flatten(0, 1).cpu()


def bf16_cpu_then_convert(video: torch.Tensor) -> torch.Tensor:
    """From the decoder's (1, 3, F, H, W) video in [-1, 1], as `decode_frames` converts it."""
    frames = video.cpu().float().div_(2).add_(0.5).clamp_(0, 1)
    return rearrange(frames, "b c f h w -> (b f) h w c")


def pinned_chunks(frames: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    frames = frames.flatten(0, 1)
    out = torch.empty(frames.shape, dtype=torch.float32)
    for start in range(0, len(frames), PINNED_FRAMES):
        part = frames[start : start + PINNED_FRAMES]
        staged = buffer[: len(part)]
        staged.copy_(part)  # synchronous: the buffer is reused at once
        out[start : start + len(part)].copy_(staged)
    return out


@torch.no_grad()
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("decode_node_output.py times GPU-to-CPU copies; no CUDA device here")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    vae = CausalVideoVAE(LTXV_VAE_0_9_1).to(device, torch.bfloat16).eval().requires_grad_(False)
    latent = torch.randn(1, 128, 16, 16, 24, generator=torch.Generator().manual_seed(1)).to(device, torch.bfloat16)
    frames = core_frames(vae, latent)  # warm-up (cuDNN picks its algorithms)
    video = frames.permute(0, 4, 1, 2, 3).mul(2).sub(1).to(torch.bfloat16)  # a bf16 video of the same size
    buffer = torch.empty((PINNED_FRAMES, *frames.shape[2:]), dtype=torch.float32, pin_memory=True)
    ways = {
        "float_contiguous_cpu": lambda: float_contiguous_cpu(frames),
        "strided_cpu": lambda: strided_cpu(frames),
        "bf16_cpu_then_convert": lambda: bf16_cpu_then_convert(video),
        "pinned_chunks": lambda: pinned_chunks(frames, buffer),
    }
    rows = {"decode_frames": min(timed(lambda: core_frames(vae, latent), device)[1] for _ in range(args.repeats))}
    reference = float_contiguous_cpu(frames)
    video_reference = bf16_cpu_then_convert(video)
    for name, way in ways.items():
        image, _ = timed(way, device)
        same_as = video_reference if name.startswith("bf16") else reference
        assert torch.equal(image, same_as), f"{name} changed the frames"
        rows[name] = min(timed(way, device)[1] for _ in range(args.repeats))
        print(f"{name}: {rows[name]:.4f} s", flush=True)
    result = report_header("decode_node_output", True) | {
        "size": "768x512x121", "vae": "0.9.1 config, random weights", "dtype": "bf16",
        "time_chunk": DEFAULT_DECODE_TIME_CHUNK, "image_bytes": reference.numel() * 4,
        "seconds": {k: round(v, 4) for k, v in rows.items()},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
