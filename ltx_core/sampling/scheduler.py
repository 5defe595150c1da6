"""Sigmas for the rectified-flow sampler: a token-count dependent shift, then a stretch
so that the last step before 0 lands on `shift_terminal` (paper 2.5.2).

This reproduces diffusers' `FlowMatchEulerDiscreteScheduler.set_timesteps` as
`LTXPipeline` drives it: start from `linspace(1, 1/steps, steps)`, shift with
`mu = calculate_shift(num_tokens, ...)`, stretch to the terminal value, append 0.
Lightricks' `RectifiedFlowScheduler` is the same curve for its "SD3" shifting, and may
start from its linear-quadratic spacing instead (the config's `sampler`). Its pipeline
may also leave out the first or last steps of a schedule (`skip_steps`).
The sampler only needs the resulting sigma tensor, as k-diffusion's samplers do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import SettingsError, is_int
from ..models.configs import LTXV_SCHEDULER, SchedulerConfig

# Lightricks' `linear_quadratic_schedule` default: the noise level the linear part reaches.
LINEAR_QUADRATIC_THRESHOLD = 0.025


def token_count_shift(num_tokens: int, cfg: SchedulerConfig = LTXV_SCHEDULER) -> float:
    """`mu`, linear in the number of latent tokens between the config's two anchors
    (diffusers' `calculate_shift`): more tokens keep more signal at a given sigma, so
    they need a larger shift towards high noise."""
    slope = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    intercept = cfg.base_shift - slope * cfg.base_image_seq_len
    return num_tokens * slope + intercept


def _time_shift(sigmas: torch.Tensor, mu: float, cfg: SchedulerConfig) -> torch.Tensor:
    """sigma -> shift / (shift + 1 / sigma - 1), shift = e^mu (or mu for a linear shift)."""
    if cfg.time_shift_type == "exponential" and mu > math.log(torch.finfo(sigmas.dtype).max):
        return _huge_time_shift(sigmas, mu)
    # the shift as a tensor of the sigmas' dtype, as numpy casts it in diffusers
    shift = torch.tensor(math.exp(mu) if cfg.time_shift_type == "exponential" else mu, dtype=sigmas.dtype)
    return shift / (shift + (1 / sigmas - 1))


def _huge_time_shift(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """The same curve for a token count whose e^mu overflows the sigmas' dtype (or even a
    Python float): 1 / (1 + (1 / sigma - 1) e^-mu), in float64, where e^-mu only
    underflows towards 0 and every sigma tends to 1, as the formula does in the limit."""
    shifted = 1 / (1 + (1 / sigmas.double() - 1) * math.exp(-mu))
    return shifted.to(sigmas.dtype)


def _stretch_to_terminal(sigmas: torch.Tensor, terminal: float) -> torch.Tensor:
    """Scale `1 - sigma` so the last sigma equals `terminal` (Lightricks' rf.py).
    A single step sits at sigma 1, where there is nothing to stretch."""
    one_minus = 1 - sigmas
    if one_minus[-1] == 0:
        return sigmas
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def linear_quadratic_sigmas(steps: int, threshold: float = LINEAR_QUADRATIC_THRESHOLD) -> torch.Tensor:
    """Lightricks' linear-quadratic spacing, `steps` fp32 sigmas from 1 (no final 0): the
    first `steps // 2` steps lower sigma linearly to `1 - threshold`, then a quadratic in the
    step index, continuous there in value and slope, brings it to 0 at step `steps`, so
    half the steps refine the high-noise start (`rf.linear_quadratic_schedule`)."""
    if steps == 1:
        return torch.tensor([1.0])
    linear = steps // 2
    quadratic = steps - linear
    # 1 - sigma = a i^2 + b i + c on the quadratic part
    excess = linear - threshold * steps
    a = excess / (linear * quadratic**2)
    b = threshold / linear - 2 * excess / quadratic**2
    c = a * linear**2
    noise = [i * threshold / linear for i in range(linear)]
    noise += [a * i**2 + b * i + c for i in range(linear, steps)]
    # Python floats, then fp32, as the reference builds its tensor
    return torch.tensor([1.0 - level for level in noise])


def _unshifted(steps: int, sampler: str) -> torch.Tensor:
    if sampler == "linear-quadratic":
        return linear_quadratic_sigmas(steps)
    return torch.from_numpy(np.linspace(1.0, 1.0 / steps, steps)).to(torch.float32)


def flow_sigmas(steps: int, num_tokens: int, cfg: SchedulerConfig = LTXV_SCHEDULER) -> torch.Tensor:
    """`steps + 1` descending fp32 sigmas from 1 to 0 for a latent of `num_tokens` tokens:
    the config's `sampler` spacing, then its shift and stretch."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SettingsError(f"steps {steps!r} must be a whole number of at least 1")
    if num_tokens < 1:
        raise SettingsError(f"num_tokens {num_tokens!r} must be at least 1")
    # fp32 in diffusers' order of operations: with many tokens the terminal stretch divides
    # by a small `1 - sigma`, which turns fp32 rounding into ~1e-5 differences, so a more
    # precise computation would take other steps than the reference does
    sigmas = _unshifted(steps, cfg.sampler)
    if cfg.use_dynamic_shifting:
        sigmas = _time_shift(sigmas, token_count_shift(num_tokens, cfg), cfg)
    else:
        sigmas = cfg.shift * sigmas / (1 + (cfg.shift - 1) * sigmas)
    if cfg.shift_terminal:
        sigmas = _stretch_to_terminal(sigmas, cfg.shift_terminal)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def explicit_sigmas(values: Sequence[float]) -> torch.Tensor:
    """A caller's own schedule (e.g. the distilled models' published timesteps), used
    unshifted; a final 0 is appended when missing so the sampler ends on clean latents."""
    sigmas = torch.as_tensor(list(values), dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() == 0:
        raise SettingsError("sigmas must be a non-empty list of numbers in [0, 1]")
    if not torch.isfinite(sigmas).all() or sigmas.min() < 0 or sigmas.max() > 1:
        raise SettingsError(f"sigmas {list(values)} must all be finite and in [0, 1]")
    if (sigmas[1:] >= sigmas[:-1]).any():
        raise SettingsError(f"sigmas {list(values)} must be strictly decreasing")
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    if sigmas.numel() < 2:
        raise SettingsError("sigmas [0] has no step to take; give at least one sigma above 0")
    return sigmas.to(torch.float32)


def skip_steps(sigmas: torch.Tensor, initial: int = 0, final: int = 0) -> torch.Tensor:
    """A schedule without its first `initial` and last `final` steps, as Lightricks'
    `retrieve_timesteps` cuts `skip_initial_inference_steps` / `skip_final_inference_steps`:
    the kept sigmas, then 0, because its scheduler always steps from the last kept sigma
    to 0. Leaving out the last steps thus makes the final step longer, and leaving out
    the first ones starts from a latent noised to the first kept sigma (a second pass)."""
    steps = len(sigmas) - 1
    for name, value in (("skip_initial_inference_steps", initial), ("skip_final_inference_steps", final)):
        if not is_int(value) or value < 0:
            raise SettingsError(f"{name} {value!r} must be a whole number >= 0")
    if initial + final >= steps:
        raise SettingsError(
            f"skipping {initial} initial and {final} final steps of {steps} leaves none; "
            f"allowed: together at most {steps - 1}"
        )
    return torch.cat([sigmas[initial : steps - final], sigmas.new_zeros(1)])


def denoise_sigmas(sigmas: torch.Tensor, denoise_strength: float) -> torch.Tensor:
    """Video-to-video: keep the last `int(steps * denoise_strength)` steps of a schedule,
    as diffusers' `LTXConditionPipeline.get_timesteps` does; the sampler starts from the
    source clip noised to the first kept sigma. Strength 1 keeps the whole schedule."""
    ok = isinstance(denoise_strength, (int, float)) and not isinstance(denoise_strength, bool)
    if not ok or not 0.0 < denoise_strength <= 1.0:
        raise SettingsError(f"denoise_strength {denoise_strength!r} is outside (0, 1] (1: generate from pure noise)")
    steps = len(sigmas) - 1
    kept = min(int(steps * denoise_strength), steps)
    if kept < 1:
        raise SettingsError(
            f"denoise_strength {denoise_strength} keeps no step of {steps}; allowed: at least {1 / steps:.3g}"
        )
    return sigmas[steps - kept :]
