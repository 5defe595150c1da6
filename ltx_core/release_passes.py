"""What one denoising pass of Lightricks' pipeline runs (`PassSettings`) and how its
multi-scale pipeline chains two of them (`MultiScaleSettings`), with the checks of each
value; `release_config` reads them from the official YAML files.

A pass is one call of the official `LTXVideoPipeline`: its sigmas (published `timesteps`,
or the scheduler's with steps skipped), its guidance (CFG, STG, per interval of
`guidance_timesteps`), stochastic steps, and the tone mapping of the latent it decodes.
`LTXMultiScalePipeline` runs the first pass at the requested size times
`downscale_factor` (floored to the latent grid), doubles the latent with the spatial
upscaler and runs the second pass at twice the first size. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SettingsError, is_int
from .models.configs import PIXELS_PER_LATENT
from .preflight import STG_MODES

Scale = float | tuple[float, ...]  # one number for every step, or one per guidance interval
Blocks = tuple[int, ...] | tuple[tuple[int, ...], ...]  # STG's blocks, for every step or per interval


# ---------------------------------------------------------------- one pass


@dataclass(frozen=True)
class PassSettings:
    """One denoising pass, in the official pipeline's terms; the defaults are its `__call__`'s.

    Sigmas: `timesteps` as given (unshifted, with a final step to 0), or else the
    scheduler's `num_inference_steps` sigmas for the pass's token count without the first
    `skip_initial_inference_steps` and last `skip_final_inference_steps`, still ending with
    a step to 0. Guidance: `guidance_scale` (CFG above 1), `stg_scale` (STG above 0, on
    `skip_block_list`), `rescaling_scale` (0 or 1: none), each a number or one value per
    interval of `guidance_timesteps`. `tone_map_compression_ratio` acts on the latent the
    pass decodes (the last pass only), `stochastic_sampling` on every step.
    """

    timesteps: tuple[float, ...] | None = None
    num_inference_steps: int = 20
    skip_initial_inference_steps: int = 0
    skip_final_inference_steps: int = 0
    guidance_scale: Scale = 4.5
    stg_scale: Scale = 1.0
    rescaling_scale: Scale = 0.7
    guidance_timesteps: tuple[float, ...] | None = None
    skip_block_list: Blocks | None = None
    cfg_star_rescale: bool = False
    tone_map_compression_ratio: float = 0.0
    stochastic_sampling: bool = False

    def __post_init__(self):
        for name in (
            "timesteps",
            "guidance_timesteps",
            "guidance_scale",
            "stg_scale",
            "rescaling_scale",
            "skip_block_list",
        ):
            self._set(name, _tuples(getattr(self, name)))
        intervals = self._check_guidance_timesteps()
        if self.timesteps is not None:
            self._set("timesteps", _sigmas("timesteps", self.timesteps, "in (0, 1]", low_open=True))
            self._check_no_skip()
            self._set("num_inference_steps", len(self.timesteps))
        self._check_steps()
        for name in ("guidance_scale", "stg_scale", "rescaling_scale"):
            self._set(name, _scale(name, getattr(self, name), intervals))
        self._set("skip_block_list", _blocks(self.skip_block_list, intervals))
        for name in ("cfg_star_rescale", "stochastic_sampling"):
            _check_bool(name, getattr(self, name))
        _check_fraction("tone_map_compression_ratio", self.tone_map_compression_ratio, "0: none, 1: strongest")
        self._check_stg_has_blocks()

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_guidance_timesteps(self) -> int | None:
        if self.guidance_timesteps is None:
            return None
        self._set("guidance_timesteps", _sigmas("guidance_timesteps", self.guidance_timesteps, "in [0, 1]"))
        return len(self.guidance_timesteps)

    def _check_no_skip(self) -> None:
        # the official `retrieve_timesteps` cuts skipped steps from the scheduler's own sigmas only
        for name in ("skip_initial_inference_steps", "skip_final_inference_steps"):
            if getattr(self, name) != 0:
                raise SettingsError(
                    f"{name} {getattr(self, name)!r} has no effect with timesteps; "
                    "allowed: 0, or num_inference_steps instead of timesteps"
                )

    def _check_steps(self) -> None:
        steps = self.num_inference_steps
        if not is_int(steps) or steps < 1:
            raise SettingsError(f"num_inference_steps {steps!r} is not allowed; allowed: a whole number >= 1")
        for name in ("skip_initial_inference_steps", "skip_final_inference_steps"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise SettingsError(f"{name} {value!r} is not allowed; allowed: a whole number >= 0")
        if self.skip_initial_inference_steps + self.skip_final_inference_steps >= steps:
            raise SettingsError(
                f"skip_initial_inference_steps {self.skip_initial_inference_steps} and "
                f"skip_final_inference_steps {self.skip_final_inference_steps} leave none of "
                f"num_inference_steps {steps}; allowed: together at most {steps - 1}"
            )

    def _check_stg_has_blocks(self) -> None:
        # the official pipeline runs STG with nothing perturbed here, which only wastes a pass
        for index in range(len(self.guidance_timesteps or (None,))):
            if _pick(self.stg_scale, index) > 0 and not self.blocks_at(index):
                where = "" if self.guidance_timesteps is None else f" in interval {index}"
                raise SettingsError(
                    f"stg_scale {_pick(self.stg_scale, index)}{where} needs skip_block_list, the "
                    "blocks STG perturbs; allowed: a block list, or stg_scale 0"
                )

    @property
    def uses_timesteps(self) -> bool:
        """The sigmas are the published `timesteps`, not the scheduler's."""
        return self.timesteps is not None

    @property
    def steps(self) -> int:
        """The model calls the pass makes: its sigmas after any skipped steps."""
        return self.num_inference_steps - self.skip_initial_inference_steps - self.skip_final_inference_steps

    @property
    def starts_at_one(self) -> bool:
        """Whether the pass starts from sigma 1 (pure noise)."""
        return self.timesteps[0] == 1 if self.uses_timesteps else self.skip_initial_inference_steps == 0

    @property
    def uses_cfg(self) -> bool:
        return any(scale != 1.0 for scale in _values(self.guidance_scale))

    @property
    def uses_stg(self) -> bool:
        return any(scale > 0 for scale in _values(self.stg_scale))

    def blocks_at(self, interval: int) -> tuple[int, ...]:
        blocks = self.skip_block_list or ()
        return blocks[interval] if blocks and isinstance(blocks[0], tuple) else blocks

    def guidance_settings(self, stg_mode: str) -> dict:
        """The keyword arguments of `sampling.guidance.Guidance` for this pass."""
        return dict(
            cfg_scale=self.guidance_scale,
            stg_scale=self.stg_scale,
            stg_blocks=self.skip_block_list or (),
            stg_mode=stg_mode,
            stg_rescale=self.rescaling_scale,
            guidance_timesteps=self.guidance_timesteps,
            cfg_star_rescale=self.cfg_star_rescale,
        )


# ---------------------------------------------------------------- two passes


@dataclass(frozen=True)
class MultiScaleSettings:
    """The official `LTXMultiScalePipeline`: `first_pass` at the requested size times
    `downscale_factor`, `second_pass` on the upsampled latent at twice that size, its
    first sigma the level the upsampled latent is noised to; `stg_mode` for both."""

    first_pass: PassSettings
    second_pass: PassSettings
    downscale_factor: float
    stg_mode: str = "attention_values"

    def __post_init__(self):
        for name in ("first_pass", "second_pass"):
            if not isinstance(getattr(self, name), PassSettings):
                raise SettingsError(f"{name} {getattr(self, name)!r} is not allowed; allowed: PassSettings")
        factor = self.downscale_factor
        if not _is_number(factor) or not 0 < factor <= 1:
            raise SettingsError(
                f"downscale_factor {factor!r} is not allowed; allowed: a number in (0, 1], the "
                "first pass's size over the requested size"
            )
        if self.first_pass.skip_initial_inference_steps:
            # the official pipeline asserts: skipped first steps need a latent to start from
            raise SettingsError(
                "first_pass.skip_initial_inference_steps needs a latent to start from, which the "
                "first pass has not; allowed: 0"
            )
        if self.second_pass.starts_at_one:
            # the official pipeline noises the upsampled latent to the pass's first sigma
            raise SettingsError(
                "second_pass starts at sigma 1, which would replace the upsampled first-pass latent "
                "with noise; allowed: timesteps starting below 1, or skip_initial_inference_steps "
                ">= 1"
            )
        if self.stg_mode not in STG_MODES:
            raise SettingsError(f"stg_mode {self.stg_mode!r} is not known; allowed: {', '.join(STG_MODES)}")

    @property
    def passes(self) -> tuple[PassSettings, PassSettings]:
        return self.first_pass, self.second_pass

    def pass_sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((height, width) of the first pass, of the second) for a requested size."""
        return multi_scale_sizes(height, width, self.downscale_factor)


def multi_scale_sizes(height: int, width: int, factor: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """The official rounding: `int(size * factor)` floored to the 32-pixel grid for the
    first pass, twice that for the second (the spatial upscaler doubles the latent); the
    decoded frames are then resized (bilinear) to the requested size."""
    first = tuple(_floor_to_grid(name, size, factor) for name, size in (("height", height), ("width", width)))
    return first, (2 * first[0], 2 * first[1])


def _floor_to_grid(name: str, size: int, factor: float) -> int:
    scaled = int(size * factor)
    floored = scaled - scaled % PIXELS_PER_LATENT
    if floored < PIXELS_PER_LATENT:
        raise SettingsError(
            f"{name} {size} times downscale_factor {factor} is {scaled} pixels, under one "
            f"{PIXELS_PER_LATENT}-pixel latent; allowed: a {name} of at least "
            f"{math.ceil(PIXELS_PER_LATENT / factor)}"
        )
    return floored


# ---------------------------------------------------------------- value checks


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pick(value, index: int):
    return value[index] if isinstance(value, tuple) else value


def _values(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _tuples(value):
    """YAML lists as tuples, nested ones too, so the settings stay frozen."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise SettingsError(f"{name} {value!r} is not allowed; allowed: true or false")


def _check_fraction(name: str, value, meaning: str) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise SettingsError(f"{name} {value!r} is not allowed; allowed: a number in [0, 1] ({meaning})")


def _sigmas(name: str, values, allowed: str, low_open: bool = False) -> tuple[float, ...]:
    ok = isinstance(values, tuple) and values and all(_is_number(v) and 0 <= v <= 1 for v in values)
    if not ok or (low_open and min(values) <= 0):
        raise SettingsError(f"{name} {_show(values)} is not allowed; allowed: a non-empty list of sigmas {allowed}")
    if any(later >= earlier for earlier, later in zip(values, values[1:])):
        raise SettingsError(
            f"{name} {_show(values)} is not allowed; allowed: strictly decreasing sigmas, from high noise down"
        )
    return tuple(float(v) for v in values)


def _scale(name: str, value, intervals: int | None) -> Scale:
    if not isinstance(value, tuple):
        _check_scale(name, value)
        return float(value)
    _check_count(name, value, intervals)
    for index, item in enumerate(value):
        _check_scale(f"{name}[{index}]", item)
    return tuple(float(item) for item in value)


def _check_scale(name: str, value) -> None:
    if not _is_number(value) or value < 0:
        raise SettingsError(
            f"{name} {value!r} is not allowed; allowed: a finite number >= 0, or a list of them with guidance_timesteps"
        )


def _check_count(name: str, values: tuple, intervals: int | None) -> None:
    if intervals is None:
        raise SettingsError(
            f"{name} {_show(values)} gives one value per interval, which needs guidance_timesteps; "
            "allowed: one number, or a list as long as guidance_timesteps"
        )
    if len(values) != intervals:
        raise SettingsError(
            f"{name} has {len(values)} values for {intervals} guidance_timesteps; allowed: one value per interval"
        )


def _blocks(value, intervals: int | None) -> Blocks | None:
    """Official rule: a list whose first item is a list is one block list per interval;
    any other list (an empty one too) holds for every step."""
    if value is None:
        return None
    if not isinstance(value, tuple):
        raise SettingsError(
            f"skip_block_list {value!r} is not allowed; allowed: a list of block indices, or one "
            "such list per guidance interval"
        )
    if not value or not isinstance(value[0], tuple):
        return _block_indices("skip_block_list", value)
    _check_count("skip_block_list", value, intervals)
    return tuple(_block_indices(f"skip_block_list[{index}]", item) for index, item in enumerate(value))


def _block_indices(name: str, value) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(is_int(block) and block >= 0 for block in value):
        raise SettingsError(f"{name} {_show(value)} is not allowed; allowed: block indices, whole numbers >= 0")
    return value


def _show(value):
    """A value as the YAML wrote it: lists, not the tuples it is held as."""
    return list(map(_show, value)) if isinstance(value, tuple) else value
