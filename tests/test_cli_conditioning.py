"""`python -m ltx_core generate` with --condition, --source-video and STG flags: parsing,
one-line errors for bad conditioning, and a real tiny run with first + last frame, STG
and video-to-video. If these fail, the command line cannot reach issue 7's features."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltx_core import cli
from ltx_core.video import read_video_frames, write_mp4

from .test_cli import SMALL, assert_one_line, run_main, tiny_checkpoint  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cond") / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 9-frame 32 x 32 mp4."""
    path = tmp_path_factory.mktemp("cond") / "clip.mp4"
    write_mp4(torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(1)), path, fps=24.0, metadata={})
    return path


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("a.png@0", (Path("a.png"), 0, 1.0)), ("dir@x/b.png@-1:0.5", (Path("dir@x/b.png"), -1, 0.5))],
)
def test_a_condition_flag_parses_as_path_frame_and_strength(text, parsed):
    assert cli.parse_condition(text) == parsed


def args_for(tiny_checkpoint, tiny_t5_folder, tmp_path, *extra):
    return (
        "generate",
        "--prompt",
        "a red fox jumps over the lazy dog",
        "--checkpoint",
        str(tiny_checkpoint),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(tmp_path / "out.mp4"),
        *SMALL,
        *extra,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--condition", "frame.png"), r"argument --condition: 'frame.png' is not IMAGE_OR_VIDEO@FRAME\[:STRENGTH\]"),
        (("--condition", "frame.png@a"), r"'frame.png@a' is not IMAGE_OR_VIDEO@FRAME"),
        (("--condition", "{image}@9"), r"conditioning frame index 9 with 1 frame\(s\) reaches past the clip of 9"),
        (("--condition", "{image}@4:1.5"), r"conditioning strength 1.5 is outside \[0, 1\]"),
        (("--condition", "missing.png@0"), r"conditioning file 'missing.png' does not exist"),
        (("--stg-blocks", "a"), r"stg_blocks 'a' must be block indices separated by commas, e.g. 19 or 18, 19"),
        (("--stg-scale", "1", "--stg-blocks", ""), r"stg_scale 1.0 needs stg_blocks"),
        (("--denoise-strength", "0.5"), r"denoise_strength 0.5 needs a source_video"),
    ],
)
def test_bad_conditioning_flags_are_one_line_errors_before_loading_a_model(
    capsys,
    monkeypatch,
    tiny_checkpoint,
    tiny_t5_folder,
    tmp_path,
    image,
    extra,
    message,
):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    extra = [part.format(image=image) for part in extra]
    try:
        code, stderr = run_main(capsys, *args_for(tiny_checkpoint, tiny_t5_folder, tmp_path, *extra))
    except SystemExit as usage_error:  # argparse's own errors (one line, exit 2 by the pack's parser)
        code, stderr = usage_error.code, capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT
    assert_one_line(stderr)
    assert re.search(message, stderr), stderr
    assert not (tmp_path / "out.mp4").exists()


def test_first_and_last_frame_with_stg_and_a_clip_writes_the_video(
    capsys,
    tiny_checkpoint,
    tiny_t5_folder,
    tmp_path,
    image,
    clip,
):
    code, stderr = run_main(
        capsys,
        *args_for(
            tiny_checkpoint,
            tiny_t5_folder,
            tmp_path,
            "--frames",
            "17",
            "--condition",
            f"{image}@0",
            "--condition",
            f"{image}@-1:0.8",
            "--condition",
            f"{clip}@8",
            "--stg-scale",
            "1",
            "--stg-blocks",
            "0",
            "--stg-mode",
            "attention_skip",
        ),
    )
    assert code == cli.EXIT_OK, stderr
    assert read_video_frames(tmp_path / "out.mp4").shape == (17, 32, 32, 3)


def test_video_to_video_from_a_source_clip_writes_the_video(capsys, tiny_checkpoint, tiny_t5_folder, tmp_path, clip):
    code, stderr = run_main(
        capsys,
        *args_for(tiny_checkpoint, tiny_t5_folder, tmp_path, "--source-video", str(clip), "--denoise-strength", "0.5"),
    )
    assert code == cli.EXIT_OK, stderr
    assert read_video_frames(tmp_path / "out.mp4").shape == (9, 32, 32, 3)
