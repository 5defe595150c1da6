"""reader_check: agreement counts against the eye, and the labels bound to their model."""

from __future__ import annotations

import json

import pytest

from ltx_core.training.evaluation import reader_check


def clip(eye: dict, read: dict) -> dict:
    return {"eye": eye, "read": read}


def test_agreement_counts_colors_by_family_and_leaves_open_labels_out():
    clips = [
        clip(
            {"color": "blue", "shape": "square", "motion": "up"},
            {"color": "light blue", "shape": "square", "motion": "up"},
        ),
        clip(
            {"color": "red", "shape": None, "motion": "left"}, {"color": "pink", "shape": "circle", "motion": "still"}
        ),
        clip(
            {"color": None, "shape": "circle", "motion": "grow"}, {"color": None, "shape": "triangle", "motion": "grow"}
        ),
    ]
    assert reader_check.agreement(clips, "read") == {"color": "1/2", "shape": "1/2", "motion": "2/3"}


def test_the_labels_name_their_sets_and_every_clip_is_labeled():
    labels = json.loads(reader_check.LABELS.read_text())
    assert set(labels["sets"]) == {"A", "B"} and len(labels["checkpoint_sha256"]) == 64
    for item in labels["clips"]:
        assert item["set"] in labels["sets"] and set(item["eye"]) == set(reader_check.ATTRIBUTES)
        assert isinstance(item["prompt"], str) and isinstance(item["seed"], int)


def test_another_models_file_is_refused_before_any_clip_is_made(tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the labeled model")
    labels = {"checkpoint_sha256": "0" * 64}
    with pytest.raises(SystemExit, match="not the model these labels were made on"):
        reader_check.check_checkpoint(labels, other)
