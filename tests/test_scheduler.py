"""Sigma schedules: shape, ends, monotonicity, the token-count shift, explicit lists,
Lightricks' uniform and linear-quadratic spacings (by hand from its formulas), left-out
first and last steps, and the checkpoint metadata's `sampler` honoured."""

import math

import pytest
import torch

from ltx_core.checkpoint.versions import ModelConfigs, configs_from_metadata, scheduler_config_from_metadata
from ltx_core.checkpoint.writing import config_metadata
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.configs import LTXV_SCHEDULER, TINY_TRANSFORMER, TINY_VAE, SchedulerConfig
from ltx_core.sampling.scheduler import (
    _huge_time_shift,
    _time_shift,
    denoise_sigmas,
    explicit_sigmas,
    flow_sigmas,
    linear_quadratic_sigmas,
    skip_steps,
    token_count_shift,
)


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


# ---------------------------------------------------------------- Lightricks' spacings


def lightricks_sd3_shift(sigmas: list[float], tokens: int, terminal: float | None) -> list[float]:
    """rf.py's "SD3" shifting, written out in float64: mu linear in the token count between
    (1024, 0.95) and (4096, 2.05), sigma -> e^mu / (e^mu + 1 / sigma - 1), then 1 - sigma
    scaled so the last one is 1 - terminal."""
    mu = 0.95 + (2.05 - 0.95) / (4096 - 1024) * (tokens - 1024)
    shifted = [math.exp(mu) / (math.exp(mu) + 1 / s - 1) for s in sigmas]
    if terminal is None:
        return shifted
    scale = (1 - shifted[-1]) / (1 - terminal)
    return [1 - (1 - s) / scale for s in shifted]


def test_linear_quadratic_sigmas_are_lightricks_formula_worked_by_hand():
    """4 steps: 2 linear ones from noise 0 by 0.025 / 2, then a * i^2 + b * i + c with
    excess = 2 - 0.025 * 4 = 1.9, a = 1.9 / (2 * 2^2) = 0.2375,
    b = 0.025 / 2 - 2 * 1.9 / 2^2 = -0.9375, c = a * 2^2 = 0.95: noise 0.025 at i = 2,
    0.275 at i = 3 (and 1 at i = 4, where the schedule ends on sigma 0)."""
    torch.testing.assert_close(linear_quadratic_sigmas(4), torch.tensor([1.0, 0.9875, 0.975, 0.725]))
    assert linear_quadratic_sigmas(1).tolist() == [1.0]
    plain = SchedulerConfig(sampler="linear-quadratic", use_dynamic_shifting=False, shift_terminal=None)
    torch.testing.assert_close(flow_sigmas(4, 5000, plain), torch.tensor([1.0, 0.9875, 0.975, 0.725, 0.0]))


@pytest.mark.parametrize("steps", [6, 7, 8, 30, 41])  # at least 3 quadratic steps to fit
def test_linear_quadratic_sigmas_run_linearly_to_the_threshold_then_quadratically_to_zero(steps):
    sigmas = linear_quadratic_sigmas(steps).double()
    half = steps // 2
    torch.testing.assert_close(sigmas[: half + 1], 1 - 0.025 * torch.arange(half + 1).double() / half)
    assert (sigmas[1:] < sigmas[:-1]).all() and sigmas[-1] > 0
    # the quadratic through the last three points reaches noise 1 (sigma 0) one step later
    i = torch.arange(steps - 3, steps).double()
    a, b, c = torch.linalg.solve(torch.stack([i**2, i, torch.ones(3).double()], 1), 1 - sigmas[-3:])
    assert float(a * steps**2 + b * steps + c) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sampler", ["uniform", "linear-quadratic"])
@pytest.mark.parametrize(("steps", "tokens"), [(8, 1500), (30, 2816), (40, 6144)])
def test_both_spacings_get_the_sd3_shift_and_stretch_as_lightricks_scheduler(sampler, steps, tokens):
    """Lightricks shifts whatever its sampler spaced (`set_timesteps`: spacing, then
    `shift_timesteps`), by the video's token count."""
    uniform = [1 - i / steps for i in range(steps)]
    unshifted = uniform if sampler == "uniform" else linear_quadratic_sigmas(steps).tolist()
    expected = torch.tensor(lightricks_sd3_shift(unshifted, tokens, 0.1) + [0.0], dtype=torch.float32)
    ours = flow_sigmas(steps, tokens, SchedulerConfig(sampler=sampler))
    torch.testing.assert_close(ours, expected, atol=2e-6, rtol=0)


def test_an_unknown_spacing_is_refused_naming_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match="scheduler sampler 'karras' is unknown; allowed: uniform, linear-quadratic"):
        SchedulerConfig(sampler="karras")


# ---------------------------------------------------------------- left-out steps


def test_skip_final_steps_keeps_the_first_sigmas_and_ends_with_one_step_to_zero():
    """Lightricks' skip_final_inference_steps: 30 steps less the last 3 are 27 steps whose
    last goes from the 27th sigma straight to 0 (its scheduler pads the schedule with 0)."""
    sigmas = flow_sigmas(30, 2816)
    cut = skip_steps(sigmas, final=3)
    assert len(cut) == 28 and torch.equal(cut[:-1], sigmas[:27]) and cut[-1] == 0


def test_skip_initial_steps_starts_later_in_the_same_schedule():
    """The dev config's second pass: 30 steps, the first 17 left out: 13 steps from sigma 17."""
    sigmas = flow_sigmas(30, 2816)
    cut = skip_steps(sigmas, initial=17)
    assert len(cut) == 14 and torch.equal(cut, sigmas[17:])
    assert torch.equal(skip_steps(sigmas), sigmas)
    assert torch.equal(skip_steps(sigmas, 2, 3), torch.cat([sigmas[2:27], sigmas.new_zeros(1)]))


@pytest.mark.parametrize(
    ("initial", "final", "message"),
    [
        (15, 15, "skipping 15 initial and 15 final steps of 30 leaves none; allowed: together at most 29"),
        (-1, 0, "skip_initial_inference_steps -1 must be a whole number >= 0"),
        (0, 2.5, "skip_final_inference_steps 2.5 must be a whole number >= 0"),
    ],
)
def test_skipping_every_step_or_a_negative_count_is_refused(initial, final, message):
    with pytest.raises(SettingsError, match=message):
        skip_steps(flow_sigmas(30, 100), initial, final)


# ---------------------------------------------------------------- the checkpoint's sampler

LIGHTRICKS_SD3 = {
    "_class_name": "RectifiedFlowScheduler",
    "_diffusers_version": "0.25.1",
    "num_train_timesteps": 1000,
    "shifting": "SD3",
    "base_resolution": None,
    "target_shift_terminal": 0.1,
}


def test_the_metadata_sampler_sets_the_spacing():
    assert scheduler_config_from_metadata(LIGHTRICKS_SD3) == LTXV_SCHEDULER  # absent: Lightricks' default, Uniform
    quadratic = scheduler_config_from_metadata({**LIGHTRICKS_SD3, "sampler": "LinearQuadratic"})
    assert quadratic == SchedulerConfig(sampler="linear-quadratic")
    assert scheduler_config_from_metadata({**LIGHTRICKS_SD3, "sampler": "Uniform"}) == LTXV_SCHEDULER
    expected = lightricks_sd3_shift(linear_quadratic_sigmas(8).tolist(), 1500, 0.1) + [0.0]
    torch.testing.assert_close(flow_sigmas(8, 1500, quadratic), torch.tensor(expected))


def test_metadata_without_shifting_gives_the_spacing_unshifted():
    """`shifting: null` (Lightricks' default): `shift_timesteps` returns the spacing as it is."""
    unshifted = scheduler_config_from_metadata(
        {"_class_name": "RectifiedFlowScheduler", "shifting": None, "sampler": "LinearQuadratic"}
    )
    assert torch.equal(flow_sigmas(8, 1500, unshifted), torch.cat([linear_quadratic_sigmas(8), torch.zeros(1)]))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"sampler": "Constant"},
            (
                r"scheduler sampler 'Constant' is not supported; allowed: Uniform \(uniform\), "
                r"LinearQuadratic \(linear-quadratic\)"
            ),
        ),
        ({"shifting": "SimpleDiffusion"}, "scheduler shifting 'SimpleDiffusion' is not supported; allowed: SD3 or nu"),
    ],
)
def test_an_unknown_metadata_sampler_is_refused_naming_the_file_it_and_the_allowed_values(tmp_path, section, message):
    with pytest.raises(ValueError, match=message):
        scheduler_config_from_metadata({**LIGHTRICKS_SD3, **section})
    config = {**config_metadata_of_tiny(), "scheduler": {**LIGHTRICKS_SD3, **section}}
    with pytest.raises(CheckpointError, match="model.safetensors.*metadata config cannot be used: " + message):
        configs_from_metadata(config, tmp_path / "model.safetensors")


def config_metadata_of_tiny() -> dict:
    return config_metadata(ModelConfigs(TINY_TRANSFORMER, TINY_VAE))


@pytest.mark.parametrize("sampler", ["uniform", "linear-quadratic"])
def test_a_written_file_names_its_spacing_in_lightricks_spelling_and_reads_back(sampler):
    scheduler = SchedulerConfig(sampler=sampler)
    written = config_metadata(ModelConfigs(TINY_TRANSFORMER, TINY_VAE, scheduler))["scheduler"]
    assert written["sampler"] == {"uniform": "Uniform", "linear-quadratic": "LinearQuadratic"}[sampler]
    assert scheduler_config_from_metadata(written) == scheduler
