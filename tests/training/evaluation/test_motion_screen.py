"""Many-prompt text-to-video readings of several checkpoints (`evaluation.motion_screen`)."""

from __future__ import annotations

import json

import pytest

from ltx_core.training import captions, data
from ltx_core.training.evaluation import demo_eval, motion_screen


def test_the_motion_screen_reads_demo_evals_prompts_from_start_on(monkeypatch, tmp_path, capsys):
    """motion_screen reads held-out prompts start.. (demo_eval's own, in its order) and
    validation prompts of demo_eval's seen stream, and writes per-model accuracy."""
    read_prompts = []
    real = demo_eval.eval_text_to_video

    def recording(models, specs, keep=0):
        read_prompts.append([captions.caption(s) for s in specs])
        return real(models, specs, keep)

    monkeypatch.setattr(demo_eval, "eval_text_to_video", recording)
    monkeypatch.setattr(demo_eval, "STEPS", 2)
    checkpoint = demo_eval.DEMO_CHECKPOINT
    result = motion_screen.main([str(checkpoint), "--start", "1", "--count", "2", "--out", str(tmp_path / "s.json")])
    assert read_prompts[0] == [captions.caption(s) for s in data.heldout_specs(3)[1:]]
    seen = demo_eval.single_shape_specs(demo_eval.SEEN_SEED, 3)[1:]
    assert read_prompts[1] == [captions.caption(s) for s in seen]
    model = result["models"][checkpoint.stem]
    assert model["heldout"]["count"] == model["validation"]["count"] == 2
    assert set(model["heldout"]["accuracy"]) == set(demo_eval.ATTRIBUTES)
    assert json.loads((tmp_path / "s.json").read_text())["settings"]["start"] == 1
    only = motion_screen.main([str(checkpoint), "--count", "1", "--heldout-only", "--out", str(tmp_path / "h.json")])
    assert "validation" not in only["models"][checkpoint.stem]
    with pytest.raises(SystemExit):
        motion_screen.main([str(checkpoint), "--start", "-1", "--out", str(tmp_path / "x.json")])
    assert "--start -1" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
