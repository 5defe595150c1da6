"""`python -m ltx_core generate ...`: a prompt (and optionally a first frame) to an mp4.

A thin adapter over `pipeline.generate`. It answers in the order that makes each mistake
cheapest:
1. flags, sizes, settings, device and dtype names, paths (`preflight`), before torch is
   imported, so any of these is reported in well under a second;
2. the device, the checkpoint's headers and the memory plan (`memory_plan`), before any
   weight is read: a run that cannot fit in the device's free memory is refused with its
   estimate and the nearest settings that fit (`--ignore-memory-check` runs it anyway);
3. the images and clips, the models, then generation with a progress bar, the video
   written atomically.
Heavy modules (torch, PyAV) are imported only at the step that needs them.

Exit codes: 0 done, 2 a bad setting or model file (one line, no traceback), 130
interrupted (no file written), 1 out of memory, 3 another rank of a torchrun run failed
(no file written).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from . import __version__, cli_config
from .cli_plan import check_memory, plan_run
from .cli_request import build_request
from .errors import LTXVError, SettingsError
from .memory_plan import DEFAULT_DECODE_TIME_CHUNK, DTYPE_BYTES
from .preflight import (
    STG_MODES,
    check_device_name,
    check_dtype_name,
    check_fp8_device,
    check_model_path,
    check_output_path,
    check_prompt,
    check_video_settings,
    default_model_paths,
    parse_blocks,
    require_existing,
)

EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_RANK_FAILED = 3  # under torchrun: another rank crashed or stopped answering; no file

# Sizes for a named checkpoint: the published models' default (Lightricks' README).
FULL_SIZE = {"width": 768, "height": 512, "frames": 121}
# Sizes for the shipped tiny model, which was trained on 25-frame 256x256 clips.
SHIPPED_SIZE = {"width": 256, "height": 256, "frames": 25}
# What the refusal of a run that does not fit ends with.


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
        help="official single .safetensors file, or a diffusers folder "
        "(default: the config's, else the shipped tiny model)",
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
    speed = generate.add_argument_group("speed on a GPU (off by default: the fp32 CPU run stays the reference)")
    speed.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the transformer's regions, with CUDA "
        "graphs and the fastest attention backend on CUDA (the first step compiles; the later ones "
        "are faster, benchmarks/results/gpu_speed.json)",
    )
    speed.add_argument(
        "--fp8",
        action="store_true",
        help="FP8 linear layers in the transformer (a CUDA GPU with "
        "FP8 tensor cores: compute capability 8.9+, e.g. RTX 4090, L4, H100); best with --compile "
        "and --dtype bf16",
    )
    speed.add_argument(
        "--decode-time-chunk",
        type=positive_int,
        metavar="N",
        help="compute each VAE decoder "
        "layer N frames at a time: the same frames, with a much lower decode memory peak for a "
        "little more decode time (smaller N: less memory, more time; benchmarks/results/"
        "decode_time_chunks.json); a number above the clip's frames: whole layers; default: "
        + str(DEFAULT_DECODE_TIME_CHUNK)
        + ", whole layers for a group-norm decoder and across "
        "ranks)",
    )
    memory = generate.add_argument_group("memory")
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
    generate.set_defaults(run=run_generate, **(defaults or {}))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args = cli_config.apply_release_config(args, argv, build_parser)  # --config / --preset: its defaults
        return args.run(args)
    except LTXVError as error:  # SettingsError, CheckpointError: the message says it all
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: no video written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # torch's and the ranks' errors: their modules are loaded by then
        if _is_instance(error, "torch", "OutOfMemoryError"):
            print(_out_of_memory_message(args), file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        if _is_instance(error, f"{__package__}.parallel.distributed", "RankFailure"):
            print(f"error: {error}", file=sys.stderr)
            return EXIT_RANK_FAILED
        raise


def _is_instance(error: Exception, module: str, name: str) -> bool:
    """isinstance(error, module.name), without importing a module that is not loaded yet
    (then the error cannot be one of its classes)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(error, getattr(loaded, name))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a cut prompt, words the tokenizer cannot read, a resized image) as one
    line each, without Python's file and source line, above the progress bar (tqdm's
    `write` clears the bar's line first) rather than appended to it."""
    progress = sys.modules.get("tqdm")
    if progress is not None:
        progress.tqdm.write(f"warning: {message}", file=sys.stderr)
    else:
        print(f"warning: {message}", file=sys.stderr)


def _out_of_memory_message(args: argparse.Namespace) -> str:
    return (
        f"error: out of memory generating {args.width}x{args.height}, {args.frames} frames "
        f"on {args.device}; lower --width/--height/--frames, use --dtype bf16"
        + (
            ", or --decode-time-chunk 8 (the same frames from a decode of a fraction of the memory)"
            if _may_lower_time_chunk(args)
            else ""
        )
        + ". No video written."
    )


def _may_lower_time_chunk(args: argparse.Namespace) -> bool:
    """Whether --decode-time-chunk 8 is advice worth giving: one process (split runs refuse
    the flag) that did not already ask for 8 or less."""
    single = getattr(args, "sequence_parallel", 1) * getattr(args, "cfg_parallel", 1) == 1
    asked = getattr(args, "decode_time_chunk", None)
    return single and (asked is None or asked > 8)


def run_generate(args: argparse.Namespace) -> int:
    """Check every flag and path, plan the memory, load the models, generate, write the
    mp4 atomically."""
    _apply_size_defaults(args)
    output = check_output_path(args.output, args.overwrite)  # before any work (BAD_INPUTS 21, 22)
    check_arguments(args)
    cli_config.check_config_run(args)  # a config's paths and passes, with the flags given
    checkpoint, text_encoder, tokenizer = model_paths(args)
    require_existing(
        ("--checkpoint", checkpoint), ("--text-encoder", text_encoder), ("--tokenizer", tokenizer), *_input_files(args)
    )
    check_model_path(checkpoint)  # a pickle is refused unopened
    return _generate(args, output, checkpoint, text_encoder, tokenizer)


def check_arguments(args: argparse.Namespace) -> None:
    """Everything the flags say that can be checked without torch, each with what is allowed."""
    check_prompt(args.prompt, args.negative_prompt)
    check_video_settings(
        args.width,
        args.height,
        args.frames,
        args.fps,
        args.steps,
        args.cfg,
        args.seed,
        args.decode_timestep,
        args.decode_noise_scale,
    )
    check_dtype_name(args.dtype, tuple(DTYPE_BYTES))
    if args.device is not None:
        check_device_name(args.device)
    if args.fp8 and args.device is not None and not args.device.startswith("cuda"):
        check_fp8_device(args.device)  # names what FP8 needs
    if args.decode_time_chunk is not None and args.sequence_parallel * args.cfg_parallel > 1:
        raise SettingsError(
            "--decode-time-chunk does not combine with --sequence-parallel or --cfg-parallel "
            "above 1: those runs already split the decode in time across the ranks"
        )


def _input_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(what, path) of every image and clip the flags name, as their loaders name them."""
    files = [("image", args.image), ("video", args.source_video)]
    return files + [("conditioning file", path) for path, _, _ in args.condition]


def _generate(
    args: argparse.Namespace, output: Path, checkpoint: Path, text_encoder: Path, tokenizer: Path | None
) -> int:
    import torch

    from .checkpoint.loading import inspect_checkpoint, resolve_device, resolve_dtype
    from .parallel.distributed import ParallelLayout, all_ranks_succeeded, init_parallel, parallelize

    dtype = resolve_dtype(args.dtype)
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = str(device)
    parallel = ParallelLayout(args.sequence_parallel, args.cfg_parallel)
    if args.fp8:
        check_fp8_device(device)  # names what FP8 needs
    request = build_request(args)  # the conditioning files and settings: refused before the plan is shown
    info, sources, _, _ = inspect_checkpoint(checkpoint, dtype, device)  # headers only
    cli_config.check_before_loading(args, request, info, sources)  # the upsampler's header, allowed timesteps
    check_memory(args, plan_run(args, info, sources, text_encoder, device))
    run = init_parallel(parallel, device)  # 1 x 1: one process
    models, info = load_models(checkpoint, text_encoder, tokenizer, dtype, run.device)
    models = cli_config.with_release_scheduler(models, args)  # a config's sampler, else the checkpoint's
    upsampler = cli_config.load_upsampler(args, dtype, run.device)  # a multi-scale config's, else None
    request = replace(
        request, decode_time_chunk=resolved_decode_time_chunk(args.decode_time_chunk, parallel, models.vae)
    )
    models = speed_up(models, args, run.world_size)
    models = parallelize(models, run)
    frames = _sample_with_progress(models, request, run.is_writer, upsampler, args.multi_scale)
    all_ranks_succeeded(run)  # every rank holds the frames; rank 0 writes them
    if run.is_writer:
        write_mp4(frames, output, fps=args.fps, metadata=_video_metadata(args, info), overwrite=args.overwrite)
        print(output)
    return EXIT_OK


def _sample_with_progress(models, request, show: bool, upsampler=None, multi_scale=None):
    from tqdm import tqdm

    with tqdm(total=request.steps, desc="sampling", unit="step", file=sys.stderr, disable=not show) as bar:

        def progress(step: int, total: int, x, denoised) -> None:
            bar.total = total
            bar.update(step + 1 - bar.n)

        if multi_scale is None:
            return generate(models, request, callback=progress)
        return cli_config.generate_multiscale(models, upsampler, request, multi_scale, callback=progress)


# ---------------------------------------------------------------- heavy steps, imported when reached


def load_models(checkpoint: Path, text_encoder: Path, tokenizer: Path | None, dtype, device):
    from .checkpoint.loading import load_checkpoint
    from .models.text_encoder import check_text_width, load_text_encoder
    from .pipeline import Models

    transformer, vae, info = load_checkpoint(checkpoint, dtype=dtype, device=device)
    encoder = load_text_encoder(text_encoder, tokenizer, dtype=dtype, device=device)
    check_text_width(encoder.width, transformer.cfg.caption_channels)
    return Models(transformer=transformer, vae=vae, text_encoder=encoder, scheduler=info.configs.scheduler), info


def generate(models, request, callback=None):
    from .pipeline import generate as run

    return run(models, request, callback=callback)


def optimize_models(models, speed):
    from .pipeline import optimize_models as optimize

    return optimize(models, speed)


def write_mp4(frames, output: Path, **options) -> Path:
    from .video import write_mp4 as write

    return write(frames, output, **options)


def resolved_decode_time_chunk(asked: int | None, parallel, vae) -> int | None:
    """--decode-time-chunk as given; else `pipeline.default_decode_time_chunk(vae)` (32, or
    whole layers for a group-norm decoder); whole layers in a run split across ranks, whose
    time-split decode already bounds each rank's frames."""
    from .pipeline import default_decode_time_chunk

    if asked is not None or parallel.sequence * parallel.cfg > 1:
        return asked
    return default_decode_time_chunk(vae)


def speed_up(models, args: argparse.Namespace, world_size: int):
    """--compile / --fp8 applied once after loading (`pipeline.optimize_models`), with the
    levers `Speed.chosen` gives the loader node too; a model run across ranks gets no CUDA
    graphs (a captured graph would replay the ranks' collectives)."""
    from .speed.optimize import Speed

    if not (args.compile or args.fp8):
        return models
    device = next(models.transformer.parameters()).device
    return optimize_models(models, Speed.chosen(args.compile, args.fp8, device, stays_put=world_size == 1))


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


def block_list(text: str) -> tuple[int, ...]:
    try:
        return parse_blocks(text)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def _video_metadata(args: argparse.Namespace, info) -> dict:
    """A readable comment and the settings that reproduce the video, as container tags."""
    names = (
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
        "fp8",
    )  # fp8 changes the numbers, --compile does not
    settings = {name: getattr(args, name) for name in names}
    release = getattr(args, "release", None)  # its passes' settings replace steps and cfg
    settings.update(
        checkpoint=info.path.name,
        version=info.version,
        image=args.image.name if args.image else None,
        release_config=Path(release.source).stem if release is not None else None,
    )
    return {"comment": args.prompt, "ltx_core": settings}
