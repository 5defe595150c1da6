"""One video to generate, as a frozen `Request` whose every setting is checked on
construction (sizes, guidance, conditioning, schedule), so a bad one is refused with what
is allowed before any model runs. `pipeline.generate` runs it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import SettingsError, check_number, is_int
from .models.configs import FRAMES_PER_LATENT, LTXV_SCHEDULER, PIXELS_PER_LATENT, SchedulerConfig
from .models.vae import check_time_chunk
from .models.vae_tiles import DEFAULT_TILE_OVERLAP, check_tiles
from .preflight import check_prompt, check_video_settings
from .sampling.conditioning import ConditioningItem, check_item_fits, check_strength
from .sampling.control import ControlVideo, check_control_fits
from .sampling.euler import STRENGTH_RULES
from .sampling.guidance import Guidance
from .sampling.scheduler import denoise_sigmas, explicit_sigmas, flow_sigmas, skip_steps

NOISE_DRAWS = ("diffusers", "lightricks")


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
    decode_tiles: tuple[int, int] | None = None  # (rows, columns) of spatial tiles decoded apart (None: whole)
    decode_tile_overlap: int = DEFAULT_TILE_OVERLAP  # latent cells the tiles overlap and blend over
    # an IC-LoRA's reference (depth, pose, canny...): in-context tokens, see sampling.control;
    # the IC-LoRA itself is applied to the transformer beforehand (ltx_core.lora)
    control: ControlVideo | None = None
    # whose random draws a seed gives (`pipeline.run_draws`): "diffusers" (one CPU generator,
    # the same video on every device) or "lightricks" (as Lightricks' inference.py draws them
    # on the run's device: the same seed gives its script's noise); single-pass runs
    noise_draws: str = "diffusers"

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
            check_image(self.first_frame)
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
        if self.noise_draws not in NOISE_DRAWS:
            allowed = ", ".join(NOISE_DRAWS)
            raise SettingsError(f"noise_draws {self.noise_draws!r} is not known; allowed: {allowed}")
        self.guidance()  # checks the guidance settings together
        check_time_chunk(self.decode_time_chunk, "decode_time_chunk")
        if self.decode_tiles is not None:
            latent_size = (self.height // PIXELS_PER_LATENT, self.width // PIXELS_PER_LATENT)
            check_tiles(tuple(self.decode_tiles), self.decode_tile_overlap, *latent_size)

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
        if self.control is not None:
            check_control_fits(self.control, self.num_frames, self.height, self.width)
        denoise_sigmas(torch.linspace(1, 0, self.sampled_steps + 1), self.denoise_strength)  # keeps a step or says so
        if self.denoise_strength != 1.0 and self.source_video is None:
            raise SettingsError(f"denoise_strength {self.denoise_strength} needs a source_video to start from")


def check_image(image) -> None:
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-1] != 3 or image.numel() == 0:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise SettingsError(f"first_frame {shape} is not an image; allowed: (H, W, 3) or (1, H, W, 3) in [0, 1]")
