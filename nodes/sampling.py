"""The DiT sampler with the rectified-flow scheduler, and a node giving its sigmas.

Progress goes to ComfyUI's progress bar with a cheap latent-to-RGB preview; Cancel in
ComfyUI raises its `InterruptProcessingException` from the step callback, so the run
stops before the next step and nothing is written.

Given SIGMAS start where their first sigma says, as ComfyUI's own samplers do: at 1 from
noise, below 1 from the input latent noised to that sigma (the second pass of a
multi-scale pipeline, whose input is the upsampled first pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import comfy.model_management
import comfy.utils
import torch
from PIL import Image

from ..ltx_core.models.configs import LTXV_SCHEDULER
from ..ltx_core.sampling import (
    denoise as core_denoise,
    guidance as core_guidance,
    latent_ops as core_latent_ops,
    scheduler as core_scheduler,
)
from . import memory
from .convert import SEED_MAX, core_to_latent, latent_to_core, seeded_generator, text_pair
from .lora import applied_loras
from .registry import CATEGORY, MODEL_TYPE

PREVIEW_MAX_SIZE = 512  # ComfyUI's MAX_PREVIEW_RESOLUTION


STOCHASTIC_WIDGET = ("BOOLEAN", {"default": False, "tooltip": "Lightricks' stochastic steps: each step re-noises its estimate with fresh noise instead of a plain Euler step. Off for the official checkpoints (their release configs say when); on for the shipped demo model, whose plain steps can draw no shape on some seeds."})  # fmt: skip


@dataclass(frozen=True)
class PassGuidance:
    """What travels on an `LTXV_CORE_GUIDANCE` wire: one pass of a release config, its
    `Guidance` (per-interval CFG / STG schedules) and whether its steps are stochastic."""

    guidance: core_guidance.Guidance
    stochastic: bool = False


def shift_widgets() -> dict:
    cfg = LTXV_SCHEDULER
    return {
        "dynamic_shift": ("BOOLEAN", {"default": cfg.use_dynamic_shifting, "tooltip": "Shift the schedule towards high noise by the latent's token count (paper 2.5.2)."}),
        "base_shift": ("FLOAT", {"default": cfg.base_shift, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": f"Log shift at {cfg.base_image_seq_len} tokens (the official checkpoints' schedule; the shipped demo model's is 1.39 at every token count, as its workflows set)."}),
        "max_shift": ("FLOAT", {"default": cfg.max_shift, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": f"Log shift at {cfg.max_image_seq_len} tokens."}),
        "terminal": ("FLOAT", {"default": cfg.shift_terminal or 0.0, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip": "Stretch the schedule so its last sigma before 0 is this (0: no stretch)."}),
    }  # fmt: skip


def scheduler_config(dynamic_shift: bool, base_shift: float, max_shift: float, terminal: float):
    return replace(
        LTXV_SCHEDULER,
        use_dynamic_shifting=dynamic_shift,
        base_shift=base_shift,
        max_shift=max_shift,
        shift_terminal=terminal or None,
    )


class LTXVCoreScheduler:
    CATEGORY = CATEGORY
    DESCRIPTION = "The flow-matching sigmas LTX-Video's sampler uses for a latent, as a SIGMAS output to edit or reuse."
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The latent to be sampled: its token count sets the shift."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 1000}),
            **shift_widgets(),
        }}  # fmt: skip

    def sigmas(self, latent, steps, dynamic_shift, base_shift, max_shift, terminal):
        cfg = scheduler_config(dynamic_shift, base_shift, max_shift, terminal)
        tokens = latent_to_core(latent).num_tokens
        return (core_scheduler.flow_sigmas(steps, tokens, cfg),)


class LTXVCoreSampler:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Denoises a video latent with the LTX-Video transformer: Euler steps on the flow "
        "velocity, per-token timesteps for conditioning frames (keyframes included), "
        "classifier-free guidance."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent": ("LATENT",),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": "Seed of the initial noise."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 1000}),
                "cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Classifier-free guidance scale; 1 skips the negative pass."}),
                "frame_rate": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 240.0, "step": 0.01, "tooltip": "Frames per second the video is meant for (RoPE time coordinates in seconds)."}),
                **shift_widgets(),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "A schedule of your own; replaces steps and the shift options. Starting below 1 (a second pass), it starts from the input latent noised to its first sigma, as ComfyUI's samplers do."}),
                "stochastic": STOCHASTIC_WIDGET,
            },
        }  # fmt: skip

    def sample(
        self,
        model,
        positive,
        negative,
        latent,
        seed,
        steps,
        cfg,
        frame_rate,
        dynamic_shift,
        base_shift,
        max_shift,
        terminal,
        sigmas=None,
        stochastic=False,
    ):
        schedule = scheduler_config(dynamic_shift, base_shift, max_shift, terminal)
        guidance = core_guidance.Guidance(cfg_scale=cfg)
        return (
            run_sampler(
                model, positive, negative, latent, seed, steps, guidance, frame_rate, schedule, sigmas,
                stochastic=stochastic,
            ),
        )  # fmt: skip


def run_sampler(
    model,
    positive,
    negative,
    latent,
    seed,
    steps,
    guidance,
    frame_rate,
    schedule,
    sigmas,
    strength_rule: str = "scaled",
    stochastic: bool = False,
) -> dict:
    """The core's `denoise` on a `LATENT` (keyframe tokens included, dropped from the
    result) with `guidance` (a core `Guidance`); the denoised `LATENT`. Given `sigmas`
    start at their first sigma (see the module's docstring)."""
    conditioned = latent_to_core(latent)
    start_sigma = 1.0 if sigmas is None else float(sigmas[0])
    if sigmas is None:
        sigmas = core_scheduler.flow_sigmas(steps, conditioned.num_tokens, schedule)
    positive, negative = text_pair(positive, negative)
    plan = memory.refuse_what_never_fits(
        model,
        "sampling",
        conditioned.samples.shape,
        guidance=guidance.needs_negative,
        stg=guidance.uses_stg,
        per_token_timesteps=bool(conditioned.keyframes) or bool((conditioned.noise_mask != 1).any()),
        keyframe_tokens=conditioned.num_keyframe_tokens,
        steps=len(sigmas) - 1,
    )
    with transformer_on_device(model, plan) as device:
        result = core_denoise.denoise(
            memory.runner(model),
            conditioned,
            positive,
            negative,
            sigmas=sigmas,
            guidance=guidance,
            frame_rate=frame_rate,
            generator=seeded_generator(seed),
            callback=_progress_callback(len(sigmas) - 1),
            device=device,
            strength_rule=strength_rule,
            start_sigma=start_sigma,
            stochastic=stochastic,
            token_major_noise=True,  # the CLI's draws on the CPU: a seed gives the command line's video
        )
    return core_to_latent(result)


@contextmanager
def transformer_on_device(model, plan) -> Iterator[torch.device]:
    """The transformer on its device with its LoRAs applied: moved whole by ComfyUI (the
    LoRAs merged there), or, where the plan streams blocks, the LoRAs merged in CPU memory
    first so the streamed blocks carry them."""
    streamed = plan.workload.streamed_blocks if plan is not None else 0
    if streamed:
        with applied_loras(model), memory.streamed_on_device(model, streamed, plan.peak_bytes) as device:
            yield device
    else:
        with memory.on_device(model, plan) as device, applied_loras(model):
            yield device


def _progress_callback(total_steps: int):
    """The core sampler's `callback(step, total, x, denoised)`: checks ComfyUI's Cancel,
    then moves the progress bar with a preview of the current estimate."""
    progress = comfy.utils.ProgressBar(total_steps)
    previews = _previews_enabled()

    def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        preview = ("JPEG", _preview_image(denoised), PREVIEW_MAX_SIZE) if previews else None
        progress.update_absolute(step + 1, total, preview)

    return on_step


def _previews_enabled() -> bool:
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def _preview_image(denoised: torch.Tensor) -> Image.Image:
    rgb = core_latent_ops.latent_preview(denoised)  # (h, w, 3) in [0, 1], first video, middle frame
    return Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
