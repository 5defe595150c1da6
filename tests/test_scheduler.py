"""Sigma schedules: shape, ends, monotonicity, the token-count shift and explicit lists."""

import math

import pytest
import torch

from ltx_core.models.configs import LTXV_SCHEDULER, SchedulerConfig
from ltx_core.errors import SettingsError
from ltx_core.sampling.scheduler import (_huge_time_shift, _time_shift, denoise_sigmas, explicit_sigmas, flow_sigmas,
                                token_count_shift)


@pytest.mark.parametrize("steps", [1, 2, 8, 40])
def test_flow_sigmas_run_from_one_to_zero_in_steps_plus_one_decreasing_values(steps):
    """The sampler takes exactly `steps` steps and must end on clean latents."""
    sigmas = flow_sigmas(steps, 2048)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_last_nonzero_sigma_is_the_configured_terminal_value():
    """The stretch of paper 2.5.2 puts the final Euler step at `shift_terminal`."""
    assert flow_sigmas(20, 1500)[-2].item() == pytest.approx(LTXV_SCHEDULER.shift_terminal, abs=1e-6)


def test_more_tokens_keep_sigmas_higher_midway():
    """A larger video must spend more of the schedule at high noise (larger shift)."""
    small, large = flow_sigmas(10, 256), flow_sigmas(10, 8192)
    assert (large[1:-2] > small[1:-2]).all()


def test_token_count_shift_hits_its_anchors():
    """mu is base_shift at base_image_seq_len and max_shift at max_image_seq_len."""
    cfg = LTXV_SCHEDULER
    assert token_count_shift(cfg.base_image_seq_len) == pytest.approx(cfg.base_shift)
    assert token_count_shift(cfg.max_image_seq_len) == pytest.approx(cfg.max_shift)


def test_without_dynamic_shifting_or_terminal_the_schedule_is_linear():
    cfg = SchedulerConfig(use_dynamic_shifting=False, shift_terminal=None)
    expected = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    torch.testing.assert_close(flow_sigmas(4, 999, cfg), expected)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_flow_sigmas_refuse_step_counts_below_one(steps):
    with pytest.raises(SettingsError, match="steps .* at least 1"):
        flow_sigmas(steps, 100)


def test_explicit_sigmas_are_kept_as_given_and_get_a_final_zero():
    """Distilled models publish their own timesteps; they must not be shifted."""
    torch.testing.assert_close(explicit_sigmas([1.0, 0.9, 0.4]), torch.tensor([1.0, 0.9, 0.4, 0.0]))
    torch.testing.assert_close(explicit_sigmas([0.7, 0.0]), torch.tensor([0.7, 0.0]))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "non-empty"),
        ([1.2, 0.5], r"in \[0, 1\]"),
        ([0.5, float("nan")], "finite"),
        ([0.5, 0.7], "strictly decreasing"),
        ([0.0], "at least one sigma above 0"),
    ],
)
def test_explicit_sigmas_refuse_bad_lists(values, message):
    with pytest.raises(SettingsError, match=message):
        explicit_sigmas(values)


def test_unknown_time_shift_type_is_refused():
    with pytest.raises(ValueError, match="time_shift_type 'cubic'"):
        SchedulerConfig(time_shift_type="cubic")


@pytest.mark.parametrize(("strength", "kept"), [(1.0, 10), (0.35, 3), (0.5, 5), (0.1, 1)])
def test_denoise_sigmas_keep_the_last_int_steps_times_strength_as_diffusers_get_timesteps(strength, kept):
    sigmas = flow_sigmas(10, 1024)
    cut = denoise_sigmas(sigmas, strength)
    assert torch.equal(cut, sigmas[10 - kept :]) and cut[-1] == 0


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5, True])
def test_denoise_strength_outside_0_1_is_refused(strength):
    with pytest.raises(SettingsError, match=r"denoise_strength .* is outside \(0, 1\]"):
        denoise_sigmas(flow_sigmas(4, 16), strength)


@pytest.mark.parametrize("tokens", [246_000, 262_144, 2_162_688, 10**9, 10**15])
def test_the_shift_never_overflows_however_many_tokens(tokens):
    """4096x4096x121 (262144 tokens) once gave sigmas [nan, ...] and 8192x8192x257 (2162688)
    an OverflowError: e^mu beyond fp32, then beyond a float. The curve tends to 1 there."""
    sigmas = flow_sigmas(20, tokens)
    assert torch.isfinite(sigmas).all() and sigmas[-1] == 0 and sigmas[0] == 1
    assert (sigmas[1:] <= sigmas[:-1]).all() and ((sigmas >= 0) & (sigmas <= 1)).all()
    explicit_sigmas(sigmas[:-1].unique(sorted=True).flip(0).tolist())  # what the sampler accepts


def test_below_the_overflow_the_shift_is_computed_as_before():
    """The float64 limit form takes over only where e^mu leaves fp32: the token counts the
    parity tests cover keep diffusers' fp32 arithmetic exactly."""
    cfg = LTXV_SCHEDULER
    sigmas = torch.linspace(1, 0.05, 20)
    mu = 80.0  # e^80 is still finite in fp32
    shift = torch.tensor(math.exp(mu), dtype=torch.float32)
    assert torch.equal(_time_shift(sigmas, mu, cfg), shift / (shift + (1 / sigmas - 1)))
    close = _huge_time_shift(sigmas, mu)
    assert torch.allclose(close, _time_shift(sigmas, mu, cfg))
