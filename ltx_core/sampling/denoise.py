"""The DiT side of sampling (paper 2.4, 2.5): noise -> clean latent with `denoise`.

Each token's timestep follows its noise mask (`min(sigma, noise_mask)` by Lightricks' rule,
or `sigma * noise_mask`), so conditioning tokens (a kept first frame, strength < 1) sit at
their own level; keyframe tokens go before the video's, with their own RoPE coordinates
(`keyframe_coords`), and are dropped from the result. CFG's
unconditional pass and STG's perturbed pass ride in one batch with the conditional one
(`guidance.guided_velocity`); Euler steps are `euler.sample`. The transformer is called
through a runner (`run(fn, *inputs)`): the plain module, or the speed and parallel runners
(`speed.optimize`, `parallel.distributed`).

This module does not import `pipeline`; `pipeline` composes it with the other stages and
uses its `module_device` / `module_dtype`. The settings checks both use live in `errors`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from einops import rearrange
from torch import Tensor

from ..errors import SettingsError
from ..models.rope import fractional_coords, latent_coords, pixel_coords
from ..models.text_encoder import TextEmbeddings, check_text_width
from .conditioning import ConditionedLatent, Keyframe, initial_keyframes, initial_latent
from .euler import Callback, sample
from .guidance import Guidance, guided_velocity, perturbed_forward


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


def keyframe_coords(keyframe: Keyframe, batch: int, frame_rate: float, causal_fix: bool) -> Tensor:
    """RoPE coordinates (B, 3, n) of a keyframe's tokens: its own latent grid, moved in
    time to start at its pixel frame (Lightricks: `pixel_coords[:, 0] += media_frame_number`).

    A keyframe on a grid `spatial_scale` times coarser (a downscaled IC-LoRA reference)
    has its rows and columns scaled by it, so its tokens span the video's field of view:
    token (i, j) starts at pixel (32 s i, 32 s j), where ComfyUI's dilated guide grid puts
    it (the start is what RoPE reads for LTX-Video 0.9.x)."""
    _, _, frames, height, width = keyframe.samples.shape
    grid = latent_coords(frames, height, width, batch, device=keyframe.samples.device)
    pixels = pixel_coords(grid, causal_fix=causal_fix)
    if keyframe.spatial_scale != 1:
        pixels[:, 1:] *= keyframe.spatial_scale
    pixels[:, 0] += keyframe.frame_index
    return fractional_coords(pixels, frame_rate)


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


def batched_text(text: TextEmbeddings, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Embeddings and mask for every video of the batch, on the model's device and dtype."""
    embeds = text.embeds.to(device=device, dtype=dtype).expand(batch, -1, -1)
    return embeds, text.mask.to(device).expand(batch, -1)


def denoise(
    transformer,
    latent: ConditionedLatent,
    text: TextEmbeddings,
    negative_text: TextEmbeddings | None,
    sigmas: Tensor,
    guidance: Guidance | float,
    frame_rate: float,
    generator: torch.Generator,
    callback: Callback | None = None,
    *,
    causal_fix: bool | None = None,
    image_cond_noise_scale: float = 0.0,
    device: torch.device | str | None = None,
    start_sigma: float = 1.0,
    strength_rule: str = "held",
    stochastic: bool = False,
    token_major_noise: bool = False,
) -> ConditionedLatent:
    """Noise -> clean latent with the DiT (paper 2.4, 2.5): initial noise from `generator`
    at each token's level, then Euler steps (`euler.sample`) of the guided velocity
    (`guidance.guided_velocity`; a number is CFG alone) with per-token timesteps from
    each token's noise mask (`euler.STRENGTH_RULES`).

    `transformer` is the model or a runner of it (`run(fn, *inputs)`). Keyframe tokens go
    before the video's (as in both references), with their own coordinates and mask, and
    are dropped from the result. `start_sigma` < 1 starts from `samples` noised to that
    level (video-to-video, with `denoise_sigmas`). `strength_rule` says how tokens of
    fractional strength move (`euler.STRENGTH_RULES`; "held", Lightricks' rule, unless
    told). `stochastic` takes Lightricks' stochastic steps, their noise from `generator`
    after the initial noise; `token_major_noise` draws the initial noise in Lightricks'
    layout (`conditioning.initial_latent`). `causal_fix` None takes the
    config's `causal_temporal_positioning` (see `token_coords`). `callback(step, total, x,
    denoised)` gets latents (B, C, f, h, w); an exception raised in it stops sampling."""
    guidance = guidance if isinstance(guidance, Guidance) else Guidance(cfg_scale=guidance)
    runner = as_runner(transformer)
    module = runner.model
    _check_fits_transformer(module, latent, text)
    device = torch.device(device) if device is not None else module_device(module)
    latent = _on_device(latent, device)
    tokens = TokenLayout(latent)
    coords = all_coords(
        latent, frame_rate, module.cfg.causal_temporal_positioning if causal_fix is None else causal_fix
    )
    # Every token at the same level (no conditioning tokens): one timestep per video, so
    # AdaLN-single runs on B rows instead of B * T, with the same velocity. Checked once.
    shared_timestep = not latent.keyframes and bool((latent.noise_mask == 1).all())
    model_fn = guided_model_fn(runner, guidance, coords, tokens.batch, module_dtype(module), shared_timestep)
    embeds, mask = batched_text(text, tokens.batch, device, module_dtype(module))
    negative = (None, None)
    if negative_text is not None:
        negative = batched_text(negative_text, tokens.batch, device, module_dtype(module))
    velocity_fn = guided_velocity(model_fn, embeds, mask, *negative, guidance)
    step_callback = None
    if callback is not None:
        step_callback = lambda i, n, x, denoised: callback(i, n, tokens.latent(x), tokens.latent(denoised))
    x_init = initial_latent(latent, generator, start_sigma, token_major_noise)  # the video's noise first
    keyframes_init = initial_keyframes(latent, generator, start_sigma)
    clean = [k.samples.expand(tokens.batch, -1, -1, -1, -1) for k in latent.keyframes]
    keyframe_masks = [torch.full_like(k[:, :1], 1.0 - key.strength) for k, key in zip(clean, latent.keyframes)]
    with torch.no_grad():
        x = sample(
            velocity_fn,
            tokens.tokens(x_init, keyframes_init),
            sigmas,
            tokens.tokens(latent.noise_mask, keyframe_masks)[..., 0],
            clean_latent=tokens.tokens(latent.samples, clean),
            callback=step_callback,
            cond_noise_scale=image_cond_noise_scale,
            generator=generator,
            strength_rule=strength_rule,
            stochastic=stochastic,
        )
    return ConditionedLatent(tokens.latent(x), latent.noise_mask)


class TokenLayout:
    """Latents <-> the transformer's tokens: `b c f h w -> b (f h w) c`, keyframe tokens first."""

    def __init__(self, latent: ConditionedLatent):
        self.batch, _, self.frames, self.height, self.width = latent.samples.shape
        self.extra = latent.num_keyframe_tokens

    def tokens(self, video: Tensor, keyframes) -> Tensor:
        return torch.cat([rearrange(z, "b c f h w -> b (f h w) c") for z in (*keyframes, video)], dim=1)

    def latent(self, tokens: Tensor) -> Tensor:
        return rearrange(
            tokens[:, self.extra :], "b (f h w) c -> b c f h w", f=self.frames, h=self.height, w=self.width
        )


def all_coords(latent: ConditionedLatent, frame_rate: float, causal_fix: bool) -> Tensor:
    """RoPE coordinates (B, 3, T) of every token: the keyframes' first, then the video's."""
    batch = latent.samples.shape[0]
    return torch.cat(
        [
            *(keyframe_coords(k, batch, frame_rate, causal_fix) for k in latent.keyframes),
            token_coords(latent, frame_rate, causal_fix),
        ],
        dim=2,
    )


def guided_model_fn(
    runner, guidance: Guidance, coords: Tensor, batch: int, dtype: torch.dtype, shared_timestep: bool = False
):
    """`model_fn(x, timesteps, text, mask[, perturbed, blocks])` for `guided_velocity`: the
    model's forward through the runner, or STG's perturbed forward of `blocks` for a batch
    with perturbed items; `shared_timestep` passes one timestep per video (every token at
    the same level)."""
    module = runner.model
    # one perturbed forward per block set the steps perturb, each checked against the model now
    stg_forwards = {blocks: perturbed_forward(module, blocks, guidance.stg_mode) for blocks in guidance.stg_block_sets}
    batched_coords = {}  # repeat -> coords (repeat * B, 3, T), built once, not every step

    def model_fn(
        x: Tensor,
        timesteps: Tensor,
        embeds: Tensor,
        mask: Tensor,
        perturbed: Tensor | None = None,
        blocks: tuple[int, ...] = (),
    ):
        repeat = x.shape[0] // batch  # 2 under guidance: (uncond, cond); 3 with STG
        if repeat not in batched_coords:
            batched_coords[repeat] = coords.repeat(repeat, 1, 1)
        if shared_timestep:
            timesteps = timesteps[:, :1]
        inputs = (x.to(dtype), timesteps, embeds, mask, batched_coords[repeat])
        if perturbed is None:
            return runner.run(module, *inputs).float()
        return runner.run(stg_forwards[blocks], *inputs, perturbed).float()

    return model_fn


def _on_device(latent: ConditionedLatent, device: torch.device) -> ConditionedLatent:
    keyframes = tuple(replace(k, samples=k.samples.to(device=device, dtype=torch.float32)) for k in latent.keyframes)
    start = None if latent.start is None else latent.start.to(device=device, dtype=torch.float32)
    return ConditionedLatent(
        latent.samples.to(device=device, dtype=torch.float32), latent.noise_mask.to(device), keyframes, start
    )


# ---------------------------------------------------------------- where a model lives, shared with pipeline


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class DirectRunner:
    """The transformer called as it is (no compiled graphs, one process)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def run(self, fn, *inputs) -> Tensor:
        return fn(*inputs)


def as_runner(transformer):
    """A runner for `transformer`: the module itself, or a runner already made for it."""
    return DirectRunner(transformer) if isinstance(transformer, torch.nn.Module) else transformer
