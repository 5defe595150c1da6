"""`python -m ltx_core generate --config FILE.yaml` / `--preset NAME`: a release config's
settings as the run's defaults (flags given win), a multi-scale config run through both
passes on tiny models, a base config through the single pass, its notes on stderr, and
one-line errors before any weight is read (an unknown preset, a missing upsampler, flags
a multi-scale config sets per pass, timesteps a distilled checkpoint does not allow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest
import torch
import yaml
from safetensors.torch import save_file

from ltx_core import cli, cli_config, cli_plan
from ltx_core.memory_plan import Fit
from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER, TINY_TEMPORAL_UPSAMPLER
from ltx_core.release_passes import multi_scale_sizes

from .fixtures_checkpoints import header_of, write_official_single_file
from .test_latent_upsampler import write_upsampler_file

# 96x64 asked: the first pass at 32x32, the second at 64x64
SIZE = ["--width", "96", "--height", "64", "--frames", "9"]
MULTI_SCALE = {
    "pipeline_type": "multi-scale", "checkpoint_path": "tiny.safetensors", "downscale_factor": 0.6666666,
    "spatial_upscaler_model_path": "upscaler.safetensors", "stg_mode": "attention_values", "decode_timestep": 0.05,
    "decode_noise_scale": 0.025, "text_encoder_model_name_or_path": "t5", "precision": "bfloat16",
    "sampler": "from_checkpoint", "prompt_enhancement_words_threshold": 120, "stochastic_sampling": False,
    "first_pass": {"timesteps": [1.0, 0.9, 0.7], "guidance_scale": 3, "stg_scale": 0, "rescaling_scale": 1},
    "second_pass": {"timesteps": [0.9, 0.7], "guidance_scale": 1, "stg_scale": 0, "tone_map_compression_ratio": 0.6},
}  # fmt: skip
BASE = {
    "pipeline_type": "base", "checkpoint_path": "tiny.safetensors", "text_encoder_model_name_or_path": "t5",
    "precision": "bfloat16", "num_inference_steps": 4, "skip_final_inference_steps": 1, "guidance_scale": 2.5,
    "stg_scale": 1, "rescaling_scale": 0.5, "skip_block_list": [1], "stg_mode": "STG_AS", "decode_timestep": 0.04,
    "stochastic_sampling": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_t5_folder) -> Path:
    """A tiny checkpoint (0.9.5 layout), a tiny spatial upscaler and a T5 folder, side by side."""
    folder = tmp_path_factory.mktemp("models")
    write_official_single_file(folder / "tiny.safetensors", "0.9.5")
    write_upsampler_file(folder / "upscaler.safetensors", TINY_SPATIAL_UPSAMPLER)
    shutil.copytree(tiny_t5_folder, folder / "t5")
    return folder


def write_config(folder: Path, fields: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(fields), encoding="utf-8")
    return path


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["generate", "--prompt", "a red fox", *args])
    return code, capsys.readouterr().err


def assert_one_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))


def captured_runs(monkeypatch) -> list:
    """Each run's (request, multi-scale settings or None), the frames made of zeros."""
    runs = []

    def single(models, request, callback=None, on_stage=None):
        runs.append((request, None))
        return torch.zeros(request.num_frames, request.height, request.width, 3)

    def multi(models, upsampler, request, settings, callback=None):
        runs.append((request, settings))
        return torch.zeros(request.num_frames, request.height, request.width, 3)

    monkeypatch.setattr(cli, "generate", single)
    monkeypatch.setattr(cli_config, "generate_multiscale", multi)
    return runs


# ---------------------------------------------------------------- runs


def test_a_multi_scale_config_runs_both_passes_and_prints_its_notes(capsys, tmp_path, model_folder):
    config = write_config(model_folder, MULTI_SCALE)
    output = tmp_path / "o.mp4"
    code, err = run_main(capsys, "--config", str(config), *SIZE, "--dtype", "fp32", "--output", str(output))
    assert code == 0, err
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (96, 64, 9)
    assert "note: prompt_enhancement_words_threshold read and ignored" in err
    assert "plan (the second pass, the larger): 64x64, 9 frames in fp32" in err
    assert "sampling: 100%" in err and "5/5" in err  # both passes' steps on one bar


def test_a_multi_scale_config_makes_a_long_video_window_by_window(capsys, tmp_path, model_folder):
    config = write_config(model_folder, MULTI_SCALE)
    output = tmp_path / "long.mp4"
    window = ["--frames", "25", "--window-frames", "17", "--window-overlap", "8", "--prompt-segment", "16:a whale"]
    code, err = run_main(
        capsys, "--config", str(config), "--width", "96", "--height", "64", *window, "--dtype", "fp32",
        "--output", str(output),
    )  # fmt: skip
    assert code == 0, err
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (96, 64, 25)
    assert "sampling: 100%" in err and "window" in err  # the bar counts both passes' windows


def test_the_configs_settings_are_the_defaults_and_flags_given_win(capsys, tmp_path, model_folder, monkeypatch):
    runs = captured_runs(monkeypatch)
    config = write_config(model_folder, MULTI_SCALE)
    common = ["--config", str(config), *SIZE, "--overwrite", "--output", str(tmp_path / "o.mp4")]
    assert run_main(capsys, *common)[0] == 0
    assert (
        run_main(
            capsys,
            *common,
            "--decode-timestep",
            "0.1",
            "--stg-mode",
            "residual",
            "--stochastic-sampling",
            "--dtype",
            "fp32",
        )[0]
        == 0
    )
    (request, settings), (flagged, flagged_settings) = runs
    assert settings.first_pass.timesteps == (1.0, 0.9, 0.7) and settings.second_pass.tone_map_compression_ratio == 0.6
    assert (request.decode_timestep, request.decode_noise_scale, settings.stg_mode) == (0.05, 0.025, "attention_values")
    assert not settings.first_pass.stochastic_sampling
    assert (flagged.decode_timestep, flagged_settings.stg_mode) == (0.1, "residual")
    assert flagged_settings.first_pass.stochastic_sampling and flagged_settings.second_pass.stochastic_sampling


def test_the_configs_precision_is_the_dtype_unless_one_is_given(model_folder):
    config = str(write_config(model_folder, MULTI_SCALE))

    def parsed(*flags):
        argv = ["generate", "--prompt", "x", "--config", config, *flags]
        return cli_config.apply_release_config(cli.build_parser().parse_args(argv), argv, cli.build_parser)

    assert parsed().dtype == "bf16" and parsed("--dtype", "fp32").dtype == "fp32"
    folder = model_folder.resolve()
    assert parsed().checkpoint == folder / "tiny.safetensors"
    assert parsed().upsampler == folder / "upscaler.safetensors"
    assert parsed().text_encoder == folder / "t5"  # a folder of the config's name next to it
    assert parsed("--checkpoint", "other.safetensors").checkpoint == Path("other.safetensors")


def test_a_preset_finds_its_model_files_in_the_working_folder(
    capsys, tmp_path, model_folder, monkeypatch, tiny_t5_folder
):
    runs = captured_runs(monkeypatch)
    shutil.copy(model_folder / "tiny.safetensors", tmp_path / "ltxv-2b-0.9.8-distilled.safetensors")
    shutil.copy(model_folder / "upscaler.safetensors", tmp_path / "ltxv-spatial-upscaler-0.9.8.safetensors")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(
        capsys, "--preset", "ltxv-2b-0.9.8-distilled", "--text-encoder", str(tiny_t5_folder), *SIZE, "--output", "o.mp4"
    )
    assert code == 0, err
    ((request, settings),) = runs
    assert settings.first_pass.timesteps == (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725)
    assert settings.second_pass.timesteps == (0.9094, 0.725, 0.4219) and settings.downscale_factor == 0.6666666
    assert "no prompt-enhancer models" in err
    with av.open("o.mp4") as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (96, 64)


def test_a_base_config_runs_the_single_pass_with_its_settings(capsys, tmp_path, model_folder, monkeypatch):
    runs = captured_runs(monkeypatch)
    config = write_config(model_folder, BASE, "base.yaml")
    common = ["--config", str(config), *SIZE, "--overwrite", "--output", str(tmp_path / "o.mp4")]
    assert run_main(capsys, *common)[0] == 0
    assert run_main(capsys, *common, "--steps", "3", "--cfg", "1", "--no-stochastic-sampling")[0] == 0
    (request, settings), (flagged, _) = runs
    assert settings is None
    assert (request.steps, request.skip_final_steps, request.guidance_scale) == (4, 1, 2.5)
    assert (request.stg_scale, request.stg_blocks, request.stg_rescale, request.stg_mode) == (
        1.0,
        (1,),
        0.5,
        "attention_skip",
    )
    assert request.stochastic_sampling and request.decode_timestep == 0.04 and request.decode_noise_scale == 0.04
    assert (flagged.steps, flagged.skip_final_steps, flagged.guidance_scale, flagged.stg_scale) == (3, 1, 1.0, 1.0)
    assert not flagged.stochastic_sampling


def test_a_base_configs_published_timesteps_become_the_requests_sigmas(capsys, tmp_path, model_folder, monkeypatch):
    runs = captured_runs(monkeypatch)
    fields = {**BASE, "timesteps": [1.0, 0.8, 0.5]}
    del fields["num_inference_steps"], fields["skip_final_inference_steps"]
    config = write_config(model_folder, fields, "timesteps.yaml")
    assert run_main(capsys, "--config", str(config), *SIZE, "--output", str(tmp_path / "o.mp4"))[0] == 0
    assert runs[0][0].sigmas == (1.0, 0.8, 0.5)


# ---------------------------------------------------------------- refused before loading


def test_an_unknown_preset_is_one_line_from_the_command_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        cli.main(["generate", "--prompt", "x", "--preset", "ltxv-9b", "--output", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "argument --preset: invalid choice: 'ltxv-9b'" in err
    assert_one_line(err)


@pytest.mark.parametrize(
    "change, flags, message",
    [
        (
            {"spatial_upscaler_model_path": "missing.safetensors"},
            [],
            "spatial_upscaler_model_path '{folder}/missing.safetensors' of release config {config} does not exist; put the "
            "file there or pass --upsampler",
        ),
        ({}, ["--upsampler", "{folder}/nope.safetensors"], "--upsampler '{folder}/nope.safetensors' does not exist"),
        (
            {"spatial_upscaler_model_path": None},
            [],
            "spatial_upscaler_model_path is missing; a multi-scale config needs",
        ),
        (
            {"checkpoint_path": "gone.safetensors"},
            [],
            "checkpoint_path '{folder}/gone.safetensors' of release config {config} does not exist; put the file there or "
            "pass --checkpoint",
        ),
        (
            {"text_encoder_model_name_or_path": "PixArt-alpha/PixArt-XL-2-1024-MS"},
            [],
            "names the text encoder 'PixArt-alpha/PixArt-XL-2-1024-MS', which is no folder next to it; pass --text-encoder",
        ),
        (
            {},
            ["--steps", "4", "--cfg", "2"],
            "--steps, --cfg cannot be applied to a multi-scale config, which sets them per pass",
        ),
        ({}, ["--width", "32"], "width 32 times downscale_factor 0.6666666 is 21 pixels"),
        (
            {"first_pass": {"skip_initial_inference_steps": 1, "num_inference_steps": 4, "stg_scale": 0}},
            [],
            "first_pass.skip_initial_inference_steps needs a latent to start from",
        ),
    ],
)
def test_bad_multi_scale_runs_are_one_line_before_any_model_is_loaded(
    capsys, tmp_path, model_folder, no_loading, change, flags, message
):
    fields = {key: value for key, value in {**MULTI_SCALE, **change}.items() if value is not None}
    config = write_config(model_folder, fields, "bad.yaml")
    fill = dict(folder=model_folder, config=config)
    code, err = run_main(
        capsys,
        "--config",
        str(config),
        *SIZE,
        *[flag.format(**fill) for flag in flags],
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 2
    assert message.format(**fill) in err
    assert_one_line(err)


def test_an_upsampler_without_a_multi_scale_config_is_refused(capsys, tmp_path, model_folder, no_loading):
    code, err = run_main(
        capsys, "--upsampler", str(model_folder / "upscaler.safetensors"), "--output", str(tmp_path / "o.mp4")
    )
    assert code == 2 and "--upsampler is read only with a multi-scale release config" in err


def test_a_temporal_upscaler_is_refused_before_loading(capsys, tmp_path, model_folder, no_loading):
    temporal = write_upsampler_file(tmp_path / "temporal.safetensors", TINY_TEMPORAL_UPSAMPLER)
    config = write_config(model_folder, MULTI_SCALE)
    code, err = run_main(
        capsys, "--config", str(config), *SIZE, "--upsampler", str(temporal), "--output", str(tmp_path / "o.mp4")
    )
    assert code == 2 and "is not a spatial upscaler" in err
    assert_one_line(err)


def allowed_checkpoint(folder: Path, allowed: list[float]) -> Path:
    """The tiny checkpoint with `allowed_inference_steps` in its metadata, as the 0.9.8
    distilled files carry them."""
    tensors, metadata = header_of(folder / "tiny.safetensors")
    config = json.loads(metadata["config"])
    config["allowed_inference_steps"] = allowed
    path = folder / "distilled.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    return path


def test_timesteps_a_distilled_checkpoint_does_not_allow_are_refused_before_loading(
    capsys, tmp_path, model_folder, monkeypatch
):
    checkpoint = allowed_checkpoint(model_folder, [1.0, 0.9, 0.7])
    runs = captured_runs(monkeypatch)
    config = write_config(model_folder, {**MULTI_SCALE, "checkpoint_path": checkpoint.name}, "distilled.yaml")
    common = ["--config", str(config), *SIZE, "--overwrite", "--output", str(tmp_path / "o.mp4")]
    assert run_main(capsys, *common)[0] == 0 and len(runs) == 1  # every timestep allowed
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    fields = {**MULTI_SCALE, "checkpoint_path": checkpoint.name}
    fields["second_pass"] = {**fields["second_pass"], "timesteps": [0.9, 0.75]}
    code, err = run_main(capsys, "--config", str(write_config(model_folder, fields, "off.yaml")), *common[2:])
    assert code == 2 and "timestep 0.75 of second_pass is not one this checkpoint allows" in err
    assert "allowed_inference_steps: [1.0, 0.9, 0.7]" in err
    assert_one_line(err)
    code, err = run_main(
        capsys, "--checkpoint", str(checkpoint), "--text-encoder", str(model_folder / "t5"), "--steps", "2", *common[2:]
    )
    assert code == 2 and "of the run is not one this checkpoint allows" in err


# ---------------------------------------------------------------- the memory plan


def test_the_plans_size_advice_is_the_asked_size_whose_second_pass_fits():
    """The plan counts the second pass; a size that fits is said as the --width/--height
    whose second pass is at most that size."""
    for second in range(64, 2048, 32):
        asked = cli_plan._asked_size(second, 0.6666666)
        assert multi_scale_sizes(asked, asked, 0.6666666)[1][0] <= second  # fits
        assert multi_scale_sizes(asked + 32, asked + 32, 0.6666666)[1][0] > second  # the largest that does

    class Args:
        multi_scale = type("Settings", (), {"downscale_factor": 0.6666666})()

    assert (
        cli_plan._as_flags(Fit({"width": 960, "height": 640}, "960x640 (the largest size)"), Args())
        == "--width 768 --height 512 (the largest size)"
    )
    assert cli_plan._as_flags(Fit({"guidance": False, "stg": False}, "guidance 1 (one pass)"), Args()) is None
