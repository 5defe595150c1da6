"""Long videos in temporal windows: each window of latent frames is sampled on its own,
continues the previous one through its overlap, may have its own prompt, and the windows
are crossfaded into one latent of the whole length.

The transformer never sees more than one window (plus the overlap's conditioning
tokens), so a window's memory does not grow with the clip. The behaviour is that of
diffusers' `LTXI2VLongMultiPromptPipeline` (ComfyUI's looping sampler), which this
module matches on latents (tests/parity/test_long_video_parity.py):

- windows of `window` latent frames start every `window - overlap` frames; the last one
  ends at the clip's end and may be shorter (`temporal_windows`);
- window k > 0 gets the previous result's last `overlap` latent frames as extra tokens
  after its own, at the time coordinates of its first `overlap` frames and noise mask
  1 - `overlap_strength`; they are blended back in before and after every step (the
  reference's inpainting rule, `_sample_window`) and dropped from the result;
- each window starts from its own noise, drawn from a generator seeded `seed + start`;
- window k > 0 loses its first frame, is AdaIN-matched to the first window
  (`adain_factor`), and its first `overlap - 1` frames crossfade linearly with the
  result's last ones (`fuse_window`).

- with a `FirstFrame`, the image's latent is the first window's frame 0 at its strength
  and, as a guide, extra tokens of every window one latent frame before its start.

Sizes here are latent frames (the reference takes pixel frames and divides by 8). Where
this differs from the reference on purpose: an overlap of 2 (the reference keeps both
versions of each seam's frame, see `join_window`) and an overlap of 0 (refused: the
reference loses a frame per seam). The core's `denoise` steps conditioning tokens by
its own strength rules (`euler.STRENGTH_RULES`), none of which is the reference's
per-step blending, so windows are sampled here with the same transformer call and
guidance (`guidance.guided_velocity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from .errors import SettingsError, check_number, is_int
from .models.configs import FRAMES_PER_LATENT
from .models.rope import fractional_coords, latent_coords, pixel_coords
from .models.text_encoder import TextEmbeddings
from .sampling.conditioning import ConditionedLatent
from .sampling.denoise import as_runner, batched_text, guided_model_fn, module_device, module_dtype
from .sampling.euler import stochastic_step
from .sampling.guidance import Guidance, guided_velocity
from .sampling.latent_ops import adain_filter

# a window's progress: callback(window_index, window_count, window_result)
WindowCallback = Callable[[int, int, Tensor], None]


# ---------------------------------------------------------------- window arithmetic


def check_windows(num_frames: int, window: int, overlap: int) -> None:
    """A window must fit the clip and overlap its neighbour by at least one frame: the
    overlap carries the previous window into the next (0 would also lose a frame at each
    seam in the reference's fusion), and an overlap of the whole window never advances."""
    for name, value in (("latent frame count", num_frames), ("window size", window)):
        if not is_int(value) or value < 1:
            raise SettingsError(f"{name} {value!r} is not allowed; allowed: a whole number of latent frames >= 1")
    if window > num_frames:
        raise SettingsError(
            f"window size {window} is longer than the clip of {num_frames} latent frames; "
            f"allowed: 2 to {num_frames} (a clip that fits one window needs no windows)"
        )
    if not is_int(overlap) or not 1 <= overlap < window:
        raise SettingsError(
            f"window overlap {overlap!r} is not allowed for a window of {window} latent frames; "
            f"allowed: 1 to {window - 1}"
        )


def temporal_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """The windows' [start, end) in latent frames: a new window every `window - overlap`
    frames, each `window` long except the last, which stops at the clip's end."""
    check_windows(num_frames, window, overlap)
    stride = window - overlap
    windows = [(0, window)]
    while windows[-1][1] < num_frames:
        start = windows[-1][0] + stride
        windows.append((start, min(start + window, num_frames)))
    return windows


# ---------------------------------------------------------------- prompts per window


@dataclass(frozen=True)
class PromptSegment:
    """The prompt of windows `start_window` to `end_window` (both included), as the
    reference's `prompt_segments` ({"start_window", "end_window", "text"})."""

    start_window: int
    end_window: int
    text: TextEmbeddings


def window_texts(prompts: TextEmbeddings | Sequence[PromptSegment], num_windows: int) -> list[TextEmbeddings]:
    """One prompt per window. Segments must start at window 0, run in order without
    overlapping, and lie among the windows; a window in a gap keeps the segment before
    it and windows after the last segment keep the last one, as the reference fills them."""
    if isinstance(prompts, TextEmbeddings):
        return [prompts] * num_windows
    if not prompts:
        raise SettingsError("prompt segments are empty; allowed: one TextEmbeddings or segments from window 0")
    texts, next_free = [], 0
    for segment in prompts:
        start, end = segment.start_window, segment.end_window
        if not (is_int(start) and is_int(end)) or not next_free <= start <= end < num_windows:
            low = next_free
            raise SettingsError(
                f"prompt segment of windows {start!r} to {end!r} is out of order or outside the clip's "
                f"{num_windows} windows; allowed: {low} <= start <= end <= {num_windows - 1}"
            )
        if not texts and start != 0:
            raise SettingsError(f"the first prompt segment starts at window {start}; allowed: 0")
        texts += texts[-1:] * (start - next_free) + [segment.text] * (end - start + 1)
        next_free = end + 1
    return texts + [texts[-1]] * (num_windows - len(texts))


# ---------------------------------------------------------------- joining windows


def fuse_window(done: Tensor, window: Tensor, overlap: int) -> Tensor:
    """Append a window's new frames `(B, C, n, h, w)` to the result, crossfading its first
    `overlap` frames with the result's last ones: weights of the result run linearly
    from 1 to 0 without their ends (overlap + 2 points); an overlap of 0 appends."""
    if overlap == 0:
        return torch.cat([done, window], dim=2)
    weight = torch.linspace(1, 0, overlap + 2, device=done.device, dtype=done.dtype)[1:-1]
    weight = weight.reshape(1, 1, overlap, 1, 1)
    seam = weight * done[:, :, -overlap:] + (1 - weight) * window[:, :, :overlap]
    return torch.cat([done[:, :, :-overlap], seam, window[:, :, overlap:]], dim=2)


def join_window(done: Tensor | None, window: Tensor, first: Tensor | None, overlap: int, adain_factor: float):
    """The result so far with a window's result (its own frames only) added: the first
    window as it is; later ones without their first frame (the last overlap frame of the
    result stands for it), AdaIN-matched to the first window, crossfaded over the
    remaining `overlap - 1` frames.

    The reference crossfades over max(overlap - 1, 1) frames and appends without a blend
    when that is 1, so at overlap 2 it keeps both versions of the seam's frame and its
    latent grows by a frame per seam (longer than the clip); here that frame is blended
    half and half, and every overlap gives the clip's length."""
    if done is None:
        return window
    window = window[:, :, 1:]
    if adain_factor > 0 and math.prod(window.shape[2:]) > 1:  # one value a channel has no deviation
        window = adain_filter(window, first, adain_factor)
    return fuse_window(done, window, overlap - 1)


# ---------------------------------------------------------------- one window


def window_coords(blocks, height: int, width: int, batch: int, frame_rate: float, causal: bool) -> Tensor:
    """RoPE coordinates (B, 3, T) of a window's blocks of tokens, `(frames, shift)` each:
    a block's latent frames counted from the window's start and moved `shift` pixel frames
    in time. The window's own frames come first; the previous window's tail sits at the
    times of the window's first frames (it continues them), a first-frame guide one
    latent frame before the window (the reference's "negative index")."""
    pixels = []
    for frames, shift in blocks:
        block = pixel_coords(latent_coords(frames, height, width, batch), causal_fix=causal)
        block[:, 0] += shift
        pixels.append(block)
    return fractional_coords(torch.cat(pixels, dim=2), frame_rate)


@dataclass(frozen=True)
class FirstFrame:
    """An image to start the clip from: its normalized latent `samples` (B or 1, C, 1, h, w)
    is the first window's frame 0 at `strength` (noise mask 1 - strength), and, with
    `guide_strength` > 0, extra tokens of every window one latent frame before its start
    (the reference's `negative_index_latents`, its default: the image), which keep later
    windows on the image's look."""

    samples: Tensor
    strength: float = 0.5
    guide_strength: float = 1.0

    def __post_init__(self):
        check_number("first-frame strength", self.strength, 0.0, "a number in (0, 1]", inclusive=False)
        check_number("first-frame guide strength", self.guide_strength, 0.0, "a number from 0 (off) to 1")
        for name, value in (
            ("first-frame strength", self.strength),
            ("first-frame guide strength", self.guide_strength),
        ):
            if value > 1:
                raise SettingsError(f"{name} {value!r} is not allowed; allowed: a number up to 1")
        if not isinstance(self.samples, Tensor) or self.samples.ndim != 5 or self.samples.shape[2] != 1:
            shape = tuple(self.samples.shape) if isinstance(self.samples, Tensor) else type(self.samples).__name__
            raise SettingsError(f"first frame latent {shape} is not one latent frame; allowed: (B or 1, C, 1, h, w)")

    def check_fits(self, shape: tuple[int, ...]) -> None:
        batch, channels, _, height, width = shape
        got = tuple(self.samples.shape)
        if got[0] not in (1, batch) or (got[1], got[3], got[4]) != (channels, height, width):
            raise SettingsError(
                f"first frame latent {got} does not fit the latent {tuple(shape)}; allowed: "
                f"({batch} or 1, {channels}, 1, {height}, {width})"
            )


@dataclass(frozen=True)
class ClipKeyframe:
    """An encoded image `samples` (B or 1, C, 1, h, w) to hold at pixel frame `frame` of the
    clip at `strength`: guide tokens of each window that holds that frame, at the frame's
    time within the window (as a keyframe of a single-window run, paper 2.4)."""

    samples: Tensor
    frame: int
    strength: float = 1.0

    def __post_init__(self):
        check_number("keyframe strength", self.strength, 0.0, "a number in (0, 1]", inclusive=False)
        if self.strength > 1:
            raise SettingsError(f"keyframe strength {self.strength!r} is not allowed; allowed: a number in (0, 1]")
        if not isinstance(self.samples, Tensor) or self.samples.ndim != 5 or self.samples.shape[2] != 1:
            shape = tuple(self.samples.shape) if isinstance(self.samples, Tensor) else type(self.samples).__name__
            raise SettingsError(
                f"a long video's keyframe latent {shape} is not one latent frame; "
                "allowed: an image, (B or 1, C, 1, h, w)"
            )

    @property
    def latent_frame(self) -> int:
        """The clip's latent frame holding the keyframe (the causal VAE's frame 0 alone)."""
        return (self.frame + FRAMES_PER_LATENT - 1) // FRAMES_PER_LATENT

    def check_fits(self, shape: tuple[int, ...]) -> None:
        num_frames = (shape[2] - 1) * FRAMES_PER_LATENT + 1
        if not is_int(self.frame) or not 1 <= self.frame < num_frames:
            raise SettingsError(
                f"a long video's keyframe at frame {self.frame!r} is outside the clip; allowed: 1 to "
                f"{num_frames - 1} (frame 0 is the first frame's image)"
            )
        FirstFrame(self.samples).check_fits(shape)

    def in_window(self, start: int) -> int:
        """The keyframe's pixel frame counted within a window whose first latent frame is
        the clip's `start`: the window's latent frame j starts at pixel max(8j - 7, 0)."""
        j = self.latent_frame - start
        into = self.frame - max(FRAMES_PER_LATENT * self.latent_frame - FRAMES_PER_LATENT + 1, 0)
        return max(FRAMES_PER_LATENT * j - FRAMES_PER_LATENT + 1, 0) + into


def clip_conditioning(latent: ConditionedLatent) -> tuple[FirstFrame | None, list[ClipKeyframe]]:
    """What a long video takes of a conditioned latent (a graph's first-frame and keyframe
    nodes): its frame 0 held below noise mask 1 as the `FirstFrame` (at strength 1 - mask),
    and its keyframe images; held frames after 0, keyframe clips and IC-LoRA controls are
    refused."""
    mask = latent.noise_mask
    if (mask[:, :, 1:] < 1).any():
        raise SettingsError("the latent holds frames after its first on the grid (a conditioning clip); a long "
                            "video takes a first frame and keyframe images")  # fmt: skip
    first = None
    if (mask[:, :, :1] < 1).any():
        first = FirstFrame(latent.samples[:, :, :1], strength=1.0 - float(mask[:, :, :1].max()))
    keyframes = []
    for keyframe in latent.keyframes:
        if keyframe.spatial_scale != 1:
            raise SettingsError("an IC-LoRA control is for single-window runs; a long video takes keyframe images")
        keyframes.append(ClipKeyframe(keyframe.samples, keyframe.frame_index, keyframe.strength))
    return first, keyframes


def window_latent(
    shape,
    frames: int,
    tail: Tensor | None,
    first_frame: FirstFrame | None,
    is_first: bool,
    strength: float,
    device,
    keyframes: Sequence[tuple[ClipKeyframe, int]] = (),
):
    """A window's clean values (B, C, T, h, w), noise mask (B, 1, T, h, w) on `device` and coordinate
    blocks (`window_coords`): its own frames (to generate; the first window's frame 0 at
    the first frame's strength), the previous window's tail at `strength`, the
    first-frame guide at its strength, in the reference's token order, then the
    `keyframes` it holds, each at its pixel frame within the window."""
    batch, channels, _, height, width = shape
    own = torch.zeros(batch, channels, frames, height, width, device=device)
    own_mask = torch.ones(batch, 1, frames, height, width, device=device)
    if first_frame is not None and is_first:
        own[:, :, :1] = first_frame.samples.to(own)
        own_mask[:, :, :1] = 1.0 - first_frame.strength
    parts = [(own, 1.0, 0)]
    if tail is not None:
        parts.append((tail.to(own), 1.0 - strength, 0))
    if first_frame is not None and first_frame.guide_strength > 0:
        guide = first_frame.samples.to(own).expand(batch, -1, -1, -1, -1)
        parts.append((guide, 1.0 - first_frame.guide_strength, -FRAMES_PER_LATENT))
    for keyframe, shift in keyframes:
        parts.append((keyframe.samples.to(own).expand(batch, -1, -1, -1, -1), 1.0 - keyframe.strength, shift))
    masks = [own_mask] + [torch.full_like(part[:, :1], level) for part, level, _ in parts[1:]]
    blocks = [(part.shape[2], shift) for part, _, shift in parts]
    return torch.cat([part for part, _, _ in parts], dim=2), torch.cat(masks, dim=2), blocks


def _sample_window(
    velocity_fn,
    noise: Tensor,
    clean: Tensor,
    mask: Tensor,
    sigmas: Tensor,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Euler steps over a window's tokens, as the reference samples a window: a token of
    mask m starts at `m * noise + (1 - m) * clean` and takes timestep `sigma * m`; the
    model sees x as it is, the (plain) Euler step is taken from x blended
    `m * x + (1 - m) * clean` and blended so again, so conditioning tokens (the previous
    window's tail) stay near their values. (The reference reads the model's input
    before its pre-step blend: the model sees the unblended x.) With `init` (a window of a
    second pass: the upsampled first pass) the tokens start from `init` noised to the
    first sigma instead of from noise alone. With `generator`, the steps are Lightricks'
    stochastic steps (`euler.stochastic_step`): each token's estimate, from the blended x,
    noised afresh to its next timestep `sigma_next * m`, then blended as the plain step is."""
    to_tokens = lambda z: rearrange(z, "b c f h w -> b (f h w) c")
    m, c = to_tokens(mask), to_tokens(clean)
    start = to_tokens(noise)
    if init is not None:
        start = float(sigmas[0]) * start + (1 - float(sigmas[0])) * to_tokens(init)
    x = m * start + (1 - m) * c
    levels = sigmas.tolist()
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        velocity = velocity_fn(x, sigma * m[..., 0], sigma)
        blended = m * x + (1 - m) * c
        if generator is None:
            stepped = blended + (sigma_next - sigma) * velocity
        else:
            denoised = blended - sigma * m * velocity
            stepped = stochastic_step(blended, denoised, sigma_next * m[..., 0], m[..., 0] > 0, generator)
        x = m * stepped + (1 - m) * c
    _, _, frames, height, width = clean.shape
    return rearrange(x, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)


def window_generator(seed: int, start: int) -> torch.Generator:
    """A window's own CPU generator seeded `seed + start` (the window's first latent
    frame), as the reference seeds each window: its first draw is the window's starting
    noise, later ones a stochastic step's noise."""
    return torch.Generator("cpu").manual_seed(int(seed) + int(start))


# ---------------------------------------------------------------- the whole clip


def _check_strengths(overlap_strength: float, adain_factor: float) -> None:
    check_number("overlap strength", overlap_strength, 0.0, "a number in (0, 1] (1: the tail kept)", inclusive=False)
    if overlap_strength > 1:
        raise SettingsError(f"overlap strength {overlap_strength!r} is not allowed; allowed: a number in (0, 1]")
    check_number("AdaIN factor", adain_factor, 0.0, "a number from 0 (off) to 1 (full)")
    if adain_factor > 1:
        raise SettingsError(f"AdaIN factor {adain_factor!r} is not allowed; allowed: a number from 0 to 1")


def generate_long_latent(
    transformer,
    shape: tuple[int, int, int, int, int],
    prompts: TextEmbeddings | Sequence[PromptSegment],
    negative_text: TextEmbeddings | None,
    sigmas: Tensor,
    guidance: Guidance | float,
    frame_rate: float,
    *,
    window: int,
    overlap: int,
    overlap_strength: float = 0.5,
    adain_factor: float = 0.25,
    seed: int = 0,
    first_frame: FirstFrame | None = None,
    keyframes: Sequence[ClipKeyframe] = (),
    start_latent: Tensor | None = None,
    causal_fix: bool | None = None,
    device: torch.device | str | None = None,
    callback: WindowCallback | None = None,
    stochastic: bool = False,
) -> Tensor:
    """A normalized latent `shape` (B, C, F, h, w) sampled in windows of `window` latent
    frames overlapping by `overlap` (see the module's docstring), each window with its
    prompt (`prompts`: one for all, or `PromptSegment`s of window indices) and the
    sigma schedule `sigmas` (down to 0 for a clean result) from its own noise.

    `overlap_strength` is how strongly a window keeps the previous window's tail (1: as
    it is); `adain_factor` how far each later window's channel statistics move to the
    first window's (0: not at all). `guidance`: CFG scale or `Guidance`; a scale above 1
    needs `negative_text`. `causal_fix` None takes the config's time positions (the
    reference always uses the causal ones). `first_frame` starts the clip from an image
    (`FirstFrame`, the reference's `cond_image`); `keyframes` (`ClipKeyframe`) hold images
    at frames inside the clip, each guiding the windows that hold its frame. `start_latent` (a
    latent of `shape`: a multi-scale run's upsampled first pass) is where each window's
    own frames start, noised to `sigmas[0]`, instead of noise alone.
    `callback(k, n, result)` sees each window's result before it is joined. `stochastic`
    takes Lightricks' stochastic steps, their noise from each window's generator."""
    guidance = guidance if isinstance(guidance, Guidance) else Guidance(cfg_scale=guidance)
    _check_strengths(overlap_strength, adain_factor)
    if len(shape) != 5:
        raise SettingsError(f"latent shape {tuple(shape)} is not 5-D; allowed: (B, C, F, h, w)")
    batch, channels, num_frames, height, width = shape
    windows = temporal_windows(num_frames, window, overlap)
    texts = window_texts(prompts, len(windows))
    runner = as_runner(transformer)
    module = runner.model
    if channels != module.cfg.in_channels:
        raise SettingsError(f"latent shape has {channels} channels; this transformer takes {module.cfg.in_channels}")
    if first_frame is not None:
        first_frame.check_fits(shape)
    for keyframe in keyframes:
        keyframe.check_fits(shape)
    if start_latent is not None and tuple(start_latent.shape) != tuple(shape):
        raise SettingsError(f"start latent {tuple(start_latent.shape)} is not the clip's {tuple(shape)}")
    device = torch.device(device) if device is not None else module_device(module)
    causal = module.cfg.causal_temporal_positioning if causal_fix is None else causal_fix
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    done = first = None
    for index, (start, end) in enumerate(windows):
        frames = end - start
        tail = None if done is None else done[:, :, -overlap:]
        held = [(k, k.in_window(start)) for k in keyframes if start <= k.latent_frame < end]
        clean, mask, blocks = window_latent(
            shape, frames, tail, first_frame, index == 0, overlap_strength, device, held
        )
        coords = window_coords(blocks, height, width, batch, frame_rate, causal).to(device)
        velocity_fn = _window_velocity(runner, guidance, coords, batch, texts[index], negative_text, device)
        init = None
        if start_latent is not None:
            init = clean.clone()
            init[:, :, :frames] = start_latent[:, :, start:end].to(init)
        with torch.no_grad():
            generator = window_generator(seed, start)
            noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(device)
            result = _sample_window(velocity_fn, noise, clean, mask, sigmas, init, generator if stochastic else None)
        result = result[:, :, :frames]
        if callback is not None:
            callback(index, len(windows), result)
        done = join_window(done, result, first, overlap, adain_factor)
        first = done if first is None else first
    return done


def _window_velocity(runner, guidance, coords, batch, text, negative_text, device):
    """The guided velocity of one window with its prompt (`guidance.guided_velocity`)."""
    dtype = module_dtype(runner.model)
    model_fn = guided_model_fn(runner, guidance, coords, batch, dtype)
    negative = (None, None) if negative_text is None else batched_text(negative_text, batch, device, dtype)
    return guided_velocity(model_fn, *batched_text(text, batch, device, dtype), *negative, guidance)
