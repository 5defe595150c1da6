"""Candidates' evaluation results in one table beside the shipped model's
(`evaluation.candidate_table`)."""

from __future__ import annotations

import json
import shutil

from ltx_core.training.evaluation import candidate_table

RESULTS = candidate_table.RESULTS


def test_the_candidate_table_reads_the_targets_as_the_demo_eval_does(tmp_path):
    """For the shipped model the table's verdicts are demo_eval's own (color, motion, i2v),
    and every candidate's row comes from its own evaluation files."""
    # The committed candidate folders this test read were deleted (their history is in git,
    # their findings in docs/FINDINGS.md): the folder here holds one candidate whose files
    # are the shipped model's own results.
    shutil.copy(RESULTS / "demo_eval.json", tmp_path / "same_demo.json")
    shutil.copy(RESULTS / "first_last_eval_keyframe.json", tmp_path / "same_fl1.json")
    recipes = {"vae": "the shipped VAE", "common": "none", "candidates": {"same": {"from": "the shipped model"}}}
    (tmp_path / "recipes.json").write_text(json.dumps(recipes))
    result = candidate_table.main(["--folder", str(tmp_path), "--out", str(tmp_path / "table.json")])
    shipped_eval = json.loads((RESULTS / "demo_eval.json").read_text())["meets_targets"]
    for key in ("combos_color", "combos_motion", "i2v_first_frame_psnr_db"):
        assert result["shipped"]["meets"][key] == shipped_eval[key]
    for name, row in result["candidates"].items():
        demo = json.loads((tmp_path / f"{name}_demo.json").read_text())
        assert row["text_to_video_motion"] == demo["text_to_video_accuracy"]["motion"]
        assert row["meets"]["combos_motion"] == demo["meets_targets"]["combos_motion"]
    assert {k: v for k, v in result["candidates"]["same"].items() if k not in ("recipe", "evaluated")} == result[
        "shipped"
    ]
    assert json.loads((tmp_path / "table.json").read_text()) == json.loads(json.dumps(result))
