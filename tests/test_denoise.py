"""`denoise`, the DiT side of sampling: conditioning tokens kept, keyframe tokens given
to the transformer with their own coordinates and dropped after, the causal fix, bad
latents and text refused, and one timestep per video where every token shares it."""

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.text_encoder import TextEmbeddings, load_text_encoder
from ltx_core.pipeline import Models, condition_on_items, encode_text, prepare_latent
from ltx_core.sampling.conditioning import ConditionedLatent, ConditioningItem, Keyframe
from ltx_core.sampling.denoise import denoise, keyframe_coords, token_coords
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.scheduler import flow_sigmas

# One timestep per video instead of per token: the same numbers through AdaLN-single,
# whose GEMM on B rows instead of B * T may round differently (BLAS picks kernels by
# size): ~5e-7 on latents of size ~4 after 3 steps, where a wrong timestep moves them ~1.
SHARED_TIMESTEP_ATOL = 1e-5
PROMPT = "a red fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


@pytest.fixture
def text(models):
    return encode_text(models.text_encoder, PROMPT, "", max_tokens=32)


def clip(count: int, seed: int = 3, height: int = 32, width: int = 64) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_a_first_frame_at_strength_one_comes_out_of_denoising_unchanged(models, text):
    """Image-to-video: the first latent frame has t_c = 0 and is never stepped."""
    image = torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(2))
    latent = prepare_latent(models.vae, 17, 32, 64, first_frame=image)
    assert (latent.noise_mask[:, :, 0] == 0).all() and (latent.noise_mask[:, :, 1:] == 1).all()
    out = denoise(
        models.transformer,
        latent,
        *text,
        flow_sigmas(3, latent.num_tokens),
        3.0,
        25.0,
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(out.samples[:, :, 0], latent.samples[:, :, 0])
    assert not torch.equal(out.samples[:, :, 1:], latent.samples[:, :, 1:])


def test_a_latent_of_another_model_is_refused_by_denoise(models, text):
    latent = ConditionedLatent(torch.zeros(1, 4, 2, 1, 2))
    with pytest.raises(SettingsError, match="latent has 4 channels; this LTX-Video transformer takes 128"):
        denoise(models.transformer, latent, *text, flow_sigmas(2, 4), 3.0, 25.0, torch.Generator())


def test_text_of_another_encoders_width_is_refused_by_denoise(models):
    latent = ConditionedLatent(torch.zeros(1, 128, 2, 1, 2))
    wide = TextEmbeddings(torch.zeros(1, 4, 768), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(SettingsError, match="text embeddings are 768 wide .* takes 32"):
        denoise(models.transformer, latent, wide, None, flow_sigmas(2, 4), 1.0, 25.0, torch.Generator())


def test_causal_fix_moves_only_the_time_of_later_latent_frames():
    latent = ConditionedLatent(torch.zeros(1, 128, 3, 1, 2))
    plain, causal = token_coords(latent, 25.0, False), token_coords(latent, 25.0, True)
    assert torch.equal(plain[:, 1:], causal[:, 1:])
    torch.testing.assert_close(plain[0, 0, ::2], torch.tensor([0.0, 8 / 25, 16 / 25]))
    torch.testing.assert_close(causal[0, 0, ::2], torch.tensor([0.0, 1 / 25, 9 / 25]))  # max(8k - 7, 0)


def test_denoise_takes_the_causal_fix_from_the_transformer_config_unless_told(models, text):
    """The tiny transformer is 0.9.5-like (causal_temporal_positioning=True)."""
    assert models.transformer.cfg.causal_temporal_positioning
    latent = ConditionedLatent(torch.zeros(1, 128, 2, 1, 2))
    run = lambda fix: (
        denoise(
            models.transformer,
            latent,
            *text,
            flow_sigmas(2, 4),
            3.0,
            25.0,
            torch.Generator().manual_seed(0),
            causal_fix=fix,
        ).samples
    )
    assert torch.equal(run(None), run(True)) and not torch.equal(run(None), run(False))


def test_denoise_gives_keyframe_tokens_to_the_transformer_and_drops_them_after(models, text):
    latent = condition_on_items(models.vae, prepare_latent(models.vae, 9, 32, 64), [ConditioningItem(clip(1), 5)])
    tokens = []
    handle = models.transformer.register_forward_pre_hook(lambda mod, args: tokens.append(tuple(args[4].shape)))
    seen = []
    try:
        out = denoise(
            models.transformer,
            latent,
            *text,
            flow_sigmas(2, latent.num_tokens),
            3.0,
            25.0,
            torch.Generator().manual_seed(0),
            callback=lambda i, n, x, d: seen.append(tuple(x.shape)),
        )
    finally:
        handle.remove()
    assert tokens == [(2, 3, 2 + 4)] * 2, "coords of 2 keyframe tokens before the video's 4, for (uncond, cond)"
    assert out.samples.shape == latent.samples.shape == (1, 128, 2, 1, 2) and out.keyframes == ()
    assert seen == [(1, 128, 2, 1, 2)] * 2


def test_keyframe_coordinates_start_at_the_keyframes_pixel_frame():
    keyframe = Keyframe(torch.zeros(1, 128, 2, 1, 2), frame_index=8)
    coords = keyframe_coords(keyframe, 1, frame_rate=2.0, causal_fix=True)
    # latent frames 0, 1 of the clip start at its pixel frames 0 and 1 (causal fix): 8 and 9
    assert coords[0, 0].tolist() == [4.0, 4.0, 4.5, 4.5]


class Recorder:
    """A runner (`denoise.DirectRunner`'s interface; denoise no longer calls look-alikes of
    the model) recording the timestep shapes and the coordinate tensors of every forward."""

    def __init__(self, transformer):
        self.model = transformer
        self.timestep_shapes, self.coords = [], []

    def run(self, fn, latent, timestep, text, text_mask, coords, *extra):
        self.timestep_shapes.append(tuple(timestep.shape))
        self.coords.append(coords)
        return fn(latent, self.timesteps(timestep, latent), text, text_mask, coords, *extra)

    def timesteps(self, timestep, latent):
        return timestep


class PerTokenTimesteps(Recorder):
    """The transformer called as before the shared-timestep shortcut: one sigma per token."""

    def timesteps(self, timestep, latent):
        return timestep.expand(-1, latent.shape[1])


def denoise_small(models, transformer, text, first_frame=None, guidance=3.0):
    latent = prepare_latent(models.vae, 9, 32, 64, first_frame)
    sigmas = flow_sigmas(3, latent.num_tokens)
    negative = text[1] if guidance != 1.0 else None
    generator = torch.Generator().manual_seed(4)
    return denoise(transformer, latent, text[0], negative, sigmas, guidance, 25.0, generator).samples


@pytest.mark.parametrize(("guidance", "batch"), [(3.0, 2), (1.0, 1)])
def test_a_latent_without_conditioning_gets_one_timestep_per_video_with_identical_outputs(
    models, text, guidance, batch
):
    shared = Recorder(models.transformer)
    fast = denoise_small(models, shared, text, guidance=guidance)
    slow = denoise_small(models, PerTokenTimesteps(models.transformer), text, guidance=guidance)
    assert set(shared.timestep_shapes) == {(batch, 1)}
    assert (fast - slow).abs().max() <= SHARED_TIMESTEP_ATOL


def test_a_first_frame_condition_keeps_per_token_timesteps(models, text):
    recorder = Recorder(models.transformer)
    denoise_small(models, recorder, text, first_frame=torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(2)))
    tokens = 2 * 1 * 2  # latent frames x height x width
    assert set(recorder.timestep_shapes) == {(2, tokens)}


def test_the_coordinates_are_built_once_not_every_step(models, text):
    recorder = Recorder(models.transformer)
    denoise_small(models, recorder, text)
    assert len(recorder.coords) == 3 and all(c is recorder.coords[0] for c in recorder.coords)


# ---------------------------------------------------------------- Lightricks' defaults and options


def partial_first_frame(models, strength=0.5):
    image = torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(2))
    return prepare_latent(models.vae, 9, 32, 64, first_frame=image, strength=strength)


def test_partial_strength_tokens_follow_lightricks_held_rule_unless_told(models, text):
    """The official rule by default: a first frame at strength 0.5 sits at timestep
    min(sigma, 0.5); "scaled" (ComfyUI's sigma * 0.5) stays selectable."""
    latent = partial_first_frame(models)
    sigmas = flow_sigmas(3, latent.num_tokens)
    run = lambda **rule: (
        denoise(
            models.transformer,
            latent,
            *text,
            sigmas,
            3.0,
            25.0,
            torch.Generator().manual_seed(0),
            **rule,
        ).samples
    )
    assert torch.equal(run(), run(strength_rule="held"))
    assert not torch.equal(run(), run(strength_rule="scaled"))


def test_stochastic_denoising_is_reproducible_and_differs_from_the_deterministic_run(models, text):
    latent = prepare_latent(models.vae, 9, 32, 64)
    sigmas = flow_sigmas(3, latent.num_tokens)
    run = lambda stochastic, seed=0: (
        denoise(
            models.transformer,
            latent,
            *text,
            sigmas,
            3.0,
            25.0,
            torch.Generator().manual_seed(seed),
            stochastic=stochastic,
        ).samples
    )
    assert torch.equal(run(True), run(True)) and not torch.equal(run(True), run(True, seed=1))
    assert (run(True) - run(False)).abs().max() > 1e-3


def test_each_step_batches_and_perturbs_as_its_guidance_interval_says(models, text):
    """The dev config's shape in small: no CFG or STG at first (one item), then CFG and STG
    on block 0 (three items), then STG alone on block 1 (two items)."""
    recorder = Recorder(models.transformer)
    latent = prepare_latent(models.vae, 9, 32, 64)
    guidance = Guidance(
        cfg_scale=(1.0, 3.0, 1.0),
        stg_scale=(0.0, 1.0, 2.0),
        stg_blocks=((), (0,), (1,)),
        stg_rescale=(1.0, 0.7, 1.0),
        guidance_timesteps=(1.0, 0.9, 0.3),
        cfg_star_rescale=True,
    )
    sigmas = torch.tensor([1.0, 0.95, 0.92, 0.6, 0.0])  # intervals 0, 1, 1, 2 (the first bound at or below)
    perturbed_blocks = []
    hooks = [
        block.attn1.register_forward_hook(lambda *a, i=i: perturbed_blocks.append(i))
        for i, block in enumerate(models.transformer.transformer_blocks)
    ]
    try:
        denoise(recorder, latent, *text, sigmas, guidance, 25.0, torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
    assert [shape[0] for shape in recorder.timestep_shapes] == [1, 3, 3, 2]
    # the plain forward calls every block's attention module; the attention_values
    # replacement of a perturbed block calls its projections instead
    assert perturbed_blocks == [0, 1] + [1] * 2 + [0] * 1
