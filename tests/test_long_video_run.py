"""A long video from a request and from the command line (`long_video_run`): pixel-frame
windows and overlaps to latent ones, prompt segments to the windows that start under
them, the whole clip's frames decoded; flags that cannot make a long video refused before
torch."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from ltx_core import cli
from ltx_core.errors import SettingsError
from ltx_core.long_video_run import generate_long, segment_windows, window_sizes
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.pipeline import Models, Request

from .fixtures_checkpoints import write_official_single_file


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


def test_windows_and_segments_in_pixel_frames():
    assert window_sizes(17, 8) == (3, 1) and window_sizes(121, 24) == (16, 3)
    # windows starting at latent frames 0, 2, 4: pixel frames 0, 16, 32
    assert segment_windows([(0, "a"), (20, "b")], [0, 2, 4], 41) == [(0, "a"), (2, "b")]
    assert segment_windows([(0, "a"), (16, "b"), (17, "c")], [0, 2, 4], 41) == [(0, "a"), (1, "b"), (2, "c")]
    assert segment_windows([(0, "a"), (8, "b"), (12, "c")], [0, 2, 4], 41) == [(0, "a"), (1, "c")]
    with pytest.raises(SettingsError, match="window frames 16 .*8k"):
        window_sizes(16, 8)
    with pytest.raises(SettingsError, match="window overlap 12 frames is not allowed; allowed: a multiple of 8"):
        window_sizes(17, 12)
    with pytest.raises(SettingsError, match="prompt segment at frame 50 lies outside the 41 frames"):
        segment_windows([(0, "a"), (50, "b")], [0, 2], 41)


def test_a_long_request_gives_the_whole_clip_and_its_segments_change_it(models):
    request = Request(prompt="a red fox", width=64, height=32, num_frames=33, steps=2, seed=4)
    settings = dict(window_frames=17, overlap_frames=8)
    one_prompt = generate_long(models, request, **settings)
    assert one_prompt.shape == (33, 32, 64, 3) and torch.isfinite(one_prompt).all()
    changed = generate_long(models, request, [(16, "a blue whale")], **settings)
    assert not torch.equal(changed, one_prompt), "the second window takes the segment's prompt"
    from ltx_core.sampling.conditioning import ConditioningItem

    keyframe = ConditioningItem(torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(2)), 24)
    held = generate_long(models, Request(**{**request.__dict__, "conditions": (keyframe,)}), **settings)
    assert held.shape == one_prompt.shape and not torch.equal(held, one_prompt), "the keyframe guides its windows"
    for item, message in (
        (ConditioningItem(torch.rand(9, 32, 64, 3), 8), "a long video's keyframe is a clip of 9 frames"),
        (ConditioningItem(torch.rand(32, 64, 3), 0), "a long video's keyframe is an image at frame 0"),
    ):
        with pytest.raises(SettingsError, match=message):
            generate_long(models, Request(**{**request.__dict__, "conditions": (item,)}), **settings)


def test_the_command_line_runs_a_long_video_and_refuses_what_it_cannot_combine(
    capsys, monkeypatch, tmp_path, tiny_t5_folder
):
    checkpoint = write_official_single_file(tmp_path / "tiny.safetensors", "0.9.1")
    written = []
    monkeypatch.setattr(cli, "write_mp4", lambda frames, *a, **k: written.append(frames))
    base = ["generate", "--prompt", "a fox", "--checkpoint", str(checkpoint), "--text-encoder", str(tiny_t5_folder),
            "--output", str(tmp_path / "o.mp4"), "--device", "cpu", "--width", "32", "--height", "32", "--steps", "1"]  # fmt: skip
    code = cli.main([*base, "--frames", "41", "--window-frames", "17", "--window-overlap", "8",
                     "--prompt-segment", "24:a whale"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert written[-1].shape == (41, 32, 32, 3)
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "k.png")
    (tmp_path / "k.mp4").write_bytes(b"")
    code = cli.main([*base, "--frames", "41", "--window-frames", "17", "--window-overlap", "8",
                     "--condition", f"{tmp_path / 'k.png'}@-1", "--overwrite"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert written[-1].shape == (41, 32, 32, 3)
    for flags, message in (
        (["--frames", "17", "--window-frames", "17"], "is not shorter than the clip's 17 frames"),
        (["--frames", "41", "--prompt-segment", "8:x"], "--prompt-segment needs --window-frames"),
        (
            ["--frames", "41", "--window-frames", "17", "--condition", f"{tmp_path / 'k.png'}@0"],
            "--condition at frame 0 does not combine with --window-frames",
        ),
        (
            ["--frames", "41", "--window-frames", "17", "--condition", f"{tmp_path / 'k.mp4'}@8"],
            "--condition with a clip does not combine with --window-frames",
        ),
    ):
        assert cli.main([*base, *flags]) == 2
        assert message in capsys.readouterr().err


def test_a_multi_scale_long_video_runs_both_passes_window_by_window(models, monkeypatch):
    """The first pass's windows at 2/3 of the size, the whole latent upsampled, the second
    pass's windows at twice the first's, starting from it; frames of the asked size."""
    from ltx_core import long_video_run
    from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER

    from .test_multiscale import SETTINGS, SMALL, random_upsampler

    passes = []
    sample = long_video_run.generate_long_latent

    def recorded(*args, **kwargs):
        latent = sample(*args, **kwargs)
        passes.append((tuple(args[1]), kwargs["start_latent"], latent))
        return latent

    monkeypatch.setattr(long_video_run, "generate_long_latent", recorded)
    request = Request(**{**SMALL, "num_frames": 33})
    frames = generate_long(models, request, [(16, "a blue whale")], window_frames=17, overlap_frames=8,
                           upsampler=random_upsampler(TINY_SPATIAL_UPSAMPLER), multi_scale=SETTINGS)  # fmt: skip
    assert frames.shape == (33, 64, 96, 3) and torch.isfinite(frames).all() and frames.std() > 0.01
    (first_shape, first_start, first), (second_shape, second_start, _) = passes
    assert first_shape == (1, 128, 5, 1, 1) and first_start is None
    assert second_shape == (1, 128, 5, 2, 2) and second_start.shape == second_shape
    assert not torch.equal(second_start, torch.zeros_like(second_start))


@pytest.mark.parametrize("multi_scale", [False, True], ids=["one pass", "multi-scale"])
def test_a_one_shot_long_video_gives_the_same_frames_and_frees_the_text_encoder_and_transformer(models, multi_scale):
    """The command line's one video (`Models.one_shot`): every window of every pass samples
    before the transformer leaves the device; the frames are those of models kept for reuse."""
    from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER

    from .test_multiscale import SETTINGS, SMALL, random_upsampler

    request = Request(**{**SMALL, "num_frames": 33, "steps": 2})
    settings = dict(window_frames=17, overlap_frames=8)
    if multi_scale:
        settings.update(upsampler=random_upsampler(TINY_SPATIAL_UPSAMPLER), multi_scale=SETTINGS)
    kept = generate_long(models, request, [(16, "a blue whale")], **settings)
    once = replace(copy.deepcopy(models), one_shot=True)
    assert torch.equal(generate_long(once, request, [(16, "a blue whale")], **settings), kept)
    for released in (once.transformer, once.text_encoder.model):
        assert {p.device.type for p in released.parameters()} == {"meta"}


def test_stochastic_steps_reach_every_window_of_each_pass(models, monkeypatch):
    """The request's stochastic steps (the shipped model's default) sample the windows of a
    one-pass long video; in a multi-scale one each pass takes its own setting."""
    from ltx_core import long_video_run
    from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER

    from .test_multiscale import SETTINGS, SMALL, random_upsampler

    seen = []
    sample = long_video_run.generate_long_latent
    monkeypatch.setattr(
        long_video_run, "generate_long_latent", lambda *a, **k: seen.append(k["stochastic"]) or sample(*a, **k)
    )
    request = Request(prompt="a red fox", width=64, height=32, num_frames=33, steps=2, seed=4)
    settings = dict(window_frames=17, overlap_frames=8)
    plain = generate_long(models, request, **settings)
    stochastic = generate_long(models, replace(request, stochastic_sampling=True), **settings)
    assert seen == [False, True] and not torch.allclose(plain, stochastic, atol=1e-3)

    seen.clear()
    second = replace(SETTINGS.second_pass, stochastic_sampling=True)
    generate_long(models, Request(**{**SMALL, "num_frames": 33}), window_frames=17, overlap_frames=8,
                  upsampler=random_upsampler(TINY_SPATIAL_UPSAMPLER),
                  multi_scale=replace(SETTINGS, second_pass=second))  # fmt: skip
    assert seen == [False, True]
