"""First + last frame conditioning and the VAE's bounds (`evaluation.first_last_eval`)."""

from __future__ import annotations

import json

import pytest

from ltx_core.checkpoint.loading import load_checkpoint
from ltx_core.pipeline import Request
from ltx_core.training import data
from ltx_core.training.evaluation import first_last_eval
from ltx_core.training.evaluation.first_last_eval import clip_round_trip, ground_truth, psnr


def test_the_first_last_eval_reads_its_target_with_its_stated_settings(tmp_path):
    """--keyframe-settings runs both conditioned generations and the VAE bound with no CFG and
    a plain decode, and says so in the results; without it the pipeline's defaults hold."""
    result = first_last_eval.main(
        ["--count", "1", "--steps", "2", "--keyframe-settings", "--out", str(tmp_path / "kf.json")]
    )
    assert json.loads((tmp_path / "kf.json").read_text())["settings"]["decode_timestep"] == 0.0
    assert {k: result["settings"][k] for k in first_last_eval.KEYFRAME_SETTINGS} == first_last_eval.KEYFRAME_SETTINGS
    _, vae, _ = load_checkpoint(first_last_eval.DEMO_CHECKPOINT)
    truth = ground_truth(data.heldout_specs(1)[0])
    plain = psnr(clip_round_trip(vae, truth, 0.0, first_last_eval.seeded(0))[-1], truth[-1])
    # the same weights and the same seeded decoder noise: the same bound
    assert result["rows"][0]["vae_clip_last_db"] == pytest.approx(plain, abs=1e-4)
    default = first_last_eval.main(["--count", "1", "--steps", "2", "--out", str(tmp_path / "d.json")])
    assert default["settings"]["guidance_scale"] == Request.guidance_scale
    assert default["settings"]["decode_timestep"] == Request.decode_timestep
    assert abs(default["rows"][0]["vae_clip_last_db"] - plain) > 1e-3  # the same settings agree to 1e-4
