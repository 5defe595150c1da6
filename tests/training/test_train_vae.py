"""The VAE's training (`ltx_core.training.train_vae`), on CPU at toy sizes."""

from __future__ import annotations

import torch

from ltx_core.models.configs import TINY_VAE_0_9_1
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.training import analysis, data, train_vae


def test_the_vae_loop_runs_with_every_loss_and_tracks_latent_statistics():
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    settings = train_vae.VAETrainSettings(
        steps=4, batch_size=1, num_frames=9, height=64, width=64, crop=32, warmup_steps=1, gan_start_fraction=0.5
    )
    state = train_vae.new_state(vae, settings)
    train_vae.train_vae(state, settings, log=lambda _: None)
    assert state.step == 4
    assert "gan" in state.log[-1] and "dwt" in state.log[-1]
    std = vae.per_channel_statistics.get_buffer("std-of-means")
    assert not torch.allclose(std, torch.ones_like(std))


def test_decoder_only_training_keeps_the_latent_space_the_dit_was_trained_on():
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1)
    encoder_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    stats_before = {k: v.clone() for k, v in vae.per_channel_statistics.state_dict().items()}
    settings = train_vae.VAETrainSettings(
        steps=3,
        batch_size=1,
        num_frames=9,
        height=64,
        width=64,
        crop=32,
        warmup_steps=1,
        train_encoder=False,
        first_frame_weight=1.0,
        last_frame_weight=1.0,
    )
    state = train_vae.new_state(vae, settings)
    train_vae.train_vae(state, settings, log=lambda _: None)
    for k, v in vae.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    for k, v in vae.per_channel_statistics.state_dict().items():
        assert torch.equal(v, stats_before[k]), k
    assert any(not torch.equal(v, decoder_before[k]) for k, v in vae.decoder.state_dict().items())
    assert "mse0" in state.log[-1] and "mse_last" in state.log[-1]


def test_shape_crops_hold_the_shape_where_crops_anywhere_mostly_miss_it():
    """128-pixel crops of 256-pixel clips: placed to hold the shape's start, every clip's
    first frame shows the shape; placed anywhere, some show background alone."""
    settings = train_vae.VAETrainSettings(batch_size=24, num_frames=1, crop=128, shape_crop_probability=1.0)

    def shown(settings: train_vae.VAETrainSettings) -> int:
        video = train_vae.training_videos(0, settings, torch.device("cpu"))  # (B, 3, F, H, W) in [-1, 1]
        assert video.shape[-2:] == (128, 128)
        frames = (video[:, :, :1].permute(0, 2, 3, 4, 1) + 1) / 2  # (B, 1, H, W, 3)
        return sum(int(analysis.shape_masks(clip).sum() > 0) for clip in frames)

    assert shown(settings) == settings.batch_size
    assert shown(train_vae.VAETrainSettings(batch_size=24, num_frames=1, crop=128)) < settings.batch_size


def test_a_shape_crop_holds_the_start_center_on_the_32_pixel_grid():
    settings = train_vae.VAETrainSettings(height=256, width=320, crop=128)
    gen = torch.Generator().manual_seed(0)
    for spec in data.training_specs(3, 0, 200):
        top, left = train_vae.crop_corner(settings, gen, spec.main)
        assert top % 32 == 0 and left % 32 == 0 and top + 128 <= 256 and left + 128 <= 320
        assert top <= int(spec.main.y * 256) < top + 128 and left <= int(spec.main.x * 320) < left + 128
