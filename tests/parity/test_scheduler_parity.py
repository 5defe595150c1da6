"""`flow_sigmas` against diffusers' FlowMatchEulerDiscreteScheduler driven as LTXPipeline
drives it, and the linear-quadratic spacing against diffusers' LTXConditionPipeline copy of
Lightricks' `linear_quadratic_schedule`; if this fails, every generation takes different
steps than the reference."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift
from diffusers.pipelines.ltx.pipeline_ltx_condition import linear_quadratic_schedule

from ltx_core.models.configs import LTXV_SCHEDULER, SchedulerConfig
from ltx_core.sampling.scheduler import flow_sigmas, linear_quadratic_sigmas

pytestmark = pytest.mark.parity

ATOL = 1e-6

# Lightricks/LTX-Video scheduler/scheduler_config.json (diffusers format)
PUBLISHED_CONFIG = {
    "base_image_seq_len": 1024,
    "base_shift": 0.95,
    "max_image_seq_len": 4096,
    "max_shift": 2.05,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.1,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


def diffusers_sigmas(steps: int, num_tokens: int) -> torch.Tensor:
    scheduler = FlowMatchEulerDiscreteScheduler(**PUBLISHED_CONFIG)
    mu = calculate_shift(
        num_tokens,
        scheduler.config.base_image_seq_len,
        scheduler.config.max_image_seq_len,
        scheduler.config.base_shift,
        scheduler.config.max_shift,
    )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas


def test_published_scheduler_config_is_ours():
    for name, value in PUBLISHED_CONFIG.items():
        if hasattr(LTXV_SCHEDULER, name):
            assert getattr(LTXV_SCHEDULER, name) == value, name


@pytest.mark.parametrize("steps", [2, 3, 8, 30, 50])
@pytest.mark.parametrize("num_tokens", [1, 96, 1024, 3000, 4096, 6144, 24_000])
def test_flow_sigmas_match_diffusers(steps, num_tokens):
    ours = flow_sigmas(steps, num_tokens)
    theirs = diffusers_sigmas(steps, num_tokens)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 30, 40])
def test_linear_quadratic_sigmas_match_diffusers(steps):
    """The same Python-float arithmetic, so the same fp32 values, bit for bit; unshifted,
    as the condition pipeline (and Lightricks' scheduler without shifting) uses them."""
    theirs = linear_quadratic_schedule(steps)
    assert torch.equal(linear_quadratic_sigmas(steps), theirs)
    unshifted = SchedulerConfig(sampler="linear-quadratic", use_dynamic_shifting=False, shift_terminal=None)
    assert torch.equal(flow_sigmas(steps, 4096, unshifted), torch.cat([theirs, torch.zeros(1)]))
