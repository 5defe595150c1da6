"""The long-video sampler: a whole clip's latent sampled in overlapping temporal windows
with a prompt per segment (the core's `long_video`), the memory of one window whatever
the length. Decode its latent with LTX-Video Denoising VAE Decode (spatial tiles for
large frames).
"""

from __future__ import annotations

from ..ltx_core.errors import SettingsError
from ..ltx_core.long_video import clip_conditioning, generate_long_latent
from ..ltx_core.long_video_run import window_prompts
from ..ltx_core.sampling import guidance as core_guidance, scheduler as core_scheduler
from ..ltx_core.sampling.conditioning import ConditionedLatent
from . import memory
from .convert import SEED_MAX, core_to_latent, latent_to_core
from .registry import CATEGORY, MODEL_TYPE, T5_TYPE
from .sampling import STOCHASTIC_WIDGET, transformer_on_device


def parse_prompts(text: str) -> list[tuple[int, str]]:
    """The first line: the prompt from frame 0; each further `FRAME: prompt` line changes it
    from that pixel frame on (blank lines are skipped)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise SettingsError("the prompts are empty; give the prompt from frame 0 on the first line")
    segments = [(0, lines[0])]
    for line in lines[1:]:
        frame, colon, prompt = line.partition(":")
        if not colon or not frame.strip().isdigit() or not prompt.strip():
            raise SettingsError(f"prompt line {line!r} is not FRAME: prompt, e.g. '48: the fox stops'")
        segments.append((int(frame), prompt.strip()))
    return segments


class LTXVCoreLongVideoSampler:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Samples a long clip in overlapping temporal windows, each continuing the one before, with "
        "the prompt changing along the way: memory by the window, any length. Diffusers' long "
        "multi-prompt pipeline and ComfyUI's looping sampler do the same."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent of the whole clip.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE,),
            "t5": (T5_TYPE,),
            "latent": ("LATENT", {"tooltip": "The whole clip's latent, e.g. from LTX-Video Empty Latent."}),
            "prompts": ("STRING", {"multiline": True, "tooltip": "First line: the prompt from frame 0. Each further line 'FRAME: prompt' changes it for the windows starting from that frame."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "For every window (CFG)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 200}),
            "cfg": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 20.0, "step": 0.1}),
            "frame_rate": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.5}),
            "window_frames": ("INT", {"default": 121, "min": 9, "max": 1025, "step": 8, "tooltip": "Frames of one window (8k + 1)."}),
            "window_overlap": ("INT", {"default": 24, "min": 8, "max": 256, "step": 8, "tooltip": "Frames each window shares with the one before (a multiple of 8)."}),
            "overlap_strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "How strongly a window keeps the previous window's frames."}),
            "adain_factor": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "How far each window's colors move to the first window's, against drift."}),
        }, "optional": {"stochastic": STOCHASTIC_WIDGET}}  # fmt: skip

    def sample(self, model, t5, latent, prompts, negative_prompt, seed, steps, cfg, frame_rate,
               window_frames, window_overlap, overlap_strength, adain_factor, stochastic=False):  # fmt: skip
        conditioned = latent_to_core(latent)
        shape = tuple(conditioned.samples.shape)
        first, keyframes = clip_conditioning(conditioned)
        negative = negative_prompt if cfg != 1.0 else None
        with memory.on_device(t5.patcher):
            window, overlap, segments, negative_text = window_prompts(
                t5.encoder, parse_prompts(prompts), shape[2], window_frames, window_overlap, negative
            )
        # the checkpoint's own schedule (its metadata's scheduler), as the CLI's long videos
        sigmas = core_scheduler.flow_sigmas(steps, window * shape[3] * shape[4], memory.checkpoint_scheduler(model))
        guidance = core_guidance.Guidance(cfg_scale=cfg)
        plan = memory.refuse_what_never_fits(  # a window and the overlap it continues at a time
            model, "sampling", (*shape[:2], min(shape[2], window + overlap), *shape[3:]),
            guidance=guidance.needs_negative, per_token_timesteps=True, steps=steps,
        )  # fmt: skip
        with transformer_on_device(model, plan) as device:
            result = generate_long_latent(
                memory.runner(model), shape, segments, negative_text, sigmas, guidance, frame_rate,
                window=window, overlap=overlap, overlap_strength=overlap_strength, adain_factor=adain_factor,
                seed=seed, first_frame=first, keyframes=keyframes, device=device, stochastic=stochastic,
            )  # fmt: skip
        return (core_to_latent(ConditionedLatent(result)),)
