"""`python -m ltx_core generate ...`: a prompt (and optionally a first frame) to an mp4.

A thin adapter over `pipeline.generate`: it parses flags, checks everything it can before
loading a model (output path, image, settings), shows a progress bar through the
pipeline's callback and writes the video atomically. Exit codes: 0 done, 2 a bad setting
or model file (one line, no traceback), 130 interrupted (no file written), 1 out of memory,
3 another rank of a torchrun run failed (no file written).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .checkpoint import CheckpointInfo, default_model_paths, load_checkpoint, resolve_device, resolve_dtype
from .distributed import ParallelLayout, RankFailure, all_ranks_succeeded, init_parallel, parallelize
from .errors import LTXVError, SettingsError
from .pipeline import (DEFAULT_DECODE_TIME_CHUNK, Models, Request, check_fp8_device, default_decode_time_chunk,
                       generate, optimize_models)
from .text_encoder import check_text_width, load_text_encoder
from .conditioning import ConditioningItem
from .video import check_output_path, load_image, read_video_frames, resize_center_crop, write_mp4

EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_RANK_FAILED = 3  # under torchrun: another rank crashed or stopped answering; no file

# Sizes for a named checkpoint: the published models' default (Lightricks' README).
FULL_SIZE = {"width": 768, "height": 512, "frames": 121}
# Sizes for the shipped tiny model, which was trained on 25-frame 256x256 clips.
SHIPPED_SIZE = {"width": 256, "height": 256, "frames": 25}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the usage text."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
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
        help="official single .safetensors file, or a diffusers folder (default: the shipped tiny model)",
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
    models.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (default: %(default)s)")
    models.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: %(default)s)",
    )

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
    video.add_argument(
        "--fps", type=float, default=24.0, help="frame rate, also a model input (default: %(default)s)"
    )
    video.add_argument("--steps", type=int, default=20, help="sampling steps (default: %(default)s)")
    video.add_argument(
        "--cfg",
        type=float,
        default=3.0,
        help="classifier-free guidance scale, 1 = off (default: %(default)s)",
    )
    video.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
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
    guide.add_argument("--condition", action="append", type=parse_condition, default=[],
                       metavar="IMAGE_OR_VIDEO@FRAME[:STRENGTH]",
                       help="an image or an 8k + 1 frame video held from pixel FRAME on (negative: from the end, "
                       "-1 = ends on the last frame) at STRENGTH (default 1); repeatable, e.g. "
                       "first.png@0 last.png@-1")  # fmt: skip
    guide.add_argument("--source-video", type=Path, help="video-to-video: start from this clip (its frame count "
                       "and size must be the video's after fitting)")  # fmt: skip
    guide.add_argument("--denoise-strength", type=float, default=1.0,
                       help="video-to-video: share of the schedule run on the source (default: %(default)s)")
    guide.add_argument("--stg-scale", type=float, default=0.0, help="spatiotemporal skip guidance, 0 = off "
                       "(Lightricks' 2B configs: 1; default: %(default)s)")  # fmt: skip
    guide.add_argument("--stg-blocks", type=parse_blocks, default=(19,), help="comma-separated blocks STG "
                       "perturbs (default: 19, Lightricks' 2B)")  # fmt: skip
    guide.add_argument("--stg-mode", default="attention_values", choices=("attention_values", "attention_skip"),
                       help="how a perturbed block's self-attention is replaced (default: %(default)s)")
    guide.add_argument("--stg-rescale", type=float, default=0.7, help="STG guidance rescale, 0 or 1 = none "
                       "(default: %(default)s)")  # fmt: skip

    output = generate.add_argument_group("output")
    output.add_argument(
        "--output", type=Path, default=Path("out.mp4"), help="mp4 path (default: %(default)s)"
    )
    output.add_argument(
        "--overwrite", action="store_true", help="replace an existing output file (otherwise it is refused)"
    )
    speed = generate.add_argument_group("speed on a GPU (off by default: the fp32 CPU run stays the reference)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the transformer's regions, with CUDA "
                       "graphs and the fastest attention backend on CUDA (the first step compiles, ~9 s on an "
                       "H100; then ~20%% less time per step)")  # fmt: skip
    speed.add_argument("--fp8", action="store_true", help="FP8 linear layers in the transformer (a CUDA GPU with "
                       "FP8 tensor cores: compute capability 8.9+, e.g. RTX 4090, L4, H100); best with --compile "
                       "and --dtype bf16")  # fmt: skip
    speed.add_argument("--decode-chunk-frames", type=positive_int, metavar="N", help="decode N latent frames "
                       "(8N video frames) at a time: the same frames, with decode memory that does not grow "
                       "with the clip's length (default: the whole clip at once)")  # fmt: skip
    speed.add_argument("--decode-time-chunk", type=positive_int, metavar="N", help="compute each VAE decoder "
                       "layer N frames at a time: the same frames, with a much lower decode memory peak (H100, "
                       "0.9.1 at 768x512x121 in bf16, the CLI's uncompiled decode: 32 takes the decode from 5.3 to "
                       "2.7 GiB above the weights for 4%% more decode time, 8 to 2.0 GiB for 18%%; a number above the clip's "
                       "frames: whole layers; default: " + str(DEFAULT_DECODE_TIME_CHUNK) + ", whole layers for a "
                       "group-norm decoder and across ranks)")  # fmt: skip
    parallel = generate.add_argument_group("several GPUs (torchrun --nproc-per-node N -m ltx_core generate ...)")
    parallel.add_argument("--sequence-parallel", type=int, default=1, help="ranks that split the video tokens "
                          "(a divisor of the attention heads; default: %(default)s)")
    parallel.add_argument("--cfg-parallel", type=int, default=1, help="ranks that split the guidance batch, "
                          "2 = cond and uncond apart; N = sequence x cfg (default: %(default)s)")
    generate.set_defaults(run=run_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except LTXVError as error:  # SettingsError, CheckpointError: the message says it all
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RankFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RANK_FAILED
    except KeyboardInterrupt:
        print("interrupted: no video written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except torch.OutOfMemoryError:
        print(
            f"error: out of memory generating {args.width}x{args.height}, {args.frames} frames "
            f"on {args.device}; lower --width/--height/--frames, use --dtype bf16"
            + (", or --decode-time-chunk 8 (the same frames from a decode of a fraction of the memory)"
               if _may_lower_time_chunk(args) else "")
            + ". No video written.",
            file=sys.stderr,
        )
        return EXIT_OUT_OF_MEMORY


def _may_lower_time_chunk(args: argparse.Namespace) -> bool:
    """Whether --decode-time-chunk 8 is advice worth giving: one process (split runs refuse
    the flag) that did not already ask for 8 or less."""
    single = getattr(args, "sequence_parallel", 1) * getattr(args, "cfg_parallel", 1) == 1
    asked = getattr(args, "decode_time_chunk", None)
    return single and (asked is None or asked > 8)


def run_generate(args: argparse.Namespace) -> int:
    """Check every setting, load the models, generate, write the mp4 atomically."""
    _apply_size_defaults(args)
    output = check_output_path(args.output, args.overwrite)  # before any work (BAD_INPUTS 21, 22)
    dtype, device = resolve_dtype(args.dtype), resolve_device(args.device)
    parallel = ParallelLayout(args.sequence_parallel, args.cfg_parallel)
    check_speed_flags(args, device, parallel)
    request = build_request(args)
    checkpoint, text_encoder, tokenizer = model_paths(args)
    _require_existing(
        ("--checkpoint", checkpoint), ("--text-encoder", text_encoder), ("--tokenizer", tokenizer)
    )
    run = init_parallel(parallel, device)  # 1 x 1: one process
    models, info = load_models(checkpoint, text_encoder, tokenizer, dtype, run.device)
    request = replace(request, decode_time_chunk=resolved_decode_time_chunk(args.decode_time_chunk, parallel,
                                                                             models.vae))
    models = speed_up(models, args, run.world_size)
    models = parallelize(models, run)
    with tqdm(total=request.steps, desc="sampling", unit="step", file=sys.stderr, disable=not run.is_writer) as bar:

        def progress(step: int, total: int, x, denoised) -> None:
            bar.total = total
            bar.update(step + 1 - bar.n)

        frames = generate(models, request, callback=progress)
    all_ranks_succeeded(run)  # every rank holds the frames; rank 0 writes them
    if run.is_writer:
        write_mp4(frames, output, fps=args.fps, metadata=_video_metadata(args, info), overwrite=args.overwrite)
        print(output)
    return EXIT_OK


def check_speed_flags(args: argparse.Namespace, device: torch.device, parallel: ParallelLayout) -> None:
    """Combinations of the speed flags that cannot work, refused before any model loads."""
    if args.fp8:
        check_fp8_device(device)  # names what FP8 needs
    for flag in ("decode_chunk_frames", "decode_time_chunk"):
        if getattr(args, flag) is not None and parallel.sequence * parallel.cfg > 1:
            raise SettingsError(f"--{flag.replace('_', '-')} does not combine with --sequence-parallel or "
                                "--cfg-parallel above 1: those runs already split the decode in time across the ranks")


def resolved_decode_time_chunk(asked: int | None, parallel: ParallelLayout, vae) -> int | None:
    """--decode-time-chunk as given; else `pipeline.default_decode_time_chunk(vae)` (32, or
    whole layers for a group-norm decoder); whole layers in a run split across ranks, whose
    time-split decode already bounds each rank's frames."""
    if asked is not None or parallel.sequence * parallel.cfg > 1:
        return asked
    return default_decode_time_chunk(vae)


def speed_up(models: Models, args: argparse.Namespace, world_size: int) -> Models:
    """--compile / --fp8 applied once after loading (`pipeline.optimize_models`). CUDA graphs
    only in a single process: a captured graph would replay the ranks' collectives."""
    if not (args.compile or args.fp8):
        return models
    on_cuda = next(models.transformer.parameters()).device.type == "cuda"
    return optimize_models(models, compile=args.compile, fp8=args.fp8, attention="auto" if on_cuda else "default",
                           cuda_graphs=on_cuda and world_size == 1)  # fmt: skip


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def build_request(args: argparse.Namespace) -> Request:
    """The flags as a pipeline Request, which checks every setting (and the image)."""
    return Request(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        num_frames=args.frames,
        frame_rate=args.fps,
        steps=args.steps,
        guidance_scale=args.cfg,
        seed=args.seed,
        decode_timestep=args.decode_timestep,
        decode_noise_scale=args.decode_noise_scale,
        first_frame=load_image(args.image) if args.image is not None else None,
        conditions=tuple(_condition_item(*condition, args) for condition in args.condition),
        source_video=_fitted_frames(args.source_video, args) if args.source_video is not None else None,
        denoise_strength=args.denoise_strength,
        stg_scale=args.stg_scale,
        stg_blocks=args.stg_blocks if args.stg_scale > 0 else (),
        stg_mode=args.stg_mode,
        stg_rescale=args.stg_rescale,
        decode_chunk_frames=args.decode_chunk_frames,
        decode_time_chunk=args.decode_time_chunk,
    )


VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")


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


def parse_blocks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of block indices, e.g. 19") from None


def _fitted_frames(path: Path, args: argparse.Namespace):
    """An image (1 frame) or a video's frames, (F, H, W, 3) in [0, 1], fitted to the video's size."""
    if not path.exists():
        raise SettingsError(f"conditioning file {str(path)!r} does not exist")
    frames = read_video_frames(path) if path.suffix.lower() in VIDEO_SUFFIXES else load_image(path)[None]
    return torch.stack([resize_center_crop(frame.float(), args.width, args.height) for frame in frames])


def _condition_item(path: Path, frame: int, strength: float, args: argparse.Namespace) -> ConditioningItem:
    frames = _fitted_frames(path, args)
    start = frame if frame >= 0 else args.frames + frame - (len(frames) - 1)  # -1: ends on the last frame
    return ConditioningItem(frames, start, strength)


def _require_existing(*flags: tuple[str, Path | None]) -> None:
    """Name a missing model path before anything large is loaded."""
    for flag, path in flags:
        if path is not None and not path.exists():
            raise SettingsError(f"{flag} {str(path)!r} does not exist")


def _apply_size_defaults(args: argparse.Namespace) -> None:
    """Unset sizes: the shipped model's without --checkpoint, the published models' with it."""
    defaults = SHIPPED_SIZE if args.checkpoint is None else FULL_SIZE
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def model_paths(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """(checkpoint, text encoder, tokenizer or None) from the flags; the shipped model's
    where no checkpoint is named, a diffusers folder's own text_encoder/ where it has one."""
    if args.checkpoint is None:
        checkpoint, shipped_text_encoder = default_model_paths()
        return checkpoint, args.text_encoder or shipped_text_encoder, args.tokenizer
    if args.text_encoder is not None:
        return args.checkpoint, args.text_encoder, args.tokenizer
    if (args.checkpoint / "text_encoder").is_dir():
        return args.checkpoint, args.checkpoint, args.tokenizer  # load_text_encoder reads a diffusers root
    raise SettingsError(
        f"--checkpoint {args.checkpoint} holds no text encoder; pass --text-encoder "
        "(the T5 v1.1 XXL encoder folder or .safetensors file)"
    )


def load_models(
    checkpoint: Path, text_encoder: Path, tokenizer: Path | None, dtype: torch.dtype, device: torch.device
) -> tuple[Models, CheckpointInfo]:
    transformer, vae, info = load_checkpoint(checkpoint, dtype=dtype, device=device)
    encoder = load_text_encoder(text_encoder, tokenizer, dtype=dtype, device=device)
    check_text_width(encoder.width, transformer.cfg.caption_channels)
    return Models(transformer=transformer, vae=vae, text_encoder=encoder), info


def _video_metadata(args: argparse.Namespace, info: CheckpointInfo) -> dict:
    """A readable comment and the settings that reproduce the video, as container tags."""
    settings = {
        name: getattr(args, name)
        for name in (
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "frames",
            "fps",
            "steps",
            "cfg",
            "seed",
            "decode_timestep",
            "decode_noise_scale",
            "dtype",
            "fp8",  # changes the numbers; --compile, --decode-chunk-frames and --decode-time-chunk do not
        )
    }
    settings.update(
        checkpoint=info.path.name,
        version=info.version,
        image=args.image.name if args.image is not None else None,
    )
    return {"comment": args.prompt, "ltx_core": settings}
