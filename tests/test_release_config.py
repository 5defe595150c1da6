"""Lightricks' release configs read as its `inference.py` reads them: the shipped YAMLs give
the published settings, relative model paths resolve next to the file, and unknown fields
or bad values are refused naming the field and the file."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltx_core.errors import SettingsError
from ltx_core.release_config import (
    PRESETS,
    PassSettings,
    ReleaseConfig,
    load_preset,
    load_release_config,
    release_config_names,
)

REPO = Path(__file__).resolve().parent.parent

# Every YAML in the configs/ folder of Lightricks/LTX-Video.
OFFICIAL_NAMES = (
    "ltxv-13b-0.9.8-dev-fp8",
    "ltxv-13b-0.9.8-dev",
    "ltxv-13b-0.9.8-distilled-fp8",
    "ltxv-13b-0.9.8-distilled",
    "ltxv-2b-0.9.1",
    "ltxv-2b-0.9.5",
    "ltxv-2b-0.9.6-dev",
    "ltxv-2b-0.9.6-distilled",
    "ltxv-2b-0.9.8-distilled-fp8",
    "ltxv-2b-0.9.8-distilled",
    "ltxv-2b-0.9",
)

UPSCALER = "ltxv-spatial-upscaler-0.9.8.safetensors"
SHARED = dict(
    stg_mode="attention_values",
    decode_timestep=0.05,
    decode_noise_scale=0.025,
    sampler="from_checkpoint",
    text_encoder_model_name_or_path="PixArt-alpha/PixArt-XL-2-1024-MS",
)

DISTILLED_FIRST = PassSettings(
    timesteps=(1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725),
    guidance_scale=1.0,
    stg_scale=0.0,
    rescaling_scale=1.0,
    skip_block_list=(42,),
)
DISTILLED_SECOND = PassSettings(
    timesteps=(0.9094, 0.725, 0.4219),
    guidance_scale=1.0,
    stg_scale=0.0,
    rescaling_scale=1.0,
    skip_block_list=(42,),
    tone_map_compression_ratio=0.6,
)
DEV_FIRST = PassSettings(
    num_inference_steps=30,
    skip_final_inference_steps=3,
    cfg_star_rescale=True,
    guidance_scale=(1.0, 1.0, 6.0, 8.0, 6.0, 1.0, 1.0),
    stg_scale=(0.0, 0.0, 4.0, 4.0, 4.0, 2.0, 1.0),
    rescaling_scale=(1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0),
    guidance_timesteps=(1.0, 0.996, 0.9933, 0.985, 0.9767, 0.9008, 0.618),
    skip_block_list=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),
)
DEV_SECOND = PassSettings(
    num_inference_steps=30,
    skip_initial_inference_steps=17,
    guidance_scale=(1.0,),
    stg_scale=(1.0,),
    rescaling_scale=(1.0,),
    guidance_timesteps=(1.0,),
    skip_block_list=(27,),
    cfg_star_rescale=True,
)

# name -> what the official script would use, written out by hand from the published files.
EXPECTED = {
    "ltxv-13b-0.9.8-distilled": dict(
        SHARED, pipeline_type="multi-scale", checkpoint="ltxv-13b-0.9.8-distilled.safetensors", precision="bfloat16",
        downscale_factor=0.6666666, upscaler=UPSCALER, stochastic_sampling=False,
        first_pass=DISTILLED_FIRST, second_pass=DISTILLED_SECOND),
    "ltxv-13b-0.9.8-dev": dict(
        SHARED, pipeline_type="multi-scale", checkpoint="ltxv-13b-0.9.8-dev.safetensors", precision="bfloat16",
        downscale_factor=0.6666666, upscaler=UPSCALER, stochastic_sampling=False,
        first_pass=DEV_FIRST, second_pass=DEV_SECOND),
    "ltxv-13b-0.9.8-dev-fp8": dict(
        SHARED, pipeline_type="multi-scale", checkpoint="ltxv-13b-0.9.8-dev-fp8.safetensors",
        precision="float8_e4m3fn", downscale_factor=0.6666666, upscaler=UPSCALER, stochastic_sampling=False,
        first_pass=DEV_FIRST, second_pass=DEV_SECOND),
    "ltxv-2b-0.9.8-distilled-fp8": dict(
        SHARED, pipeline_type="multi-scale", checkpoint="ltxv-2b-0.9.8-distilled-fp8.safetensors",
        precision="float8_e4m3fn", downscale_factor=0.6666666, upscaler=UPSCALER, stochastic_sampling=False,
        # no tone mapping in the 2B files: the pipeline's default, 0
        first_pass=DISTILLED_FIRST, second_pass=PassSettings(**{**vars(DISTILLED_SECOND),
                                                               "tone_map_compression_ratio": 0.0})),
    "ltxv-2b-0.9.1": dict(
        SHARED, pipeline_type="base", checkpoint="ltx-video-2b-v0.9.1.safetensors", precision="bfloat16",
        downscale_factor=None, upscaler=None, stochastic_sampling=False, second_pass=None,
        # no timesteps, skips, CFG-star or tone map in the file: the pipeline's defaults
        first_pass=PassSettings(num_inference_steps=40, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7,
                                skip_block_list=(19,))),
    "ltxv-2b-0.9.6-distilled": dict(
        SHARED, pipeline_type="base", checkpoint="ltxv-2b-0.9.6-distilled-04-25.safetensors", precision="bfloat16",
        downscale_factor=None, upscaler=None, stochastic_sampling=True, second_pass=None,
        first_pass=PassSettings(num_inference_steps=8, guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0,
                                stochastic_sampling=True)),
}  # fmt: skip


def write_config(folder: Path, fields: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
    return path


def preset_fields(name: str) -> dict:
    return yaml.safe_load(PRESETS[name].read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the shipped files


def test_every_official_config_is_shipped_as_a_preset():
    assert sorted(release_config_names()) == sorted(OFFICIAL_NAMES)
    for path in PRESETS.values():
        assert path.parent == REPO / "ltx_core" / "assets" / "release_configs"
    # the package data covers them
    assert 'ltx_core = ["assets/*", "assets/**/*"]' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_each_shipped_yaml_names_its_source_and_licence(name):
    header = PRESETS[name].read_text(encoding="utf-8").split("\n\n")[0]
    assert "https://github.com/Lightricks/LTX-Video/blob/" in header
    assert f"/configs/{name}.yaml" in header and "Apache License 2.0" in header


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_shipped_yaml_gives_the_settings_the_official_script_uses(name, tmp_path):
    config, want = load_preset(name, model_dir=tmp_path), EXPECTED[name]
    assert config.pipeline_type == want["pipeline_type"]
    assert config.checkpoint_path == tmp_path / want["checkpoint"]
    assert config.checkpoint_path_raw == want["checkpoint"]
    assert config.spatial_upscaler_model_path_raw == want["upscaler"]
    assert config.spatial_upscaler_model_path == (want["upscaler"] and tmp_path / want["upscaler"])
    assert config.downscale_factor == want["downscale_factor"]
    assert config.first_pass == want["first_pass"]
    assert config.second_pass == want["second_pass"]
    for field in ("precision", "stochastic_sampling", *SHARED):
        assert getattr(config, field) == want[field], field


def test_the_distilled_and_dev_passes_read_as_published():
    """The values the official pipeline acts on, spelled out once more for the two 13B files."""
    distilled = load_preset("ltxv-13b-0.9.8-distilled")
    assert distilled.first_pass.uses_timesteps and distilled.first_pass.num_inference_steps == 7
    assert distilled.second_pass.timesteps == (0.9094, 0.725, 0.4219)
    assert distilled.first_pass.tone_map_compression_ratio == 0.0
    assert distilled.second_pass.tone_map_compression_ratio == 0.6
    dev = load_preset("ltxv-13b-0.9.8-dev")
    assert not dev.first_pass.uses_timesteps
    assert (dev.first_pass.num_inference_steps, dev.first_pass.skip_final_inference_steps) == (30, 3)
    assert (dev.second_pass.num_inference_steps, dev.second_pass.skip_initial_inference_steps) == (30, 17)
    assert dev.first_pass.skip_block_list[1] == (11, 25, 35, 39)
    assert dev.second_pass.skip_block_list == (27,)  # one list for every step of the pass


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_every_preset_builds_the_cores_guidance_and_notes_the_prompt_enhancer(name):
    from ltx_core.sampling.guidance import Guidance

    config = load_preset(name)
    for settings in config.passes:
        Guidance(**settings.guidance_settings(config.stg_mode))
    assert config.source == str(PRESETS[name])
    assert any(
        "prompt_enhancer_llm_model_name_or_path" in note and "no prompt-enhancer models" in note
        for note in config.notes
    )


def test_the_dev_schedule_picks_each_steps_guidance_as_the_official_pipeline_does():
    from ltx_core.sampling.guidance import Guidance

    config = load_preset("ltxv-13b-0.9.8-dev")
    guidance = Guidance(**config.first_pass.guidance_settings(config.stg_mode))
    # interval i: the first whose guidance timestep is at or below the step's sigma, else the last
    assert guidance.at(1.0).cfg_scale == 1.0 and not guidance.at(1.0).with_stg
    step = guidance.at(0.99)  # 0.985 is the first bound at or below 0.99: interval 3
    assert (step.cfg_scale, step.stg_scale, step.stg_rescale, step.stg_blocks) == (8.0, 4.0, 0.5, (28,))
    step = guidance.at(0.5)  # below every bound: the last interval
    assert (step.cfg_scale, step.stg_scale, step.stg_blocks, step.cfg_star_rescale) == (1.0, 1.0, (28,), True)


def test_the_multi_scale_pass_sizes_follow_the_official_pipeline():
    config = load_preset("ltxv-13b-0.9.8-distilled")
    # int(704 * 0.6666666) = 469 -> 448 on the 32-pixel grid; the upsampler doubles it
    assert config.pass_sizes(704, 1216) == ((448, 800), (896, 1600))
    assert load_preset("ltxv-2b-0.9.5").pass_sizes(480, 704) == ((480, 704),)
    with pytest.raises(SettingsError, match=r"height 32 times downscale_factor 0.6666666 .* at least 49"):
        config.pass_sizes(32, 1216)


def test_reading_a_config_imports_no_torch():
    code = (
        "import sys\nfrom ltx_core.release_config import load_preset\n"
        "load_preset('ltxv-13b-0.9.8-dev')\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- paths


def test_relative_model_paths_resolve_next_to_the_yaml_and_keep_the_raw_value(tmp_path):
    fields = preset_fields("ltxv-13b-0.9.8-distilled")
    fields["spatial_upscaler_model_path"] = "upscalers/up.safetensors"
    folder = tmp_path / "configs"
    folder.mkdir()
    config = load_release_config(write_config(folder, fields))
    assert config.checkpoint_path == folder / "ltxv-13b-0.9.8-distilled.safetensors"
    assert config.checkpoint_path_raw == "ltxv-13b-0.9.8-distilled.safetensors"
    assert config.spatial_upscaler_model_path == folder / "upscalers" / "up.safetensors"
    assert config.spatial_upscaler_model_path_raw == "upscalers/up.safetensors"
    # a Hub repo id is no folder here; a folder of that name next to the YAML is used
    assert config.text_encoder_path is None
    (folder / "PixArt-alpha" / "PixArt-XL-2-1024-MS").mkdir(parents=True)
    assert load_release_config(folder / "config.yaml").text_encoder_path == folder / "PixArt-alpha/PixArt-XL-2-1024-MS"


def test_an_absolute_model_path_is_kept(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5")
    fields["checkpoint_path"] = str(tmp_path / "models" / "x.safetensors")
    config = load_release_config(write_config(tmp_path, fields))
    assert config.checkpoint_path == tmp_path / "models" / "x.safetensors"


def test_a_preset_resolves_its_model_names_in_the_model_folder(tmp_path):
    config = load_preset("ltxv-2b-0.9.8-distilled", model_dir=tmp_path)
    assert config.checkpoint_path == tmp_path / "ltxv-2b-0.9.8-distilled.safetensors"
    assert config.spatial_upscaler_model_path == tmp_path / UPSCALER


# ---------------------------------------------------------------- defaults and the official reading


def test_fields_left_out_take_the_official_defaults(tmp_path):
    fields = {
        "checkpoint_path": "m.safetensors",
        "precision": "bfloat16",
        "skip_block_list": [19],
        "text_encoder_model_name_or_path": "PixArt-alpha/PixArt-XL-2-1024-MS",
    }
    config = load_release_config(write_config(tmp_path, fields))
    assert config.pipeline_type == "base" and config.sampler == "from_checkpoint"
    assert config.stg_mode == "attention_values" and config.stochastic_sampling is False
    assert (config.decode_timestep, config.decode_noise_scale) == (0.0, 0.0)
    assert config.first_pass == PassSettings(
        num_inference_steps=20, guidance_scale=4.5, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,)
    )
    assert config.notes == ()


def test_decode_noise_scale_left_out_is_the_decode_timestep(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5")
    del fields["decode_noise_scale"]
    assert load_release_config(write_config(tmp_path, fields)).decode_noise_scale == 0.05


def test_the_official_short_stg_mode_names_and_sampler_spellings_are_read(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5") | {"stg_mode": "STG_R", "sampler": "Uniform"}
    config = load_release_config(write_config(tmp_path, fields))
    assert (config.stg_mode, config.sampler) == ("residual", "uniform")


def test_top_level_pass_fields_are_shared_by_both_passes_and_a_passs_own_win(tmp_path):
    fields = preset_fields("ltxv-13b-0.9.8-distilled") | {"stochastic_sampling": True, "cfg_star_rescale": True}
    fields["second_pass"]["cfg_star_rescale"] = False
    config = load_release_config(write_config(tmp_path, fields))
    assert config.first_pass.stochastic_sampling and config.second_pass.stochastic_sampling
    assert (config.first_pass.cfg_star_rescale, config.second_pass.cfg_star_rescale) == (True, False)


def test_settings_the_official_pipeline_ignores_are_noted(tmp_path):
    fields = preset_fields("ltxv-13b-0.9.8-distilled")
    fields["first_pass"] |= {"num_inference_steps": 40, "tone_map_compression_ratio": 0.5, "guidance_scale": 0}
    config = load_release_config(write_config(tmp_path, fields))
    assert config.first_pass.num_inference_steps == 7  # the timesteps' count
    assert config.first_pass.guidance_scale == 1.0  # CFG runs only above 1
    notes = "\n".join(config.notes)
    assert "first_pass.num_inference_steps ignored: first_pass.timesteps are given" in notes
    assert "first_pass.tone_map_compression_ratio is ignored" in notes
    assert "first_pass.guidance_scale 0 read as 1.0" in notes


def test_skipping_initial_steps_of_a_base_config_notes_it_needs_an_input_video(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5") | {"skip_initial_inference_steps": 10}
    config = load_release_config(write_config(tmp_path, fields))
    assert config.first_pass.skip_initial_inference_steps == 10
    assert any("needs an input video" in note for note in config.notes)


def test_the_prompt_enhancer_note_says_enhancement_is_off_at_threshold_0(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5") | {"prompt_enhancement_words_threshold": 0}
    (note,) = load_release_config(write_config(tmp_path, fields)).notes
    assert "read and ignored" in note and "enhancement is off in this file" in note


# ---------------------------------------------------------------- refused


def test_an_unknown_field_is_refused_naming_it_the_file_and_the_known_fields(tmp_path):
    path = write_config(tmp_path, preset_fields("ltxv-2b-0.9.5") | {"sampling_shift": 3})
    with pytest.raises(SettingsError) as error:
        load_release_config(path)
    message = str(error.value)
    assert "unknown field 'sampling_shift'" in message and str(path) in message
    assert "known fields of a config: pipeline_type, checkpoint_path" in message and "first_pass" in message


def test_an_unknown_pass_field_is_refused_naming_the_pass(tmp_path):
    fields = preset_fields("ltxv-13b-0.9.8-dev")
    fields["second_pass"]["decode_timestep"] = 0.1
    expected = r"unknown field 'second_pass.decode_timestep' \(decode_timestep is a top-level field\); the known"
    with pytest.raises(SettingsError, match=expected + " fields of second_pass: timesteps"):
        load_release_config(write_config(tmp_path, fields))


def test_a_seed_in_the_config_is_refused_as_a_command_line_setting(tmp_path):
    path = write_config(tmp_path, preset_fields("ltxv-2b-0.9.5") | {"seed": 42})
    with pytest.raises(SettingsError, match=r"unknown field 'seed' \(seed is a setting of the official script's"):
        load_release_config(path)


def _set(path: str, value):
    """A change to the 13B dev config: `value` at a dotted path, or the field removed (DELETE)."""

    def change(fields: dict) -> dict:
        *parents, last = path.split(".")
        target = fields
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
        return fields

    return change


DELETE = object()

BAD_VALUES = [
    (_set("pipeline_type", "two-pass"), "pipeline_type 'two-pass' is not known; allowed: base, multi-scale"),
    (
        _set("stg_mode", "skip_all"),
        "stg_mode 'skip_all' is not known; allowed: attention_values, attention_skip, residual, transformer_block",
    ),
    (_set("sampler", "euler"), "sampler 'euler' is not known; allowed: from_checkpoint, uniform, linear-quadratic"),
    (_set("precision", "float16"), "precision 'float16' is not known; allowed: bfloat16, float8_e4m3fn, mixed_prec"),
    (_set("decode_timestep", 1.5), "decode_timestep 1.5 is not allowed; allowed: a number in [0, 1]"),
    (_set("decode_noise_scale", -0.1), "decode_noise_scale -0.1 is not allowed; allowed: a number in [0, 1]"),
    (_set("decode_timestep", [0.05]), "decode_timestep [0.05] is not allowed"),
    (_set("stochastic_sampling", 1), "stochastic_sampling 1 is not allowed; allowed: true or false"),
    (_set("downscale_factor", 1.5), "downscale_factor 1.5 is not allowed; allowed: a number in (0, 1]"),
    (_set("downscale_factor", DELETE), "downscale_factor is missing; a multi-scale config needs"),
    (_set("spatial_upscaler_model_path", DELETE), "spatial_upscaler_model_path is missing"),
    (_set("second_pass", DELETE), "second_pass is missing"),
    (_set("second_pass", [1, 2]), "second_pass [1, 2] is not allowed; allowed: a mapping of pass fields"),
    (_set("checkpoint_path", DELETE), "checkpoint_path is missing; the official script needs it"),
    (_set("checkpoint_path", 7), "checkpoint_path 7 is not allowed; allowed: a file name or path"),
    (_set("precision", DELETE), "precision is missing"),
    (_set("text_encoder_model_name_or_path", DELETE), "text_encoder_model_name_or_path is missing"),
    (_set("first_pass.guidance_scale", [1, 6, 8]), "first_pass.guidance_scale has 3 values for 7 guidance_timesteps"),
    (_set("first_pass.skip_block_list", [[28]] * 6), "first_pass.skip_block_list has 6 values for 7 guidance_timest"),
    (
        _set("first_pass.stg_scale", [0, 0, 4, 4, 4, 2, -1]),
        "first_pass.stg_scale[6] -1 is not allowed; allowed: a finite number >= 0",
    ),
    (_set("first_pass.rescaling_scale", "high"), "first_pass.rescaling_scale 'high' is not allowed"),
    (
        _set("first_pass.guidance_timesteps", [1.0, 0.99, 0.995, 0.98, 0.97, 0.9, 0.6]),
        "first_pass.guidance_timesteps [1.0, 0.99, 0.995, 0.98, 0.97, 0.9, 0.6] is not allowed; allowed: strictly "
        "decreasing",
    ),
    (
        _set("second_pass.guidance_timesteps", DELETE),
        "second_pass.guidance_scale [1] gives one value per interval, which needs guidance_timesteps",
    ),
    (
        _set("first_pass.skip_block_list", [[], [11], [22], [28], [28], [28], [-1]]),
        "first_pass.skip_block_list[6] [-1] is not allowed; allowed: block indices, whole numbers >= 0",
    ),
    (
        _set("first_pass.skip_block_list", [[], [11], [], [28], [28], [28], [28]]),
        "first_pass.stg_scale 4.0 in interval 2 needs skip_block_list",
    ),
    (_set("first_pass.num_inference_steps", 0), "first_pass.num_inference_steps 0 is not allowed; allowed: a whole"),
    (
        _set("first_pass.skip_final_inference_steps", 30),
        "first_pass.skip_initial_inference_steps 0 and skip_final_inference_steps 30 leave none",
    ),
    (_set("second_pass.skip_initial_inference_steps", 0), "second_pass starts at sigma 1"),
    (_set("first_pass.cfg_star_rescale", "yes"), "first_pass.cfg_star_rescale 'yes' is not allowed; allowed: true"),
    (
        _set("second_pass.tone_map_compression_ratio", 1.5),
        "second_pass.tone_map_compression_ratio 1.5 is not allowed; allowed: a number in [0, 1]",
    ),
    (
        _set("first_pass.timesteps", [1.0, 0.5, 0.0]),
        "first_pass.timesteps [1.0, 0.5, 0.0] is not allowed; allowed: a non-empty list of sigmas in (0, 1]",
    ),
    (_set("pipeline_type", "base"), "downscale_factor is read only when pipeline_type is multi-scale, not base"),
]


@pytest.mark.parametrize("change, message", BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field_the_file_and_what_is_allowed(tmp_path, change, message):
    path = write_config(tmp_path, change(copy.deepcopy(preset_fields("ltxv-13b-0.9.8-dev"))))
    with pytest.raises(SettingsError) as error:
        load_release_config(path)
    assert message in str(error.value)
    assert str(error.value).startswith(f"release config {path}: ")


def test_distilled_timesteps_that_climb_or_skip_steps_are_refused(tmp_path):
    fields = preset_fields("ltxv-13b-0.9.8-distilled")
    fields["second_pass"]["timesteps"] = [0.4219, 0.725]
    with pytest.raises(SettingsError, match=r"second_pass.timesteps \[0.4219, 0.725\] .* strictly decreasing"):
        load_release_config(write_config(tmp_path, fields))
    fields["second_pass"]["timesteps"] = [1.0, 0.725]
    with pytest.raises(SettingsError, match="second_pass starts at sigma 1"):
        load_release_config(write_config(tmp_path, fields))


def test_stg_without_blocks_is_refused_in_a_base_config(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5")
    del fields["skip_block_list"]
    with pytest.raises(SettingsError, match=r"stg_scale 1.0 needs skip_block_list, the blocks STG perturbs; allowed"):
        load_release_config(write_config(tmp_path, fields))


def test_skipped_steps_beside_explicit_timesteps_are_refused_when_built_directly():
    with pytest.raises(SettingsError, match="skip_final_inference_steps 2 has no effect with timesteps"):
        PassSettings(timesteps=(1.0, 0.5), skip_final_inference_steps=2, stg_scale=0.0)


def test_a_base_config_with_passes_is_refused(tmp_path):
    fields = preset_fields("ltxv-2b-0.9.5") | {"first_pass": {"num_inference_steps": 8}}
    with pytest.raises(SettingsError, match="first_pass is read only when pipeline_type is multi-scale, not base"):
        load_release_config(write_config(tmp_path, fields))
    first = load_preset("ltxv-2b-0.9.5").first_pass
    with pytest.raises(SettingsError, match="second_pass is read only when pipeline_type is multi-scale"):
        ReleaseConfig(
            pipeline_type="base",
            checkpoint_path=Path("m"),
            checkpoint_path_raw="m",
            precision="bfloat16",
            text_encoder_model_name_or_path="t5",
            first_pass=first,
            second_pass=first,
        )


@pytest.mark.parametrize(
    "text, message",
    [
        ("- pipeline_type: base\n", "holds list, not a mapping of fields"),
        ("", "holds NoneType, not a mapping of fields"),
        ("pipeline_type: [base\n", "is not valid YAML"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=message) as error:
        load_release_config(path)
    assert str(path) in str(error.value)


def test_a_missing_file_and_an_unknown_preset_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="release config .*nope.yaml does not exist"):
        load_release_config(tmp_path / "nope.yaml")
    with pytest.raises(SettingsError, match=r"release config 'ltxv-13b-0.9.9' is not known; known: ltxv-13b-0.9.8"):
        load_preset("ltxv-13b-0.9.9")
