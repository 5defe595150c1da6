"""The DiT's training (`ltx_core.training.train_dit`), on CPU at toy sizes: timesteps,
noising, keyframes, caption dropout, weighted batches, and a loop that lowers its loss."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.training import train_dit

ATOL = 1e-6


def test_timesteps_follow_the_token_count_shift_and_keep_both_tails():
    """Paper 2.5.2: more tokens push t towards noise; the clamped pdf starves no tail."""
    gen = torch.Generator().manual_seed(0)
    few = train_dit.TimestepSampler(256).sample(20000, gen)
    many = train_dit.TimestepSampler(4096).sample(20000, gen)
    assert many.mean() > few.mean()
    assert few.min() > 0 and few.max() < 1
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
    from ltx_core.sampling.conditioning import Keyframe
    from ltx_core.sampling.denoise import keyframe_coords

    settings = train_dit.DiTTrainSettings(frame_rate=24.0)
    keyframe = torch.randn(2, 128, 1, 3, 4)
    gen = torch.Generator().manual_seed(0)
    tokens, t_k, coords = train_dit.keyframe_tokens(
        keyframe, torch.tensor([24, 9]), settings, causal_fix=True, generator=gen
    )
    for row, index in enumerate((24, 9)):
        expected = keyframe_coords(Keyframe(keyframe[row : row + 1], index), 1, 24.0, causal_fix=True)
        assert torch.allclose(coords[row : row + 1], expected)
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
        keyed = train_dit.dit_loss(
            model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1), keyframes, index
        )
    assert torch.isfinite(keyed) and not torch.isclose(plain, keyed)
    settings = replace(settings, steps=3, batch_size=2, keyframe_probability=1.0)
    state = train_dit.new_state(model.train(), settings)
    train_dit.train_dit(
        state,
        latents,
        train_dit.FixedCaptions(texts, masks, texts[:1] * 0, masks[:1]),
        settings,
        log=lambda _: None,
        keyframes=keyframes,
        keyframe_indices=index,
    )
    assert state.step == 3


def test_caption_dropout_replaces_captions_by_a_null_prompt():
    text, mask = torch.ones(64, 3, 2), torch.ones(64, 3, dtype=torch.bool)
    null, null_mask = torch.zeros(2, 3, 2), torch.zeros(2, 3, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    out, out_mask = train_dit.drop_captions(text, mask, null, null_mask, 0.5, gen)
    dropped = (out == 0).all(-1).all(-1)
    assert 10 < int(dropped.sum()) < 54
    assert not out_mask[dropped].any()


def test_the_dit_loop_lowers_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER)
    settings = train_dit.DiTTrainSettings(
        steps=60, batch_size=4, warmup_steps=5, learning_rate=3e-3, caption_dropout=0.0
    )
    latents = torch.randn(4, 128, 2, 2, 2)
    texts, masks = torch.randn(4, 5, 32), torch.ones(4, 5, dtype=torch.bool)
    sampler = train_dit.TimestepSampler(8)

    def loss() -> float:
        with torch.no_grad():
            return float(
                train_dit.dit_loss(model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1))
            )

    before = loss()
    state = train_dit.new_state(model, settings)
    captions = train_dit.FixedCaptions(texts, masks, texts[:1] * 0, masks[:1])
    train_dit.train_dit(state, latents, captions, settings, log=lambda _: None)
    assert state.step == 60
    assert loss() < 0.8 * before


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
    train_dit.train_dit(
        state,
        latents,
        train_dit.FixedCaptions(texts, masks, texts[:1] * 0, masks[:1]),
        settings,
        log=lambda _: None,
        clip_weights=torch.tensor([1.0, 0.0, 1.0]),
    )
    assert state.step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


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
    settings = train_dit.DiTTrainSettings(
        first_frame_probability=0.0, keyframe_first_frame_probability=1.0, keyframe_frame_weight=1.0
    )
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
        train_dit.dit_loss(
            model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1), keyframes, index
        )
    assert seen == [0.0, 1.0]


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
            return train_dit.dit_loss(
                model, latents, texts, masks, sampler, settings, torch.Generator().manual_seed(1), *extra
            )

    assert not torch.isclose(loss(1.0, True), loss(5.0, True))
    assert torch.equal(loss(1.0, False), loss(5.0, False))


@pytest.mark.parametrize("keyframe_probability, expected", [(1.0, 1.0), (0.0, 0.0)])
def test_keyframe_batches_take_their_own_caption_dropout(monkeypatch, keyframe_probability, expected):
    """keyframe_caption_dropout = 1 drops every caption of a keyframe batch (the keyframe is
    then the only word on how the clip ends); plain batches keep caption_dropout (0 here)."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER)
    settings = train_dit.DiTTrainSettings(
        steps=3,
        batch_size=2,
        caption_dropout=0.0,
        keyframe_probability=keyframe_probability,
        keyframe_caption_dropout=1.0,
    )
    latents, keyframes = torch.randn(2, 128, 2, 2, 2), torch.randn(2, 128, 1, 2, 2)
    texts, masks = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    seen = []
    original = train_dit.drop_captions

    def spy(text, mask, null_text, null_mask, p, generator):
        seen.append(p)
        return original(text, mask, null_text, null_mask, p, generator)

    monkeypatch.setattr(train_dit, "drop_captions", spy)
    state = train_dit.new_state(model, settings)
    train_dit.train_dit(
        state,
        latents,
        train_dit.FixedCaptions(texts, masks, texts[:1] * 0, masks[:1]),
        settings,
        log=lambda _: None,
        keyframes=keyframes,
        keyframe_indices=torch.tensor([8, 8]),
    )
    assert seen == [expected] * 3


def test_a_text_encoder_trained_beside_the_dit_moves_with_it(tmp_path):
    """`train_text.JointCaptions` as the loop's captions: the DiT's loss reaches the encoder,
    whose weights and EMA move, and the heads' loss is logged beside the DiT's."""
    from ltx_core.models.text_encoder import load_tokenizer
    from ltx_core.training import data, t5, train_text
    from ltx_core.training.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(train_tokenizer(tmp_path / "spiece.model"))
    encoder = t5.new_text_encoder(0, num_layers=1, d_model=32, d_kv=8, d_ff=64, num_heads=2)
    bank = train_text.CaptionBank.build(data.training_specs(0, 0, 3), tokenizer, 2)
    null_ids, _ = tokenizer.padded(["", "blurry"], train_text.TEXT_MAX_TOKENS)
    heads = train_text.AttributeHeads(32)
    joint = train_text.JointCaptions(encoder, heads, bank, null_ids, learning_rate=1e-3, aux_weight=0.1)
    before = encoder.encoder.block[0].layer[0].SelfAttention.q.weight.detach().clone()
    settings = train_dit.DiTTrainSettings(steps=100, batch_size=3, warmup_steps=1, ema_start_step=0)
    state = train_dit.new_state(LTXVTransformer(TINY_TRANSFORMER), settings)
    lines = []
    train_dit.train_dit(state, torch.randn(3, 128, 2, 2, 2), joint, settings, log=lines.append)
    assert not torch.equal(encoder.encoder.block[0].layer[0].SelfAttention.q.weight, before)
    assert not torch.equal(joint.ema.encoder.block[0].layer[0].SelfAttention.q.weight, before)
    assert "text heads" in lines[-1]
