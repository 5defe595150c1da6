"""The command line's flags: the parser of `python -m ltx_core generate` (one-line usage
errors), the argument types, the exit codes, and the sizes an unset flag takes."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from . import __version__, cli_config
from .errors import SettingsError
from .memory_plan import DEFAULT_DECODE_TIME_CHUNK
from .preflight import DEFAULT_TILE_OVERLAP, OFFLOAD_CHOICES, STG_MODES, parse_blocks

EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_RANK_FAILED = 3  # under torchrun: another rank crashed or stopped answering; no file

# Sizes for a named checkpoint: the published models' default (Lightricks' README).
FULL_SIZE = {"width": 768, "height": 512, "frames": 121}
# Sizes for the shipped tiny model, which was trained on 25-frame 256x256 clips.
SHIPPED_SIZE = {"width": 256, "height": 256, "frames": 25}
# How the shipped tiny model samples unless told: from some noise draws (the same seeds for
# every prompt) its plain Euler steps draw no shape at all, where its stochastic steps draw
# one (evaluation/results/demo_eval_prompts_30_seeds*.json)
SHIPPED_SAMPLING = {"stochastic_sampling": True}
# Its clips decode whole layers: on a CPU, PyTorch's convolutions of a time chunk this short
# take a much slower algorithm than the whole clip's (a chunk of 16 frames doubles its decode).
SHIPPED_DECODE = {"decode_time_chunk": SHIPPED_SIZE["frames"]}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the usage text."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `defaults` replace the flags' own (a release config's, `cli_config`)."""
    parser = _OneLineParser(prog="python -m ltx_core", description="LTX-Video inference without ComfyUI.")
    parser.add_argument("--version", action="version", version=f"ltx_core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    generate = commands.add_parser(
        "generate",
        help="text (or text + first frame) to video",
        description="Generate a video. Without --checkpoint, the shipped tiny demo model is used, and "
        "width/height/frames default to {width}x{height}, {frames} frames (what it was trained on); "
        "with --checkpoint they default to {fw}x{fh}, {ff} frames.".format(
            **SHIPPED_SIZE, fw=FULL_SIZE["width"], fh=FULL_SIZE["height"], ff=FULL_SIZE["frames"]
        ),
    )
    models = generate.add_argument_group("models")
    models.add_argument(
        "--checkpoint",
        type=Path,
        help="official single .safetensors file (FP8 and ComfyUI's scaled FP8 included), a GGUF "
        "file (with --vae), or a diffusers folder (default: the config's, else the shipped tiny model)",
    )
    models.add_argument(
        "--vae",
        type=Path,
        help="the VAE from another official .safetensors file or diffusers folder (default: the "
        "checkpoint's own); needed for a GGUF checkpoint, which holds only the transformer",
    )
    models.add_argument(
        "--text-encoder",
        type=Path,
        help="T5 encoder folder or .safetensors file (default: the "
        "shipped one, or the diffusers folder's text_encoder/)",
    )
    models.add_argument(
        "--tokenizer",
        type=Path,
        help="T5 tokenizer (spiece.model or its folder), where the text encoder does not hold one",
    )
    models.add_argument(
        "--lora",
        action="append",
        type=parse_lora,
        default=[],
        metavar="FILE[:STRENGTH]",
        help="a LoRA .safetensors file for the transformer (ComfyUI, diffusers or kohya keys) at "
        "STRENGTH (default 1); repeatable, e.g. --lora style.safetensors:0.8 --lora detail.safetensors",
    )
    models.add_argument(
        "--dtype",
        help="fp32, bf16 or fp16 (default: bf16 on a CUDA GPU, as the models are published; fp32 on the CPU)",
    )
    models.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda where a CUDA GPU is present, else cpu)")

    video = generate.add_argument_group("video")
    video.add_argument("--prompt", required=True, help="what the video shows")
    video.add_argument("--negative-prompt", default="", help="what to steer away from (CFG)")
    video.add_argument("--image", type=Path, help="first frame; resized and center-cropped to width x height")
    video.add_argument(
        "--width",
        type=int,
        help=f"multiple of 32 (default {FULL_SIZE['width']}, shipped model {SHIPPED_SIZE['width']})",
    )
    video.add_argument(
        "--height",
        type=int,
        help=f"multiple of 32 (default {FULL_SIZE['height']}, shipped model {SHIPPED_SIZE['height']})",
    )
    video.add_argument(
        "--frames",
        type=int,
        help=f"8k + 1 (default {FULL_SIZE['frames']}, shipped model {SHIPPED_SIZE['frames']})",
    )
    video.add_argument("--fps", type=float, default=24.0, help="frame rate, also a model input (default: %(default)s)")
    video.add_argument("--steps", type=int, default=20, help="sampling steps (default: %(default)s)")
    video.add_argument(
        "--cfg",
        type=float,
        default=3.0,
        help="classifier-free guidance scale, 1 = off (default: %(default)s)",
    )
    video.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    video.add_argument(
        "--noise-draws",
        choices=("lightricks", "diffusers"),
        help="whose random draws the seed gives: lightricks (as Lightricks' inference.py, on the run's "
        "device: its seeds give its noise) or diffusers (one CPU generator: the same video on every device). "
        "Default: lightricks for a single pass, diffusers for a multi-scale config (the only one it takes)",
    )
    video.add_argument(
        "--decode-timestep",
        type=float,
        default=0.05,
        help="noise level the VAE decoder removes (default: %(default)s)",
    )
    video.add_argument(
        "--decode-noise-scale",
        type=float,
        default=0.025,
        help="noise mixed in before decoding (default: %(default)s)",
    )

    guide = generate.add_argument_group("conditioning on any frames, video-to-video, STG")
    guide.add_argument(
        "--condition",
        action="append",
        type=parse_condition,
        default=[],
        metavar="IMAGE_OR_VIDEO@FRAME[:STRENGTH]",
        help="an image or an 8k + 1 frame video held from pixel FRAME on (negative: from the end, "
        "-1 = ends on the last frame) at STRENGTH (default 1); repeatable, e.g. "
        "first.png@0 last.png@-1",
    )
    guide.add_argument(
        "--control-video",
        type=parse_lora,
        metavar="VIDEO[:STRENGTH]",
        help="IC-LoRA control (depth, pose, edges): an 8k + 1 frame clip or an image given as in-context "
        "tokens at STRENGTH (default 1); use it with the IC-LoRA it was made for (--lora)",
    )
    guide.add_argument(
        "--control-downscale",
        type=positive_int,
        help="the control's grid is this many times coarser than the video's (default: the --lora "
        "files' reference_downscale_factor, else 1)",
    )
    guide.add_argument(
        "--source-video",
        type=Path,
        help="video-to-video: start from this clip (its frame count and size must be the video's after fitting)",
    )
    guide.add_argument(
        "--denoise-strength",
        type=float,
        default=1.0,
        help="video-to-video: share of the schedule run on the source (default: %(default)s)",
    )
    guide.add_argument(
        "--stg-scale",
        type=float,
        default=0.0,
        help="spatiotemporal skip guidance, 0 = off (Lightricks' 2B configs: 1; default: %(default)s)",
    )
    guide.add_argument(
        "--stg-blocks",
        type=block_list,
        default=(19,),
        help="comma-separated blocks STG perturbs (default: 19, Lightricks' 2B)",
    )
    guide.add_argument(
        "--stg-mode",
        default="attention_values",
        choices=STG_MODES,
        help="how a perturbed block's self-attention is replaced (default: %(default)s)",
    )
    guide.add_argument(
        "--stg-rescale", type=float, default=0.7, help="STG guidance rescale, 0 or 1 = none (default: %(default)s)"
    )

    output = generate.add_argument_group("output")
    output.add_argument("--output", type=Path, default=Path("out.mp4"), help="mp4 path (default: %(default)s)")
    output.add_argument(
        "--overwrite", action="store_true", help="replace an existing output file (otherwise it is refused)"
    )
    output.add_argument(
        "--timings",
        type=Path,
        metavar="FILE.json",
        help="write where the run's time went: wall-clock marks (models loaded, text encoded, latent "
        "prepared, first step, sampled, decoded, written; on a GPU each after the device finished) as epoch "
        "seconds and seconds since the models began loading",
    )
    speed = generate.add_argument_group(
        "speed on a GPU (compiling and FP8 are off by default: one run makes one clip, and a new process "
        "compiles again, its compile caches filled by an earlier run or not, which takes longer than it saves "
        "on one clip; FP8 changes the frames beyond bf16's rounding; benchmarks/results/cli_gpu_speed.json and "
        "cli_gpu_speed_compile.json have the CLI's seconds with and without, gpu_speed.json the per-clip "
        "seconds in one process)"
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the transformer's regions, with CUDA "
        "graphs, the fastest attention backend and the VAE decoder's layers compiled on CUDA (the first "
        "step and the first decode compile; the later ones are faster, benchmarks/results/gpu_speed.json). "
        "Off by default: even with the compile caches an earlier run filled, a new process spends longer "
        "compiling than one clip's steps save (benchmarks/results/cli_gpu_speed_compile.json); it pays where "
        "one process makes many clips (the Python API, a ComfyUI server)",
    )
    speed.add_argument(
        "--fast-kernels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on by default on one CUDA GPU holding the whole transformer (not across GPUs or with "
        "--offload streaming blocks, unless asked), without compiling: QK-norm + RoPE in one Triton pass, each "
        "block's modulated norms and gated residuals in one pass each, the feed-forward's bias + GELU in the "
        "matmul's epilogue, and the fastest attention backend timed on the device (the same frames within "
        "bf16's rounding; each kernel is checked against its reference when loaded; "
        "benchmarks/results/kernel_levers.json, cli_gpu_speed.json); --no-fast-kernels runs PyTorch's own "
        "layers; --fast-kernels on a device other than CUDA is refused",
    )
    speed.add_argument(
        "--fp8",
        action="store_true",
        help="FP8 linear layers in the transformer (a CUDA GPU with "
        "FP8 tensor cores: compute capability 8.9+, e.g. RTX 4090, L4, H100): about half the "
        "transformer's weight memory, for a large model on a small GPU, and a little faster than bf16 "
        "(benchmarks/results/cli_gpu_speed.json); not the default because its frames differ from bf16's "
        "by more than bf16's own rounding; use --dtype bf16",
    )
    speed.add_argument(
        "--decode-time-chunk",
        type=positive_int,
        metavar="N",
        help="compute each VAE decoder "
        "layer N frames at a time, depth-first: the same frames, with a much lower decode memory peak "
        "(smaller N: less memory, more time; benchmarks/results/vae_decode_memory.json); a number "
        "above the clip's frames: whole layers; default: "
        + str(DEFAULT_DECODE_TIME_CHUNK)
        + ", whole layers for a group-norm decoder and across "
        "ranks)",
    )
    speed.add_argument(
        "--decode-tiles",
        type=tile_grid,
        metavar="ROWSxCOLUMNS",
        help="decode the frames in overlapping spatial tiles, one at a time, blended across the "
        "overlaps (e.g. 2x2): decode memory by the tile, for large frames on small cards (default: whole frames)",
    )
    speed.add_argument(
        "--decode-tile-overlap",
        type=int,
        default=DEFAULT_TILE_OVERLAP,
        metavar="CELLS",
        help="latent cells (32 pixels each) the decode tiles overlap (default: %(default)s)",
    )
    long = generate.add_argument_group("long video (overlapping temporal windows)")
    long.add_argument(
        "--window-frames",
        type=positive_int,
        metavar="N",
        help="sample the clip in windows of N frames (8k + 1) that overlap and continue each other: "
        "memory by the window, any length (default: one window, the whole clip)",
    )
    long.add_argument(
        "--window-overlap",
        type=positive_int,
        default=24,
        metavar="N",
        help="frames each window shares with the one before (a multiple of 8; default: %(default)s)",
    )
    long.add_argument(
        "--window-overlap-strength",
        type=float,
        default=0.5,
        help="how strongly a window keeps the previous window's frames (1: as they are; default: %(default)s)",
    )
    long.add_argument(
        "--adain-factor",
        type=float,
        default=0.25,
        help="how far each window's colors move to the first window's, against drift (default: %(default)s)",
    )
    long.add_argument(
        "--prompt-segment",
        action="append",
        type=prompt_segment,
        default=[],
        metavar="FRAME:PROMPT",
        help="from pixel frame FRAME on, the windows starting there take PROMPT (repeatable; --prompt "
        "holds from frame 0), e.g. '48:the fox stops and looks back'",
    )
    memory = generate.add_argument_group("memory")
    memory.add_argument(
        "--offload",
        choices=OFFLOAD_CHOICES,
        default="auto",
        help="keep weights in CPU memory on a GPU run (the same frames): 'models' brings the text encoder, "
        "the VAE and the transformer to the GPU each only while it runs; 'blocks' also streams every "
        "transformer block from CPU memory while the one before it computes (the least memory, the "
        "slowest); 'auto' (default) picks the least of these the memory plan needs, streaming the "
        "fewest blocks that fit; 'none' keeps every model on the GPU",
    )
    memory.add_argument(
        "--ignore-memory-check",
        action="store_true",
        help="run even where the memory plan says "
        "the run needs more memory than the device has free (it may then fail part-way, or swap "
        "for hours on a CPU)",
    )
    parallel = generate.add_argument_group("several GPUs (torchrun --nproc-per-node N -m ltx_core generate ...)")
    parallel.add_argument(
        "--sequence-parallel",
        type=int,
        default=1,
        help="ranks that split the video tokens (a divisor of the attention heads; default: %(default)s)",
    )
    parallel.add_argument(
        "--cfg-parallel",
        type=int,
        default=1,
        help="ranks that split the guidance batch, "
        "2 = cond and uncond apart; N = sequence x cfg (default: %(default)s)",
    )
    cli_config.add_config_flags(generate)
    generate.set_defaults(**(defaults or {}))
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def parse_condition(text: str) -> tuple[Path, int, float]:
    """`PATH@FRAME[:STRENGTH]` -> (path, frame, strength); argparse reports a bad one."""
    path, at, place = text.rpartition("@")
    frame, _, strength = place.partition(":")
    try:
        if not at or not path:
            raise ValueError(text)
        return Path(path), int(frame), float(strength) if strength else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not IMAGE_OR_VIDEO@FRAME[:STRENGTH], e.g. last.png@-1 or clip.mp4@0:0.8"
        ) from None


def prompt_segment(text: str) -> tuple[int, str]:
    """`FRAME:PROMPT` -> (frame, prompt); argparse reports a bad one."""
    frame, colon, prompt = text.partition(":")
    if not colon or not frame.strip().isdigit() or not prompt.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not FRAME:PROMPT, e.g. '48:the fox stops and looks back'")
    return int(frame), prompt.strip()


def tile_grid(text: str) -> tuple[int, int]:
    """`ROWSxCOLUMNS` -> (rows, columns), each at least 1; argparse reports a bad one."""
    rows, cross, columns = text.lower().partition("x")
    try:
        grid = (int(rows), int(columns))
    except ValueError:
        grid = (0, 0)
    if not cross or min(grid) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLUMNS of whole numbers >= 1, e.g. 2x2 or 1x3")
    return grid


def parse_lora(text: str) -> tuple[Path, float]:
    """`FILE[:STRENGTH]` -> (file, strength). Split at the last colon only where what follows
    is a number, so `C:\\loras\\style.safetensors` stays one path."""
    path, colon, tail = text.rpartition(":")
    try:
        strength = float(tail) if colon else None
    except ValueError:
        strength = None
    if strength is None:
        path, strength = text, 1.0
    if not path or not math.isfinite(strength):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FILE[:STRENGTH] with a finite STRENGTH, e.g. style.safetensors or style.safetensors:0.8"
        )
    return Path(path), strength


def block_list(text: str) -> tuple[int, ...]:
    try:
        return parse_blocks(text)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def apply_model_defaults(args: argparse.Namespace) -> None:
    """Unset sizes and sampling: the shipped model's without --checkpoint, the published
    models' with it (their sampling defaults are the flags' own, or a config's)."""
    defaults = {**SHIPPED_SIZE, **SHIPPED_SAMPLING} if args.checkpoint is None else FULL_SIZE
    if args.checkpoint is None and args.sequence_parallel * args.cfg_parallel == 1:
        defaults |= SHIPPED_DECODE  # a run across ranks decodes whole layers anyway
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def fast_kernels_chosen(asked: bool | None, device, stays_put: bool = True) -> bool:
    """--fast-kernels / --no-fast-kernels, or by default on where they were measured to pay
    (cli_gpu_speed.json): one CUDA GPU holding the whole transformer (`stays_put`), with the
    same frames within bf16's rounding. A run across ranks or streaming offloaded blocks
    keeps PyTorch's layers unless asked."""
    if asked is None:
        return str(device).split(":")[0] == "cuda" and stays_put
    if asked:
        check_fast_kernels_device(device)
    return asked


def check_fast_kernels_device(device) -> None:
    if str(device).split(":")[0] != "cuda":
        raise SettingsError(
            f"--fast-kernels needs a CUDA GPU (its kernels are Triton's and CUDA's attention backends'); "
            f"the device is {device}: leave the flag off there (it is on by default only on CUDA)"
        )


def exit_with(code: int) -> None:
    """End the process with `code`. After a lost rank, skip the interpreter's teardown: the
    process group, still holding connections to the dead rank, can abort the process in its
    destructor (SIGABRT), which would replace the exit code torchrun reports."""
    if code == EXIT_RANK_FAILED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
