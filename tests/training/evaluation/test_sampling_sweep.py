"""Choosing the sampling defaults on validation prompts (`evaluation.sampling_sweep`)."""

from __future__ import annotations

import json

from ltx_core.training import data
from ltx_core.training.evaluation import sampling_sweep


def test_sweep_setting_syntax():
    assert sampling_sweep.parse_setting("3.0") == {
        "guidance_scale": 3.0,
        "stg_scale": 0.0,
        "stg_blocks": (),
        "steps": 20,
        "shift": None,
    }
    assert sampling_sweep.parse_setting("4.5:1.0@3x30") == {
        "guidance_scale": 4.5,
        "stg_scale": 1.0,
        "stg_blocks": (3,),
        "steps": 30,
        "shift": None,
    }
    assert sampling_sweep.parse_setting("3.0s4x25")["shift"] == 4.0


def test_a_fixed_shift_replaces_the_token_count_one():
    """shift / (shift + 1 / sigma - 1) of the unshifted steps, then stretched to the terminal
    sigma: the larger the shift, the more steps at high noise."""
    from types import SimpleNamespace

    from ltx_core.models.configs import LTXV_SCHEDULER

    models = SimpleNamespace(scheduler=LTXV_SCHEDULER)
    plain, shifted = (sampling_sweep.fixed_shift_sigmas(models, 10, shift) for shift in (1.0, 4.0))
    assert len(plain) == len(shifted) == 11 and plain[0] == shifted[0] == 1.0 and plain[-1] == shifted[-1] == 0.0
    assert (
        abs(plain[-2] - LTXV_SCHEDULER.shift_terminal) < 1e-6
        and abs(shifted[-2] - LTXV_SCHEDULER.shift_terminal) < 1e-6
    )
    assert all(b > a for a, b in zip(plain[1:-2], shifted[1:-2]))


def test_sweep_validation_prompts_are_trained_combinations():
    specs = sampling_sweep.validation_specs(16)
    assert len(specs) == 16
    assert not any(data.is_heldout(s.main.color, s.main.shape, s.main.motion, s.background) for s in specs)
    assert all(s.second is None for s in specs)


def test_sweep_writes_accuracy_per_setting(tmp_path):
    out = tmp_path / "sweep.json"
    result = sampling_sweep.main(["--count", "2", "--setting", "3.0x2", "--setting", "1.0x2", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert [r["setting"] for r in written["results"]] == ["3.0x2", "1.0x2"]
    for row in written["results"]:
        assert set(row["accuracy"]) == {"color", "background", "shape", "motion", "speed", "all"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row["accuracy"].values())
    assert written["best_on_validation"] in ("3.0x2", "1.0x2")
