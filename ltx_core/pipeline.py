"""The one-way flow of a generation, and the stages ComfyUI's nodes and the CLI call:

    prompt -> T5 embeddings                          encode_text
    size (+ first frame, keyframes, source clip,
          IC-LoRA control video)
        -> latent with noise mask and keyframes      prepare_latent / encode_first_frame /
                                                       encode_control
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

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from einops import rearrange
from torch import Tensor

from .errors import LTXVError, SettingsError
from .models.configs import LTXV_SCHEDULER, SchedulerConfig  # every published VAE
from .models.text_encoder import TextEmbeddings, TextEncoder, check_text_width, encode_prompt
from .models.vae import DEFAULT_DECODE_TIME_CHUNK, check_time_chunk
from .models.vae_tiles import DEFAULT_TILE_OVERLAP

# SEED_MAX, FP8_MIN_CAPABILITY and check_fp8_device are the nodes' too
from .preflight import FP8_MIN_CAPABILITY, SEED_MAX, check_fp8_device, check_prompt, check_video_settings  # noqa: F401
from .request import Request as Request, check_image
from .sampling.conditioning import (
    ConditionedLatent,
    ConditioningItem,
    add_keyframe,
    check_item_fits,
    condition_first_frame,
    empty_latent,
)
from .sampling.control import ControlVideo, add_control, control_at

# the DiT side of sampling; its small checks are shared so Request and denoise agree
from .sampling.denoise import denoise, module_device, module_dtype
from .sampling.euler import Callback
from .sampling.latent_ops import tone_map
from .speed.optimize import Speed, compile_vae_decoder, optimize_transformer
from .video import resize_center_crop


def default_decode_time_chunk(vae) -> int | None:
    """DEFAULT_DECODE_TIME_CHUNK where the VAE's decoder allows time chunks (every released
    VAE), else None: a group-norm decoder decodes whole layers."""
    return DEFAULT_DECODE_TIME_CHUNK if vae.decoder.can_chunk_time else None


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
    # None: every model stays on its device; else `offload.ModelPlacement`, which keeps them
    # in CPU memory and brings each to its device only while its stage runs
    placement: object | None = None
    # the models serve one run (the command line's one video): each pipeline releases the
    # text encoder once the prompts are encoded and the transformer once sampling ends
    # (`done_with`), so the later stages have their memory; the models cannot run again
    one_shot: bool = False

    @property
    def device(self) -> torch.device:
        """Where the models compute."""
        return self.placement.device if self.placement is not None else module_device(self.transformer)


def on_device(models: Models, module: torch.nn.Module) -> contextlib.AbstractContextManager:
    """`module` (one of `models`') on the run's device for the duration of a stage."""
    return contextlib.nullcontext() if models.placement is None else models.placement.on_device(module)


def done_with(models: Models, module: torch.nn.Module) -> None:
    """`module`'s last stage of a one-shot run is over: its weights leave the device (for
    the meta device, which holds no memory), as offloading after use would free it, without
    the copy back. Models kept in CPU memory (`placement`) are off the device already."""
    if models.one_shot and models.placement is None:
        module.to("meta")


def optimize_models(models: Models, speed: Speed, device: torch.device | None = None) -> Models:
    """`speed` applied once after loading, with the models on their device: the
    transformer's levers (`speed.optimize.optimize_transformer`) and the VAE decoder
    compiled where `speed.compile_vae` asks. Nothing runs unless asked, so the fp32 CPU path
    stays the reference. The transformer is changed in place (keep a fresh copy to save);
    the returned `Models` holds the runner that `generate` calls it through. Models kept
    in CPU memory for offloading name the run's `device`."""
    if models.runner is not None:
        raise SettingsError("the transformer is already optimized; load the models again to choose other levers")
    device = device or models.device
    if speed.fp8:
        check_fp8_device(device)
    if speed.compile_vae:
        compile_vae_decoder(models.vae, backend=speed.compile_backend)
    if not speed.changes_transformer:
        return models
    return replace(models, runner=optimize_transformer(models.transformer, speed, device=device))


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
    check_image(image)
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


def encode_control(vae, control: ControlVideo, height: int, width: int) -> Tensor:
    """A control video -> its normalized latent `(1, 128, n, height / 32 / s, width / 32 / s)`
    for a video (or a pass) of `height` x `width`, s its downscale: fitted to that size and
    encoded with the posterior mean (as ComfyUI's LTXVAddGuide encodes a guide), so it draws
    nothing from the run's generator."""
    return encode_frames(vae, control_at(control, height, width))


def condition_on_control(vae, latent: ConditionedLatent, control: ControlVideo | None) -> ConditionedLatent:
    """The latent with the control's tokens appended to its conditioning tokens (IC-LoRA,
    `sampling.control`), encoded at 1/downscale of the latent's size; None: as it is."""
    if control is None:
        return latent
    height, width = (size * vae.spatial_compression for size in latent.samples.shape[3:])
    encoded = encode_control(vae, control, height, width)
    return add_control(
        latent, encoded, control.downscale, control.strength, control.frame_index, vae.temporal_compression
    )


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
    control: ControlVideo | None = None,
) -> ConditionedLatent:
    """The latent to denoise: empty (all tokens from noise), or the encoded `source_video`
    (video-to-video: noised to the first sigma by `denoise`), then an encoded first frame
    whose tokens carry noise mask 1 - strength (paper 2.4), then the `conditions`
    (`ConditioningItem`s at any frame), then the IC-LoRA `control`'s tokens. Posteriors are
    drawn in that order, but the source's and the control's means are taken (the source is
    noised anyway), so denoise strength 1 is text-to-video exactly."""
    device = module_device(vae)
    latent = empty_latent(batch, num_frames, height, width, vae, device=device)
    if source_video is not None:
        source = encode_frames(vae, source_video, None, device)  # the posterior mean: no draw
        if source.shape[2:] != latent.samples.shape[2:]:
            raise SettingsError(
                f"source_video of shape {tuple(source_video.shape)} is not the video's "
                f"({num_frames}, {height}, {width}, 3)"
            )
        source = source.expand_as(latent.samples).clone()
        latent = ConditionedLatent(source, latent.noise_mask, start=source)
    if first_frame is not None:
        frame = encode_first_frame(vae, first_frame, width, height, generator, device)
        latent = condition_first_frame(latent, frame, strength)
    latent = condition_on_items(vae, latent, conditions, generator)
    return condition_on_control(vae, latent, control)


def decode_frames(
    vae,
    latent: Tensor,
    timestep: float = 0.05,
    decode_noise_scale: float = 0.025,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    mix_noise_denormalized: bool = False,
    time_chunk: int | None = None,
    tone_map_compression: float = 0.0,
    tiles: tuple[int, int] | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> Tensor:
    """Normalized latent (B, 128, f, h, w) -> frames (B, F, H, W, 3) in [0, 1]. A decoder
    with timestep conditioning removes the last noise at `timestep` after mixing in
    `decode_noise_scale` of fresh noise (paper 2.1); see `CausalVideoVAE.decode` for
    `mix_noise_denormalized` (diffusers' LTXPipeline: True).

    `time_chunk` computes each decoder layer that many frames (at the layer's frame rate)
    at a time (`CausalVideoVAE.decode`): the same frames, with a peak of about one layer's
    input and output instead of several full-size temporaries (benchmarks/results/
    vae_decode_memory.json). None: whole layers.

    `tiles` (rows, columns) decodes overlapping spatial tiles one at a time and blends them
    (`models.vae_tiles`): memory by the tile, for frames too large to decode whole.

    `tone_map_compression` > 0 compresses the latent's large values first, in the official
    multi-scale pipeline's order: the decode noise mixed into the normalized latent, then
    the tone map (`latent_ops.tone_map`), then the decode (which then mixes nothing more).

    A decode that yields a NaN or an infinity (a damaged or overflowing model, a latent
    that was already non-finite) raises instead of returning frames that would turn black."""
    check_time_chunk(time_chunk)
    if isinstance(latent, ConditionedLatent):
        latent = latent.samples
    device = device or module_device(vae)
    if tone_map_compression:
        latent = tone_map(vae.mix_decode_noise(latent, decode_noise_scale, generator), tone_map_compression)
        decode_noise_scale = 0.0  # mixed already
    with torch.no_grad():
        video = vae.decode(
            latent.to(device=device, dtype=module_dtype(vae)),
            timestep,
            decode_noise_scale,
            generator,
            mix_noise_denormalized=mix_noise_denormalized,
            time_chunk=time_chunk,
            tiles=tiles,
            tile_overlap=tile_overlap,
        )  # (B, 3, F, H, W) in [-1, 1]
    refuse_non_finite("the decoded video", video, "decoding")
    # as diffusers' VideoProcessor.postprocess_video; in place, as the video is ours alone
    frames = video.float().div_(2).add_(0.5).clamp_(0, 1)
    return rearrange(frames, "b c f h w -> b f h w c")


def decode_requested(
    vae, latent: Tensor, req: Request, generator: torch.Generator | None, tone_map_compression: float = 0.0
) -> Tensor:
    """`decode_frames` with the request's decode settings (timestep, decode noise, time
    chunks, spatial tiles): the frames (F, H, W, 3) of the first batch item. Every pipeline
    decodes through it, so no setting is left out of one."""
    return decode_frames(
        vae,
        latent,
        req.decode_timestep,
        req.decode_noise_scale,
        generator,
        time_chunk=req.decode_time_chunk,
        tone_map_compression=tone_map_compression,
        tiles=req.decode_tiles,
        tile_overlap=req.decode_tile_overlap,
    )[0]


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


@dataclass(frozen=True)
class RunDraws:
    """Where each random draw of a run comes from: `sampling` (the initial noise, then the
    keyframes', then each step's), `posterior` (the conditioning encodes' samples) and
    `decode` (the decode noise, then the decoder's injected noise); `token_major` draws the
    initial noise in Lightricks' (B, f*h*w, C) layout."""

    sampling: torch.Generator
    posterior: torch.Generator
    decode: torch.Generator
    token_major: bool = False


def run_draws(req: Request, device: torch.device | str) -> RunDraws:
    """ "diffusers": one CPU generator for every draw, in the order diffusers' pipelines draw
    (the same video on every device). "lightricks": as Lightricks' inference.py, a generator
    on the run's device seeded with the seed for the pipeline's draws, and for the draws its
    pipeline takes from torch's global RNG (the posterior samples, the decode noise) a second
    one seeded the same, as `seed_everething` seeds the global RNG."""
    if req.noise_draws == "diffusers":
        generator = seeded_generator(req.seed)
        return RunDraws(generator, generator, generator)
    device = torch.device(device)
    global_rng = torch.Generator(device=device).manual_seed(req.seed)  # one stream for both
    return RunDraws(torch.Generator(device=device).manual_seed(req.seed), global_rng, global_rng, token_major=True)


def _start_sigma(req: Request, sigmas: Tensor) -> float:
    """Video-to-video starts from the source noised to the first sigma; everything else
    from pure noise, whatever schedule it was given (as before video-to-video existed)."""
    return float(sigmas[0]) if req.source_video is not None else 1.0


def generate(
    models: Models, req: Request, callback: Callback | None = None, on_stage: Callable[[str], None] | None = None
) -> Tensor:
    """Request -> frames (F, H, W, 3) in [0, 1]; the same request gives the same frames.
    `on_stage(name)` is called as each stage ends: 'text', 'latent', 'denoise', 'decode'."""
    on_stage = on_stage or (lambda name: None)
    # a T5 of the wrong width fails here, before any model runs
    check_text_width(models.text_encoder.width, models.transformer.cfg.caption_channels)
    draws = run_draws(req, models.device)
    guidance = req.guidance()
    negative = req.negative_prompt if guidance.needs_negative else None
    with on_device(models, models.text_encoder.model):
        text, negative_text = encode_text(models.text_encoder, req.prompt, negative, req.max_tokens)
    done_with(models, models.text_encoder.model)
    on_stage("text")
    with on_device(models, models.vae):
        latent = prepare_latent(
            models.vae,
            req.num_frames,
            req.height,
            req.width,
            req.first_frame,
            req.conditioning_strength,
            draws.posterior,
            conditions=req.conditions,
            source_video=req.source_video,
            control=req.control,
        )
    on_stage("latent")
    sigmas = req.sigma_schedule(latent.num_tokens, models.scheduler)
    with on_device(models, models.transformer):
        latent = denoise(
            models.runner or models.transformer,
            latent,
            text,
            negative_text,
            sigmas,
            guidance,
            req.frame_rate,
            draws.sampling,
            stop_on_non_finite(callback),
            image_cond_noise_scale=req.image_cond_noise_scale,
            start_sigma=_start_sigma(req, sigmas),
            strength_rule=req.strength_rule,
            stochastic=req.stochastic_sampling,
            token_major_noise=draws.token_major,
        )
    done_with(models, models.transformer)
    on_stage("denoise")
    with on_device(models, models.vae):
        frames = decode_requested(models.vae, latent.samples, req, draws.decode)
    on_stage("decode")
    return frames
