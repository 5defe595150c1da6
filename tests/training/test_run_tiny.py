"""One training call (`ltx_core.training.run_tiny`): resuming from the shipped file,
training latents, and its options checked before any GPU work."""

from __future__ import annotations

import pytest
import torch

from ltx_core.models.configs import TINY_VAE_0_9_1
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.training import captions, data
from ltx_core.training.demo_model import DEMO_TRANSFORMER, DEMO_VAE, save_demo_checkpoint
from ltx_core.training.run_tiny import load_resume_state


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
    later, texts, _, _ = build_latents(
        vae, 3, seed=1, size=size, device=torch.device("cpu"), batch=2, keyframes=False, first=2
    )
    assert texts == [captions.caption(s) for s in data.training_specs(1, 2, 3)]
    torch.testing.assert_close(later, first[2:], atol=1e-2, rtol=0)  # bf16 latents


def test_oversampling_is_named_by_motion_or_background_and_checked():
    from ltx_core.training.data import oversample_weights
    from ltx_core.training.run_tiny import parse_args, parse_oversample

    assert parse_oversample(["bounce=3", "left=0.5"]) == {"bounce": 3.0, "left": 0.5}
    assert parse_oversample(["light=2", "white=1.5"]) == {"light": 2.0, "white": 1.5}
    specs = data.training_specs(7, 0, 64)
    weights = oversample_weights(specs, {"bounce": 3.0})
    assert [w == 3.0 for w in weights.tolist()] == [s.main.motion == "bounce" for s in specs]
    assert oversample_weights(specs, {}) is None
    # a light background gets its factor, a white one both (white is light), a bounce on it all three
    weights = oversample_weights(specs, {"light": 2.0, "white": 1.5, "bounce": 3.0})
    for spec, got in zip(specs, weights.tolist()):
        light = not data.is_dark(spec.background)
        expected = (2.0 if light else 1.0) * (1.5 if spec.background == "white" else 1.0)
        expected *= 3.0 if spec.main.motion == "bounce" else 1.0
        assert got == pytest.approx(expected), spec
    assert {data.is_dark(s.background) for s in specs} == {True, False}  # both kinds drawn
    for bad, words in (
        ("hop=3", "class must be one of"),
        ("pink=2", "class must be one of"),  # a shape color, not a background
        ("bounce=0", "factor above 0"),
        ("light", "factor above 0"),
        ("bounce=x", "factor above 0"),
        ("bounce=inf", "factor above 0"),
    ):
        with pytest.raises(SystemExit, match=words) as error:
            parse_args(["--out", "x", "--dit-oversample", bad])
        assert bad in str(error.value)


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--keyframe-probability", "1.5", "share in \\[0, 1\\]"),
        ("--keyframe-first-frame-probability", "-0.1", "share in \\[0, 1\\]"),
        ("--keyframe-caption-dropout", "1.5", "share in \\[0, 1\\]"),
        ("--keyframe-loss-weight", "0", "weight above 0"),
        ("--keyframe-loss-weight", "nan", "weight above 0"),
        ("--clip-start", "-1", "0 or more"),
        ("--caption-variants", "0", "1 or more"),
        ("--text-lr", "nan", "0 or more"),
        ("--text-aux-weight", "inf", "0 or more"),
    ],
)
def test_training_settings_out_of_range_are_refused(flag, value, words):
    from ltx_core.training.run_tiny import parse_args

    with pytest.raises(SystemExit, match=words) as error:
        parse_args(["--out", "x", flag, value])
    assert flag in str(error.value) and value in str(error.value)


def test_the_deadline_cuts_the_dits_budget_to_end_the_call_in_time(tmp_path):
    from ltx_core.training.run_tiny import EXPORT_RESERVE_S, Log, dit_budget, parse_args

    log = Log(tmp_path / "log.txt")
    assert dit_budget(parse_args(["--out", "x", "--dit-seconds", "300"]), log) == 300
    cut = dit_budget(parse_args(["--out", "x", "--dit-seconds", "300", "--deadline-seconds", "100"]), log)
    assert 100 - EXPORT_RESERVE_S - 5 < cut <= 100 - EXPORT_RESERVE_S
    assert "cut to" in (tmp_path / "log.txt").read_text()
    late = dit_budget(parse_args(["--out", "x", "--deadline-seconds", "10"]), log)
    assert late == 0


def test_one_call_trains_a_new_text_encoder_with_the_dit_and_exports_both(tmp_path):
    """The whole call at toy sizes and second budgets: the checkpoint, the T5 folder the core
    loads, the log; no resume shards when asked."""
    from ltx_core.models.text_encoder import load_text_encoder
    from ltx_core.training.run_tiny import main

    out = tmp_path / "out"
    main(
        ["--out", str(out), "--device", "cpu", "--new-text-encoder", "--train-text-encoder", "--skip-vae"]
        + ["--text-pretrain-seconds", "1", "--text-pretrain-batch", "4", "--text-check-count", "2"]
        + ["--dit-seconds", "2", "--dit-batch", "2", "--clips", "4", "--caption-variants", "2"]
        + ["--height", "64", "--width", "64", "--frames", "9", "--no-resume-shards"]
    )  # fmt: skip
    assert (out / "ltxv-tiny.safetensors").is_file() and not list(out.glob("resume.*"))
    encoder = load_text_encoder(out / "t5-tiny")
    assert encoder.width == 256
    log = (out / "train_log.txt").read_text()
    assert "text encoder trained alone" in log and "after the DiT (EMA)" in log and "saved t5-tiny" in log
