"""The command line's flags as a pipeline `Request`: the first frame, the conditioning
images and clips placed at their frames and fitted to the video's size, the source video.
A bad flag is checked before its frames are read or resized, so it is the only message."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_config import request_sampling
from .cli_plan import VIDEO_SUFFIXES
from .errors import SettingsError


def build_request(args: argparse.Namespace):
    """The flags as a pipeline Request, which checks every setting (and the image); the
    --lora files' headers checked too, so a bad one is refused before any model loads."""
    from .pipeline import Request
    from .video import load_image

    downscales = check_lora_files(args)
    return Request(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        num_frames=args.frames,
        frame_rate=args.fps,
        seed=args.seed,
        decode_timestep=args.decode_timestep,
        decode_noise_scale=args.decode_noise_scale,
        first_frame=load_image(args.image) if args.image is not None else None,
        conditions=tuple(_condition_item(*condition, args) for condition in args.condition),
        source_video=_fitted_frames(args.source_video, args) if args.source_video is not None else None,
        control=_control(args, downscales),
        noise_draws=args.noise_draws or ("diffusers" if getattr(args, "multi_scale", None) else "lightricks"),
        denoise_strength=args.denoise_strength,
        decode_time_chunk=args.decode_time_chunk,
        decode_tiles=args.decode_tiles,
        decode_tile_overlap=args.decode_tile_overlap,
        **request_sampling(args),  # the flags, or a base release config's pass with the flags given
    )


def _read_frames(path: Path):
    """An image (1 frame) or a video's frames, (F, H, W, 3) in [0, 1], as stored."""
    from .video import load_image, read_video_frames

    if not path.exists():
        raise SettingsError(f"conditioning file {str(path)!r} does not exist")
    return read_video_frames(path) if path.suffix.lower() in VIDEO_SUFFIXES else load_image(path)[None]


def _fitted_frames(path: Path, args: argparse.Namespace, frames=None):
    """The file's frames fitted to the video's size."""
    import torch

    from .video import resize_center_crop

    frames = _read_frames(path) if frames is None else frames
    return torch.stack([resize_center_crop(frame.float(), args.width, args.height) for frame in frames])


def _condition_item(path: Path, frame: int, strength: float, args: argparse.Namespace):
    """A conditioning item, placed and checked before its frames are fitted to the video's
    size (so a bad flag is the only message)."""
    from .sampling.conditioning import ConditioningItem, check_item_position, check_strength

    check_strength(strength)
    frames = _read_frames(path)
    start = frame if frame >= 0 else args.frames + frame - (len(frames) - 1)  # -1: ends on the last frame
    check_item_position(start, len(frames), args.frames)
    return ConditioningItem(_fitted_frames(path, args, frames), start, strength)


def check_lora_files(args: argparse.Namespace) -> list[int]:
    """Each --lora file exists, is no pickle and holds LoRA keys of a known layout (its
    header only, no tensor read); returns their reference downscale factors (IC-LoRA)."""
    from .lora import lora_header, reference_downscale_factor

    return [reference_downscale_factor(lora_header(path).metadata, str(path)) for path, _ in getattr(args, "lora", [])]


def _control(args: argparse.Namespace, downscales: list[int]):
    """--control-video as the request's IC-LoRA control, on the grid the IC-LoRA asks for
    (--control-downscale, else the factor a --lora file's metadata gives)."""
    if getattr(args, "control_video", None) is None:
        return None
    from .sampling.control import ControlVideo

    path, strength = args.control_video
    factors = sorted(set(downscales) - {1})
    if args.control_downscale is None and len(factors) > 1:
        raise SettingsError(
            f"the --lora files ask for different control downscales {factors}; choose one with --control-downscale"
        )
    downscale = args.control_downscale or (factors[0] if factors else 1)
    return ControlVideo(_read_frames(path), strength=strength, downscale=downscale)


def apply_lora_files(models, args: argparse.Namespace):
    """The --lora files applied to the loaded transformer at their strengths, before the
    speed settings (an FP8 conversion then quantizes the merged weights). The base layers
    are not kept: a command-line run never takes the LoRAs off again."""
    from .lora import apply_loras, read_lora

    loras = [(read_lora(path), strength) for path, strength in getattr(args, "lora", [])]
    if loras:
        apply_loras(models.transformer, loras, keep_base=False)
    return models
