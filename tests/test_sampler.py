"""The Euler sampler on velocity: exactness on straight flows, per-token timesteps,
guidance batching, callback and interrupt, conditioning-token re-noising."""

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.sampling.euler import sample
from ltx_core.sampling.guidance import Guidance, guided_velocity
from ltx_core.sampling.scheduler import flow_sigmas

B, T, C = 2, 6, 4


@pytest.fixture
def clean_and_noise():
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)


def straight_flow(clean, noise):
    """The exact velocity of rectified flow between fixed endpoints: v = noise - clean."""
    return lambda x, timesteps, sigma: noise - clean


def test_euler_on_the_exact_velocity_lands_on_the_clean_latent(clean_and_noise):
    """Rectified-flow paths are straight; any schedule must end on x0 from pure noise."""
    clean, noise = clean_and_noise
    out = sample(straight_flow(clean, noise), noise, flow_sigmas(7, T), torch.ones(B, T))
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)


def test_tokens_with_mask_zero_leave_the_sampler_unchanged(clean_and_noise):
    clean, noise = clean_and_noise
    mask = torch.ones(B, T)
    mask[:, :2] = 0
    x_init = noise.clone()
    x_init[:, :2] = clean[:, :2]
    out = sample(lambda x, t, s: torch.randn_like(x), x_init, flow_sigmas(5, T), mask)
    assert torch.equal(out[:, :2], clean[:, :2])
    assert not torch.equal(out[:, 2:], x_init[:, 2:])


def test_token_timesteps_are_sigma_times_mask(clean_and_noise):
    clean, noise = clean_and_noise
    mask = torch.tensor([[0.0, 0.25, 0.5, 1.0, 1.0, 1.0]]).repeat(B, 1)
    sigmas = torch.tensor([1.0, 0.6, 0.2, 0.0])
    seen = []
    sample(lambda x, t, s: seen.append(t.clone()) or torch.zeros_like(x), noise, sigmas, mask)
    assert len(seen) == 3
    for sigma, timesteps in zip(sigmas[:-1], seen):
        torch.testing.assert_close(timesteps, sigma * mask)


def test_partially_conditioned_tokens_reach_clean_from_their_own_noise_level(clean_and_noise):
    """A token at mask m starts at m * noise + (1 - m) * clean and follows sigma * m."""
    clean, noise = clean_and_noise
    mask = torch.full((B, T), 0.3)
    x_init = 0.3 * noise + 0.7 * clean
    out = sample(straight_flow(clean, noise), x_init, flow_sigmas(4, T), mask)
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)


def test_callback_sees_every_step_with_the_denoised_estimate(clean_and_noise):
    clean, noise = clean_and_noise
    calls = []
    sample(
        straight_flow(clean, noise),
        noise,
        flow_sigmas(3, T),
        torch.ones(B, T),
        callback=lambda i, n, x, denoised: calls.append((i, n, denoised.clone())),
    )
    assert [(i, n) for i, n, _ in calls] == [(0, 3), (1, 3), (2, 3)]
    for _, _, denoised in calls:
        torch.testing.assert_close(denoised, clean, atol=1e-5, rtol=0)


def test_an_exception_in_the_callback_stops_sampling_at_once(clean_and_noise):
    """Interrupt (Ctrl-C, ComfyUI Cancel) is an exception raised in the callback."""
    clean, noise = clean_and_noise
    model_calls = []

    def velocity(x, t, sigma):
        model_calls.append(1)
        return noise - clean

    def interrupt(i, n, x, denoised):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(velocity, noise, flow_sigmas(10, T), torch.ones(B, T), callback=interrupt)
    assert len(model_calls) == 2


def test_guidance_runs_one_batched_forward_with_uncond_first():
    calls = []

    def model(x, t, text, mask):
        calls.append((x.shape[0], text[:, 0, 0].tolist()))
        return x * text[:, :1, :1]

    text, negative = torch.full((1, 3, 1), 2.0), torch.full((1, 3, 1), 5.0)
    mask = torch.ones(1, 3, dtype=torch.bool)
    x = torch.randn(1, T, C)
    v = guided_velocity(model, text, mask, negative, mask, Guidance(3.0))(x, torch.ones(1, T), 1.0)
    assert calls == [(2, [5.0, 2.0])]
    torch.testing.assert_close(v, 5 * x + 3.0 * (2 * x - 5 * x))


def test_guidance_scale_one_skips_the_unconditional_pass():
    calls = []
    model = lambda x, t, text, mask: calls.append(x.shape[0]) or x
    text = torch.ones(1, 3, 1)
    v = guided_velocity(model, text, torch.ones(1, 3), None, None, Guidance(1.0))(
        torch.ones(1, T, C), torch.ones(1, T), 1.0
    )
    assert calls == [1] and torch.equal(v, torch.ones(1, T, C))


def test_guidance_without_negative_text_is_refused():
    with pytest.raises(SettingsError, match="guidance scale 3.0 needs negative text"):
        guided_velocity(lambda *a: a[0], torch.ones(1, 3, 1), torch.ones(1, 3), None, None, Guidance(3.0))


def test_conditioning_tokens_are_renoised_by_sigma_squared_from_the_generator(clean_and_noise):
    """Lightricks' image_cond_noise_scale: clean + scale * noise * sigma^2 each step."""
    clean, noise = clean_and_noise
    mask = torch.ones(B, T)
    mask[:, 0] = 0
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    seen = []
    velocity = lambda x, t, s: seen.append(x.clone()) or torch.zeros_like(x)
    out = sample(
        velocity,
        noise,
        sigmas,
        mask,
        clean_latent=clean,
        cond_noise_scale=0.1,
        generator=torch.Generator().manual_seed(7),
    )
    g = torch.Generator().manual_seed(7)
    first, second = torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    torch.testing.assert_close(seen[0][:, 0], clean[:, 0] + 0.1 * first[:, 0])
    torch.testing.assert_close(out[:, 0], clean[:, 0] + 0.1 * second[:, 0] * 0.25)
    torch.testing.assert_close(out[:, 1:], noise[:, 1:])


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [
        ([1.0], "at least two"),
        ([14.6, 7.0, 0.0], r"in \[0, 1\]"),
        ([0.5, 0.8, 0.0], "must not increase"),
    ],
)
def test_schedules_that_are_not_flow_sigmas_are_refused(sigmas, message):
    """A SIGMAS input from another model's scheduler (e.g. Karras, sigma_max 14.6)."""
    with pytest.raises(SettingsError, match=message):
        sample(lambda x, t, s: x, torch.zeros(1, T, C), torch.tensor(sigmas), torch.ones(1, T))


def test_a_schedule_may_stop_above_zero_for_partial_sampling(clean_and_noise):
    clean, noise = clean_and_noise
    out = sample(straight_flow(clean, noise), noise, torch.tensor([1.0, 0.5]), torch.ones(B, T))
    torch.testing.assert_close(out, 0.5 * noise + 0.5 * clean)


def test_the_held_rule_freezes_a_partial_token_until_the_schedule_passes_its_level(clean_and_noise):
    """Lightricks' and diffusers' rule: a token of mask 0.5 (strength 0.5) sees timestep
    min(sigma, 0.5) and moves only once sigma < 0.5; mask 1 and 0 tokens as ever."""
    clean, noise = clean_and_noise
    mask = torch.tensor([[1.0, 0.5, 0.0, 1.0, 1.0, 1.0]]).expand(B, T)
    sigmas = torch.tensor([1.0, 0.75, 0.25, 0.0])
    seen, after = [], []
    velocity = lambda x, timesteps, s: (seen.append(timesteps[0].tolist()), torch.ones_like(x))[1]
    sample(velocity, noise, sigmas, mask, callback=lambda i, n, x, d: after.append(x.clone()), strength_rule="held")
    assert seen == [
        [1.0, 0.5, 0.0, 1.0, 1.0, 1.0],
        [0.75, 0.5, 0.0, 0.75, 0.75, 0.75],
        [0.25, 0.25, 0.0, 0.25, 0.25, 0.25],
    ]
    held = [x[:, 1] for x in after]
    assert torch.equal(held[0], noise[:, 1]) and torch.equal(held[1], noise[:, 1])  # frozen while sigma >= 0.5
    torch.testing.assert_close(held[2], noise[:, 1] - 0.25)  # then one step from 0.25 to 0
    torch.testing.assert_close(after[-1][:, 0], noise[:, 0] - 1.0)
    assert torch.equal(after[-1][:, 2], noise[:, 2])


def test_an_unknown_strength_rule_is_refused(clean_and_noise):
    with pytest.raises(SettingsError, match="strength_rule 'lightricks' is not known; allowed: scaled, held"):
        sample(lambda x, t, s: x, clean_and_noise[1], flow_sigmas(2, T), torch.ones(B, T), strength_rule="lightricks")


def test_the_velocity_gets_each_steps_sigma_of_the_schedule(clean_and_noise):
    """Guidance picks a step's settings by the schedule's sigma, not by a token's timestep."""
    clean, noise = clean_and_noise
    mask = torch.tensor([[0.0, 0.5, 1.0, 1.0, 1.0, 1.0]]).expand(B, T)
    seen = []
    sigmas = torch.tensor([1.0, 0.6, 0.2, 0.0])
    sample(lambda x, t, sigma: seen.append(sigma) or torch.zeros_like(x), noise, sigmas, mask, strength_rule="held")
    assert seen == sigmas[:-1].tolist() and all(isinstance(sigma, float) for sigma in seen)


# ---------------------------------------------------------------- stochastic sampling


def test_a_stochastic_step_noises_the_estimate_afresh_to_the_next_sigma(clean_and_noise):
    """Lightricks' stochastic_sampling, by hand: x0 = x - sigma v, then
    x <- (1 - sigma_next) x0 + sigma_next * noise, the noise drawn from the caller's generator
    once per step; the last step (to 0) lands on x0."""
    clean, noise = clean_and_noise
    velocity = torch.randn(B, T, C, generator=torch.Generator().manual_seed(11))
    sigmas = torch.tensor([1.0, 0.6, 0.0])
    after = []
    out = sample(
        lambda x, t, s: velocity,
        noise,
        sigmas,
        torch.ones(B, T),
        generator=torch.Generator().manual_seed(5),
        stochastic=True,
        callback=lambda i, n, x, d: after.append(x.clone()),
    )
    draw = torch.randn(B, T, C, generator=torch.Generator().manual_seed(5))
    x0 = noise - 1.0 * velocity
    first = 0.4 * x0 + 0.6 * draw
    torch.testing.assert_close(after[0], first)
    torch.testing.assert_close(out, first - 0.6 * velocity)


def test_stochastic_sampling_is_reproducible_with_a_seed_and_differs_from_deterministic(clean_and_noise):
    clean, noise = clean_and_noise
    velocity = lambda x, t, s: 0.5 * x
    sigmas = flow_sigmas(4, T)
    run = lambda seed: sample(
        velocity,
        noise,
        sigmas,
        torch.ones(B, T),
        generator=torch.Generator().manual_seed(seed),
        stochastic=True,
    )
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    deterministic = sample(velocity, noise, sigmas, torch.ones(B, T), generator=torch.Generator().manual_seed(1))
    assert (run(1) - deterministic).abs().max() > 1e-2


def test_stochastic_sampling_on_the_exact_velocity_still_lands_on_the_clean_latent(clean_and_noise):
    """Each step's fresh noise starts a new straight path to the same clean latent."""
    clean, noise = clean_and_noise
    towards_clean = lambda x, t, s: (x - clean) / t[..., None]
    out = sample(
        towards_clean,
        noise,
        flow_sigmas(5, T),
        torch.ones(B, T),
        generator=torch.Generator().manual_seed(0),
        stochastic=True,
    )
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rule", ["held", "scaled"])
def test_stochastic_sampling_keeps_clean_tokens_and_held_ones_until_their_level(clean_and_noise, rule):
    clean, noise = clean_and_noise
    mask = torch.tensor([[0.0, 0.5, 1.0, 1.0, 1.0, 1.0]]).expand(B, T)
    after = []
    sample(
        lambda x, t, s: torch.ones_like(x),
        noise,
        torch.tensor([1.0, 0.75, 0.25, 0.0]),
        mask,
        generator=torch.Generator().manual_seed(3),
        strength_rule=rule,
        stochastic=True,
        callback=lambda i, n, x, d: after.append(x.clone()),
    )
    assert all(torch.equal(x[:, 0], noise[:, 0]) for x in after)  # mask 0: never moved
    if rule == "held":  # frozen while sigma >= 0.5, then x0 noised to 0, then done
        assert torch.equal(after[0][:, 1], noise[:, 1]) and torch.equal(after[1][:, 1], noise[:, 1])
        torch.testing.assert_close(after[2][:, 1], noise[:, 1] - 0.25)  # from timestep 0.25 to 0: x0
    assert not torch.equal(after[0][:, 2], noise[:, 2])


def test_stochastic_sampling_without_a_generator_is_refused(clean_and_noise):
    with pytest.raises(SettingsError, match="stochastic sampling needs a generator"):
        sample(lambda x, t, s: x, clean_and_noise[1], flow_sigmas(2, T), torch.ones(B, T), stochastic=True)
