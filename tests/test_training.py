"""The training code of the shipped demo model (issue 5), on CPU at toy sizes: data is a
pure function of its seed, the held-out split never reaches training, the tokenizer and
the analysis read what the data says, and each loop runs and lowers its loss."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import sentencepiece
import torch
from safetensors import safe_open

from ltx_core.configs import TINY_TRANSFORMER, TINY_VAE_0_9_1
from ltx_core.transformer import LTXVTransformer
from ltx_core.vae import CausalVideoVAE
from ltx_core.training import analysis, data, losses, train_dit, train_vae
from ltx_core.training.demo_model import DEMO_TRANSFORMER, DEMO_VAE, save_demo_checkpoint
from ltx_core.training.run_tiny import load_resume_state
from ltx_core.training.tokenizer import train_tokenizer

ATOL = 1e-6


# ---------------------------------------------------------------- data


def test_the_same_seed_and_index_give_the_same_clip_and_caption():
    """Training data and the evaluation set must be reproducible on any machine."""
    a, b = data.sample_clip_spec(3, 17), data.sample_clip_spec(3, 17)
    assert a == b and data.caption(a) == data.caption(b)
    assert torch.equal(data.render_clip(a, 9, 64, 64), data.render_clip(b, 9, 64, 64))
    assert data.sample_clip_spec(3, 18) != a


def test_held_out_combinations_never_appear_in_training_but_every_word_does():
    """A leak would make the held-out evaluation measure memory, not composition."""
    train = data.training_specs(0, 0, 2000)
    heldout = data.heldout_specs(200)
    assert not any(data.is_heldout(s.main.color, s.main.shape, s.main.motion) for s in train)
    assert not any(s.second and data.is_heldout(s.second.color, s.second.shape, s.second.motion)
                   for s in train)
    assert all(data.is_heldout(s.main.color, s.main.shape, s.main.motion) for s in heldout)
    seen = {(s.main.color, s.main.shape, s.main.motion) for s in train}
    for color in data.SHAPE_COLORS:
        assert any(c == color for c, _, _ in seen)
    for motion in data.MOTIONS:
        assert any(m == motion for _, _, m in seen)
    assert len({(s.main.color, s.main.shape, s.main.motion) for s in heldout}) == 24


def test_rendered_clips_are_in_range_and_keep_backgrounds_darker_than_shapes():
    spec = data.sample_clip_spec(0, 5)
    video = data.render_clip(spec, 9, 64, 64)
    assert video.shape == (3, 9, 64, 64)
    assert video.min() >= -1 and video.max() <= 1
    assert (video + 1).div(2).amax(0).max() > analysis.BRIGHTNESS_THRESHOLD


def test_the_analysis_reads_the_ground_truth_of_held_out_clips():
    """The evaluation's reader must be right on real clips before it judges generated ones."""
    for spec in data.heldout_specs(12):
        frames = ((data.render_clip(spec, 25, 96, 96) + 1) / 2).permute(1, 2, 3, 0)
        reading = analysis.read_clip(frames)
        assert (reading.color, reading.shape, reading.motion) == (
            spec.main.color, spec.main.shape, spec.main.motion), data.caption(spec)


def test_a_bounce_blurred_at_its_end_still_reads_as_a_bounce():
    """A decoded fast bounce can carry more bright area at its end (motion blur): its
    centroid's rise-and-return decides, not the area, which would read it as growing."""
    from dataclasses import replace as replace_spec

    spec = next(s for s in data.training_specs(3, 0, 400) if s.main.motion == "bounce" and s.main.speed == "fast")
    spec = replace_spec(spec, second=None)
    frames = ((data.render_clip(spec, 25, 128, 128) + 1) / 2).permute(1, 2, 3, 0)
    blurred = frames.clone()
    tail = blurred[-4:].permute(0, 3, 1, 2)  # (4, 3, H, W)
    blurred[-4:] = torch.nn.functional.max_pool2d(tail, 15, stride=1, padding=7).permute(0, 2, 3, 1)
    area = analysis.shape_masks(blurred).flatten(1).sum(1).float()
    assert area[-3:].mean() / area[:3].mean() > analysis.SCALE_RATIO  # the area alone says "grow"
    assert analysis.read_clip(frames).motion == "bounce"
    assert analysis.read_clip(blurred).motion == "bounce"


def test_an_empty_clip_reads_as_nothing():
    reading = analysis.read_clip(torch.zeros(9, 32, 32, 3))
    assert reading.color is None and reading.motion is None


# ---------------------------------------------------------------- tokenizer


def test_the_tokenizer_keeps_caption_words_whole_and_has_t5_special_ids(tmp_path):
    """T5's loader expects pad 0, eos 1, unk 2; whole words make the text encoder's job easy."""
    path = train_tokenizer(tmp_path / "spiece.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.encode("A red circle slides to the left", out_type=str) == [
        "▁A", "▁red", "▁circle", "▁slides", "▁to", "▁the", "▁left"]
    assert path.read_bytes() == train_tokenizer(tmp_path / "again.model").read_bytes()


# ---------------------------------------------------------------- losses


def test_the_3d_haar_transform_keeps_energy_and_splits_into_eight_bands():
    video = torch.randn(2, 3, 8, 16, 16)
    bands = losses.haar_dwt_3d(video)
    assert bands.shape == (2, 8, 3, 4, 8, 8)
    assert math.isclose(float((bands ** 2).sum()), float((video ** 2).sum()), rel_tol=1e-5)
    assert float(losses.dwt_l1_loss(video, video)) < ATOL


def test_the_discriminator_sees_both_videos_and_its_order_matters():
    """Reconstruction GAN (2.1.2): swapping original and reconstruction changes the verdict."""
    torch.manual_seed(0)
    disc = losses.PairDiscriminator(width=8)
    a, b = torch.randn(1, 3, 5, 16, 16), torch.randn(1, 3, 5, 16, 16)
    assert not torch.allclose(disc(a, b), disc(b, a))
    assert disc(a, b).shape[:2] == (1, 1)


def test_uniform_kl_is_zero_for_the_standard_normal():
    assert float(losses.uniform_kl(torch.zeros(4), torch.zeros(4))) < ATOL


# ---------------------------------------------------------------- DiT timesteps and noising


def test_timesteps_follow_the_token_count_shift_and_keep_both_tails():
    """Paper 2.5.2: more tokens push t towards noise; the clamped pdf starves no tail."""
    gen = torch.Generator().manual_seed(0)
    few = train_dit.TimestepSampler(256).sample(20000, gen)
    many = train_dit.TimestepSampler(4096).sample(20000, gen)
    assert many.mean() > few.mean()
    assert 0 < few.min() and few.max() < 1
    probs = train_dit.clamped_logit_normal_pdf(0.0)
    assert probs[0] > 0 and probs[-1] > 0
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-9)


def test_first_frame_conditioning_gives_small_timesteps_and_drops_those_tokens_from_the_loss():
    """Paper 2.4: conditioning tokens carry t_c <= max_first_frame_t and are not learned."""
    settings = train_dit.DiTTrainSettings(first_frame_probability=1.0, max_first_frame_t=0.1)
    latent = torch.randn(4, 128, 3, 2, 2)
    t = torch.full((4,), 0.9)
    gen = torch.Generator().manual_seed(0)
    x_t, per_token, target, weight = train_dit.noised_tokens(latent, t, settings, gen)
    first = slice(0, 4)  # 2 x 2 tokens of latent frame 0
    assert (per_token[:, first] <= 0.1).all() and (per_token[:, 4:] == 0.9).all()
    assert (weight[:, first] == 0).all() and (weight[:, 4:] == 1).all()
    # tokens at t = 0 are the clean latent itself
    clean = per_token[:, 0] == 0
    tokens = latent.flatten(2).transpose(1, 2)
    assert torch.allclose(x_t[clean][:, :4], tokens[clean][:, :4], atol=ATOL)
    assert target.shape == x_t.shape


def test_keyframe_tokens_sit_where_the_pipeline_puts_a_conditioning_image():
    """Training places keyframes exactly as `denoise.keyframe_coords` does at inference."""
    from ltx_core.conditioning import Keyframe
    from ltx_core.denoise import keyframe_coords
    settings = train_dit.DiTTrainSettings(frame_rate=24.0)
    keyframe = torch.randn(2, 128, 1, 3, 4)
    gen = torch.Generator().manual_seed(0)
    tokens, t_k, coords = train_dit.keyframe_tokens(keyframe, torch.tensor([24, 9]), settings,
                                                    causal_fix=True, generator=gen)
    for row, index in enumerate((24, 9)):
        expected = keyframe_coords(Keyframe(keyframe[row:row + 1], index), 1, 24.0, causal_fix=True)
        assert torch.allclose(coords[row:row + 1], expected)
    assert tokens.shape == (2, 12, 128) and t_k.shape == (2, 12)
    assert (t_k <= settings.max_first_frame_t).all()
    clean = t_k[:, 0] == 0
    assert torch.allclose(tokens[clean], keyframe[clean].flatten(2).transpose(1, 2))


def test_keyframes_are_conditioning_only_and_change_the_prediction():
    """The loss with keyframes covers the video's tokens alone, and the keyframe tokens
    reach the prediction through attention."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    settings = train_dit.DiTTrainSettings(first_frame_probability=0.0)
    latents, keyframes = torch.randn(2, 128, 2, 2, 2), torch.randn(2, 128, 1, 2, 2)
    texts, masks = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    sampler = train_dit.TimestepSampler(8)
    index = torch.tensor([8, 4])
    with torch.no_grad():
        plain = train_dit.dit_loss(model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1))
        keyed = train_dit.dit_loss(model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1),
                                   keyframes, index)
    assert torch.isfinite(keyed) and not torch.isclose(plain, keyed)
    settings = replace(settings, steps=3, batch_size=2, keyframe_probability=1.0)
    state = train_dit.new_state(model.train(), settings)
    train_dit.train_dit(state, latents, texts, masks, texts[:1] * 0, masks[:1], settings,
                        log=lambda _: None, keyframes=keyframes, keyframe_indices=index)
    assert state.step == 3


def test_caption_dropout_replaces_captions_by_a_null_prompt():
    text, mask = torch.ones(64, 3, 2), torch.ones(64, 3, dtype=torch.bool)
    null, null_mask = torch.zeros(2, 3, 2), torch.zeros(2, 3, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    out, out_mask = train_dit.drop_captions(text, mask, null, null_mask, 0.5, gen)
    dropped = (out == 0).all(-1).all(-1)
    assert 10 < int(dropped.sum()) < 54
    assert not out_mask[dropped].any()


# ---------------------------------------------------------------- loops


def test_the_dit_loop_lowers_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER)
    settings = train_dit.DiTTrainSettings(steps=60, batch_size=4, warmup_steps=5, learning_rate=3e-3,
                                          caption_dropout=0.0)
    latents = torch.randn(4, 128, 2, 2, 2)
    texts, masks = torch.randn(4, 5, 32), torch.ones(4, 5, dtype=torch.bool)
    sampler = train_dit.TimestepSampler(8)

    def loss() -> float:
        with torch.no_grad():
            return float(train_dit.dit_loss(model, latents, texts, masks, sampler, settings,
                                            torch.Generator().manual_seed(1)))
    before = loss()
    state = train_dit.new_state(model, settings)
    train_dit.train_dit(state, latents, texts, masks, texts[:1] * 0, masks[:1], settings,
                        log=lambda _: None)
    assert state.step == 60
    assert loss() < 0.8 * before


def test_the_vae_loop_runs_with_every_loss_and_tracks_latent_statistics():
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    settings = train_vae.VAETrainSettings(steps=4, batch_size=1, num_frames=9, height=64, width=64,
                                          crop=32, warmup_steps=1, gan_start_fraction=0.5)
    state = train_vae.new_state(vae, settings)
    train_vae.train_vae(state, settings, log=lambda _: None)
    assert state.step == 4
    assert "gan" in state.log[-1] and "dwt" in state.log[-1]
    std = vae.per_channel_statistics.get_buffer("std-of-means")
    assert not torch.allclose(std, torch.ones_like(std))


def test_the_exported_file_has_the_official_layout_and_metadata(tmp_path):
    """Every loader reads the shipped file like the real thing: prefixes and `config` JSON."""
    torch.manual_seed(0)
    path = save_demo_checkpoint(LTXVTransformer(DEMO_TRANSFORMER), CausalVideoVAE(DEMO_VAE),
                                tmp_path / "tiny.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        config = json.loads(f.metadata()["config"])
        assert f.get_tensor("model.diffusion_model.patchify_proj.weight").dtype == torch.bfloat16
    assert "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" in keys
    assert config["transformer"]["num_layers"] == DEMO_TRANSFORMER.num_layers
    assert config["vae"]["timestep_conditioning"] is True
    assert path.stat().st_size < 16 * 2**20


def test_a_later_session_resumes_from_the_exported_single_file(tmp_path):
    """Training can go on across sessions from the shipped file (bf16-rounded weights)."""
    torch.manual_seed(0)
    transformer, vae = LTXVTransformer(DEMO_TRANSFORMER), CausalVideoVAE(DEMO_VAE)
    path = save_demo_checkpoint(transformer, vae, tmp_path / "tiny.safetensors")
    torch.manual_seed(1)
    resumed_dit, resumed_vae = LTXVTransformer(DEMO_TRANSFORMER), CausalVideoVAE(DEMO_VAE)
    assert load_resume_state(resumed_dit, "dit_ema", path)
    assert load_resume_state(resumed_vae, "vae", path)
    for a, b in ((transformer, resumed_dit), (vae, resumed_vae)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x.to(torch.bfloat16).float(), y), name


SHIPPED = ["ltxv-tiny.safetensors", "t5-tiny/model.safetensors", "t5-tiny/spiece.model"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_assets_stay_under_the_package_limits(name):
    from ltx_core.training.demo_model import ASSETS
    path = ASSETS / name
    if not path.exists():
        pytest.skip(f"{name} not shipped in this checkout")
    assert path.stat().st_size < 16 * 2**20
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 30_000_000


def test_decoder_only_training_keeps_the_latent_space_the_dit_was_trained_on():
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    encoder_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    stats_before = {k: v.clone() for k, v in vae.per_channel_statistics.state_dict().items()}
    settings = train_vae.VAETrainSettings(steps=3, batch_size=1, num_frames=9, height=64, width=64,
                                          crop=32, warmup_steps=1, train_encoder=False,
                                          first_frame_weight=1.0, last_frame_weight=1.0)
    state = train_vae.new_state(vae, settings)
    train_vae.train_vae(state, settings, log=lambda _: None)
    for k, v in vae.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    for k, v in vae.per_channel_statistics.state_dict().items():
        assert torch.equal(v, stats_before[k]), k
    assert any(not torch.equal(v, decoder_before[k]) for k, v in vae.decoder.state_dict().items())
    assert "mse0" in state.log[-1] and "mse_last" in state.log[-1]


def test_training_latents_carry_one_encoded_keyframe_per_clip_only_when_asked():
    from ltx_core.training.run_tiny import build_latents
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    size = dict(num_frames=9, height=64, width=64)
    latents, captions, keyframes, indices = build_latents(vae, 3, seed=1, size=size, device=torch.device("cpu"))
    assert latents.shape[:3] == (3, 128, 2) and len(captions) == 3
    assert keyframes.shape == (3, 128, 1, *latents.shape[3:])
    assert ((indices >= 1) & (indices <= 8)).all()
    plain = build_latents(vae, 3, seed=1, size=size, device=torch.device("cpu"), keyframes=False)
    assert plain[2] is None and plain[3] is None and torch.equal(plain[0], latents)


def test_a_later_call_can_train_on_clips_no_earlier_call_saw():
    """--clip-start: the latents of clips N.. of the stream, the same clips whatever the batch."""
    from ltx_core.training.run_tiny import build_latents
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    size = dict(num_frames=9, height=64, width=64)
    first, _, _, _ = build_latents(vae, 5, seed=1, size=size, device=torch.device("cpu"), keyframes=False)
    later, captions, _, _ = build_latents(vae, 3, seed=1, size=size, device=torch.device("cpu"),
                                          batch=2, keyframes=False, first=2)
    assert captions == [data.caption(s) for s in data.training_specs(1, 2, 3)]
    torch.testing.assert_close(later, first[2:], atol=1e-2, rtol=0)  # bf16 latents


# ---------------------------------------------------------------- oversampling a motion


def test_batches_draw_clips_in_proportion_to_their_weights():
    gen = torch.Generator().manual_seed(0)
    uniform = train_dit.draw_batch(10, 4000, gen)
    assert uniform.min() >= 0 and uniform.max() <= 9 and len(uniform.unique()) == 10
    only_two = train_dit.draw_batch(10, 64, gen, torch.tensor([0.0, 0, 1, 0, 0, 0, 0, 0, 0, 0]))
    assert (only_two == 2).all()
    skewed = train_dit.draw_batch(2, 8000, gen, torch.tensor([3.0, 1.0]))
    assert 0.72 < float((skewed == 0).float().mean()) < 0.78  # 3 : 1


def test_the_dit_loop_draws_only_weighted_clips():
    """With weight on one clip, every batch is that clip: the loop trains on it alone."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER)
    settings = train_dit.DiTTrainSettings(steps=2, batch_size=3, caption_dropout=0.0)
    latents = torch.randn(3, 128, 2, 2, 2)
    latents[1] = float("nan")  # never drawn, else the loss (and the weights) would be NaN
    texts, masks = torch.randn(3, 5, 32), torch.ones(3, 5, dtype=torch.bool)
    state = train_dit.new_state(model, settings)
    train_dit.train_dit(state, latents, texts, masks, texts[:1] * 0, masks[:1], settings,
                        log=lambda _: None, clip_weights=torch.tensor([1.0, 0.0, 1.0]))
    assert state.step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_oversampling_is_named_by_motion_and_checked():
    from ltx_core.training.run_tiny import motion_weights, parse_args, parse_oversample

    assert parse_oversample(["bounce=3", "left=0.5"]) == {"bounce": 3.0, "left": 0.5}
    specs = data.training_specs(7, 0, 64)
    weights = motion_weights(specs, {"bounce": 3.0})
    assert [w == 3.0 for w in weights.tolist()] == [s.main.motion == "bounce" for s in specs]
    assert motion_weights(specs, {}) is None
    for bad, words in (("hop=3", "motion must be one of"), ("bounce=0", "factor above 0"),
                       ("bounce", "factor above 0"), ("bounce=x", "factor above 0"),
                       ("bounce=inf", "factor above 0")):
        with pytest.raises(SystemExit, match=words) as error:
            parse_args(["--out", "x", "--dit-oversample", bad])
        assert bad in str(error.value)


def test_the_keyframes_latent_frame_carries_the_keyframe_loss_weight():
    """Pixel frame 0 is latent frame 0; latent frame i > 0 holds pixel frames 8i-7 .. 8i."""
    weights = train_dit.keyframe_frame_weights((4, 128, 4, 2, 3), torch.tensor([24, 17, 16, 1]), 3.0)
    frames = weights.view(4, 4, 6)  # (B, f, h w)
    assert [int(frames[row].eq(3.0).all(-1).nonzero()) for row in range(4)] == [3, 3, 2, 1]
    assert int(weights.eq(3.0).sum()) == 4 * 6 and int(weights.eq(1.0).sum()) == 4 * 3 * 6


def test_keyframe_batches_can_give_the_first_frame_more_often(monkeypatch):
    """keyframe_first_frame_probability = 1 conditions frame 0 in every keyframe batch (its
    tokens leave the loss); plain batches keep first_frame_probability."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    settings = train_dit.DiTTrainSettings(first_frame_probability=0.0, keyframe_first_frame_probability=1.0,
                                          keyframe_frame_weight=1.0)
    latents, keyframes = torch.randn(2, 128, 2, 2, 2), torch.randn(2, 128, 1, 2, 2)
    texts, masks = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    sampler, index = train_dit.TimestepSampler(8), torch.tensor([8, 8])
    seen = []
    original = train_dit.noised_tokens

    def spy(latent, t, used, generator):
        seen.append(used.first_frame_probability)
        return original(latent, t, used, generator)

    monkeypatch.setattr(train_dit, "noised_tokens", spy)
    with torch.no_grad():
        train_dit.dit_loss(model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1))
        train_dit.dit_loss(model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1),
                           keyframes, index)
    assert seen == [0.0, 1.0]


@pytest.mark.parametrize("flag, value, words", [
    ("--keyframe-probability", "1.5", "share in \\[0, 1\\]"),
    ("--keyframe-first-frame-probability", "-0.1", "share in \\[0, 1\\]"),
    ("--keyframe-caption-dropout", "1.5", "share in \\[0, 1\\]"),
    ("--keyframe-loss-weight", "0", "weight above 0"),
    ("--keyframe-loss-weight", "nan", "weight above 0"),
    ("--clip-start", "-1", "0 or more"),
])
def test_training_settings_out_of_range_are_refused(flag, value, words):
    from ltx_core.training.run_tiny import parse_args

    with pytest.raises(SystemExit, match=words) as error:
        parse_args(["--out", "x", flag, value])
    assert flag in str(error.value) and value in str(error.value)


def test_the_keyframe_loss_weight_changes_the_loss_of_keyframe_batches_only():
    """keyframe_frame_weight reaches `dit_loss`: the same draws weighted 1 and 5 give other
    losses with a keyframe, and the same loss without one."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    latents, keyframes = torch.randn(2, 128, 2, 2, 2), torch.randn(2, 128, 1, 2, 2)
    texts, masks = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    sampler, index = train_dit.TimestepSampler(8), torch.tensor([8, 8])

    def loss(weight, keyed):
        settings = train_dit.DiTTrainSettings(first_frame_probability=0.0, keyframe_frame_weight=weight)
        extra = (keyframes, index) if keyed else ()
        with torch.no_grad():
            return train_dit.dit_loss(model, latents, texts, masks, sampler, settings,
                                      torch.Generator().manual_seed(1), *extra)

    assert not torch.isclose(loss(1.0, True), loss(5.0, True))
    assert torch.equal(loss(1.0, False), loss(5.0, False))


@pytest.mark.parametrize("keyframe_probability, expected", [(1.0, 1.0), (0.0, 0.0)])
def test_keyframe_batches_take_their_own_caption_dropout(monkeypatch, keyframe_probability, expected):
    """keyframe_caption_dropout = 1 drops every caption of a keyframe batch (the keyframe is
    then the only word on how the clip ends); plain batches keep caption_dropout (0 here)."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER)
    settings = train_dit.DiTTrainSettings(steps=3, batch_size=2, caption_dropout=0.0,
                                          keyframe_probability=keyframe_probability,
                                          keyframe_caption_dropout=1.0)
    latents, keyframes = torch.randn(2, 128, 2, 2, 2), torch.randn(2, 128, 1, 2, 2)
    texts, masks = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    seen = []
    original = train_dit.drop_captions

    def spy(text, mask, null_text, null_mask, p, generator):
        seen.append(p)
        return original(text, mask, null_text, null_mask, p, generator)

    monkeypatch.setattr(train_dit, "drop_captions", spy)
    state = train_dit.new_state(model, settings)
    train_dit.train_dit(state, latents, texts, masks, texts[:1] * 0, masks[:1], settings, log=lambda _: None,
                        keyframes=keyframes, keyframe_indices=torch.tensor([8, 8]))
    assert seen == [expected] * 3
