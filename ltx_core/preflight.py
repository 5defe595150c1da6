"""Checks that need neither torch nor a model: a prompt, sizes, settings, device and
dtype names, and paths (the output, the model files, a pickle refused unopened).

The command line runs them before it imports torch, so a mistake in a flag or a path is
answered in a fraction of a second instead of after seconds of imports; `pipeline.Request`
and `checkpoint` call the same functions, so the messages are the same everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CheckpointError, SettingsError, check_number, is_int
from .models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT

MP4_SUFFIX = ".mp4"
SEED_MAX = 2**64 - 1  # torch generators take 64-bit seeds, as ComfyUI's seed widgets
# Formats that unpickle on load, which can run arbitrary code: refused, never opened.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?)$")
# FP8 tensor cores, which `torch._scaled_mm` needs to be worth it: Ada (8.9) and Hopper (9.0) on.
FP8_MIN_CAPABILITY = (8, 9)
# The shipped tiny demo model: its folder (a module global so a test can point it
# elsewhere) and the names of its single-file checkpoint and T5 text-encoder folder there.
# Latent cells the spatial tiles of a tiled decode overlap by default: 64 pixels, as ComfyUI.
DEFAULT_TILE_OVERLAP = 2
SHIPPED_ASSETS = Path(__file__).parent / "assets"
SHIPPED_CHECKPOINT = "ltxv-tiny.safetensors"
SHIPPED_TEXT_ENCODER = "t5-tiny"


# ---------------------------------------------------------------- settings


def check_prompt(prompt, negative_prompt="") -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise SettingsError("prompt is empty; describe the video to generate")
    if not isinstance(negative_prompt, str):
        raise SettingsError("negative_prompt must be text (it may be empty)")


def nearest_valid(candidates: list[int]) -> str:
    """'a or b': the valid values (positive, each once) a message offers."""
    valid = sorted({c for c in candidates if c > 0})
    return " or ".join(str(c) for c in valid)


def check_multiple(name: str, value: int, multiple: int) -> None:
    """`value` must be a positive multiple (the VAE compresses `multiple` pixels per token)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} {value!r} must be a whole number of pixels, a multiple of {multiple}")
    if value < multiple or value % multiple:
        below = value // multiple * multiple
        raise SettingsError(
            f"{name} {value} is not a positive multiple of {multiple}; "
            f"nearest valid: {nearest_valid([below, below + multiple] if value > 0 else [multiple])}"
        )


def check_num_frames(value: int, temporal_compression: int = FRAMES_PER_LATENT, name: str = "num_frames") -> None:
    """Frame counts are 8k + 1: the causal VAE keeps frame 0 alone, then 8 per latent."""
    step = temporal_compression
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} {value!r} must be a whole number of frames, {step}k + 1")
    if value < 1 or (value - 1) % step:
        below = max((value - 1) // step * step + 1, 1)
        nearest = [below, below + step] if value > 1 else [1]
        raise SettingsError(
            f"{name} {value} is not {step}k + 1 (1, {1 + step}, {1 + 2 * step}, ...); "
            f"nearest valid: {nearest_valid(nearest)}"
        )


def check_unit(name: str, value) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise SettingsError(f"{name} {value!r} is outside [0, 1]")


def check_video_settings(
    width,
    height,
    num_frames,
    frame_rate,
    steps,
    guidance_scale,
    seed,
    decode_timestep,
    decode_noise_scale,
    pixels_per_latent: int = PIXELS_PER_LATENT,
    frames_per_latent: int = FRAMES_PER_LATENT,
) -> None:
    """The numbers of one video, in `pipeline.Request`'s order; `steps` None: a schedule
    of one's own replaces them."""
    check_multiple("width", width, pixels_per_latent)
    check_multiple("height", height, pixels_per_latent)
    check_num_frames(num_frames, frames_per_latent)
    check_number("frame_rate", frame_rate, 0.0, "frames per second above 0", inclusive=False)
    if steps is not None and (not is_int(steps) or steps < 1):
        raise SettingsError(f"steps {steps!r} must be a whole number of at least 1")
    check_number("guidance_scale", guidance_scale, 0.0, "a finite number >= 0 (1: no guidance)")
    if not is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise SettingsError(f"seed {seed!r} is outside the accepted range 0 to {SEED_MAX} (2**64 - 1)")
    check_unit("decode_timestep", decode_timestep)
    check_unit("decode_noise_scale", decode_noise_scale)


def check_dtype_name(name: str, allowed) -> None:
    """A dtype spelled as `checkpoint.resolve_dtype` accepts it (`allowed`: its names)."""
    name = str(name).removeprefix("torch.")
    if name not in allowed:
        raise SettingsError(f"dtype {name!r} is not supported; allowed: {', '.join(allowed)}")


def check_device_name(device: str) -> None:
    """ "cpu", "cuda" or "cuda:N" by name; whether a GPU is there is asked of torch later."""
    if DEVICE_NAME.match(str(device)):
        return
    if re.match(r"^[a-z_]+(:\d+)?$", str(device)):
        raise SettingsError(f"device {str(device)!r} is not supported; allowed: cpu, cuda, cuda:N")
    raise SettingsError(f"device {str(device)!r} is not a device name; allowed: cpu, cuda, cuda:N")


def check_fp8_device(device) -> None:
    """FP8 linear layers only where they pay: a CUDA GPU with FP8 tensor cores. The CPU runs
    `_scaled_mm` (slowly, for tests of `ltx_core.speed.fp8`), but a user asking for FP8 there
    wants speed it cannot give, so it is refused with what is needed. Torch is asked
    about the GPU only for a CUDA device."""
    needed = (
        "a CUDA GPU with FP8 tensor cores (compute capability 8.9 or newer: Ada, e.g. RTX 4090 or L4, "
        "or Hopper, e.g. H100)"
    )
    if not str(device).startswith("cuda"):
        raise SettingsError(f"fp8 needs {needed}; the models are on {device}. Leave fp8 off there.")
    import torch

    device = torch.device(device)
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise SettingsError(
            f"fp8 needs {needed}; {device} ({name}) has compute capability "
            f"{capability[0]}.{capability[1]}. Leave fp8 off, or use compile alone."
        )


# ---------------------------------------------------------------- paths


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work starts.

    The folder must exist and be writable. An existing file is refused unless
    `overwrite=True`, in which case it is replaced atomically once the new video is
    complete (the old file stays intact if writing fails).
    """
    path = Path(path)
    if path.suffix.lower() != MP4_SUFFIX:
        raise SettingsError(f"output {str(path)!r} must end in {MP4_SUFFIX}; other containers are not written")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SettingsError(
            f"output folder {str(folder)!r} does not exist; create it first or choose another output path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingsError(f"output folder {str(folder)!r} is not writable; choose another output path")
    if path.is_dir():
        raise SettingsError(f"output {str(path)!r} is a folder; give a file name ending in {MP4_SUFFIX}")
    if path.exists() and not overwrite:
        raise SettingsError(
            f"output {str(path)!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    return path


def require_existing(*flags: tuple[str, Path | None]) -> None:
    """Name a missing input path (`(flag, path)` pairs) before anything large is loaded."""
    for flag, path in flags:
        if path is not None and not Path(path).exists():
            raise SettingsError(f"{flag} {str(path)!r} does not exist")


def check_model_path(path: str | Path) -> Path:
    """The path as a Path if it may be a checkpoint: it exists and is no pickle."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_file():
        refuse_pickle(path)
    return path


def refuse_pickle(path: Path) -> None:
    """Refuse a pickle by its suffix or its first bytes, without unpickling anything."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{str(path)!r} is a pickle file ({path.suffix}): refused, because loading it could run code; "
            "only .safetensors files are loaded (use the .safetensors release of the model)"
        )
    with path.open("rb") as file:
        head = file.read(9)
    # a safetensors file opens with its header's length (8 bytes, little-endian), then "{";
    # that length's first byte may be 0x80, so such a file is not taken for a pickle
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return
    # torch.save writes a zip archive ("PK\x03\x04") or a bare pickle (protocol byte 0x80)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CheckpointError(
            f"{str(path)!r} is a PyTorch pickle despite its name: refused, because loading it could run "
            "code; only .safetensors files are loaded"
        )


def shipped_model_paths() -> tuple[Path, Path]:
    """Where the shipped tiny demo model lives: (single-file checkpoint, T5 text-encoder folder)."""
    return SHIPPED_ASSETS / SHIPPED_CHECKPOINT, SHIPPED_ASSETS / SHIPPED_TEXT_ENCODER


def default_model_paths() -> tuple[Path, Path]:
    """The shipped tiny demo model, for a run without model flags; where it is absent, an
    error saying what to pass instead."""
    checkpoint, text_encoder = shipped_model_paths()
    if not checkpoint.is_file() or not text_encoder.is_dir():
        raise CheckpointError(
            f"no shipped model found (looked for {checkpoint} and {text_encoder}/); "
            "pass --checkpoint and --text-encoder"
        )
    return checkpoint, text_encoder


# STG's perturbations, Lightricks' `SkipLayerStrategy` (`guidance.perturbed_forward` says
# what each does); here, without torch, so the CLI offers them before importing it.
STG_MODES = ("attention_values", "attention_skip", "residual", "transformer_block")
# --offload / the loaders' offload input: see `ltx_core.offload` and `memory_plan.choose_offload`
OFFLOAD_CHOICES = ("auto", "none", "models", "blocks")


def parse_blocks(text: str) -> tuple[int, ...]:
    """The one grammar of a block list, the CLI's `--stg-blocks` and the STG node's
    `stg_blocks`: "19" or "18, 19" (";" also separates) -> (18, 19); "" -> ()."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise SettingsError(f"stg_blocks {text!r} must be block indices separated by commas, e.g. 19 or 18, 19")
    return tuple(int(part) for part in parts)


# ---------------------------------------------------------------- spatial tiles of a decode


def tile_spans(size: int, tiles: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) latent cells of each of `tiles` tiles along a side of `size` cells, each
    `overlap` cells into the next; the last tile reaches the end."""
    base = (size + (tiles - 1) * overlap) // tiles
    spans = []
    for index in range(tiles):
        start = index * (base - overlap)
        end = size if index == tiles - 1 else min(start + base, size)
        spans.append((start, end))
    return spans


def check_tiles(tiles: tuple[int, int], overlap: int, height: int, width: int) -> None:
    """`tiles` (rows, columns) of a latent `height` x `width` cells with `overlap`: every tile
    must bring cells of its own beyond the overlap."""
    if len(tiles) != 2 or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in tiles):
        raise SettingsError(f"decode tiles {tiles!r} must be two whole numbers >= 1 (rows, columns)")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise SettingsError(f"decode tile overlap {overlap!r} must be a whole number of latent cells >= 0")
    for name, count, size in (("rows", tiles[0], height), ("columns", tiles[1], width)):
        base = (size + (count - 1) * overlap) // count
        if count > 1 and base - overlap < 1:
            most = max(c for c in range(1, size + 1) if c == 1 or (size + (c - 1) * overlap) // c > overlap)
            raise SettingsError(
                f"{count} tile {name} over {size} latent cells with an overlap of {overlap} leave tiles of "
                f"{base} cells, no more than the overlap; allowed: at most {most} tile {name} here, or a "
                "smaller overlap"
            )
