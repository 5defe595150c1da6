"""The nodes in-process, with the real ComfyUI modules (`comfy`, `folder_paths`) of the copy
that tests/host sets up under `.comfy/`, no server and no fakes.

These pin what the server tests cannot reach directly: the pack imports without ComfyUI,
a foreign `ltx_core` never shadows its core, node ids keep their prefix, Cancel raises
from the step callback, a model stays loaded with room for its work, and the saver never leaves a partial
file. If they fail, saved graphs, headless use or ComfyUI's memory manager break.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from ltx_core import video as core_video
from ltx_core.models import text_encoder as core_text_encoder
from ltx_core.preflight import SHIPPED_CHECKPOINT

from .conftest import TINY_T5
from .host.comfy_env import COMFY_ROOT, REPO_ROOT, ensure_comfyui
from .test_text_encoder import reference_encoder, write_comfy_t5

PACK_NAME = "ltxv_core_pack_under_test"
NODE_IDS = (
    "LTXVCoreCheckpointLoader",
    "LTXVCoreTransformerLoader",
    "LTXVCoreVAELoader",
    "LTXVCoreT5Loader",
    "LTXVCoreLoraLoader",
    "LTXVCoreUpsamplerLoader",
    "LTXVCoreT5Encode",
    "LTXVCoreEmptyLatentVideo",
    "LTXVCoreVAEEncodeFirstFrame",
    "LTXVCoreConditionFirstFrame",
    "LTXVCoreAddGuide",
    "LTXVCoreAddControl",
    "LTXVCoreScheduler",
    "LTXVCoreReleaseSchedule",
    "LTXVCoreSampler",
    "LTXVCoreGuidedSampler",
    "LTXVCoreLongVideoSampler",
    "LTXVCoreLatentUpsample",
    "LTXVCoreDenoisingDecode",
    "LTXVCoreSaveVideo",
)
# ComfyUI's own LTX-Video node ids (comfy_extras/nodes_lt.py and friends): never ours.
COMFY_LTXV_IDS = {
    "EmptyLTXVLatentVideo", "LTXVImgToVideo", "LTXVImgToVideoInplace", "LTXVScheduler", "LTXVConditioning",
    "ModelSamplingLTXV", "LTXVAddGuide", "LTXVCropGuides", "LTXVPreprocess", "LTXVApplySTG", "LTXVLoader",
}  # fmt: skip

_IMPORT_PACK = textwrap.dedent(f"""
    import importlib.util, json, sys
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True  # as `main.py --cpu`
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "pack", {str(REPO_ROOT / "__init__.py")!r}, submodule_search_locations=[{str(REPO_ROOT)!r}])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["pack"] = pack
    spec.loader.exec_module(pack)
    core = sys.modules.get("pack.ltx_core")
    print(json.dumps({{"nodes": sorted(pack.NODE_CLASS_MAPPINGS), "core": core and core.__file__}}))
""")


def _import_pack_in_subprocess(python_path: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    command = [sys.executable, "-c", _IMPORT_PACK]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pack():
    """The pack imported as ComfyUI imports it, with ComfyUI's modules on the path (CPU)."""
    ensure_comfyui()
    sys.path.insert(0, str(COMFY_ROOT))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management picks a device
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(COMFY_ROOT))


def _node(pack, node_id: str):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


# ---------------------------------------------------------------- importing


def test_the_pack_imports_without_comfyui_and_registers_nothing():
    assert _import_pack_in_subprocess([]) == {"nodes": [], "core": None}


def test_a_foreign_ltx_core_on_the_path_never_shadows_the_packs_own_core(tmp_path):
    """Lightricks' LTX-2 core on the package index is also named `ltx_core`."""
    foreign = tmp_path / "ltx_core"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("raise ImportError('the foreign ltx_core was imported')\n")
    ensure_comfyui()
    found = _import_pack_in_subprocess([str(tmp_path), str(COMFY_ROOT)])
    assert found["nodes"] == sorted(NODE_IDS)
    assert Path(found["core"]).resolve() == (REPO_ROOT / "ltx_core" / "__init__.py").resolve()


def test_node_ids_carry_the_pack_prefix_and_never_reuse_comfyuis_ltxv_ids(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(NODE_IDS)
    assert not set(NODE_IDS) & COMFY_LTXV_IDS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_IDS)
    for node_id, node_class in pack.NODE_CLASS_MAPPINGS.items():
        assert node_class.CATEGORY == "LTX-Video", node_id
        assert node_class.DESCRIPTION and callable(getattr(node_class, node_class.FUNCTION)), node_id
        inputs = node_class.INPUT_TYPES()
        own_types = [spec[0] for section in inputs.values() for spec in section.values() if isinstance(spec[0], str)]
        own_types += list(node_class.RETURN_TYPES)
        assert all(t.startswith("LTXV_CORE_") or t.isupper() for t in own_types), node_id


# ---------------------------------------------------------------- widgets and checks


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"width": 100, "height": 64, "frames": 9},
            "width 100 is not a positive multiple of 32; nearest valid: 96 or 128",
        ),
        ({"width": 64, "height": 500, "frames": 9}, "nearest valid: 480 or 512"),
        ({"width": 64, "height": 64, "frames": 100}, r"frames 100 is not 8k \+ 1 .*nearest valid: 97 or 105"),
        ({"width": 64, "height": 64, "frames": 24}, "nearest valid: 17 or 25"),
    ],
)
def test_empty_latent_refuses_a_size_off_the_grid_naming_the_nearest_valid_values(pack, settings, message):
    with pytest.raises(ValueError, match=message):  # the pack's own copy of SettingsError
        _node(pack, "LTXVCoreEmptyLatentVideo").generate(**settings, batch_size=1)


def test_valid_sizes_pass_and_comfyuis_own_range_checks_stay_on(pack):
    """No VALIDATE_INPUTS takes a size: ComfyUI skips its min/max checks for those it takes."""
    (latent,) = _node(pack, "LTXVCoreEmptyLatentVideo").generate(width=768, height=512, frames=97, batch_size=1)
    assert latent["samples"].shape == (1, 128, 13, 16, 24)
    for node in ("LTXVCoreEmptyLatentVideo", "LTXVCoreVAEEncodeFirstFrame"):
        assert not hasattr(pack.NODE_CLASS_MAPPINGS[node], "VALIDATE_INPUTS")


def test_the_conditioned_latent_carries_the_first_frame_timestep_as_comfyuis_noise_mask(pack):
    (latent,) = _node(pack, "LTXVCoreEmptyLatentVideo").generate(width=64, height=96, frames=17, batch_size=2)
    assert latent["samples"].shape == (2, 128, 3, 3, 2)
    frame = torch.randn(1, 128, 1, 3, 2, generator=torch.Generator().manual_seed(0))
    (conditioned,) = _node(pack, "LTXVCoreConditionFirstFrame").condition(latent, {"samples": frame}, strength=0.75)
    mask = conditioned["noise_mask"]
    assert torch.allclose(mask[:, :, 0], torch.full_like(mask[:, :, 0], 0.25))
    assert torch.equal(mask[:, :, 1:], torch.ones_like(mask[:, :, 1:]))
    assert torch.equal(conditioned["samples"][:, :, :1], frame.expand(2, -1, -1, -1, -1))
    assert not latent["samples"].any(), "the input latent is left as it was"


@pytest.fixture(scope="module")
def tiny_models(pack):
    """Seeded tiny transformer and VAE of the pack's own core, wrapped as the loader does."""
    core = sys.modules[f"{PACK_NAME}.ltx_core"]
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    configs = importlib.import_module(f"{core.__name__}.models.configs")
    torch.manual_seed(0)
    transformer = importlib.import_module(f"{core.__name__}.models.transformer").LTXVTransformer(
        configs.TINY_TRANSFORMER
    )
    vae = importlib.import_module(f"{core.__name__}.models.vae").CausalVideoVAE(configs.TINY_VAE)
    return memory.patcher(transformer.eval(), "diffusion", "cpu"), memory.patcher(vae.eval(), "vae", "cpu")


def test_an_image_batch_without_frames_into_the_vae_encode_names_the_problem(pack, tiny_models):
    _, vae = tiny_models
    with pytest.raises(ValueError, match=r"first_frame \(0, 64, 64, 3\) is not an image"):
        _node(pack, "LTXVCoreVAEEncodeFirstFrame").encode(vae, torch.zeros(0, 64, 64, 3), 64, 64)


def test_conditioning_of_another_width_into_the_sampler_names_both_widths(pack, tiny_models):
    transformer, _ = tiny_models
    (latent,) = _node(pack, "LTXVCoreEmptyLatentVideo").generate(width=32, height=32, frames=1, batch_size=1)
    clip_like = [[torch.zeros(1, 77, 768), {}]]  # e.g. a CLIP text encoder's output
    with pytest.raises(
        ValueError, match="text embeddings are 768 wide but the transformer's caption projection takes 32"
    ):
        _node(pack, "LTXVCoreSampler").sample(
            transformer,
            clip_like,
            clip_like,
            latent,
            seed=0,
            steps=1,
            cfg=1.0,
            frame_rate=25.0,
            dynamic_shift=True,
            base_shift=0.95,
            max_shift=2.05,
            terminal=0.1,
        )


def test_a_latent_of_comfyuis_own_ltxv_nodes_without_noise_mask_is_sampled_whole(pack, tiny_models):
    """ComfyUI's EmptyLTXVLatentVideo gives {"samples": zeros (B, 128, f, h/32, w/32)} only."""
    transformer, _ = tiny_models
    comfy_latent = {"samples": torch.zeros(1, 128, 2, 1, 2)}
    text = [
        [
            torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)),
            {"attention_mask": torch.ones(1, 8, dtype=torch.bool)},
        ]
    ]
    (result,) = _node(pack, "LTXVCoreSampler").sample(
        transformer,
        text,
        text,
        comfy_latent,
        seed=3,
        steps=2,
        cfg=1.0,
        frame_rate=25.0,
        dynamic_shift=True,
        base_shift=0.95,
        max_shift=2.05,
        terminal=0.1,
    )
    assert result["samples"].shape == (1, 128, 2, 1, 2)
    assert result["samples"].abs().sum() > 0, "every token was generated from noise"


def test_a_run_beyond_all_of_the_devices_memory_is_refused_with_the_plan_before_the_model_moves(
    pack, tiny_models, monkeypatch
):
    """The sampler and the decode node check the memory plan against the device's whole
    memory (a small one here) and name the estimate and sizes that fit, sampling nothing."""
    transformer, vae = tiny_models
    planner = sys.modules[f"{PACK_NAME}.ltx_core.memory_plan"]
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    moved = []
    monkeypatch.setattr(memory.mm, "load_models_gpu", lambda models, **kw: moved.append(models))
    monkeypatch.setattr(planner, "device_capacity", lambda device: 2**20)  # 1 MiB
    latent = {"samples": torch.zeros(1, 128, 17, 8, 8)}  # 256x256, 129 frames
    text = [
        [
            torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)),
            {"attention_mask": torch.ones(1, 8, dtype=torch.bool)},
        ]
    ]
    fits = r"needs about .* at its peak \(sampling.*1 MiB is available on cpu. Nearest settings that fit: .*x.* with 129 frames"
    with pytest.raises(ValueError, match=fits):
        _node(pack, "LTXVCoreSampler").sample(
            transformer,
            text,
            text,
            latent,
            seed=3,
            steps=2,
            cfg=3.0,
            frame_rate=25.0,
            dynamic_shift=True,
            base_shift=0.95,
            max_shift=2.05,
            terminal=0.1,
        )
    with pytest.raises(ValueError, match=r"needs about .* at its peak \(decode.*all of the device's memory counts"):
        _node(pack, "LTXVCoreDenoisingDecode").decode(vae, latent, timestep=0.05, decode_noise_scale=0.025, seed=5)
    assert moved == [], "refused before ComfyUI moved a model"


def test_the_loaders_offload_choice_streams_the_blocks_a_gpu_run_needs(pack):
    """auto streams the fewest blocks that fit the GPU, blocks every one, none nothing (a run
    too big is then refused); the loaders offer exactly these choices."""
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    planner = sys.modules[f"{PACK_NAME}.ltx_core.memory_plan"]
    configs = sys.modules[f"{PACK_NAME}.ltx_core.models.configs"]
    weights = planner.WeightBytes(planner.transformer_params(configs.LTXV_13B) * 2, 0, 0)
    work = planner.Workload(
        configs.LTXV_13B, None, 768, 512, 121, models_stay=False, stages=("sampling",), weights=weights
    )
    cap = 24 * planner.GIB
    auto = memory._with_streaming(work, "auto", cap)
    assert 0 < auto.streamed_blocks < 48 and planner.estimate(auto).peak_bytes <= cap
    assert memory._with_streaming(work, "blocks", cap).streamed_blocks == 48
    assert memory._with_streaming(work, "none", cap) == work
    on_cpu = dataclasses.replace(work, device="cpu")
    assert memory._with_streaming(on_cpu, "auto", cap) == on_cpu
    for name in ("LTXVCoreCheckpointLoader", "LTXVCoreTransformerLoader"):
        choices, options = _node(pack, name).INPUT_TYPES()["optional"]["offload"]
        assert choices == ["auto", "none", "blocks"] and options["default"] == "auto"
    with pytest.raises(ValueError, match="offload 'models' is unknown; allowed: auto, none, blocks"):
        memory.patcher(torch.nn.Linear(2, 2), "diffusion", "cpu", offload="models")


# ---------------------------------------------------------------- progress, Cancel, memory


def test_each_step_moves_comfyuis_progress_bar_with_a_preview(pack, monkeypatch):
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    sampling = sys.modules[f"{PACK_NAME}.nodes.sampling"]
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Auto)
    updates = []
    monkeypatch.setattr(
        comfy.utils,
        "PROGRESS_BAR_HOOK",
        lambda value, total, preview, node_id=None: updates.append((value, total, preview)),
    )
    on_step = sampling._progress_callback(3)
    latent = torch.randn(1, 128, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    on_step(0, 3, latent, latent)
    [(value, total, (kind, image, _))] = updates
    assert (value, total, kind) == (1, 3, "JPEG")
    assert image.size == (4, 3) and image.mode == "RGB"


def test_cancel_in_comfyui_raises_from_the_step_callback(pack):
    import comfy.model_management as mm

    sampling = sys.modules[f"{PACK_NAME}.nodes.sampling"]
    on_step = sampling._progress_callback(2)
    latent = torch.zeros(1, 128, 1, 1, 1)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            on_step(0, 2, latent, latent)
    finally:
        mm.interrupt_current_processing(False)


def test_a_model_stays_on_its_device_after_its_node_until_comfyui_needs_the_room(pack):
    """The next run of a workflow starts at once: the model stays loaded after its node, on
    ComfyUI's loaded list, as ComfyUI's own models do, and goes back to its offload device
    (here `meta`) when ComfyUI frees memory for another."""
    import comfy.model_management as mm
    import comfy.model_patcher

    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    module = torch.nn.Linear(4, 4)
    patcher = comfy.model_patcher.ModelPatcher(
        module, load_device=torch.device("cpu"), offload_device=torch.device("meta")
    )
    with memory.on_device(patcher) as device:
        assert device == torch.device("cpu") and module.weight.device.type == "cpu"
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert module.weight.device.type == "cpu"
    mm.free_memory(1e30, torch.device("cpu"))  # what ComfyUI does when another model needs the room
    assert not any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert module.weight.device.type == "meta"


def test_a_node_asks_comfyui_for_room_for_its_work_beside_the_model(pack, tiny_models, monkeypatch):
    """The sampler's memory plan, less the transformer's weights, is what ComfyUI must leave
    free beside it (it offloads other models otherwise): the plan's activations, not nothing."""
    import comfy.model_management as mm

    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    transformer, _ = tiny_models
    plan = memory.refuse_what_never_fits(transformer, "sampling", (1, 128, 4, 8, 8), guidance=True, steps=20)
    asked = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **kw: asked.append(kw) or real(models, **kw))
    with memory.on_device(transformer, plan):
        pass
    work = plan.peak_bytes - memory.weight_bytes(memory.core_model(transformer))
    assert work > 0 and asked == [{"memory_required": work, "force_full_load": True}]


def test_a_transformers_t5_runs_under_comfyuis_model_patcher(pack, tiny_t5_folder):
    """ComfyUI's `ModelPatcher.load` sets `model.device`, a read-only property of
    transformers' models: the T5 Encode node failed with that AttributeError in every
    ComfyUI since August 2024. The pack's wrapper takes the attribute and the dtype query."""
    import comfy.model_management as mm

    from ltx_core.models import text_encoder as core_text_encoder

    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    encoder = core_text_encoder.load_text_encoder(tiny_t5_folder)
    t5 = memory.LoadedT5(encoder, memory.patcher(encoder.model, "text_encoder", "cpu"))
    assert t5.patcher.model_dtype() == torch.float32
    # the shared embedding is counted once, though the state dict lists it twice
    assert t5.patcher.model_size() == sum(p.nbytes for p in encoder.model.parameters())
    with memory.on_device(t5.patcher) as device:
        assert any(loaded.model is t5.patcher for loaded in mm.current_loaded_models)
        assert t5.patcher.model.device == device
    (conditioning,) = _node(pack, "LTXVCoreT5Encode").encode(t5, "a red circle", 16)
    assert conditioning[0][0].shape[:2] == (1, 16) and torch.isfinite(conditioning[0][0]).all()


@pytest.mark.parametrize("layout", ["fp16", "fp8_e4m3fn", "scaled_fp8"])
def test_the_t5_loader_reads_comfyuis_t5xxl_files_with_comfyuis_tokenizer(pack, tmp_path, monkeypatch, layout):
    """t5xxl_fp16 / t5xxl_fp8_e4m3fn / t5xxl_fp8_e4m3fn_scaled, as ComfyUI users have them in
    models/text_encoders/ with no tokenizer beside them (tiny random T5s of T5's vocabulary)."""
    import folder_paths

    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=32128, **TINY_T5)).eval()
    name = f"t5xxl_{layout}.safetensors"
    exact = write_comfy_t5(tmp_path / name, model, layout)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "text_encoders", ([str(tmp_path)], {".safetensors"}))
    (t5,) = _node(pack, "LTXVCoreT5Loader").load(name, "float32", "cpu")
    assert t5.encoder.tokenizer("Hello world").input_ids == [8774, 296, 1]  # T5's own ids
    (conditioning,) = _node(pack, "LTXVCoreT5Encode").encode(t5, "a red circle", 16)
    expected = core_text_encoder.encode_prompt(reference_encoder(t5.encoder, exact), ["a red circle"], 16).embeds
    assert (conditioning[0][0] - expected).abs().max() <= 1e-5


# ---------------------------------------------------------------- saving


def test_save_video_writes_numbered_mp4s_listed_like_comfyuis_outputs(pack, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    frames = torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(0))
    saver = _node(pack, "LTXVCoreSaveVideo")
    prompt, workflow = {"1": {"class_type": "LTXVCoreSaveVideo"}}, {"nodes": []}
    results = [
        saver.save(frames, 24.0, "LTXV/clip", prompt=prompt, extra_pnginfo={"workflow": workflow}) for _ in range(2)
    ]
    listed = [result["ui"]["images"][0] for result in results]
    assert [item["filename"] for item in listed] == ["clip_00001_.mp4", "clip_00002_.mp4"]
    assert all(item["subfolder"] == "LTXV" and item["type"] == "output" for item in listed)
    path = tmp_path / "LTXV" / "clip_00001_.mp4"
    assert core_video.read_video_frames(path).shape == (9, 64, 96, 3)
    metadata = core_video.read_video_metadata(path)
    assert json.loads(metadata["prompt"]) == prompt and json.loads(metadata["workflow"]) == workflow


def test_a_failed_save_leaves_no_file_behind(pack, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    odd_width = torch.rand(9, 64, 65, 3)
    with pytest.raises(ValueError, match="odd side"):  # the pack's own copy of SettingsError
        _node(pack, "LTXVCoreSaveVideo").save(odd_width, 24.0, "LTXV/odd")
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


# ---------------------------------------------------------------- speed options (issue 6)

# Dynamo's traced graph and time-chunked decode compute the numbers of the plain run, up to
# convolution algorithms picked per input size (see tests/test_pipeline.py).
SPEED_ATOL = 1e-5


def test_fp8_on_the_cpu_is_refused_by_the_loader_before_any_weights_are_read(pack, monkeypatch):
    loaders = sys.modules[f"{PACK_NAME}.nodes.loaders"]
    monkeypatch.setattr(loaders.core_checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(ValueError, match=r"fp8 needs a CUDA GPU with FP8 tensor cores .*the models are on cpu"):
        _node(pack, "LTXVCoreCheckpointLoader").load(SHIPPED_CHECKPOINT, "float32", "cpu", optimization="compile+fp8")


def sampled_latent(pack, model) -> torch.Tensor:
    """The sampler's latent for one small fixed request (64x32, 9 frames, 2 steps, CFG 3)."""
    width = model.model.core.cfg.caption_channels
    text = [[torch.randn(1, 8, width, generator=torch.Generator().manual_seed(1)),
             {"attention_mask": torch.ones(1, 8, dtype=torch.bool)}]]  # fmt: skip
    (latent,) = _node(pack, "LTXVCoreEmptyLatentVideo").generate(width=64, height=32, frames=9, batch_size=1)
    return _node(pack, "LTXVCoreSampler").sample(
        model, text, text, latent, seed=3, steps=2, cfg=3.0, frame_rate=25.0,
        dynamic_shift=True, base_shift=0.95, max_shift=2.05, terminal=0.1,
    )[0]["samples"]  # fmt: skip


def test_the_compile_option_samples_the_latent_of_the_plain_model(pack, monkeypatch):
    """Traced with Dynamo's 'eager' backend (no C++ compiler on CI); the module stays the
    one ComfyUI's memory manager moves, its blocks compiled."""
    loaders = sys.modules[f"{PACK_NAME}.nodes.loaders"]
    monkeypatch.setattr(loaders, "COMPILE_BACKEND", "eager")
    loader = _node(pack, "LTXVCoreCheckpointLoader")
    plain, _ = loader.load(SHIPPED_CHECKPOINT, "float32", "cpu")
    compiled, _ = loader.load(SHIPPED_CHECKPOINT, "float32", "cpu", optimization="compile")
    assert compiled.model.core.transformer_blocks[0]._compiled_call_impl is not None
    assert plain.model.core.transformer_blocks[0]._compiled_call_impl is None
    sampled = [sampled_latent(pack, model) for model in (plain, compiled)]
    assert (sampled[0] - sampled[1]).abs().max() <= SPEED_ATOL


def test_the_samplers_run_the_transformer_under_the_attention_backend_its_loader_chose(pack, monkeypatch):
    """The kernels option on the CPU is the plain model (its kernels are CUDA's); a backend
    the loader chose (on a GPU, timed; here SDPA's math one, which the CPU runs) reaches the
    sampler through `memory.runner`, under that backend, with the plain model's latent."""
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    speed = sys.modules[f"{PACK_NAME}.ltx_core.speed.optimize"]
    loader = _node(pack, "LTXVCoreCheckpointLoader")
    plain, _ = loader.load(SHIPPED_CHECKPOINT, "float32", "cpu", optimization="kernels")
    assert plain.model.attention == "default" and memory.runner(plain) is plain.model.core
    chosen, _ = loader.load(SHIPPED_CHECKPOINT, "float32", "cpu")
    chosen.model.attention = "math"
    runner = memory.runner(chosen)
    assert isinstance(runner, speed.OptimizedTransformer) and runner.attention == "math" and not runner.cuda_graphs
    backends = []
    monkeypatch.setattr(speed, "attention_context", lambda name: backends.append(name) or contextlib.nullcontext())
    sampled = [sampled_latent(pack, model) for model in (plain, chosen)]
    assert backends and set(backends) == {"math"}  # every forward of the chosen one, none of the plain
    assert (sampled[0] - sampled[1]).abs().max() <= SPEED_ATOL


def test_a_sampler_run_with_streamed_blocks_gives_the_resident_latent(pack, monkeypatch):
    """The sampler's streaming path (chosen on a GPU by the plan; forced here on the CPU,
    where the "device" copies are real copies): the same latent bit for bit, and the
    transformer's blocks back on their own weights afterwards."""
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    model, _ = _node(pack, "LTXVCoreCheckpointLoader").load(SHIPPED_CHECKPOINT, "float32", "cpu")
    resident = sampled_latent(pack, model)
    streamed = []
    monkeypatch.setattr(
        memory, "_with_streaming", lambda work, choice, capacity: streamed.append(2) or replace(work, streamed_blocks=2)
    )
    assert torch.equal(sampled_latent(pack, model), resident) and streamed == [2]
    core = model.model.core
    assert type(core.block_weights).__name__ == "ResidentBlocks"


def test_decode_in_time_chunks_gives_the_frames_of_the_whole_decode(pack, tiny_models):
    """41 frames: the default time chunk (16) splits the full-rate layers."""
    _, vae = tiny_models
    latent = {"samples": torch.randn(1, 128, 6, 1, 2, generator=torch.Generator().manual_seed(2))}
    decode = _node(pack, "LTXVCoreDenoisingDecode").decode
    (default,) = decode(vae, latent, timestep=0.05, decode_noise_scale=0.025, seed=5)  # time chunk 16
    (whole,) = decode(vae, latent, timestep=0.05, decode_noise_scale=0.025, seed=5, time_chunk=0)
    (chunked,) = decode(vae, latent, timestep=0.05, decode_noise_scale=0.025, seed=5, time_chunk=2)
    assert whole.shape == chunked.shape == default.shape == (41, 32, 64, 3)
    assert default.is_contiguous() and default.dtype == torch.float32 and default.device.type == "cpu"  # an IMAGE
    assert (whole - chunked).abs().max() <= SPEED_ATOL
    assert (whole - default).abs().max() <= SPEED_ATOL
    optional = _node(pack, "LTXVCoreDenoisingDecode").INPUT_TYPES()["optional"]
    assert optional["time_chunk"][1]["default"] == 16


def test_a_group_norm_decoder_decodes_whole_layers_whatever_the_time_chunk(pack):
    """Group norm's statistics span every frame, so the node never chunks such a decoder
    (the core refuses a time chunk for it): the default gives the whole decode."""
    from dataclasses import replace

    core = sys.modules[f"{PACK_NAME}.ltx_core"]
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    configs = importlib.import_module(f"{core.__name__}.models.configs")
    torch.manual_seed(0)
    model = importlib.import_module(f"{core.__name__}.models.vae").CausalVideoVAE(
        replace(configs.TINY_VAE_0_9_0, norm_layer="group_norm", encoder_base_channels=32, decoder_base_channels=32)
    )
    vae = memory.patcher(model.eval(), "vae", "cpu")
    latent = {"samples": torch.randn(1, 128, 6, 1, 2, generator=torch.Generator().manual_seed(2))}
    decode = _node(pack, "LTXVCoreDenoisingDecode").decode
    (default,) = decode(vae, latent, timestep=0.05, decode_noise_scale=0.0, seed=5)
    (whole,) = decode(vae, latent, timestep=0.05, decode_noise_scale=0.0, seed=5, time_chunk=0)
    assert default.shape == (41, 32, 64, 3) and torch.equal(default, whole)


# ---------------------------------------------------------------- the shipped workflows' inputs


def test_the_workflows_example_images_are_copied_once_and_never_over_a_users_file(pack, tmp_path):
    """i2v and first_last load `ltxv-example.png` / `ltxv-example-last.png` by name, the
    IC-LoRA workflow its control clip: the pack puts its own in ComfyUI's input folder where
    none is, so they run as they are."""
    from PIL import Image

    registry = sys.modules[f"{PACK_NAME}.nodes.registry"]
    wanted = set()
    for name in ("i2v", "first_last"):
        prompt = json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.json").read_text())
        wanted |= {node["inputs"]["image"] for node in prompt.values() if node["class_type"] == "LoadImage"}
    assert wanted == {"ltxv-example.png", "ltxv-example-last.png"}
    ic_lora = json.loads((REPO_ROOT / "workflows" / "api" / "ic_lora.json").read_text())
    [control] = [node["inputs"]["file"] for node in ic_lora.values() if node["class_type"] == "LoadVideo"]
    users = tmp_path / "ltxv-example-last.png"
    users.write_bytes(b"the user's own file")
    assert registry.install_example_inputs(str(tmp_path)) == [control, "ltxv-example.png"]
    assert users.read_bytes() == b"the user's own file"
    with Image.open(tmp_path / "ltxv-example.png") as image:
        assert image.size == (256, 256)  # the workflows' size: no crop needed
    clip = core_video.read_video_frames(tmp_path / control)
    assert tuple(clip.shape) == (25, 256, 256, 3)  # the IC-LoRA workflow's size and length
    assert registry.install_example_inputs(str(tmp_path)) == []
