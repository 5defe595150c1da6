"""The evaluation of a checkpoint (`evaluation.demo_eval`), end to end at a few prompts and
steps, and its reading of swaps and shipped prompts."""

from __future__ import annotations

import json
from dataclasses import replace

from ltx_core.training import analysis, data
from ltx_core.training.evaluation import demo_eval


def test_the_demo_eval_writes_every_set_its_rates_and_its_verdicts(monkeypatch, tmp_path):
    """Each set is counted as asked, every target has a verdict, each attribute and the swap
    rate are reported per set, a table is printed, and the strip is drawn where --strip says
    (the README's docs/demo_strip.png by default)."""
    monkeypatch.setattr(demo_eval, "STEPS", 2)
    monkeypatch.setattr(demo_eval, "EXAMPLES", demo_eval.EXAMPLES[:1])
    out, strip = tmp_path / "eval.json", tmp_path / "strip.png"
    counts = ["--prompt-seeds", "1", "--count", "2", "--paraphrase-count", "1", "--example-seeds", "1"]
    counts += ["--i2v-count", "1", "--vae-count", "1", "--first-last-count", "1", "--strip-count", "1"]
    result = demo_eval.main([*counts, "--out", str(out), "--strip", str(strip)])
    prompts = len(demo_eval.shipped_prompts())
    assert result["counts"] == {
        "prompts": prompts,
        "combos": 2,
        "paraphrases": 1,
        "examples": 1,
        "image_to_video": 1,
        "vae": 1,
        "first_last": 1,
    }
    assert set(result["meets_targets"]) == set(demo_eval.TARGETS)
    for summary in result["sets"].values():
        assert set(summary) == {"count", *demo_eval.ATTRIBUTES, *demo_eval.SWAPS, "empty"}
        assert 0 <= summary["empty"] <= 1
    assert all(p["seeds"] == 1 and set(p["empty_seeds"]) <= {0} for p in result["prompts"].values())
    assert json.loads(out.read_text())["meets_targets"] == result["meets_targets"]
    assert "cpu" in result["device"] and result["date"]
    assert strip.stat().st_size > 0
    assert demo_eval.STRIP.parent.name == "docs" and demo_eval.STRIP.parent.parent.joinpath("README.md").exists()
    assert demo_eval.BENCHMARK_RESULTS in demo_eval.parse_args([]).out


def test_the_shipped_prompts_are_the_readmes_and_the_tiny_workflows():
    """Workflows of the 13B models (a fox in the snow) are not the tiny model's to draw."""
    prompts = dict(demo_eval.shipped_prompts())
    assert "A red circle slides slowly to the left over a dark blue background." in prompts
    assert any("workflows/api/t2v.json" in where for where in prompts.values())
    assert not any("fox" in p for p in prompts)


def frames_of(spec: data.ClipSpec):
    return ((data.render_clip(spec, 25, 64, 64) + 1) / 2).permute(1, 2, 3, 0)


def test_a_swapped_clip_reads_as_a_swap_and_a_right_one_does_not():
    """Asked for a red circle on dark blue, a blue circle on dark red is a swap both ways."""
    base = next(s for s in data.training_specs(1, 0, 200) if s.main.motion == "left" and s.second is None)
    asked = {"color": "red", "background": "dark blue", "shape": base.main.shape, "motion": "left", "speed": None}
    right = replace(base, main=replace(base.main, color="red"), background="dark blue")
    reading = analysis.read_clip(frames_of(right))
    assert demo_eval.score(asked, reading)["all"] and not demo_eval.swaps(asked, reading)["swap"]
    swapped = replace(base, main=replace(base.main, color="blue"), background="dark red")
    reading = analysis.read_clip(frames_of(swapped))
    assert demo_eval.swaps(asked, reading) == {
        "swap_shape_as_background": True,
        "swap_background_as_shape": True,
        "swap": True,
    }
    assert demo_eval.score(asked, reading) == {
        "color": False,
        "background": False,
        "shape": True,
        "motion": True,
        "all": False,
        "speed": None,
    }


def test_a_clip_of_the_background_alone_reads_as_empty_and_a_drawn_shape_does_not():
    spec = next(s for s in data.training_specs(1, 0, 200) if s.second is None and s.background == "dark blue")
    drawn = frames_of(spec)
    background = drawn[:, :1, :1].expand_as(drawn)  # every pixel the corner's: no shape anywhere
    rows = [{"read": analysis.read_clip(frames).__dict__} for frames in (drawn, background)]
    assert [demo_eval.empty(row) for row in rows] == [False, True]
    assert demo_eval.empty_rate(rows) == 0.5
