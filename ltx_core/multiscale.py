"""Lightricks' multi-scale pipeline (`LTXMultiScalePipeline`, how the 0.9.7+ releases make
a video): a pass at a fraction of the size, its latent doubled by the spatial upscaler,
a short second pass from a middle sigma at twice that size, then the denoising decode
and a resize to the asked size.

    asked size -> the two passes' sizes                          MultiScaleSettings.pass_sizes
    first pass: conditioning encoded at its size, its own
        sigmas and guidance                    -> latent         run_pass
    un-normalize -> upsampler -> normalize, AdaIN to the
        first pass                             -> latent x2      upsample_between_passes
    second pass: the upsampled latent noised to its first sigma,
        conditioning re-encoded at its size    -> latent         run_pass
    decode noise -> tone map -> denoising decode -> resize       decode_second_pass, resize_frames

`generate_multiscale` composes them from the stage functions of `pipeline`. All draws
come from one CPU generator seeded with the request's seed, as the official pipeline
hands its one generator to both passes: in each pass the conditioning posteriors, the
video's noise (mixed into the upsampled latent at the second pass's first sigma), the
keyframes' noise and the per-step noise, in `pipeline.generate`'s order; then the
decode noise.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import SettingsError
from .models.configs import LTXV_SCHEDULER, SchedulerConfig
from .models.text_encoder import TextEmbeddings, check_text_width
from .pipeline import (
    Models,
    Request,
    condition_on_control,
    condition_on_items,
    decode_requested,
    done_with,
    encode_first_frame,
    encode_text,
    on_device,
    prepare_latent,
    seeded_generator,
    stop_on_non_finite,
)
from .release_config import ReleaseConfig
from .release_passes import MultiScaleSettings, PassSettings
from .sampling.conditioning import ConditionedLatent, condition_first_frame
from .sampling.control import check_control_fits
from .sampling.denoise import denoise
from .sampling.euler import Callback
from .sampling.guidance import Guidance
from .sampling.latent_ops import adain_filter, upsample_latent
from .sampling.scheduler import explicit_sigmas, flow_sigmas, skip_steps
from .video import resize_center_crop

# The official pipeline matches the upsampled latent to the first pass fully
# (`adain_filter_latent`'s default factor).
ADAIN_FACTOR = 1.0


def generate_multiscale(
    models: Models,
    upsampler,
    request: Request,
    release: ReleaseConfig | MultiScaleSettings,
    callback: Callback | None = None,
) -> Tensor:
    """Request -> frames (F, height, width, 3) in [0, 1] by the official two passes.

    `release` gives each pass's sampling (sigmas, guidance, stochastic steps) and the
    tone mapping; `request` everything else: prompt, size, frames, frame rate, seed,
    conditioning (first frame, keyframes, the IC-LoRA control at each pass's size), decode
    settings. The request's own sampling settings belong to a single-pass run and are not
    read here. `callback(step, total, x, denoised)` counts the steps of both passes as one
    run."""
    settings = multi_scale_settings(release)
    _check_request(request)
    check_text_width(models.text_encoder.width, models.transformer.cfg.caption_channels)
    sizes = settings.pass_sizes(request.height, request.width)
    check_upsampler(upsampler, models.vae, request.num_frames, *sizes)
    check_control_passes(request, sizes)
    if request.first_frame is not None:  # fitted to the asked size once, as the official script loads it
        request = replace(request, first_frame=fitted_first_frame(request))
    generator = seeded_generator(request.seed)
    needs_negative = any(pass_guidance(settings, p).needs_negative for p in settings.passes)
    with on_device(models, models.text_encoder.model):
        text = encode_text(
            models.text_encoder, request.prompt, request.negative_prompt if needs_negative else None, request.max_tokens
        )
    done_with(models, models.text_encoder.model)
    total = sum(p.steps for p in settings.passes)
    first = run_pass(
        models, request, settings.first_pass, sizes[0], text, settings.stg_mode, generator, _counted(callback, 0, total)
    )
    with on_device(models, models.vae):
        upsampled = upsample_between_passes(upsampler, models.vae, first)
    second = run_pass(
        models,
        request,
        settings.second_pass,
        sizes[1],
        text,
        settings.stg_mode,
        generator,
        _counted(callback, settings.first_pass.steps, total),
        start=upsampled,
    )
    done_with(models, models.transformer)
    with on_device(models, models.vae):
        frames = decode_second_pass(
            models.vae, second, request, settings.second_pass.tone_map_compression_ratio, generator
        )
    return resize_frames(frames, request.height, request.width)


def multi_scale_settings(release: ReleaseConfig | MultiScaleSettings) -> MultiScaleSettings:
    if isinstance(release, MultiScaleSettings):
        return release
    if isinstance(release, ReleaseConfig) and release.is_multi_scale:
        return release.multi_scale()
    kind = f"a {release.pipeline_type} release config" if isinstance(release, ReleaseConfig) else repr(release)
    raise SettingsError(
        f"the multi-scale pipeline runs two passes; {kind} has one. Allowed: a multi-scale "
        "ReleaseConfig or MultiScaleSettings (a base config runs pipeline.generate)"
    )


def _check_request(request: Request) -> None:
    # the official pipeline refuses media to start from beside the second pass's latent
    if request.source_video is not None or request.denoise_strength != 1.0:
        raise SettingsError(
            "video-to-video (source_video, denoise_strength) does not combine with the multi-scale "
            "pipeline, whose second pass starts from the upsampled first pass; run it single-pass"
        )
    if request.noise_draws != "diffusers":
        raise SettingsError(
            f"noise_draws {request.noise_draws!r} is for single-pass runs; the multi-scale pipeline draws "
            "its noise as diffusers' chained pipelines do (allowed: 'diffusers')"
        )


def check_control_passes(request: Request, sizes: tuple[tuple[int, int], ...]) -> None:
    """Each pass encodes the control at 1/downscale of its own size (as the official
    pipeline encodes its conditioning media again at each pass's size), so that size must
    stay on the VAE's grid at every pass, not only at the asked one."""
    if request.control is None:
        return
    for name, (height, width) in zip(("first", "second"), sizes):
        try:
            check_control_fits(request.control, request.num_frames, height, width)
        except SettingsError as error:
            raise SettingsError(
                f"the multi-scale {name} pass runs at {width}x{height}: {error}; or run it single-pass"
            ) from None


def check_upsampler(upsampler, vae, num_frames: int, first: tuple[int, int], second: tuple[int, int]) -> None:
    """The upsampler must double the first pass's latent in space only, to the second's."""
    grid = vae.spatial_compression
    frames = (num_frames - 1) // vae.temporal_compression + 1
    made = upsampler.cfg.upsampled_size(frames, first[0] // grid, first[1] // grid)
    if made != (frames, second[0] // grid, second[1] // grid):
        raise SettingsError(
            f"the latent upsampler ({upsampler.cfg}) makes a latent of (frames, height, width) "
            f"{made} from the first pass; the second pass needs "
            f"{(frames, second[0] // grid, second[1] // grid)}: load a spatial upscaler "
            "(ltxv-spatial-upscaler-*.safetensors)"
        )


def pass_guidance(settings: MultiScaleSettings, pass_settings: PassSettings) -> Guidance:
    return Guidance(**pass_settings.guidance_settings(settings.stg_mode))


def _counted(callback: Callback | None, done: int, total: int) -> Callback | None:
    """A pass's callback as a step of the whole run: steps counted on from `done` of `total`."""
    if callback is None:
        return None
    return lambda step, _, x, denoised: callback(done + step, total, x, denoised)


# ---------------------------------------------------------------- one pass


def pass_sigmas(settings: PassSettings, num_tokens: int, scheduler: SchedulerConfig = LTXV_SCHEDULER) -> Tensor:
    """The official `retrieve_timesteps`: the published timesteps as they are, else the
    scheduler's sigmas for the pass's own token count (the shift grows with it, paper
    2.5.2) without the skipped steps; a final step to 0 either way."""
    if settings.uses_timesteps:
        return explicit_sigmas(settings.timesteps)
    sigmas = flow_sigmas(settings.num_inference_steps, num_tokens, scheduler)
    return skip_steps(sigmas, settings.skip_initial_inference_steps, settings.skip_final_inference_steps)


def run_pass(
    models: Models,
    request: Request,
    settings: PassSettings,
    size: tuple[int, int],
    text: tuple[TextEmbeddings, TextEmbeddings | None],
    stg_mode: str,
    generator: torch.Generator,
    callback: Callback | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """One pass at `size` (height, width) -> its denoised normalized latent (B, C, f, h, w).

    Without `start` it begins from noise, as the first pass; with it (the upsampled
    latent) from `start` noised to the pass's first sigma, as the official pipeline noises
    the `latents` it is given. Conditioning is encoded at this pass's size either way."""
    with on_device(models, models.vae):
        latent = pass_latent(models.vae, request, size, generator, start)
    sigmas = pass_sigmas(settings, latent.num_tokens, models.scheduler)
    guidance = Guidance(**settings.guidance_settings(stg_mode))
    prompt, negative = text
    with on_device(models, models.transformer):
        result = denoise(
            models.runner or models.transformer,
            latent,
            prompt,
            negative if guidance.needs_negative else None,
            sigmas,
            guidance,
            request.frame_rate,
            generator,
            stop_on_non_finite(callback),
            image_cond_noise_scale=request.image_cond_noise_scale,
            start_sigma=1.0 if start is None else float(sigmas[0]),
            strength_rule=request.strength_rule,
            stochastic=settings.stochastic_sampling,
        )
    return result.samples


def pass_latent(
    vae, request: Request, size: tuple[int, int], generator: torch.Generator, start: Tensor | None = None
) -> ConditionedLatent:
    """The latent a pass denoises: empty (or `start`), then the first frame and the
    conditioning items, each resized to the pass's size and encoded (the official
    pipeline resizes its conditioning media to each call's size), then the IC-LoRA
    control at 1/downscale of the pass's size (its tokens dropped with the pass's result,
    as ComfyUI crops guides before the upscale, and given again to the next pass)."""
    height, width = size
    first_frame = None if request.first_frame is None else resize_frames(fitted_first_frame(request), height, width)
    items = tuple(replace(item, frames=resize_frames(item.frames, height, width)) for item in request.conditions)
    if start is None:
        return prepare_latent(
            vae,
            request.num_frames,
            height,
            width,
            first_frame,
            request.conditioning_strength,
            generator,
            conditions=items,
            control=request.control,
        )
    latent = ConditionedLatent(start, start=start)
    if first_frame is not None:
        encoded = encode_first_frame(vae, first_frame, width, height, generator)
        latent = condition_first_frame(latent, encoded, request.conditioning_strength)
    latent = condition_on_items(vae, latent, items, generator)
    return condition_on_control(vae, latent, request.control)


def fitted_first_frame(request: Request) -> Tensor:
    """The first frame at the asked size, as `pipeline.generate` fits it (center crop and
    resize), which the official script does when it loads the image."""
    image = request.first_frame[0] if request.first_frame.ndim == 4 else request.first_frame
    return resize_center_crop(image.float(), request.width, request.height)


# ---------------------------------------------------------------- between the passes and after


def upsample_between_passes(upsampler, vae, latent: Tensor) -> Tensor:
    """The official `_upsample_latents` (un-normalize, upsample, normalize) and then
    `adain_filter_latent` against the first pass's latent, so the second pass starts
    from the first pass's per-channel statistics."""
    with torch.no_grad():
        upsampled = upsample_latent(upsampler, vae, latent)
    return adain_filter(upsampled, latent, ADAIN_FACTOR)


def decode_second_pass(
    vae, latent: Tensor, request: Request, tone_map_compression: float, generator: torch.Generator
) -> Tensor:
    """Latent -> frames (F, H, W, 3) in the official order: the decode noise mixed into the
    normalized latent, then tone mapping, then the denoising decode with the request's
    settings (`pipeline.decode_requested`)."""
    return decode_requested(vae, latent, request, generator, tone_map_compression)


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Frames (..., H, W, 3) stretched to height x width, bilinear (`F.interpolate`,
    align_corners False), as the official pipeline resizes conditioning media to a pass's
    size and its decoded frames to the asked size; frames of that size are returned as they are."""
    if tuple(frames.shape[-3:-1]) == (height, width):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(*frames.shape[:-3], height, width, 3)
