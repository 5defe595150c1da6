"""`--lora FILE[:STRENGTH]`: parsed (Windows drive colons kept), each file's header checked
before any model loads, applied to the loaded transformer before the speed settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ltx_core import cli
from ltx_core.checkpoint.keymaps import TRANSFORMER_PREFIX
from ltx_core.checkpoint.tensors import SafetensorsHeader
from ltx_core.cli_arguments import parse_lora
from ltx_core.lora import LoRAWeights, apply_loras, read_lora, save_lora

from .fixtures_checkpoints import write_official_single_file

SIZE = ["--device", "cpu", "--width", "32", "--height", "32", "--frames", "9", "--steps", "2"]
MODULES = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v", "transformer_blocks.1.ff.net.2")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_official_single_file(tmp_path_factory.mktemp("cli_lora") / "tiny.safetensors", "0.9.1")


def lora_for(checkpoint: Path, path: Path, layout: str = "comfyui", width_offset: int = 0) -> Path:
    """A random rank-2 LoRA of the checkpoint's shapes (`width_offset`: of another model)."""
    shapes = SafetensorsHeader(checkpoint).shapes
    g = torch.Generator().manual_seed(3)
    weights = {}
    for name in MODULES:
        out, inp = shapes[f"{TRANSFORMER_PREFIX}{name}.weight"]
        weights[name] = LoRAWeights(torch.randn(2, inp + width_offset, generator=g), torch.randn(out, 2, generator=g))
    return save_lora(path, weights, layout)


def frames_of_run(capsys, monkeypatch, tmp_path, checkpoint, text_encoder, *flags) -> torch.Tensor:
    written = []
    monkeypatch.setattr(cli, "write_mp4", lambda frames, *a, **k: written.append(frames))
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(checkpoint), "--text-encoder", str(text_encoder)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE, *flags]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return written[0]


def test_a_lora_changes_the_video_as_applying_it_by_hand_does(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    lora = lora_for(tiny_checkpoint, tmp_path / "style.safetensors", layout="kohya")
    run = lambda *flags: frames_of_run(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, *flags)
    plain = run()
    with_lora = run("--lora", f"{lora}:0.7", "--lora", str(lora))  # the same file twice: 0.7 + 1

    load = cli.load_models

    def load_and_apply_by_hand(*args):
        models, info = load(*args)
        apply_loras(models.transformer, [(read_lora(lora), 1.7)])
        return models, info

    monkeypatch.setattr(cli, "load_models", load_and_apply_by_hand)
    by_hand = run()
    assert (with_lora - plain).abs().max() > 1e-3
    torch.testing.assert_close(with_lora, by_hand, atol=1e-5, rtol=0)


def test_loras_are_applied_before_the_speed_settings(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder):
    """`speed_up` (--compile / --fp8) sees the merged weights: an FP8 conversion quantizes them."""
    lora = lora_for(tiny_checkpoint, tmp_path / "style.safetensors")
    seen = []

    def speed_up(models, args, world_size, *rest, **options):
        seen.append(models.transformer.transformer_blocks[0].attn1.to_qkv.weight.detach().clone())
        return models

    monkeypatch.setattr(cli, "speed_up", speed_up)
    frames_of_run(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, "--lora", str(lora))
    key = f"{TRANSFORMER_PREFIX}transformer_blocks.0.attn1.to_q.weight"
    base_q = SafetensorsHeader(tiny_checkpoint).read([key])[key].float()
    assert not torch.allclose(seen[0][: base_q.shape[0]], base_q)


def bad_lora_files(tmp_path: Path, checkpoint: Path) -> dict[str, Path]:
    pickled = tmp_path / "style.ckpt"
    pickled.write_bytes(b"PK\x03\x04 zip")
    return {"missing": tmp_path / "missing.safetensors", "pickle": pickled, "checkpoint": checkpoint}


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", r"error: LoRA file '.*missing.safetensors' does not exist"),
        ("pickle", r"error: '.*style.ckpt' is a pickle file \(.ckpt\): refused"),
        ("checkpoint", r"error: '.*tiny.safetensors' holds no LoRA tensors \(keys like 'model.diffusion_model"),
    ],
)
def test_a_missing_or_non_lora_file_is_refused_before_any_model_loads(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, which, message
):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    path = bad_lora_files(tmp_path, tiny_checkpoint)[which]
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(tiny_checkpoint), "--text-encoder", str(tiny_t5_folder)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE, "--lora", f"{path}:0.5"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_a_lora_of_another_model_is_refused_with_exit_2(capsys, tmp_path, tiny_checkpoint, tiny_t5_folder):
    lora = lora_for(tiny_checkpoint, tmp_path / "other.safetensors", width_offset=8)
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(tiny_checkpoint), "--text-encoder", str(tiny_t5_folder)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE, "--lora", str(lora)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "LoRA module 'transformer_blocks.0.attn1.to_q' changes a weight of shape" in err, err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("value", ["style.safetensors:nan", "style.safetensors:inf", ":0.5", ""])
def test_bad_lora_values_exit_2_with_a_one_line_usage_error(capsys, value):
    with pytest.raises(SystemExit) as done:
        cli.main(["generate", "--prompt", "a fox", "--lora", value])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert f"argument --lora: {value!r} is not FILE[:STRENGTH] with a finite STRENGTH" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "path", "strength"),
    [
        ("style.safetensors", "style.safetensors", 1.0),
        ("style.safetensors:0.8", "style.safetensors", 0.8),
        ("style.safetensors:-1", "style.safetensors", -1.0),
        ("C:\\loras\\style.safetensors", "C:\\loras\\style.safetensors", 1.0),
        ("C:\\loras\\style.safetensors:1.5", "C:\\loras\\style.safetensors", 1.5),
        ("D:/loras/a:b.safetensors", "D:/loras/a:b.safetensors", 1.0),
    ],
)
def test_lora_values_split_at_the_last_colon_only_before_a_number(text, path, strength):
    assert parse_lora(text) == (Path(path), strength)


def test_help_documents_the_lora_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lora FILE[:STRENGTH] a LoRA .safetensors file for the transformer" in text


def test_a_control_video_takes_the_ic_loras_downscale_and_matches_the_core_request(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    """--control-video with an IC-LoRA whose metadata says `reference_downscale_factor` 2:
    the request carries the clip at that downscale and strength, and the video is the one
    the core makes from that request; without the LoRA's factor, --control-downscale rules."""
    from ltx_core.video import write_mp4

    g = torch.Generator().manual_seed(5)
    clip = tmp_path / "depth.mp4"
    write_mp4(torch.rand(9, 64, 64, 3, generator=g), clip, 24.0)
    lora = lora_for(tiny_checkpoint, tmp_path / "ic.safetensors")
    ic_lora = save_lora(
        tmp_path / "ic2.safetensors", read_lora(lora).modules, metadata={"reference_downscale_factor": "2"}
    )
    requests = []
    real = cli.generate
    monkeypatch.setattr(cli, "generate", lambda models, req, **k: requests.append(req) or real(models, req, **k))
    size = ["--width", "64", "--height", "64"]
    run = lambda *flags: frames_of_run(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, *flags, *size)
    plain = run("--lora", str(ic_lora))
    controlled = run("--lora", str(ic_lora), "--control-video", f"{clip}:0.8")
    control = requests[-1].control
    assert control is not None and control.downscale == 2 and control.strength == 0.8 and control.num_frames == 9
    assert not torch.equal(plain, controlled)
    run("--lora", str(ic_lora), "--control-video", str(clip), "--control-downscale", "1")
    assert requests[-1].control.downscale == 1 and requests[-1].control.strength == 1.0


def test_a_control_video_that_does_not_fit_is_refused_before_loading(capsys, tmp_path, tiny_checkpoint, tiny_t5_folder):
    from ltx_core.video import write_mp4

    clip = tmp_path / "pose.mp4"
    write_mp4(torch.rand(6, 32, 32, 3), clip, 24.0)  # 6 frames: not 8k + 1
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(tiny_checkpoint), "--text-encoder", str(tiny_t5_folder)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE, "--control-video", str(clip)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "control video frame count" in err and "6" in err
    assert not (tmp_path / "o.mp4").exists()


def test_the_video_records_its_loras_and_control_video(capsys, tmp_path, tiny_checkpoint, tiny_t5_folder):
    """They change the frames, so the settings that reproduce the video name them."""
    import json

    from ltx_core.video import read_video_metadata, write_mp4

    clip = tmp_path / "pose.mp4"
    write_mp4(torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(2)), clip, 24.0)
    lora = lora_for(tiny_checkpoint, tmp_path / "style.safetensors")
    output = tmp_path / "o.mp4"
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(tiny_checkpoint), "--text-encoder", str(tiny_t5_folder)]
        + ["--output", str(output), *SIZE, "--lora", f"{lora}:0.5", "--control-video", f"{clip}:0.9"]
    )
    assert code == 0, capsys.readouterr().err
    settings = json.loads(read_video_metadata(output)["ltx_core"])
    assert settings["loras"] == ["style.safetensors:0.5"] and settings["control_video"] == "pose.mp4:0.9"
