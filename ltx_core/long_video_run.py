"""A long video from a `Request`, as the command line runs it: the request's prompt from
frame 0 and each prompt segment from its pixel frame on, sampled in overlapping temporal
windows (`long_video.generate_long_latent`), then decoded as `pipeline.generate` decodes
(time chunks, spatial tiles). Sizes here are pixel frames, as the user gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from .errors import SettingsError
from .long_video import (
    ClipKeyframe,
    FirstFrame,
    PromptSegment,
    WindowCallback,
    generate_long_latent,
    temporal_windows,
)
from .models.configs import FRAMES_PER_LATENT
from .multiscale import (
    check_upsampler,
    decode_second_pass,
    fitted_first_frame,
    multi_scale_settings,
    pass_guidance,
    pass_sigmas,
    resize_frames,
    upsample_between_passes,
)
from .pipeline import (
    Models,
    decode_requested,
    done_with,
    encode_first_frame,
    encode_frames,
    encode_text,
    on_device,
    seeded_generator,
)
from .preflight import check_num_frames
from .release_config import ReleaseConfig
from .release_passes import MultiScaleSettings
from .request import Request


def window_sizes(window_frames: int, overlap_frames: int) -> tuple[int, int]:
    """Pixel frames -> latent frames: a window of 8k + 1 frames, an overlap of 8m frames."""
    check_num_frames(window_frames, name="window frames")
    if overlap_frames < FRAMES_PER_LATENT or overlap_frames % FRAMES_PER_LATENT:
        raise SettingsError(
            f"window overlap {overlap_frames} frames is not allowed; allowed: a multiple of "
            f"{FRAMES_PER_LATENT} (one latent frame each), at least {FRAMES_PER_LATENT}"
        )
    return (window_frames - 1) // FRAMES_PER_LATENT + 1, overlap_frames // FRAMES_PER_LATENT


def segment_windows(
    segments: Sequence[tuple[int, str]], starts: Sequence[int], num_frames: int
) -> list[tuple[int, str]]:
    """(first window, prompt) of each prompt change: a window takes the prompt in effect at
    its first pixel frame; segments are (pixel frame, prompt), frame 0 first."""
    ordered = sorted(segments)
    for frame, _ in ordered:
        if not 0 <= frame < num_frames:
            raise SettingsError(f"prompt segment at frame {frame} lies outside the {num_frames} frames")
    if not ordered or ordered[0][0] != 0:
        raise SettingsError("the prompt segments need one from frame 0 (the run's --prompt)")
    changes: list[tuple[int, str]] = []
    for index, start in enumerate(starts):
        prompt = [text for frame, text in ordered if frame <= start * FRAMES_PER_LATENT][-1]
        if not changes or changes[-1][1] != prompt:
            changes.append((index, prompt))
    return changes


def segment_prompts(starts: Sequence[int], texts: Sequence, num_windows: int) -> list[PromptSegment]:
    """The encoded prompt of each change as `PromptSegment`s covering every window."""
    ends = [start - 1 for start in starts[1:]] + [num_windows - 1]
    return [PromptSegment(start, end, text) for start, end, text in zip(starts, ends, texts)]


def window_prompts(
    text_encoder,
    segments: Sequence[tuple[int, str]],
    num_latent_frames: int,
    window_frames: int,
    overlap_frames: int,
    negative_prompt: str | None,
    max_tokens: int = 128,
):
    """(window, overlap) in latent frames, the encoded prompt of each run of windows as
    `PromptSegment`s, and the negative prompt's embeddings (None without one), for a clip
    of `num_latent_frames` whose `segments` (pixel frame, prompt) start at frame 0."""
    window, overlap = window_sizes(window_frames, overlap_frames)
    windows = temporal_windows(num_latent_frames, window, overlap)
    num_frames = (num_latent_frames - 1) * FRAMES_PER_LATENT + 1
    changes = segment_windows(segments, [start for start, _ in windows], num_frames)
    texts = [encode_text(text_encoder, prompt, negative_prompt, max_tokens) for _, prompt in changes]
    prompts = segment_prompts([start for start, _ in changes], [text for text, _ in texts], len(windows))
    return window, overlap, prompts, texts[0][1]


def check_long_conditioning(request: Request) -> None:
    """What a long video takes beside its prompts: a first frame and images at later frames."""
    if request.source_video is not None or request.control is not None:
        raise SettingsError("a source video and an IC-LoRA control are for single-window runs; a long video takes "
                            "prompt segments, a first frame and keyframe images")  # fmt: skip
    for item in request.conditions:
        if item.frames.shape[0] != 1 or item.frame_index == 0:
            kind = f"a clip of {item.frames.shape[0]} frames" if item.frames.shape[0] != 1 else "an image at frame 0"
            raise SettingsError(f"a long video's keyframe is {kind}; allowed: images at frames after 0 (the "
                                "first frame is the image of --image / first_frame)")  # fmt: skip


@dataclass(frozen=True)
class LongVideoSettings:
    """How a long video is cut into windows (pixel frames) and joined."""

    window_frames: int
    overlap_frames: int
    overlap_strength: float = 0.5
    adain_factor: float = 0.25


def generate_long(
    models: Models,
    request: Request,
    segments: Sequence[tuple[int, str]] = (),
    *,
    window_frames: int,
    overlap_frames: int,
    overlap_strength: float = 0.5,
    adain_factor: float = 0.25,
    upsampler=None,
    multi_scale: ReleaseConfig | MultiScaleSettings | None = None,
    callback: WindowCallback | None = None,
) -> Tensor:
    """Request -> frames (F, H, W, 3) in [0, 1] of a clip sampled in windows of
    `window_frames` overlapping by `overlap_frames`; `segments` (pixel frame, prompt) change
    the prompt from their window on. A first frame starts the clip at the request's
    conditioning strength; the request's conditions, images at later frames, guide the
    windows that hold their frames (`long_video.ClipKeyframe`). Clips, a source video and
    an IC-LoRA control belong to single-window runs and are refused.

    With `multi_scale` (a multi-scale release config, and its `upsampler`) the clip is
    made as the multi-scale pipeline makes one window: every window at the first pass's
    size, the whole latent upsampled, every window again at the second pass's size from
    it, then the second pass's decode; the same windows and prompts in both passes.
    `callback(k, n, result)` sees each window's result (n counts the windows of all passes)."""
    check_long_conditioning(request)
    long = LongVideoSettings(window_frames, overlap_frames, overlap_strength, adain_factor)
    if multi_scale is not None:
        return _generate_long_multiscale(models, upsampler, request, segments, long, multi_scale, callback)
    guidance = request.guidance()
    prompts = _long_prompts(models, request, segments, long, guidance.needs_negative)
    size = (request.height, request.width)
    sigmas = request.sigma_schedule(_window_tokens(models.vae, request, size, long), models.scheduler)
    latent = _long_pass(
        models, request, prompts, long, size, sigmas, guidance, request.stochastic_sampling, callback=callback
    )
    done_with(models, models.transformer)
    with on_device(models, models.vae):
        return decode_requested(models.vae, latent, request, seeded_generator(request.seed))


def _generate_long_multiscale(models, upsampler, request, segments, long, release, callback=None) -> Tensor:
    settings = multi_scale_settings(release)
    sizes = settings.pass_sizes(request.height, request.width)
    check_upsampler(upsampler, models.vae, request.num_frames, *sizes)
    needs_negative = any(pass_guidance(settings, p).needs_negative for p in settings.passes)
    prompts = _long_prompts(models, request, segments, long, needs_negative)
    latent = None
    for index, (pass_settings, size) in enumerate(zip(settings.passes, sizes)):
        if latent is not None:
            with on_device(models, models.vae):
                latent = upsample_between_passes(upsampler, models.vae, latent)
        sigmas = pass_sigmas(pass_settings, _window_tokens(models.vae, request, size, long), models.scheduler)
        guidance = pass_guidance(settings, pass_settings)
        counted = None if callback is None else _pass_windows(callback, index, len(settings.passes))
        stochastic = pass_settings.stochastic_sampling
        latent = _long_pass(models, request, prompts, long, size, sigmas, guidance, stochastic, latent, counted)
    done_with(models, models.transformer)
    with on_device(models, models.vae):
        frames = decode_second_pass(
            models.vae, latent, request, settings.second_pass.tone_map_compression_ratio, seeded_generator(request.seed)
        )
    return resize_frames(frames, request.height, request.width)


def _pass_windows(callback: WindowCallback, index: int, passes: int) -> WindowCallback:
    """A pass's window callback as windows of the whole run."""
    return lambda k, n, result: callback(index * n + k, passes * n, result)


def _window_tokens(vae, request: Request, size: tuple[int, int], long: LongVideoSettings) -> int:
    """Tokens of one window at `size` (height, width): what the schedule's shift counts."""
    window, _ = window_sizes(long.window_frames, long.overlap_frames)
    num_latent_frames = (request.num_frames - 1) // FRAMES_PER_LATENT + 1
    return min(window, num_latent_frames) * (size[0] // vae.spatial_compression) * (size[1] // vae.spatial_compression)


def _long_prompts(models, request, segments, long: LongVideoSettings, needs_negative: bool):
    """(prompt segments per window, negative embeddings or None), encoded once for every pass."""
    num_latent_frames = (request.num_frames - 1) // FRAMES_PER_LATENT + 1
    negative = request.negative_prompt if needs_negative else None
    with on_device(models, models.text_encoder.model):
        _, _, prompts, negative_text = window_prompts(
            models.text_encoder, [(0, request.prompt), *segments], num_latent_frames, long.window_frames,
            long.overlap_frames, negative, request.max_tokens,
        )  # fmt: skip
    done_with(models, models.text_encoder.model)  # encoded once for every pass
    return prompts, negative_text


def _long_pass(
    models, request, prompts, long, size, sigmas, guidance, stochastic, start_latent=None, callback=None
) -> Tensor:
    """The clip's normalized latent at `size` (height, width), sampled window by window;
    the first frame and keyframes encoded at that size (as each multi-scale pass encodes
    its conditioning again)."""
    vae = models.vae
    height, width = size
    shape = (1, vae.cfg.latent_channels, (request.num_frames - 1) // FRAMES_PER_LATENT + 1,
             height // vae.spatial_compression, width // vae.spatial_compression)  # fmt: skip
    window, overlap = window_sizes(long.window_frames, long.overlap_frames)
    first = None
    with on_device(models, vae):
        if request.first_frame is not None:
            image = resize_frames(fitted_first_frame(request), height, width)
            first = FirstFrame(encode_first_frame(vae, image, width, height), strength=request.conditioning_strength)
        keyframes = [
            ClipKeyframe(encode_frames(vae, resize_frames(c.frames, height, width)), c.frame_index, c.strength)
            for c in request.conditions
        ]
    with on_device(models, models.transformer):
        return generate_long_latent(
            models.runner or models.transformer,
            shape,
            prompts[0],
            prompts[1],
            sigmas,
            guidance,
            request.frame_rate,
            window=window,
            overlap=overlap,
            overlap_strength=long.overlap_strength,
            adain_factor=long.adain_factor,
            seed=request.seed,
            first_frame=first,
            keyframes=keyframes,
            start_latent=start_latent,
            device=models.device,
            callback=callback,
            stochastic=stochastic,
        )
