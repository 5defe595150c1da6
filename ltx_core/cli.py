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

from . import cli_config
from .cli_arguments import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_RANK_FAILED,
    apply_model_defaults,
    build_parser,
    check_fast_kernels_device,
    exit_with,
    fast_kernels_chosen,
    parse_condition as parse_condition,
)
from .cli_plan import VIDEO_SUFFIXES, check_memory, choose_offload, plan_run
from .cli_request import apply_lora_files, build_request
from .errors import LTXVError, SettingsError
from .memory_plan import DTYPE_BYTES
from .preflight import (
    check_device_name,
    check_dtype_name,
    check_fp8_device,
    check_model_path,
    check_output_path,
    check_prompt,
    check_video_settings,
    default_model_paths,
    require_existing,
)
from .timings import RunClock


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args = cli_config.apply_release_config(args, argv, build_parser)  # --config / --preset: its defaults
        return run_generate(args)  # the one command, "generate"
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


def entry_point() -> None:
    """`ltxv ...` and `python -m ltx_core ...`: run, then end the process with main's code."""
    exit_with(main())


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
        f"on {args.device}; lower --width/--height/--frames"
        + (", use --dtype bf16" if args.dtype in (None, "fp32") else "")
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
    apply_model_defaults(args)
    output = check_output_path(args.output, args.overwrite)  # before any work (BAD_INPUTS 21, 22)
    if args.timings is not None and not args.timings.parent.is_dir():
        raise SettingsError(f"--timings {args.timings}: its folder does not exist; name a file in an existing folder")
    check_arguments(args)
    cli_config.check_config_run(args)  # a config's paths and passes, with the flags given
    checkpoint, text_encoder, tokenizer = model_paths(args)
    require_existing(
        ("--checkpoint", checkpoint),
        ("--vae", args.vae),
        ("--text-encoder", text_encoder),
        ("--tokenizer", tokenizer),
        *_input_files(args),
    )
    for path in (checkpoint, args.vae):
        if path is not None:
            check_model_path(path)  # a pickle is refused unopened
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
    if args.dtype is not None:
        check_dtype_name(args.dtype, tuple(DTYPE_BYTES))
    if args.device is not None:
        check_device_name(args.device)
    if args.fp8 and args.device is not None and not args.device.startswith("cuda"):
        check_fp8_device(args.device)  # names what FP8 needs
    if args.fast_kernels and args.device is not None:
        check_fast_kernels_device(args.device)
    check_long_video(args)
    check_offload(args)
    if args.decode_time_chunk is not None and args.sequence_parallel * args.cfg_parallel > 1:
        raise SettingsError(
            "--decode-time-chunk does not combine with --sequence-parallel or --cfg-parallel "
            "above 1: those runs already split the decode in time across the ranks"
        )


def check_offload(args: argparse.Namespace) -> None:
    """--offload models / blocks move weights between CPU memory and a GPU: refused on the
    CPU and across ranks (each rank would stream its own copy)."""
    if args.offload in ("auto", "none"):
        return
    if args.device is not None and not args.device.startswith("cuda"):
        raise SettingsError(
            f"--offload {args.offload} keeps weights in CPU memory for a GPU run; on {args.device} every "
            "weight is already there. Allowed there: --offload auto or none"
        )
    if args.sequence_parallel * args.cfg_parallel > 1:
        raise SettingsError(
            f"--offload {args.offload} does not combine with --sequence-parallel or --cfg-parallel above 1; "
            "allowed there: --offload auto (which then keeps the models on the GPUs) or none"
        )


def check_long_video(args: argparse.Namespace) -> None:
    """The long-video flags, before torch: windows shorter than the clip, prompt segments only
    with windows, keyframes only as images after frame 0, no source video or IC-LoRA
    control (release configs, multi-scale ones too, run every window)."""
    if args.window_frames is None:
        if args.prompt_segment:
            raise SettingsError("--prompt-segment needs --window-frames (a long video in windows)")
        return
    if args.window_frames >= args.frames:
        raise SettingsError(
            f"--window-frames {args.window_frames} is not shorter than the clip's {args.frames} frames; "
            "allowed: fewer frames than --frames (or leave it out for one window)"
        )
    single = (("--source-video", args.source_video), ("--control-video", args.control_video))
    taken = [flag for flag, value in single if value]
    if taken:
        raise SettingsError(f"{', '.join(taken)} do(es) not combine with --window-frames; a long video takes "
                            "--prompt, --prompt-segment, --image and --condition images")  # fmt: skip
    for path, frame, _ in args.condition:
        if frame == 0:
            raise SettingsError("--condition at frame 0 does not combine with --window-frames; the clip's first "
                                "frame is --image")  # fmt: skip
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise SettingsError(f"--condition with a clip does not combine with --window-frames ({path}); a long "
                                "video's keyframes are images")  # fmt: skip


def _input_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(what, path) of every image and clip the flags name, as their loaders name them."""
    files = [("image", args.image), ("video", args.source_video)]
    files += [("control video", args.control_video[0] if args.control_video else None)]
    return files + [("conditioning file", path) for path, _, _ in args.condition]


def default_dtype_name(device_type: str) -> str:
    """bf16 on a GPU: the published precision, the same frames within bf16's rounding, and
    faster; fp32 on the CPU, where bf16 matmuls are slower and the parity tests run."""
    return "bf16" if device_type == "cuda" else "fp32"


def _generate(
    args: argparse.Namespace, output: Path, checkpoint: Path, text_encoder: Path, tokenizer: Path | None
) -> int:
    import torch

    from .checkpoint.loading import inspect_checkpoint, resolve_device, resolve_dtype
    from .checkpoint.vae_file import with_vae_file
    from .parallel.distributed import ParallelLayout, all_ranks_succeeded, init_parallel, parallelize

    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = str(device)
    args.dtype = args.dtype or default_dtype_name(device.type)
    dtype = resolve_dtype(args.dtype)
    clock = RunClock(device) if args.timings else None
    check_offload(args)  # the device is known now
    parallel = ParallelLayout(args.sequence_parallel, args.cfg_parallel)
    if args.fp8:
        check_fp8_device(device)  # names what FP8 needs
    if args.fast_kernels:
        check_fast_kernels_device(device)
    request = build_request(args)  # the conditioning files and settings: refused before the plan is shown
    info, sources, _, _ = inspect_checkpoint(checkpoint, dtype, device)  # headers only
    info, sources = with_vae_file(info, sources, args.vae)  # a GGUF transformer's VAE from --vae
    cli_config.check_before_loading(args, request, info, sources)  # the upsampler's header, allowed timesteps
    plan = choose_offload(args, plan_run(args, info, sources, text_encoder, device))
    check_memory(args, plan)
    run = init_parallel(parallel, device)  # 1 x 1: one process
    offloaded = plan.workload.offload != "none"  # loaded into CPU memory, placed after the levers
    load_device = torch.device("cpu") if offloaded else run.device
    models, info = load_models(checkpoint, text_encoder, tokenizer, dtype, load_device, args.vae)
    models = cli_config.with_release_scheduler(models, args)  # a config's sampler, else the checkpoint's
    upsampler = cli_config.load_upsampler(args, dtype, run.device)  # a multi-scale config's, else None
    request = replace(
        request, decode_time_chunk=resolved_decode_time_chunk(args.decode_time_chunk, parallel, models.vae)
    )
    models = apply_lora_files(models, args)  # before speed_up: FP8 quantizes the merged weights
    models = speed_up(models, args, run.world_size, run.device, stays_put=not offloaded)
    if offloaded:
        models = place_models(models, run.device, plan.workload.streamed_blocks)
    models = replace(parallelize(models, run), one_shot=True)  # one video a process: models freed once done
    if clock:
        clock.mark("loaded")
    frames = _sample_with_progress(
        models, request, run.is_writer, upsampler, args.multi_scale, _windows(args), clock and clock.mark
    )
    all_ranks_succeeded(run)  # every rank holds the frames; rank 0 writes them
    if run.is_writer:
        write_mp4(frames, output, fps=args.fps, metadata=_video_metadata(args, info), overwrite=args.overwrite)
        if clock:
            clock.mark("written")
            clock.write(args.timings)
        print(output)
    return EXIT_OK


def _sample_with_progress(
    models, request, show: bool, upsampler=None, multi_scale=None, args_window=None, on_stage=None
):
    """The frames, with the progress bar; `on_stage(name)`, if given, hears 'first_step' and
    'frames', and in a one-window single-pass run the stages of `pipeline.generate` too."""
    from tqdm import tqdm

    stage = on_stage or (lambda name: None)
    with tqdm(total=request.steps, desc="sampling", unit="step", file=sys.stderr, disable=not show) as bar:

        def progress(step: int, total: int, x, denoised) -> None:
            stage("first_step")  # marked once
            bar.total = total
            bar.update(step + 1 - bar.n)

        def window_done(window: int, windows: int, result) -> None:
            bar.unit, bar.total = "window", windows
            bar.update(window + 1 - bar.n)

        if args_window is not None:
            frames = generate_long(
                models, request, *args_window, upsampler=upsampler, multi_scale=multi_scale, callback=window_done
            )
        elif multi_scale is None:
            frames = generate(models, request, callback=progress, on_stage=on_stage)
        else:
            frames = cli_config.generate_multiscale(models, upsampler, request, multi_scale, callback=progress)
    stage("frames")
    return frames


def _windows(args: argparse.Namespace):
    """`generate_long`'s arguments for a long video, or None for one window."""
    if args.window_frames is None:
        return None
    settings = dict(window_frames=args.window_frames, overlap_frames=args.window_overlap,
                    overlap_strength=args.window_overlap_strength, adain_factor=args.adain_factor)  # fmt: skip
    return args.prompt_segment, settings


# ---------------------------------------------------------------- heavy steps, imported when reached


def generate_long(models, request, segments, settings, upsampler=None, multi_scale=None, callback=None):
    from .long_video_run import generate_long as run

    return run(models, request, segments, **settings, upsampler=upsampler, multi_scale=multi_scale, callback=callback)


def load_models(checkpoint: Path, text_encoder: Path, tokenizer: Path | None, dtype, device, vae_path=None):
    from .checkpoint.loading import load_checkpoint, load_transformer
    from .checkpoint.vae_file import load_vae_file
    from .models.text_encoder import check_text_width, load_text_encoder
    from .pipeline import Models

    if vae_path is None:
        transformer, vae, info = load_checkpoint(checkpoint, dtype=dtype, device=device)
    else:  # the checkpoint's transformer, the VAE of --vae
        transformer, info = load_transformer(checkpoint, dtype=dtype, device=device)
        vae = load_vae_file(vae_path, dtype=dtype, device=device)
    encoder = load_text_encoder(text_encoder, tokenizer, dtype=dtype, device=device)
    check_text_width(encoder.width, transformer.cfg.caption_channels)
    return Models(transformer=transformer, vae=vae, text_encoder=encoder, scheduler=info.configs.scheduler), info


def generate(models, request, callback=None, on_stage=None):
    from .pipeline import generate as run

    return run(models, request, callback=callback, on_stage=on_stage)


def optimize_models(models, speed, device=None):
    from .pipeline import optimize_models as optimize

    return optimize(models, speed, device)


def write_mp4(frames, output: Path, **options) -> Path:
    from .video import write_mp4 as write

    return write(frames, output, **options)


def resolved_decode_time_chunk(asked: int | None, parallel, vae) -> int | None:
    """--decode-time-chunk as given; else `pipeline.default_decode_time_chunk(vae)` (16, or
    whole layers for a group-norm decoder); whole layers in a run split across ranks, whose
    time-split decode already bounds each rank's frames."""
    from .pipeline import default_decode_time_chunk

    if asked is not None or parallel.sequence * parallel.cfg > 1:
        return asked
    return default_decode_time_chunk(vae)


def speed_up(models, args: argparse.Namespace, world_size: int, device, stays_put: bool = True):
    """--compile / --fp8 / --fast-kernels applied once after loading (`pipeline.optimize_models`), with the
    levers `Speed.chosen` gives the loader node too; a model run across ranks or offloaded
    gets no CUDA graphs (a captured graph would replay the ranks' collectives, or read
    weights from addresses that streaming changes)."""
    from .speed.optimize import Speed

    stays_put = world_size == 1 and stays_put
    kernels = fast_kernels_chosen(args.fast_kernels, device, stays_put)
    if not (args.compile or args.fp8 or kernels):
        return models
    speed = Speed.chosen(args.compile, args.fp8, device, stays_put=stays_put, kernels=kernels)
    return optimize_models(models, speed, device)


def place_models(models, device, streamed_blocks: int):
    """The models kept in CPU memory, each on `device` only while it runs (`offload`)."""
    from dataclasses import replace

    from .offload import place_models as place

    return replace(models, placement=place(models, device, streamed_blocks))


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
        vae=args.vae.name if args.vae else None,
        loras=[f"{path.name}:{strength:g}" for path, strength in args.lora],
        control_video=f"{args.control_video[0].name}:{args.control_video[1]:g}" if args.control_video else None,
        # on by default for the shipped model only; with a config and no flag, the config's
        stochastic_sampling=args.stochastic_sampling if release is not None else bool(args.stochastic_sampling),
    )
    return {"comment": args.prompt, "ltx_core": settings}
