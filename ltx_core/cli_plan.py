"""The command line's memory plan: the run's memory and time from the checkpoint's
configs and the files' tensor counts (`memory_plan`), checked against the device's free
memory before any weight is read, with the nearest settings that fit said as flags.
A multi-scale run is planned at its larger pass, the second, at twice the first's size."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import memory_plan as planner
from .cli_config import planned_sampling
from .memory_plan import DEFAULT_DECODE_TIME_CHUNK, DTYPE_BYTES
from .models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
IGNORE_ADVICE = " Pass --ignore-memory-check to run anyway."


def plan_run(args: argparse.Namespace, info, sources, text_encoder: Path, device) -> planner.MemoryPlan:
    """The run's memory and time from the checkpoint's configs and the files' tensor
    counts, before any weight is read."""
    from .checkpoint.quantized import loaded_bytes  # torch: imported once the flags are checked

    size = DTYPE_BYTES[args.dtype]
    numel = lambda part: sum(_numel(sources[part].shape(name)) for name in sources[part].locations)
    text_bytes, text_size = planner.text_encoder_weights(text_encoder, args.dtype)
    # a multi-scale run's upsampler stays on the device beside the VAE
    vae_bytes = (numel("vae") + _upsampler_numel(args)) * size
    weights = planner.WeightBytes(loaded_bytes(sources["transformer"], size), vae_bytes, text_bytes)
    sampling = planned_sampling(args)
    configs = info.configs
    world = args.sequence_parallel * args.cfg_parallel
    chunk = args.decode_time_chunk
    if chunk is None and world == 1 and configs.vae.norm_layer != "group_norm":
        chunk = DEFAULT_DECODE_TIME_CHUNK  # what `resolved_decode_time_chunk` will choose
    windowed = getattr(args, "window_frames", None) is not None
    work = planner.Workload(
        configs.transformer,
        configs.vae,
        sampling.width,
        sampling.height,
        _sampled_frames(args),
        guidance=sampling.guidance,
        stg=sampling.stg,
        per_token_timesteps=bool(args.image or args.condition),
        keyframe_tokens=_keyframe_tokens(args),
        encode_frames=_encode_frames(args),
        steps=sampling.steps,
        dtype=args.dtype,
        device=device.type,
        fp8=args.fp8,
        decode_time_chunk=chunk,
        decode_tiles=args.decode_tiles,
        decode_tile_overlap=args.decode_tile_overlap,
        sequence_parallel=args.sequence_parallel,
        cfg_parallel=args.cfg_parallel,
        text_encoder=text_size,
        weights=weights,
        models_stay=args.offload in ("auto", "none"),
        one_shot=True,  # the command line's one video: models released once done (`pipeline.done_with`)
        streamed_blocks=configs.transformer.num_layers if args.offload == "blocks" else 0,
        decode_frames=args.frames if windowed else None,
    )
    return planner.estimate(work)


def choose_offload(args: argparse.Namespace, plan: planner.MemoryPlan) -> planner.MemoryPlan:
    """--offload auto on one GPU: the least offloading that fits the GPU's free memory
    (`memory_plan.choose_offload`); any other choice, or a run on the CPU or across ranks,
    as planned."""
    work = plan.workload
    if args.offload != "auto" or work.device != "cuda" or work.sequence_parallel * work.cfg_parallel > 1:
        return plan
    chosen = planner.choose_offload(work, planner.available_memory(_planned_device(args)))
    return plan if chosen == work else planner.estimate(chosen)


def _sampled_frames(args: argparse.Namespace) -> int:
    """The frames the transformer sees at once: the clip, or a long video's window and the
    overlap it continues (the whole clip is decoded at once: `Workload.decode_frames`)."""
    if getattr(args, "window_frames", None) is None:
        return args.frames
    return min(args.frames, args.window_frames + args.window_overlap)


def _numel(shape) -> int:
    count = 1
    for side in shape:
        count *= side
    return count


def _upsampler_numel(args: argparse.Namespace) -> int:
    """Weights of a multi-scale run's upsampler, off its file's header (or a diffusers folder's)."""
    if getattr(args, "multi_scale", None) is None:
        return 0
    path = Path(args.upsampler)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    return sum(_numel(shape) for file in files for shape in planner.safetensors_shapes(file).values())


def _keyframe_tokens(args: argparse.Namespace) -> int:
    """Extra tokens of the conditions placed elsewhere than frame 0 (at the planned
    pass's size): an image's latent frame, a clip's first two (the rest replace the
    video's own)."""
    sampling = planned_sampling(args)
    grid = (sampling.height // PIXELS_PER_LATENT) * (sampling.width // PIXELS_PER_LATENT)
    placed = [path for path, frame, _ in args.condition if frame != 0]
    tokens = sum(grid * (2 if path.suffix.lower() in VIDEO_SUFFIXES else 1) for path in placed)
    if getattr(args, "control_video", None) is not None:  # at most the whole clip, on its coarser grid
        latent_frames = (args.frames - 1) // FRAMES_PER_LATENT + 1
        tokens += latent_frames * grid // (args.control_downscale or 1) ** 2
    return tokens


def _encode_frames(args: argparse.Namespace) -> int:
    """The most frames the VAE encodes at once: a clip (at most the video's length) or an image."""
    clips = [path for path, _, _ in args.condition if path.suffix.lower() in VIDEO_SUFFIXES]
    if args.source_video is not None or clips:
        return args.frames
    return 1 if args.image is not None or args.condition else 0


def check_memory(args: argparse.Namespace, plan: planner.MemoryPlan) -> None:
    """Refuse a run that needs more memory than the device has free (unless
    --ignore-memory-check), else say what it will take, before anything is loaded."""
    available = planner.available_memory(_planned_device(args))
    if not args.ignore_memory_check:
        planner.check_fits(plan, available, lambda fit: _as_flags(fit, args), IGNORE_ADVICE)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per rank
        free = "free memory unknown" if available is None else f"{planner.gib(available)} available"
        beyond = available is not None and plan.peak_bytes > available
        which = " (the second pass, the larger)" if getattr(args, "multi_scale", None) is not None else ""
        print(
            f"plan{which}: {plan.describe()}; {free}" + ("; more than available, run as asked" if beyond else ""),
            file=sys.stderr,
        )


def _planned_device(args: argparse.Namespace) -> str:
    """The device whose memory counts: under torchrun each rank's own GPU."""
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return args.device


FLAGS = {
    "width": "--width",
    "height": "--height",
    "frames": "--frames",
    "decode_time_chunk": "--decode-time-chunk",
    "dtype": "--dtype",
}


def _as_flags(fit: planner.Fit, args: argparse.Namespace | None = None) -> str | None:
    """A `Fit` as the flags that make it, with why; None for one no flag makes (guidance in
    a multi-scale config, which sets it per pass)."""
    multi_scale = getattr(args, "multi_scale", None)
    if multi_scale is not None and "guidance" in fit.changes:
        return None
    words = []
    if "models_stay" in fit.changes:
        words.append("--offload blocks" if fit.changes.get("streamed_blocks") else "--offload models")
    for name, value in fit.changes.items():
        if multi_scale is not None and name in ("width", "height"):
            words.append(f"{FLAGS[name]} {_asked_size(value, multi_scale.downscale_factor)}")
        elif name in FLAGS:
            words.append(f"{FLAGS[name]} {value}")
        elif name == "fp8":
            words.append("--fp8")
        elif name == "decode_tiles":
            words.append(f"--decode-tiles {value[0]}x{value[1]}")
        elif name == "guidance":
            words.append("--cfg 1")
        elif name == "stg" and "guidance" not in fit.changes:
            words.append("--stg-scale 0")
    why = fit.description.split("(", 1)[1].rstrip(")") if "(" in fit.description else fit.description
    return f"{' '.join(words)} ({why})"


def _asked_size(second_pass: int, factor: float) -> int:
    """The largest asked size on the grid whose second pass (twice the asked size times the
    factor, floored to the grid, as `release_passes.multi_scale_sizes`) is at most `second_pass`."""
    grid = PIXELS_PER_LATENT

    def second(asked: int) -> int:
        scaled = int(asked * factor)
        return 2 * (scaled - scaled % grid)

    asked = int((second_pass // 2 // grid * grid + grid) / factor) // grid * grid + grid  # just above the bound
    while asked > grid and second(asked) > second_pass:
        asked -= grid
    return asked
