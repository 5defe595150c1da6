"""The held-out evaluation of a checkpoint (`evaluation.demo_eval`), end to end at a few
prompts and steps."""

from __future__ import annotations

import json

from ltx_core.training.evaluation import demo_eval


def test_the_demo_eval_writes_every_reading_and_its_verdicts(monkeypatch, tmp_path):
    """Each reading is counted as asked, every target has a verdict, and the strip is drawn
    where --strip says (the README's docs/demo_strip.png by default)."""
    monkeypatch.setattr(demo_eval, "STEPS", 2)
    out, strip = tmp_path / "eval.json", tmp_path / "strip.png"
    result = demo_eval.main(
        [
            "--count",
            "2",
            "--i2v-count",
            "1",
            "--vae-count",
            "1",
            "--seen-count",
            "1",
            "--first-last-count",
            "1",
            "--strip-count",
            "1",
            "--out",
            str(out),
            "--strip",
            str(strip),
        ]
    )
    assert result["counts"] == {
        "text_to_video": 2,
        "seen_combinations": 1,
        "image_to_video": 1,
        "vae": 1,
        "first_last": 1,
    }
    assert set(result["meets_targets"]) == set(demo_eval.TARGETS)
    assert set(result["text_to_video_accuracy"]) == set(demo_eval.ATTRIBUTES)
    assert json.loads(out.read_text())["meets_targets"] == result["meets_targets"]
    assert strip.stat().st_size > 0
    assert demo_eval.STRIP.parent.name == "docs" and demo_eval.STRIP.parent.parent.joinpath("README.md").exists()
