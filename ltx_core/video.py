"""Frames in and out of files: mp4 through PyAV (atomic), images through PIL.

Frames handed to users are `(F, H, W, 3)` float in [0, 1] (docs/DESIGN.md conventions).
An mp4 is written to a hidden part file beside the target and renamed at the end, so an
error or Ctrl-C part-way leaves no partial video (BAD_INPUTS 23, 24). A process killed
outright (kill -9, a power cut) cannot clean up after itself: the next write of the same
output removes the part files such runs left (`remove_stale_parts`).

PyAV is imported where a video is read or written, not with this module, so the command
line and the checks it runs first do not pay for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import SettingsError
from .preflight import MP4_SUFFIX, check_output_path  # noqa: F401 (the checks the CLI runs before torch)

try:  # POSIX: a writer holds a lock on its part file, which the kernel drops when it dies
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted, which protects a live writer
    fcntl = None

DEFAULT_CRF = 19  # libx264 quality: 0 lossless, 23 its default; 19 is visually near-lossless
# libx264's speed/size trade at that quality (its default is "medium"): chosen by
# benchmarks/mp4_write.py, which writes the same clips with each.
X264_PRESETS = ("medium", "fast", "veryfast")
DEFAULT_X264_PRESET = "fast"
# PyAV's thread type for the encoder: "AUTO" lets libx264 run frame threads (PyAV's default,
# "SLICE", confines it to slices of each frame, which scale worse with cores) and lets an
# encoder without frame threads (mpeg4) keep its slices
ENCODER_THREAD_TYPE = "AUTO"
PREFERRED_CODECS = ("libx264", "mpeg4")  # mpeg4 ships with every FFmpeg build PyAV uses
# A part file is only removed when no process holds its lock and nothing wrote to it for
# this long: the lock says no writer is alive on this machine, the age covers the instant
# between a writer creating its file and locking it, and file systems whose locks other
# machines do not see (a live writer there keeps the file's time fresh as it writes).
STALE_PART_AGE_S = 30.0


# ---------------------------------------------------------------- writing


def write_mp4(
    frames: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    fps: float,
    metadata: dict | None = None,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
    x264_preset: str = DEFAULT_X264_PRESET,
) -> Path:
    """Write `(F, H, W, 3)` frames (float in [0, 1] or uint8) as an H.264 yuv420p mp4.

    `metadata` values are stored as container tags, strings as they are and anything else
    as JSON, with `movflags=use_metadata_tags` so mp4 keeps arbitrary keys: the way
    ComfyUI's own video saver embeds `prompt` and `workflow`, so ComfyUI can open the
    workflow from the file. Falls back to the mpeg4 codec where libx264 is absent.
    Returns the written path.
    """
    if x264_preset not in X264_PRESETS:
        raise SettingsError(f"x264 preset {x264_preset!r}: allowed {', '.join(X264_PRESETS)}")
    path = check_output_path(path, overwrite)
    pixels = _frames_to_uint8(frames)
    rate = _frame_rate(fps)
    remove_stale_parts(path)
    temp_name, lock = _new_hidden_file(path)
    try:
        _encode(pixels, temp_name, rate, metadata or {}, crf, x264_preset)
        os.replace(temp_name, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a partial file behind
        Path(temp_name).unlink(missing_ok=True)
        raise
    finally:
        lock.close()
    return path


def part_file_pattern(path: Path) -> re.Pattern:
    """The names `_new_hidden_file` gives the part files of `path`, and nothing else."""
    return re.compile(rf"\.{re.escape(path.stem)}\.[0-9a-f]{{8}}\.part")


def _new_hidden_file(path: Path):
    """A new empty part file beside `path`, and the open handle that holds its lock until
    closed. Made by `open(..., "x")` rather than `mkstemp`, so it gets the user's usual
    permissions (0666 less the umask), not mkstemp's 0600."""
    while True:
        name = path.parent / f".{path.stem}.{secrets.token_hex(4)}.part"
        try:
            handle = open(name, "xb")
        except FileExistsError:
            continue
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            handle.close()  # Windows renames no file that is open
        return str(name), handle


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Remove the part files a killed run left for `path`: regular files of this user named
    exactly `.STEM.<8 hex>.part` beside it, that no live process holds locked and nothing
    wrote to for STALE_PART_AGE_S. Returns what was removed (each with a warning)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = part_file_pattern(path)
    removed = []
    for entry in folder.iterdir():
        if pattern.fullmatch(entry.name) and _is_stale(entry):
            try:
                entry.unlink()
            except OSError:  # gone meanwhile, or (Windows) still open by its writer
                continue
            warnings.warn(
                f"removed {str(entry)!r}, a partial file an interrupted run left for {str(path)!r}", stacklevel=2
            )
            removed.append(entry)
    return removed


def _is_stale(entry: Path) -> bool:
    try:
        info = entry.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < STALE_PART_AGE_S:
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False  # another user's run: not ours to judge
    return not _locked_by_another(entry)


def _locked_by_another(entry: Path) -> bool:
    """Whether a process holds the part file's lock (a writer alive on this machine)."""
    if fcntl is None:
        return False
    try:
        with open(entry, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # cannot tell: leave it
    return False


def _frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """8-bit pixels, converted a frame at a time (on the tensor's device), so the
    conversion adds one frame of temporaries to the video, not three copies of it."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
    else:
        frames = np.asarray(frames)
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[0] < 1:
        raise SettingsError(f"frames have shape {shape}; expected (frames >= 1, height, width, 3)")
    height, width = shape[1:3]
    if height % 2 or width % 2:
        # yuv420p stores colour at half resolution, so both sides must be even
        raise SettingsError(f"frame size {width}x{height} has an odd side; yuv420p mp4 needs even width and height")
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            return np.ascontiguousarray(frames.cpu().numpy())
        if not frames.is_floating_point():
            raise SettingsError(f"frames have dtype {frames.dtype}; expected float in [0, 1] or uint8")
    elif frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    elif not np.issubdtype(frames.dtype, np.floating):
        raise SettingsError(f"frames have dtype {frames.dtype}; expected float in [0, 1] or uint8")
    pixels = np.empty(shape, dtype=np.uint8)
    for index, frame in enumerate(frames):
        pixels[index] = _frame_to_uint8(frame)
    return pixels


def _frame_to_uint8(frame) -> np.ndarray:
    """fp32 arithmetic, rounding half to even, as numpy and torch both do."""
    if isinstance(frame, torch.Tensor):
        return torch.round(frame.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()
    return np.round(np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _frame_rate(fps: float) -> Fraction:
    if not math.isfinite(fps) or fps <= 0:
        raise SettingsError(f"fps {fps} must be a positive finite number")
    return Fraction(round(fps * 1000), 1000)


def _pick_codec() -> str:
    import av

    for name in PREFERRED_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError (or a FFmpeg error) for a missing encoder
            continue
    raise RuntimeError(f"none of the video encoders {PREFERRED_CODECS} is available in this FFmpeg build")


def _encode(
    pixels: np.ndarray,
    filename: str,
    rate: Fraction,
    metadata: dict,
    crf: int,
    preset: str,
    thread_type: str = ENCODER_THREAD_TYPE,
) -> None:
    import av

    codec = _pick_codec()
    with av.open(filename, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        for key, value in metadata.items():
            container.metadata[key] = value if isinstance(value, str) else json.dumps(value)
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = pixels.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.thread_type = thread_type
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset}
        else:
            stream.options = {"qscale": "2"}  # mpeg4: constant high quality instead of a bitrate
        for image in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames


# ---------------------------------------------------------------- reading


def read_video_frames(path: str | os.PathLike) -> torch.Tensor:
    """Decode every frame of a video file to `(F, H, W, 3)` float32 in [0, 1]."""
    frames = [frame.to_ndarray(format="rgb24") for frame in _decoded_frames(path)]
    if not frames:
        raise SettingsError(f"video {str(path)!r} has no frames")
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def read_video_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The container-level metadata tags of a video file, as stored (strings)."""
    with _open_video(path) as container:
        return dict(container.metadata)


def _open_video(path: str | os.PathLike):
    import av

    if not Path(path).is_file():
        raise SettingsError(f"video {str(path)!r} does not exist")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise SettingsError(f"video {str(path)!r} could not be opened (not a video, or corrupt): {error}") from error


def _decoded_frames(path: str | os.PathLike):
    import av

    with _open_video(path) as container:
        if not container.streams.video:
            raise SettingsError(f"{str(path)!r} has no video stream")
        try:
            yield from container.decode(video=0)
        except av.error.FFmpegError as error:
            raise SettingsError(f"video {str(path)!r} is corrupt: {error}") from error


# ---------------------------------------------------------------- images


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file to `(H, W, 3)` float32 in [0, 1].

    The EXIF orientation is applied. Grayscale, palette and 16-bit images are converted to
    RGB; an alpha channel is dropped (the colour under it is kept), as ComfyUI's LoadImage
    does.
    """
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as error:
        raise SettingsError(f"{str(path)!r} is not an image PIL can read (PNG, JPEG, WebP, ...)") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for a truncated or damaged file
        raise SettingsError(f"image {str(path)!r} is corrupt or truncated: {error}") from error
    return torch.from_numpy(_rgb_array(image))


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: keep its precision
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL asks for this before dropping palette transparency
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def resize_center_crop(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Fit an `(H, W, 3)` image to `width x height`: center-crop to the target aspect, then
    bilinear resize.

    This is ComfyUI's `common_upscale(..., "bilinear", "center")`, which its
    LTXVImgToVideo node applies, so an image conditions the same in ComfyUI and here.
    A warning says when the image had another size.
    """
    old_height, old_width = image.shape[:2]
    if (old_width, old_height) == (width, height):
        return image
    warnings.warn(
        f"image of {old_width}x{old_height} was center-cropped to the aspect of {width}x{height} and resized",
        stacklevel=2,
    )
    left, top = center_crop_offsets(old_width, old_height, width, height)
    cropped = image[top : old_height - top, left : old_width - left]
    batch = cropped.permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    resized = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    return resized[0].permute(1, 2, 0).clamp(0.0, 1.0)


def center_crop_offsets(old_width: int, old_height: int, width: int, height: int) -> tuple[int, int]:
    """Pixels to cut from each side so the remaining aspect is width / height."""
    old_aspect, new_aspect = old_width / old_height, width / height
    if old_aspect > new_aspect:  # too wide: cut left and right
        return round((old_width - old_width * new_aspect / old_aspect) / 2), 0
    if old_aspect < new_aspect:  # too tall: cut top and bottom
        return 0, round((old_height - old_height * old_aspect / new_aspect) / 2)
    return 0, 0
