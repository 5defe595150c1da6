"""The one-way flow of a generation, and the stages ComfyUI's nodes and the CLI call:

    prompt -> T5 embeddings                          encode_text
    size (+ first frame, keyframes, source clip)
        -> latent with noise mask and keyframes      prepare_latent / encode_first_frame
    token count -> sigmas (the checkpoint's          scheduler.flow_sigmas / skip_steps /
                  schedule, cut for video-to-video)    denoise_sigmas
    noise -> Euler steps of the DiT with CFG, STG    denoise (ltx_core.sampling.denoise)
    latent -> frames, last noise removed             decode_frames

`generate(models, request)` composes them; each stage takes tensors and small
dataclasses and returns new ones. All randomness comes from one CPU generator seeded
with the request's seed, drawn in diffusers' order (first-frame posterior, initial
noise, decode noise), so the same request gives the same frames on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from einops import rearrange
from torch import Tensor

from .errors import LTXVError, SettingsError, check_number, is_int
from .models.configs import FRAMES_PER_LATENT, LTXV_SCHEDULER, PIXELS_PER_LATENT, SchedulerConfig  # every published VAE
from .models.text_encoder import TextEmbeddings, TextEncoder, check_text_width, encode_prompt
from .models.vae import DEFAULT_DECODE_TIME_CHUNK, check_time_chunk

# SEED_MAX, FP8_MIN_CAPABILITY and check_fp8_device are the nodes' too
from .preflight import FP8_MIN_CAPABILITY, SEED_MAX, check_fp8_device, check_prompt, check_video_settings  # noqa: F401
from .sampling.conditioning import (
    ConditionedLatent,
    ConditioningItem,
    add_keyframe,
    check_item_fits,
    check_strength,
    condition_first_frame,
    empty_latent,
)

# the DiT side of sampling; its small checks are shared so Request and denoise agree
from .sampling.denoise import denoise, module_device, module_dtype
from .sampling.euler import STRENGTH_RULES, Callback
from .sampling.guidance import Guidance
from .sampling.scheduler import denoise_sigmas, explicit_sigmas, flow_sigmas, skip_steps
from .speed.optimize import Speed, compile_vae_decoder, optimize_transformer
from .video import resize_center_crop


def default_decode_time_chunk(vae) -> int | None:
    """DEFAULT_DECODE_TIME_CHUNK where the VAE's decoder allows time chunks (every released
    VAE), else None: a group-norm decoder decodes whole layers."""
    return DEFAULT_DECODE_TIME_CHUNK if vae.decoder.can_chunk_time else None


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
    guidance_scale: float | tuple[float, ...] = 3.0  # CFG; a tuple: one per guidance interval
    seed: int = 0
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    first_frame: Tensor | None = None  # (H, W, 3) in [0, 1]; fitted to width x height
    conditioning_strength: float = 1.0  # 1: the first frame is kept as given (t_c = 0)
    image_cond_noise_scale: float = 0.0  # Lightricks' re-noising of the first frame
    sigmas: tuple[float, ...] | None = None  # a schedule of one's own; replaces steps
    # Lightricks' skip_initial/final_inference_steps: the scheduler's steps left out (with
    # `steps`, not `sigmas`); the first ones only on a source_video, as its pipeline asserts
    skip_initial_steps: int = 0
    skip_final_steps: int = 0
    stochastic_sampling: bool = False  # Lightricks' stochastic steps: each step re-noises its estimate
    max_tokens: int = 128
    conditions: tuple[ConditioningItem, ...] = ()  # keyframes, last frame, clips (any frame)
    source_video: Tensor | None = None  # (num_frames, H, W, 3) in [0, 1]: video-to-video
    denoise_strength: float = 1.0  # video-to-video: share of the schedule run (1: all)
    stg_scale: float | tuple[float, ...] = 0.0  # spatiotemporal skip guidance (0: off); Lightricks' default 1
    stg_blocks: tuple[int, ...] | tuple[tuple[int, ...], ...] = ()  # perturbed by STG (Lightricks' 2B: (19,))
    stg_mode: str = "attention_values"  # guidance.STG_MODES
    stg_rescale: float | tuple[float, ...] = 0.7  # Lightricks' rescaling_scale (0 or 1: no rescale)
    # the sigmas bounding each guidance interval (Lightricks' guidance_timesteps): the tuples
    # above give one value per interval; see guidance.Guidance
    guidance_timesteps: tuple[float, ...] | None = None
    cfg_star_rescale: bool = False  # CFG-star (Lightricks' cfg_star_rescale)
    strength_rule: str = "held"  # fractional strengths: "held" (Lightricks) or "scaled" (ComfyUI)
    decode_time_chunk: int | None = None  # each decoder layer this many frames at a time (None: whole)

    def __post_init__(self):
        check_prompt(self.prompt, self.negative_prompt)
        scalar_cfg = not isinstance(self.guidance_scale, (tuple, list))  # a schedule is checked by Guidance
        check_video_settings(
            self.width,
            self.height,
            self.num_frames,
            self.frame_rate,
            self.steps if self.sigmas is None else None,
            self.guidance_scale if scalar_cfg else 1.0,
            self.seed,
            self.decode_timestep,
            self.decode_noise_scale,
            PIXELS_PER_LATENT,
            FRAMES_PER_LATENT,
        )
        check_strength(self.conditioning_strength)
        check_number("image_cond_noise_scale", self.image_cond_noise_scale, 0.0, "a finite number >= 0")
        if self.first_frame is not None:
            _check_image(self.first_frame)
        if self.sigmas is not None:
            explicit_sigmas(self.sigmas)
        self._check_skipped_steps()
        if not isinstance(self.stochastic_sampling, bool):
            raise SettingsError(f"stochastic_sampling {self.stochastic_sampling!r} must be True or False")
        if not is_int(self.max_tokens) or self.max_tokens < 1:
            raise SettingsError(f"max_tokens {self.max_tokens!r} must be a whole number of at least 1")
        self._check_conditioning()
        if self.strength_rule not in STRENGTH_RULES:
            allowed = ", ".join(STRENGTH_RULES)
            raise SettingsError(f"strength_rule {self.strength_rule!r} is not known; allowed: {allowed}")
        self.guidance()  # checks the guidance settings together
        check_time_chunk(self.decode_time_chunk, "decode_time_chunk")

    @property
    def sampled_steps(self) -> int:
        """The steps of the schedule before any denoise strength cuts it."""
        if self.sigmas is not None:
            return len(explicit_sigmas(self.sigmas)) - 1
        return self.steps - self.skip_initial_steps - self.skip_final_steps

    def sigma_schedule(self, num_tokens: int, scheduler: SchedulerConfig = LTXV_SCHEDULER) -> Tensor:
        """The sigmas the run steps through: its own, or the scheduler's for `num_tokens`
        (paper 2.5.2: the shift grows with the token count) less the skipped steps, then cut
        to the denoise strength."""
        if self.sigmas is not None:
            sigmas = explicit_sigmas(self.sigmas)
        else:
            sigmas = skip_steps(
                flow_sigmas(self.steps, num_tokens, scheduler), self.skip_initial_steps, self.skip_final_steps
            )
        return denoise_sigmas(sigmas, self.denoise_strength)

    def _check_skipped_steps(self) -> None:
        skipped = (self.skip_initial_steps, self.skip_final_steps)
        if skipped == (0, 0):
            return
        if self.sigmas is not None:
            raise SettingsError(
                f"skip_initial_steps {skipped[0]} and skip_final_steps {skipped[1]} cut the "
                "scheduler's steps, not a schedule of one's own; allowed: 0 with sigmas"
            )
        skip_steps(torch.linspace(1, 0, self.steps + 1), *skipped)  # whole numbers that leave a step
        if self.skip_initial_steps and self.source_video is None:
            raise SettingsError(
                f"skip_initial_steps {self.skip_initial_steps} needs a source_video to start from "
                "(the skipped steps would replace it with noise); allowed: 0 without one"
            )

    def guidance(self) -> Guidance:
        return Guidance(
            self.guidance_scale,
            self.stg_scale,
            self.stg_blocks,
            self.stg_mode,
            self.stg_rescale,
            self.guidance_timesteps,
            self.cfg_star_rescale,
        )

    def _check_conditioning(self) -> None:
        for item in self.conditions:
            if not isinstance(item, ConditioningItem):
                raise SettingsError(f"conditions holds a {type(item).__name__}; allowed: ConditioningItem")
            check_item_fits(item, self.num_frames, self.height, self.width, FRAMES_PER_LATENT)
        if self.source_video is not None:
            source = ConditioningItem(self.source_video)  # the same shape and frame count checks
            if tuple(source.frames.shape[:3]) != (self.num_frames, self.height, self.width):
                raise SettingsError(
                    f"source_video of shape {tuple(source.frames.shape)} is not the video's "
                    f"({self.num_frames}, {self.height}, {self.width}, 3)"
                )
        denoise_sigmas(torch.linspace(1, 0, self.sampled_steps + 1), self.denoise_strength)  # keeps a step or says so
        if self.denoise_strength != 1.0 and self.source_video is None:
            raise SettingsError(f"denoise_strength {self.denoise_strength} needs a source_video to start from")


def _check_image(image) -> None:
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-1] != 3 or image.numel() == 0:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise SettingsError(f"first_frame {shape} is not an image; allowed: (H, W, 3) or (1, H, W, 3) in [0, 1]")


@dataclass
class Models:
    transformer: torch.nn.Module  # ltx_core.models.transformer.LTXVTransformer
    vae: torch.nn.Module  # ltx_core.models.vae.CausalVideoVAE
    text_encoder: TextEncoder
    # what calls the transformer (`run(fn, *inputs)`): None calls it as it is; the speed
    # runner (`optimize_models`) or the parallel one (`parallel.distributed.parallelize`)
    runner: object | None = None
    # the schedule `steps` become sigmas by: the checkpoint's (`CheckpointInfo.configs.scheduler`,
    # its `sampler` spacing and shift) or a release config's
    scheduler: SchedulerConfig = LTXV_SCHEDULER


def optimize_models(models: Models, speed: Speed) -> Models:
    """`speed` applied once after loading, with the models on their device: the
    transformer's levers (`speed.optimize.optimize_transformer`) and the VAE decoder
    compiled where `speed.compile_vae` asks. Nothing runs unless asked, so the fp32 CPU path
    stays the reference. The transformer is changed in place (keep a fresh copy to save);
    the returned `Models` holds the runner that `generate` calls it through."""
    if models.runner is not None:
        raise SettingsError("the transformer is already optimized; load the models again to choose other levers")
    if speed.fp8:
        check_fp8_device(module_device(models.transformer))
    if speed.compile_vae:
        compile_vae_decoder(models.vae, backend=speed.compile_backend)
    if not speed.changes_transformer:
        return models
    return replace(models, runner=optimize_transformer(models.transformer, speed))


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
    device = device or module_device(vae)
    video = rearrange(image * 2 - 1, "h w c -> 1 c 1 h w").to(device=device, dtype=module_dtype(vae))
    with torch.no_grad():
        return vae.encode(video, generator=generator, sample=generator is not None).float()


def encode_frames(
    vae, frames: Tensor, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Frames `(F, H, W, 3)` in [0, 1], F = 8k + 1 -> normalized latent `(1, 128, k + 1,
    H/32, W/32)`; the posterior is sampled with a generator, its mean without one."""
    item = ConditioningItem(frames)  # checks the layout and the frame count
    device = device or module_device(vae)
    video = rearrange(item.frames.float() * 2 - 1, "f h w c -> 1 c f h w").to(device=device, dtype=module_dtype(vae))
    with torch.no_grad():
        return vae.encode(video, generator=generator, sample=generator is not None).float()


def condition_on_items(
    vae, latent: ConditionedLatent, items, generator: torch.Generator | None = None
) -> ConditionedLatent:
    """Encode each conditioning item (in order, each posterior drawn from `generator`) and
    put it at its frame: frame 0 on the latent grid, elsewhere as keyframe tokens."""
    _, _, frames, height, width = latent.samples.shape
    pixels = (
        (frames - 1) * vae.temporal_compression + 1,
        height * vae.spatial_compression,
        width * vae.spatial_compression,
    )
    for item in items:
        check_item_fits(item, *pixels, vae.temporal_compression)
        encoded = encode_frames(vae, item.frames, generator)  # on the VAE's device; placed on the latent's
        latent = add_keyframe(latent, encoded, item.frame_index, item.strength, vae.temporal_compression)
    return latent


def prepare_latent(
    vae,
    num_frames: int,
    height: int,
    width: int,
    first_frame: Tensor | None = None,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
    batch: int = 1,
    conditions=(),
    source_video: Tensor | None = None,
) -> ConditionedLatent:
    """The latent to denoise: empty (all tokens from noise), or the encoded `source_video`
    (video-to-video: noised to the first sigma by `denoise`), then an encoded first frame
    whose tokens carry noise mask 1 - strength (paper 2.4), then the `conditions`
    (`ConditioningItem`s at any frame). Posteriors are drawn in that order, but the source's
    mean is taken (it is noised anyway), so denoise strength 1 is text-to-video exactly."""
    device = module_device(vae)
    latent = empty_latent(batch, num_frames, height, width, vae, device=device)
    if source_video is not None:
        source = encode_frames(vae, source_video, None, device)  # the posterior mean: no draw
        if source.shape[2:] != latent.samples.shape[2:]:
            raise SettingsError(
                f"source_video of shape {tuple(source_video.shape)} is not the video's "
                f"({num_frames}, {height}, {width}, 3)"
            )
        latent = ConditionedLatent(source.expand_as(latent.samples).clone(), latent.noise_mask)
    if first_frame is not None:
        frame = encode_first_frame(vae, first_frame, width, height, generator, device)
        latent = condition_first_frame(latent, frame, strength)
    return condition_on_items(vae, latent, conditions, generator)


def num_tokens(latent: ConditionedLatent) -> int:
    """Tokens the transformer sees for this latent; the schedule's shift depends on it."""
    return latent.num_tokens


def decode_frames(
    vae,
    latent: Tensor,
    timestep: float = 0.05,
    decode_noise_scale: float = 0.025,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    mix_noise_denormalized: bool = False,
    time_chunk: int | None = None,
) -> Tensor:
    """Normalized latent (B, 128, f, h, w) -> frames (B, F, H, W, 3) in [0, 1]. A decoder
    with timestep conditioning removes the last noise at `timestep` after mixing in
    `decode_noise_scale` of fresh noise (paper 2.1); see `CausalVideoVAE.decode` for
    `mix_noise_denormalized` (diffusers' LTXPipeline: True).

    `time_chunk` computes each decoder layer that many frames (at the layer's frame rate)
    at a time (`CausalVideoVAE.decode`): the same frames, with a peak of about one layer's
    input and output instead of several full-size temporaries (benchmarks/results/
    vae_decode_memory.json). None: whole layers.

    A decode that yields a NaN or an infinity (a damaged or overflowing model, a latent
    that was already non-finite) raises instead of returning frames that would turn black."""
    check_time_chunk(time_chunk)
    if isinstance(latent, ConditionedLatent):
        latent = latent.samples
    device = device or module_device(vae)
    with torch.no_grad():
        video = vae.decode(
            latent.to(device=device, dtype=module_dtype(vae)),
            timestep,
            decode_noise_scale,
            generator,
            mix_noise_denormalized=mix_noise_denormalized,
            time_chunk=time_chunk,
        )  # (B, 3, F, H, W) in [-1, 1]
    refuse_non_finite("the decoded video", video, "decoding")
    # as diffusers' VideoProcessor.postprocess_video; in place, as the video is ours alone
    frames = video.float().div_(2).add_(0.5).clamp_(0, 1)
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


# ---------------------------------------------------------------- numbers that went wrong


def refuse_non_finite(what: str, tensor: Tensor, stage: str) -> None:
    """Stop a run whose numbers turned NaN or infinite: every later step and the decode
    carry them on, and the video would come out black or as noise. One min/max pass (a
    NaN or an infinity reaches the min or the max), no copy."""
    low, high = torch.aminmax(tensor)
    if bool(torch.isfinite(low) & torch.isfinite(high)):
        return
    raise LTXVError(
        f"{what} holds NaN or infinite values, so {stage} stopped and no video is made: the model "
        "overflowed its precision (fp16 does where bf16 and fp32 do not) or its weights are damaged; "
        "run it in bf16 or fp32, or load the checkpoint again"
    )


def stop_on_non_finite(callback: Callback | None) -> Callback:
    """The sampler's callback behind a check that the latent is still finite, so a run
    stops at the step that broke instead of sampling on."""

    def checked(step: int, total: int, x: Tensor, denoised: Tensor) -> None:
        refuse_non_finite(f"the latent after sampling step {step + 1} of {total}", x, "sampling")
        if callback is not None:
            callback(step, total, x, denoised)

    return checked


# ---------------------------------------------------------------- the whole run


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _start_sigma(req: Request, sigmas: Tensor) -> float:
    """Video-to-video starts from the source noised to the first sigma; everything else
    from pure noise, whatever schedule it was given (as before video-to-video existed)."""
    return float(sigmas[0]) if req.source_video is not None else 1.0


def generate(models: Models, req: Request, callback: Callback | None = None) -> Tensor:
    """Request -> frames (F, H, W, 3) in [0, 1]; the same request gives the same frames."""
    # a T5 of the wrong width fails here, before any model runs
    check_text_width(models.text_encoder.width, models.transformer.cfg.caption_channels)
    generator = seeded_generator(req.seed)
    guidance = req.guidance()
    negative = req.negative_prompt if guidance.needs_negative else None
    text, negative_text = encode_text(models.text_encoder, req.prompt, negative, req.max_tokens)
    latent = prepare_latent(
        models.vae,
        req.num_frames,
        req.height,
        req.width,
        req.first_frame,
        req.conditioning_strength,
        generator,
        conditions=req.conditions,
        source_video=req.source_video,
    )
    sigmas = req.sigma_schedule(latent.num_tokens, models.scheduler)
    latent = denoise(
        models.runner or models.transformer,
        latent,
        text,
        negative_text,
        sigmas,
        guidance,
        req.frame_rate,
        generator,
        stop_on_non_finite(callback),
        image_cond_noise_scale=req.image_cond_noise_scale,
        start_sigma=_start_sigma(req, sigmas),
        strength_rule=req.strength_rule,
        stochastic=req.stochastic_sampling,
    )
    return decode_frames(
        models.vae,
        latent.samples,
        req.decode_timestep,
        req.decode_noise_scale,
        generator,
        time_chunk=req.decode_time_chunk,
    )[0]
