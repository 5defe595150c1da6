"""The one-way flow of a generation, and the stages ComfyUI's nodes and the CLI call:

    prompt -> T5 embeddings                          encode_text
    size (+ first frame) -> latent with noise mask   prepare_latent / encode_first_frame
    token count -> sigmas                            scheduler.flow_sigmas
    noise -> Euler steps of the DiT with CFG         denoise
    latent -> frames, last noise removed             decode_frames

`generate(models, request)` composes them; each stage takes tensors and small
dataclasses and returns new ones. All randomness comes from one CPU generator seeded
with the request's seed, drawn in diffusers' order (first-frame posterior, initial
noise, decode noise), so the same request gives the same frames on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from .conditioning import (
    ConditionedLatent,
    check_multiple,
    check_num_frames,
    check_strength,
    condition_first_frame,
    empty_latent,
    initial_latent,
)
from .errors import SettingsError
from .rope import VAE_SCALE, fractional_coords, latent_coords, pixel_coords
from .sampler import Callback, guided_velocity, sample
from .scheduler import explicit_sigmas, flow_sigmas
from .text_encoder import TextEmbeddings, TextEncoder, check_text_width, encode_prompt
from .video import resize_center_crop

SEED_MAX = 2**64 - 1  # torch generators take 64-bit seeds, as ComfyUI's seed widgets
FRAMES_PER_LATENT, PIXELS_PER_LATENT = VAE_SCALE[0], VAE_SCALE[1]  # every published VAE


@dataclass(frozen=True, eq=False)
class Request:
    """One video to generate; every setting is checked on construction, with the
    allowed values in the message."""

    prompt: str
    negative_prompt: str = ""
    width: int = 768
    height: int = 512
    num_frames: int = 121
    frame_rate: float = 25.0
    steps: int = 40
    guidance_scale: float = 3.0
    seed: int = 0
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    first_frame: Tensor | None = None  # (H, W, 3) in [0, 1]; fitted to width x height
    conditioning_strength: float = 1.0  # 1: the first frame is kept as given (t_c = 0)
    image_cond_noise_scale: float = 0.0  # Lightricks' re-noising of the first frame
    sigmas: tuple[float, ...] | None = None  # a schedule of one's own; replaces steps
    max_tokens: int = 128

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SettingsError("prompt is empty; describe the video to generate")
        if not isinstance(self.negative_prompt, str):
            raise SettingsError("negative_prompt must be text (it may be empty)")
        check_multiple("width", self.width, PIXELS_PER_LATENT)
        check_multiple("height", self.height, PIXELS_PER_LATENT)
        check_num_frames(self.num_frames, FRAMES_PER_LATENT)
        _check_number("frame_rate", self.frame_rate, 0.0, "frames per second above 0", inclusive=False)
        if self.sigmas is None and (not _is_int(self.steps) or self.steps < 1):
            raise SettingsError(f"steps {self.steps!r} must be a whole number of at least 1")
        _check_number("guidance_scale", self.guidance_scale, 0.0, "a finite number >= 0 (1: no guidance)")
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise SettingsError(f"seed {self.seed!r} is outside the accepted range 0 to {SEED_MAX} (2**64 - 1)")
        _check_unit("decode_timestep", self.decode_timestep)
        _check_unit("decode_noise_scale", self.decode_noise_scale)
        check_strength(self.conditioning_strength)
        _check_number("image_cond_noise_scale", self.image_cond_noise_scale, 0.0, "a finite number >= 0")
        if self.first_frame is not None:
            _check_image(self.first_frame)
        if self.sigmas is not None:
            explicit_sigmas(self.sigmas)
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise SettingsError(f"max_tokens {self.max_tokens!r} must be a whole number of at least 1")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(name: str, value, minimum: float, allowed: str, inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (not inclusive and value == minimum):
        raise SettingsError(f"{name} {value!r} is not allowed; allowed: {allowed}")


def _check_unit(name: str, value) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise SettingsError(f"{name} {value!r} is outside [0, 1]")


def _check_image(image) -> None:
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-1] != 3 or image.numel() == 0:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise SettingsError(f"first_frame {shape} is not an image; allowed: (H, W, 3) or (1, H, W, 3) in [0, 1]")


@dataclass
class Models:
    transformer: torch.nn.Module  # ltx_core.transformer.LTXVTransformer
    vae: torch.nn.Module  # ltx_core.vae.CausalVideoVAE
    text_encoder: TextEncoder


# ---------------------------------------------------------------- stages


def encode_text(
    text_encoder: TextEncoder, prompt: str, negative_prompt: str | None, max_tokens: int = 128
) -> tuple[TextEmbeddings, TextEmbeddings | None]:
    """Prompt (required) and negative prompt (may be empty; None: no guidance) embeddings,
    each padded to `max_tokens` and encoded on its own, as diffusers' LTXPipeline does."""
    text = encode_prompt(text_encoder, [prompt], max_tokens)
    if negative_prompt is None:
        return text, None
    return text, encode_prompt(text_encoder, [negative_prompt], max_tokens, allow_empty=True)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def encode_first_frame(
    vae,
    image: Tensor,
    width: int,
    height: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """An `(H, W, 3)` (or `(N, H, W, 3)`: the first is used) image in [0, 1] -> its
    normalized latent `(1, 128, 1, height/32, width/32)`. Another size is center-cropped and
    resized (with a warning). With a generator the posterior is sampled, as diffusers'
    image-to-video does; without one its mean is used."""
    _check_image(image)
    if image.ndim == 4:
        image = image[0]
    image = resize_center_crop(image.float(), width, height)
    device = device or _device_of(vae)
    video = rearrange(image * 2 - 1, "h w c -> 1 c 1 h w").to(device=device, dtype=_dtype_of(vae))
    with torch.no_grad():
        return vae.encode(video, generator=generator, sample=generator is not None).float()


def prepare_latent(
    vae,
    num_frames: int,
    height: int,
    width: int,
    first_frame: Tensor | None = None,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
    batch: int = 1,
) -> ConditionedLatent:
    """The latent to denoise: empty (all tokens from noise) or with an encoded first frame
    whose tokens carry noise mask 1 - strength (paper 2.4)."""
    device = _device_of(vae)
    latent = empty_latent(batch, num_frames, height, width, vae, device=device)
    if first_frame is None:
        return latent
    frame = encode_first_frame(vae, first_frame, width, height, generator, device)
    return condition_first_frame(latent, frame, strength)


def num_tokens(latent: ConditionedLatent) -> int:
    """Tokens the transformer sees for this latent; the schedule's shift depends on it."""
    return latent.num_tokens


def token_coords(latent: ConditionedLatent, frame_rate: float, causal_fix: bool) -> Tensor:
    """RoPE coordinates (B, 3, T) in (seconds, pixels, pixels), tokens in (f h w) order.

    `causal_fix` (the config's `causal_temporal_positioning`) places latent frame k at
    pixel frame max(8k - 7, 0), where the causal VAE's frames start, as Lightricks'
    pipeline and diffusers' LTXConditionPipeline do. diffusers' LTXPipeline and
    LTXImageToVideoPipeline never shift: they pass `rope_interpolation_scale =
    (8 / frame_rate, 32, 32)`, so latent frame k sits at 8k / frame_rate seconds
    whatever the checkpoint's setting; their parity needs `causal_fix=False`."""
    batch, _, frames, height, width = latent.samples.shape
    grid = latent_coords(frames, height, width, batch, device=latent.samples.device)
    return fractional_coords(pixel_coords(grid, causal_fix=causal_fix), frame_rate)


def _check_fits_transformer(transformer, latent: ConditionedLatent, text: TextEmbeddings) -> None:
    cfg = transformer.cfg
    channels = latent.samples.shape[1]
    if channels != cfg.in_channels:
        raise SettingsError(
            f"latent has {channels} channels; this LTX-Video transformer takes {cfg.in_channels} "
            "(a latent of another model, or one not made by an LTX-Video VAE?)"
        )
    check_text_width(text.embeds.shape[-1], cfg.caption_channels)
    if text.embeds.shape[0] not in (1, latent.samples.shape[0]):
        raise SettingsError(
            f"text embeddings for {text.embeds.shape[0]} prompts do not fit a latent batch of "
            f"{latent.samples.shape[0]}; give one prompt or one per video"
        )


def _batched(text: TextEmbeddings, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    embeds = text.embeds.to(device=device, dtype=dtype).expand(batch, -1, -1)
    return embeds, text.mask.to(device).expand(batch, -1)


def denoise(
    transformer,
    latent: ConditionedLatent,
    text: TextEmbeddings,
    negative_text: TextEmbeddings | None,
    sigmas: Tensor,
    guidance: float,
    frame_rate: float,
    generator: torch.Generator,
    callback: Callback | None = None,
    causal_fix: bool | None = None,
    image_cond_noise_scale: float = 0.0,
    device: torch.device | str | None = None,
) -> ConditionedLatent:
    """Noise -> clean latent with the DiT (paper 2.4, 2.5): initial noise from `generator`
    at each token's level, Euler steps with per-token timesteps `sigma * noise_mask`,
    classifier-free guidance `guidance` in one batched forward (1: no negative pass).

    `causal_fix` None takes the transformer config's `causal_temporal_positioning`
    (see `token_coords`). `callback(step, total, x, denoised)` gets latents (B, C, f, h, w);
    an exception raised in it stops sampling."""
    _check_fits_transformer(transformer, latent, text)
    _check_number("guidance", guidance, 0.0, "a finite number >= 0 (1: no guidance)")
    device = torch.device(device) if device is not None else _device_of(transformer)
    dtype = _dtype_of(transformer)
    latent = ConditionedLatent(latent.samples.to(device=device, dtype=torch.float32), latent.noise_mask.to(device))
    batch, _, frames, height, width = latent.samples.shape
    if causal_fix is None:
        causal_fix = transformer.cfg.causal_temporal_positioning
    coords = token_coords(latent, frame_rate, causal_fix)
    to_tokens = lambda z: rearrange(z, "b c f h w -> b (f h w) c")  # noqa: E731
    to_latent = lambda z: rearrange(z, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)  # noqa: E731

    def model_fn(x: Tensor, timesteps: Tensor, embeds: Tensor, mask: Tensor) -> Tensor:
        repeat = x.shape[0] // batch  # 2 under guidance: (uncond, cond)
        return transformer(x.to(dtype), timesteps, embeds, mask, coords.repeat(repeat, 1, 1)).float()

    embeds, mask = _batched(text, batch, device, dtype)
    negative_embeds, negative_mask = (
        _batched(negative_text, batch, device, dtype) if negative_text is not None else (None, None)
    )
    velocity_fn = guided_velocity(model_fn, embeds, mask, negative_embeds, negative_mask, guidance)
    step_callback = None
    if callback is not None:
        step_callback = lambda i, n, x, denoised: callback(i, n, to_latent(x), to_latent(denoised))  # noqa: E731
    with torch.no_grad():
        x = sample(
            velocity_fn,
            to_tokens(initial_latent(latent, generator)),
            sigmas,
            to_tokens(latent.noise_mask)[..., 0],
            clean_latent=to_tokens(latent.samples),
            callback=step_callback,
            cond_noise_scale=image_cond_noise_scale,
            generator=generator,
        )
    return ConditionedLatent(to_latent(x), latent.noise_mask)


def decode_frames(
    vae,
    latent: Tensor,
    timestep: float = 0.05,
    decode_noise_scale: float = 0.025,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    mix_noise_denormalized: bool = False,
) -> Tensor:
    """Normalized latent (B, 128, f, h, w) -> frames (B, F, H, W, 3) in [0, 1]. A decoder
    with timestep conditioning removes the last noise at `timestep` after mixing in
    `decode_noise_scale` of fresh noise (paper 2.1); see `CausalVideoVAE.decode` for
    `mix_noise_denormalized` (diffusers' LTXPipeline: True)."""
    if isinstance(latent, ConditionedLatent):
        latent = latent.samples
    device = device or _device_of(vae)
    with torch.no_grad():
        video = vae.decode(
            latent.to(device=device, dtype=_dtype_of(vae)), timestep, decode_noise_scale, generator,
            mix_noise_denormalized=mix_noise_denormalized,
        )  # (B, 3, F, H, W) in [-1, 1]
    frames = (video.float() / 2 + 0.5).clamp(0, 1)  # as diffusers' VideoProcessor.postprocess_video
    return rearrange(frames, "b c f h w -> b f h w c")


def latent_preview(latent: Tensor) -> Tensor:
    """A cheap false-colour look at a latent (no VAE): the middle frame of the first video,
    its 3 principal channel directions scaled to [0, 1], (h, w, 3)."""
    if isinstance(latent, ConditionedLatent):
        latent = latent.samples
    frame = latent[0, :, latent.shape[2] // 2].float()  # (C, h, w)
    pixels = rearrange(frame, "c h w -> (h w) c")
    pixels = pixels - pixels.mean(dim=0)
    _, _, directions = torch.linalg.svd(pixels, full_matrices=False)
    rgb = pixels @ directions[:3].T  # (h*w, <=3)
    rgb = rgb * torch.sign(rgb.sum(dim=0) + 1e-12)  # a fixed sign, so previews do not flicker
    rgb = torch.nn.functional.pad(rgb, (0, 3 - rgb.shape[1]))
    low, high = rgb.min(dim=0).values, rgb.max(dim=0).values
    rgb = (rgb - low) / (high - low).clamp(min=1e-6)
    return rgb.reshape(frame.shape[1], frame.shape[2], 3)


# ---------------------------------------------------------------- the whole run


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def generate(models: Models, req: Request, callback: Callback | None = None) -> Tensor:
    """Request -> frames (F, H, W, 3) in [0, 1]; the same request gives the same frames."""
    # a T5 of the wrong width fails here, before any model runs
    check_text_width(models.text_encoder.width, models.transformer.cfg.caption_channels)
    generator = seeded_generator(req.seed)
    negative = req.negative_prompt if req.guidance_scale != 1.0 else None
    text, negative_text = encode_text(models.text_encoder, req.prompt, negative, req.max_tokens)
    latent = prepare_latent(models.vae, req.num_frames, req.height, req.width,
                            req.first_frame, req.conditioning_strength, generator)  # fmt: skip
    # paper 2.5.2: the schedule's shift grows with the token count
    sigmas = explicit_sigmas(req.sigmas) if req.sigmas is not None else flow_sigmas(req.steps, latent.num_tokens)
    latent = denoise(models.transformer, latent, text, negative_text, sigmas, req.guidance_scale,
                     req.frame_rate, generator, callback,
                     image_cond_noise_scale=req.image_cond_noise_scale)  # fmt: skip
    return decode_frames(models.vae, latent.samples, req.decode_timestep, req.decode_noise_scale, generator)[0]
