"""The node pack inside a real ComfyUI server, driven through its HTTP API and websocket.

If these fail, users of ComfyUI see it: nodes missing from the menu, shipped workflows
that do not run, errors that do not say what to fix, a server stuck after a bad prompt,
or Cancel that does not cancel.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ltx_core import video as core_video

from ..fixtures_checkpoints import write_diffusers_folder
from .comfy_env import PromptRejected, assert_succeeded, status_messages
from .conftest import (
    ALL_WORKFLOW_NAMES,
    GGUF_NAME,
    LORA_CHECKPOINT_NAMES,
    RELEASE,
    TEST_FRAMES,
    TEST_HEIGHT,
    TEST_WIDTH,
    UPSAMPLER_NAME,
    VAE_NAME,
    api_workflow,
    nodes_of,
    small,
    small_workflow,
    without_meta,
)

pytestmark = pytest.mark.comfy_server

COMBO = "COMBO"
MAX_RERUN_DIFFERENCE = 1  # of 255: see test_the_same_graph_gives_the_same_frames  # a list of choices in /object_info

# node id -> (required inputs with their types, optional inputs, output types)
EXPECTED_NODES = {
    "LTXVCoreCheckpointLoader": ({"ckpt_name": COMBO, "dtype": COMBO, "device": COMBO}, {"optimization": COMBO, "offload": COMBO}, ["LTXV_CORE_MODEL", "LTXV_CORE_VAE"]),
    "LTXVCoreTransformerLoader": ({"unet_name": COMBO, "dtype": COMBO, "device": COMBO}, {"optimization": COMBO, "offload": COMBO}, ["LTXV_CORE_MODEL"]),
    "LTXVCoreVAELoader": ({"vae_name": COMBO, "dtype": COMBO, "device": COMBO}, {}, ["LTXV_CORE_VAE"]),
    "LTXVCoreT5Loader": ({"text_encoder_name": COMBO, "dtype": COMBO, "device": COMBO}, {}, ["LTXV_CORE_T5"]),
    "LTXVCoreLoraLoader": ({"model": "LTXV_CORE_MODEL", "lora_name": COMBO, "strength": "FLOAT"}, {}, ["LTXV_CORE_MODEL"]),
    "LTXVCoreAddControl": ({"model": "LTXV_CORE_MODEL", "vae": "LTXV_CORE_VAE", "latent": "LATENT", "control_video": "IMAGE", "strength": "FLOAT", "downscale": "INT"}, {}, ["LATENT"]),
    "LTXVCoreUpsamplerLoader": ({"upsampler_name": COMBO, "dtype": COMBO, "device": COMBO}, {}, ["LTXV_CORE_UPSAMPLER"]),
    "LTXVCoreT5Encode": ({"t5": "LTXV_CORE_T5", "text": "STRING", "max_tokens": "INT"}, {}, ["CONDITIONING"]),
    "LTXVCoreEmptyLatentVideo": ({"width": "INT", "height": "INT", "frames": "INT", "batch_size": "INT"}, {}, ["LATENT"]),
    "LTXVCoreVAEEncodeFirstFrame": ({"vae": "LTXV_CORE_VAE", "image": "IMAGE", "width": "INT", "height": "INT"}, {}, ["LATENT"]),
    "LTXVCoreConditionFirstFrame": ({"latent": "LATENT", "first_frame": "LATENT", "strength": "FLOAT"}, {}, ["LATENT"]),
    "LTXVCoreScheduler": ({"latent": "LATENT", "steps": "INT", "dynamic_shift": "BOOLEAN", "base_shift": "FLOAT", "max_shift": "FLOAT", "terminal": "FLOAT"}, {}, ["SIGMAS"]),
    "LTXVCoreReleaseSchedule": ({"preset": COMBO, "pass_name": COMBO}, {"latent": "LATENT", "model": "LTXV_CORE_MODEL"}, ["SIGMAS", "LTXV_CORE_GUIDANCE"]),
    "LTXVCoreSampler": (
        {"model": "LTXV_CORE_MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": "LATENT",
         "seed": "INT", "steps": "INT", "cfg": "FLOAT", "frame_rate": "FLOAT", "dynamic_shift": "BOOLEAN",
         "base_shift": "FLOAT", "max_shift": "FLOAT", "terminal": "FLOAT"},
        {"sigmas": "SIGMAS", "stochastic": "BOOLEAN"},
        ["LATENT"],
    ),
    "LTXVCoreAddGuide": ({"vae": "LTXV_CORE_VAE", "latent": "LATENT", "image": "IMAGE", "frame_index": "INT", "strength": "FLOAT"}, {}, ["LATENT"]),
    "LTXVCoreGuidedSampler": (
        {"model": "LTXV_CORE_MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": "LATENT",
         "seed": "INT", "steps": "INT", "cfg": "FLOAT", "frame_rate": "FLOAT", "dynamic_shift": "BOOLEAN",
         "base_shift": "FLOAT", "max_shift": "FLOAT", "terminal": "FLOAT", "stg_scale": "FLOAT", "stg_blocks": "STRING",
         "stg_mode": COMBO, "stg_rescale": "FLOAT", "strength_rule": COMBO},
        {"sigmas": "SIGMAS", "stochastic": "BOOLEAN", "guidance": "LTXV_CORE_GUIDANCE"},
        ["LATENT"],
    ),
    "LTXVCoreLongVideoSampler": (
        {"model": "LTXV_CORE_MODEL", "t5": "LTXV_CORE_T5", "latent": "LATENT", "prompts": "STRING",
         "negative_prompt": "STRING", "seed": "INT", "steps": "INT", "cfg": "FLOAT", "frame_rate": "FLOAT",
         "window_frames": "INT", "window_overlap": "INT", "overlap_strength": "FLOAT", "adain_factor": "FLOAT"},
        {"stochastic": "BOOLEAN"},
        ["LATENT"],
    ),
    "LTXVCoreLatentUpsample": ({"upsampler": "LTXV_CORE_UPSAMPLER", "vae": "LTXV_CORE_VAE", "latent": "LATENT", "adain_factor": "FLOAT", "tone_map_compression": "FLOAT"}, {}, ["LATENT"]),
    "LTXVCoreDenoisingDecode": ({"vae": "LTXV_CORE_VAE", "latent": "LATENT", "timestep": "FLOAT", "decode_noise_scale": "FLOAT", "seed": "INT"}, {"time_chunk": "INT", "tone_map_compression": "FLOAT", "tile_rows": "INT", "tile_columns": "INT", "tile_overlap": "INT"}, ["IMAGE"]),
    "LTXVCoreSaveVideo": ({"images": "IMAGE", "frame_rate": "FLOAT", "filename_prefix": "STRING"}, {}, []),
}  # fmt: skip


def _input_types(section: dict) -> dict:
    return {name: COMBO if isinstance(spec[0], list) else spec[0] for name, spec in section.items()}


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


# ---------------------------------------------------------------- the node menu


def test_object_info_lists_every_node_of_the_pack_with_its_inputs_and_outputs(object_info):
    pack_nodes = {name for name in object_info if name.startswith("LTXVCore")}
    assert pack_nodes == set(EXPECTED_NODES)
    for name, (required, optional, outputs) in EXPECTED_NODES.items():
        info = object_info[name]
        assert _input_types(info["input"]["required"]) == required, name
        assert _input_types(info["input"].get("optional", {})) == optional, name
        assert info["output"] == outputs, name
        assert info["category"] == "LTX-Video"
        assert info["display_name"].startswith("LTX-Video ")
        assert info["description"]


def test_the_fused_kernels_are_the_only_speed_option_on_unless_asked(object_info):
    optimization = object_info["LTXVCoreCheckpointLoader"]["input"]["optional"]["optimization"]
    assert optimization[0] == ["kernels", "none", "compile", "compile+fp8"] and optimization[1]["default"] == "kernels"
    decode = object_info["LTXVCoreDenoisingDecode"]["input"]["optional"]
    # each layer 16 frames at a time: the frames of the whole decode, less memory (0: whole)
    assert decode["time_chunk"][1]["default"] == 16 and decode["time_chunk"][1]["min"] == 0


def test_the_guide_and_stg_choices_are_the_cores(object_info):
    guided = object_info["LTXVCoreGuidedSampler"]["input"]["required"]
    assert guided["stg_mode"][0] == ["attention_values", "attention_skip", "residual", "transformer_block"]
    assert guided["strength_rule"][0] == ["scaled", "held"]
    assert guided["stg_scale"][1]["default"] == 0.0, "STG is off unless asked for"
    frame_index = object_info["LTXVCoreAddGuide"]["input"]["required"]["frame_index"][1]
    assert frame_index["min"] < 0 < frame_index["max"], "negative indices count from the end"


def test_size_widgets_step_by_the_vae_compression(object_info):
    empty = object_info["LTXVCoreEmptyLatentVideo"]["input"]["required"]
    assert empty["width"][1]["step"] == 32 and empty["height"][1]["step"] == 32
    assert empty["frames"][1]["step"] == 8 and empty["frames"][1]["min"] == 1


def test_loaders_list_the_files_placed_in_the_model_folders(object_info):
    checkpoints = object_info["LTXVCoreCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    encoders = object_info["LTXVCoreT5Loader"]["input"]["required"]["text_encoder_name"][0]
    upsamplers = object_info["LTXVCoreUpsamplerLoader"]["input"]["required"]["upsampler_name"][0]
    assert "ltxv-tiny.safetensors" in checkpoints
    assert "t5-tiny" in encoders
    assert upsamplers == [UPSAMPLER_NAME], "models/latent_upscale_models, as ComfyUI's own loader lists it"
    assert not [name for name in encoders if name.startswith("t5-tiny/")], "files inside a T5 folder are not choices"


# ---------------------------------------------------------------- shipped workflows


@pytest.mark.parametrize("name", ALL_WORKFLOW_NAMES)
def test_shipped_api_workflow_runs_and_leaves_an_mp4_of_the_asked_size(comfy_server, name):
    prompt, expected_frames = small_workflow(name)
    prompt_id = comfy_server.queue_prompt(prompt, workflow={"name": name})
    entry = comfy_server.wait_for_history(prompt_id)
    assert_succeeded(entry)
    [video] = comfy_server.output_files(entry)
    assert video.suffix == ".mp4" and video.is_file()
    frames = core_video.read_video_frames(video)
    assert tuple(frames.shape) == (expected_frames, TEST_HEIGHT, TEST_WIDTH, 3)
    metadata = core_video.read_video_metadata(video)
    assert without_meta(json.loads(metadata["prompt"])) == without_meta(prompt), "the video carries its prompt"
    assert metadata["workflow"] == f'{{"name": "{name}"}}'
    assert not list(video.parent.glob(".*.part")), "no temporary file is left beside the video"


def test_a_gguf_transformer_with_the_vae_loader_gives_the_checkpoints_video(comfy_server):
    """The transformer and VAE loaders in place of the checkpoint loader: a GGUF file (Q8_0
    blocks) and a VAE file run the t2v graph; its frames stay close to the float run's."""
    prompt, frames = small_workflow("t2v", filename_prefix="LTXV/gguf")
    prompt["1"]["inputs"]["ckpt_name"] = LORA_CHECKPOINT_NAMES[0]  # the file the GGUF was made from
    reference = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(reference)
    prompt["20"] = {
        "class_type": "LTXVCoreTransformerLoader",
        "inputs": {"unet_name": GGUF_NAME, "dtype": "default", "device": "default"},
    }
    prompt["21"] = {
        "class_type": "LTXVCoreVAELoader",
        "inputs": {"vae_name": VAE_NAME, "dtype": "default", "device": "default"},
    }
    prompt["6"]["inputs"]["model"], prompt["7"]["inputs"]["vae"] = ["20", 0], ["21", 0]
    del prompt["1"]
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(entry)
    [video] = comfy_server.output_files(entry)
    [float_video] = comfy_server.output_files(reference)
    gguf, plain = (core_video.read_video_frames(v).float() for v in (video, float_video))
    assert gguf.shape == (frames, TEST_HEIGHT, TEST_WIDTH, 3)
    assert (gguf - plain).abs().mean() < 4, "Q8_0 weights: the same video within quantization noise"


def test_the_multiscale_second_pass_decodes_at_twice_the_first_pass_size(comfy_server):
    """Without the final resize (ImageScale 0 x 0 keeps the size): the first pass at the
    test size, the upsampled second pass and its decode at twice that."""
    prompt, expected_frames = small_workflow("multiscale_i2v", filename_prefix="LTXV/multiscale_full_size")
    _with_input(prompt, "ImageScale", width=0, height=0)
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(entry)
    [video] = comfy_server.output_files(entry)
    assert core_video.read_video_frames(video).shape == (expected_frames, 2 * TEST_HEIGHT, 2 * TEST_WIDTH, 3)


def test_an_upsampler_missing_from_its_folder_is_refused_at_queue_time_naming_the_folder(comfy_server):
    prompt = _with_input(
        small(api_workflow("multiscale_t2v")),
        "LTXVCoreUpsamplerLoader",
        upsampler_name="ltxv-spatial-upscaler-0.9.7.safetensors",
    )
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue_prompt(prompt)
    [details] = [error["details"] for node in rejected.value.body["node_errors"].values() for error in node["errors"]]
    assert re.search(
        r"latent upsampler 'ltxv-spatial-upscaler-0\.9\.7\.safetensors' is not in the model folders "
        r"\('latent_upscale_models',\).*choose one of: ltxv-spatial-upscaler-0\.9\.8",
        details,
    ), details


def test_a_saved_workflow_with_an_input_the_decoder_no_longer_has_still_runs(comfy_server):
    """Earlier versions' decode node had `chunk_frames`; ComfyUI hands a node only the values
    of the inputs it declares, so such a workflow still runs."""
    prompt, expected_frames = small_workflow("t2v", filename_prefix="LTXV/old_input")
    [decode] = nodes_of(prompt, "LTXVCoreDenoisingDecode")
    decode["inputs"]["chunk_frames"] = 0
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(entry)
    [video] = comfy_server.output_files(entry)
    assert core_video.read_video_frames(video).shape[0] == expected_frames


def _decoded_frames_as_png(prompt: dict, prefix: str) -> dict:
    """The prompt with ComfyUI's own SaveImage on the decoder's output: lossless frames."""
    [decode_id] = [node_id for node_id, node in prompt.items() if node["class_type"] == "LTXVCoreDenoisingDecode"]
    prompt["png"] = {"class_type": "SaveImage", "inputs": {"images": [decode_id, 0], "filename_prefix": prefix}}
    return prompt


def test_a_diffusers_folder_is_listed_as_one_checkpoint_and_runs(comfy_server):
    write_diffusers_folder(comfy_server.checkpoints_dir / "ltxv-tiny-diffusers", RELEASE)
    choices = comfy_server.get("/object_info/LTXVCoreCheckpointLoader")["LTXVCoreCheckpointLoader"]
    names = choices["input"]["required"]["ckpt_name"][0]
    assert "ltxv-tiny-diffusers" in names
    assert not [name for name in names if name.startswith("ltxv-tiny-diffusers/")], "its files are not choices"
    prompt = _with_input(
        small(api_workflow("t2v"), filename_prefix="LTXV/diffusers"),
        "LTXVCoreCheckpointLoader",
        ckpt_name="ltxv-tiny-diffusers",
    )
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(entry)
    assert core_video.read_video_frames(comfy_server.output_files(entry)[0]).shape[0] == TEST_FRAMES


def test_the_same_graph_gives_the_same_frames(comfy_server):
    """Seeds drive every random draw (initial noise, decode noise): seed 7, then 8 (so
    ComfyUI's cache of the seed-7 outputs is gone), then 7 again gives the first frames
    (to the last bit of 8-bit colour: CPU kernels may round differently between runs of a
    long-lived process, which can flip a value across a rounding boundary)."""
    runs = []
    for seed in (7, 8, 7):
        prompt = _decoded_frames_as_png(small(api_workflow("t2v"), seed=seed), f"LTXV/png_{seed}")
        entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
        assert_succeeded(entry)
        pngs = sorted(path for path in comfy_server.output_files(entry) if path.suffix == ".png")
        assert len(pngs) == TEST_FRAMES
        runs.append(np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in pngs]))
    first, other, again = runs
    assert np.abs(first - again).max() <= MAX_RERUN_DIFFERENCE
    assert np.abs(first - other).mean() > 10 * MAX_RERUN_DIFFERENCE, "another seed gives another video"


@pytest.mark.parametrize("stochastic", [True, False], ids=["stochastic steps", "plain steps"])
def test_the_shipped_t2v_workflow_gives_the_clis_frames(comfy_server, monkeypatch, stochastic):
    """The t2v workflow in ComfyUI and `python -m ltx_core generate` with its settings give
    the same frames (to one 8-bit level), with and without stochastic steps: what the
    CLI-based evaluation reads is what a workflow user gets."""
    from ltx_core import cli

    prompt = small(api_workflow("t2v"), stochastic=stochastic)
    sampler, decode = (
        next(iter(nodes_of(prompt, kind)))["inputs"] for kind in ("LTXVCoreSampler", "LTXVCoreDenoisingDecode")
    )
    texts = [node["inputs"]["text"] for node in nodes_of(prompt, "LTXVCoreT5Encode")]
    entry = comfy_server.wait_for_history(
        comfy_server.queue_prompt(_decoded_frames_as_png(prompt, f"LTXV/cli_{stochastic}"))
    )
    assert_succeeded(entry)
    pngs = sorted(path for path in comfy_server.output_files(entry) if path.suffix == ".png")
    workflow_frames = np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in pngs])

    written = {}
    monkeypatch.setattr(cli, "write_mp4", lambda frames, path, **kwargs: written.setdefault("frames", frames))
    code = cli.main([
        "generate", "--checkpoint", str(comfy_server.checkpoints_dir / "ltxv-tiny.safetensors"),
        "--text-encoder", str(comfy_server.text_encoders_dir / "t5-tiny"), "--device", "cpu",
        "--prompt", texts[0], "--negative-prompt", texts[1], "--seed", str(sampler["seed"]),
        "--steps", str(sampler["steps"]), "--cfg", str(sampler["cfg"]), "--fps", str(sampler["frame_rate"]),
        "--width", str(TEST_WIDTH), "--height", str(TEST_HEIGHT), "--frames", str(TEST_FRAMES),
        "--decode-timestep", str(decode["timestep"]), "--decode-noise-scale", str(decode["decode_noise_scale"]),
        "--stochastic-sampling" if stochastic else "--no-stochastic-sampling", "--output", "unused.mp4",
    ])  # fmt: skip
    assert code == 0
    cli_frames = (written["frames"].numpy() * 255).round().astype(np.int16)
    assert cli_frames.shape == workflow_frames.shape == (TEST_FRAMES, TEST_HEIGHT, TEST_WIDTH, 3)
    assert np.abs(cli_frames - workflow_frames).max() <= MAX_RERUN_DIFFERENCE


# ---------------------------------------------------------------- bad prompts


def _with_input(prompt: dict, class_type: str, **inputs) -> dict:
    for node in nodes_of(prompt, class_type):
        node["inputs"].update(inputs)
    return prompt


@pytest.mark.parametrize(
    "class_type, inputs, message",
    [
        # sizes off the VAE's grid fail in their node: test_user_facing.py
        (
            "LTXVCoreCheckpointLoader",
            {"ckpt_name": "no-such-model.safetensors"},
            r"no-such-model\.safetensors.*not in the model folders",
        ),
        ("LTXVCoreT5Loader", {"text_encoder_name": "no-such-t5"}, r"no-such-t5.*not in the model folders"),
    ],
    ids=["missing-checkpoint", "missing-text-encoder"],
)
def test_a_bad_setting_is_refused_at_queue_time_with_a_message_naming_the_fix(
    comfy_server, class_type, inputs, message
):
    prompt = _with_input(small(api_workflow("t2v")), class_type, **inputs)
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue_prompt(prompt)
    details = " ".join(
        error["details"] for node in rejected.value.body["node_errors"].values() for error in node["errors"]
    )
    assert re.search(message, details), details


def test_a_checkpoint_of_another_model_fails_with_the_core_message_and_the_server_serves_on(comfy_server):
    image_model = comfy_server.checkpoints_dir / "image-model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(image_model))
    prompt = _with_input(small(api_workflow("t2v")), "LTXVCoreCheckpointLoader", ckpt_name=image_model.name)
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == "LTXVCoreCheckpointLoader"
    assert "not an LTX-Video checkpoint" in error["exception_message"]

    next_prompt = small(api_workflow("t2v"), seed=11, filename_prefix="LTXV/after_error")
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(next_prompt))
    assert_succeeded(entry)
    assert comfy_server.output_files(entry)[0].is_file()


def _prompt_texts(prompt: dict, positive: str, negative: str) -> dict:
    sampler = nodes_of(prompt, "LTXVCoreSampler")[0]["inputs"]
    prompt[sampler["positive"][0]]["inputs"]["text"] = positive
    prompt[sampler["negative"][0]]["inputs"]["text"] = negative
    return prompt


def test_an_empty_positive_prompt_is_refused_and_an_empty_negative_one_is_fine(comfy_server):
    refused = _prompt_texts(small(api_workflow("t2v")), positive="  ", negative="blurry")
    error = status_messages(comfy_server.wait_for_history(comfy_server.queue_prompt(refused)))["execution_error"]
    assert error["node_type"] == "LTXVCoreSampler"
    assert "positive prompt is empty" in error["exception_message"]
    fine = _prompt_texts(small(api_workflow("t2v"), filename_prefix="LTXV/no_negative"), positive="a fox", negative="")
    assert_succeeded(comfy_server.wait_for_history(comfy_server.queue_prompt(fine)))


@pytest.mark.parametrize(
    "frame_index, message",
    [
        (40, r"conditioning frame index 40 with 1 frame\(s\) reaches past the clip of 9 frames"),
        (-40, r"frame_index -40 puts the 1 conditioning frame\(s\) before the first frame .* down to -9"),
    ],
    ids=["past-the-end", "before-the-start"],
)
def test_a_keyframe_outside_the_video_fails_with_a_message_naming_the_range(comfy_server, frame_index, message):
    prompt, _ = small_workflow("first_last")
    nodes_of(prompt, "LTXVCoreAddGuide")[-1]["inputs"]["frame_index"] = frame_index  # the last-frame guide
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == "LTXVCoreAddGuide"
    assert re.search(message, error["exception_message"]), error["exception_message"]


def test_an_image_models_latent_in_the_sampler_fails_with_the_core_message(comfy_server):
    prompt = small(api_workflow("t2v"))
    prompt["image_latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    nodes_of(prompt, "LTXVCoreSampler")[0]["inputs"]["latent"] = ["image_latent", 0]
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == "LTXVCoreSampler"
    assert "LTX-Video latents are 5-D" in error["exception_message"]


# ---------------------------------------------------------------- progress, Cancel, queue


def test_sampling_reports_progress_with_previews_and_cancel_stops_it_before_the_last_step(comfy_server):
    steps = 300  # many short steps: the run is still going when Cancel arrives
    prompt = small(api_workflow("t2v"), steps=steps, seed=5, filename_prefix="LTXV/interrupted")
    prompt_id, events = comfy_server.run_watching(prompt, interrupt_at_step=2)
    progress = [data["value"] for kind, data, _ in events if kind == "progress"]
    assert progress[:2] == [1, 2] and all(data["max"] == steps for kind, data, _ in events if kind == "progress")
    assert any(kind == "preview" for kind, _, _ in events), "a latent preview comes with the progress"
    assert max(progress) < steps
    entry = comfy_server.wait_for_history(prompt_id)
    interrupted = status_messages(entry)["execution_interrupted"]
    assert interrupted["node_type"] == "LTXVCoreSampler"
    assert not list(comfy_server.output_dir.glob("LTXV/interrupted*")), "no video of a cancelled run"


def test_two_queued_prompts_both_complete_in_order_with_their_own_outputs(comfy_server):
    ids = [
        comfy_server.queue_prompt(small(api_workflow("t2v"), seed=seed, filename_prefix=f"LTXV/queued_{seed}"))
        for seed in (21, 22)
    ]
    entries = [comfy_server.wait_for_history(prompt_id) for prompt_id in ids]
    videos = [comfy_server.output_files(entry)[0] for entry in entries]
    assert [video.name for video in videos] == ["queued_21_00001_.mp4", "queued_22_00001_.mp4"]
    finished_order = [prompt_id for prompt_id in comfy_server.get("/history") if prompt_id in ids]
    assert finished_order == ids, "history lists prompts in the order they finished"
    first, second = (core_video.read_video_frames(video) for video in videos)
    assert not torch.equal(first, second), "each prompt used its own seed"
