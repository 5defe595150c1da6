"""Checkpoint loading: both layouts, version detection, strictness, and every bad model file
(BAD_INPUTS 9-14, 17) with its message."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import preflight
from ltx_core.checkpoint.loading import inspect_checkpoint, load_checkpoint, load_transformer, load_vae
from ltx_core.checkpoint.tensors import SafetensorsHeader, non_finite_names
from ltx_core.checkpoint.versions import ARCHITECTURE_OF_RELEASE, STOCK_CONFIGS, CheckpointInfo, detect_version
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.configs import VAE_SCALE
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords

from .fixtures_checkpoints import (
    RELEASES,
    header_of,
    release_configs,
    write_diffusers_folder,
    write_official_single_file,
)

FAMILIES = ("0.9.0", "0.9.1", "0.9.5")  # the three VAE layouts; 0.9.7 adds only depth
# Two instances of one model with equal weights differ by ~1e-6 on CPU (oneDNN picks
# kernels by memory alignment), so "identical outputs" means equal within this.
ATOL = 1e-5


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> Path:
    """A valid tiny 0.9.5 single file; tests copy it before changing anything."""
    return write_official_single_file(tmp_path_factory.mktemp("official") / "ltxv.safetensors", "0.9.5")


def rewritten(source: Path, target: Path, change=None, metadata=None) -> Path:
    """`source` with its tensors passed through `change` and its metadata replaced."""
    tensors, old_metadata = header_of(source)
    save_file(
        change(tensors) if change else tensors,
        str(target),
        metadata=old_metadata if metadata is None else metadata,
    )
    return target


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_loads_from_the_official_file_with_its_architecture_version(tmp_path, release):
    """The version comes from tensors and metadata (the file name says nothing here)."""
    path = write_official_single_file(tmp_path / "model.safetensors", release)
    loaded = load_checkpoint(path)
    assert loaded.version == ARCHITECTURE_OF_RELEASE[release]
    assert loaded.info.config_source == "metadata"
    assert loaded.configs.transformer == release_configs(release).transformer
    assert loaded.configs.vae == release_configs(release).vae


@pytest.mark.parametrize("release", RELEASES)
def test_detect_version_needs_only_the_tensor_names(tmp_path, release):
    path = write_official_single_file(tmp_path / "model.safetensors", release, metadata="missing")
    header = SafetensorsHeader(path)
    assert header.metadata == {}
    assert detect_version(header.shapes) == ARCHITECTURE_OF_RELEASE[release]


def test_detect_version_refuses_metadata_that_contradicts_the_tensors(tmp_path):
    tensors = write_official_single_file(tmp_path / "a.safetensors", "0.9.5")
    metadata_of_0_9_0 = header_of(write_official_single_file(tmp_path / "b.safetensors", "0.9.0"))[1]
    with pytest.raises(CheckpointError, match="metadata config describes LTX-Video 0.9.0 but its tensors are 0.9.5"):
        detect_version(SafetensorsHeader(tensors).shapes, metadata_of_0_9_0)


def test_the_version_rules_look_at_the_vae_layout_and_the_transformer_depth():
    """The documented rules on bare key sets: what each marker key decides."""
    base = {"model.diffusion_model.patchify_proj.weight", "vae.decoder.conv_in.conv.weight"}
    timestep = {"vae.decoder.last_scale_shift_table"}
    space_to_depth = {"vae.encoder.down_blocks.1.conv.conv.weight"}
    block_47 = {"model.diffusion_model.transformer_blocks.47.scale_shift_table"}
    assert detect_version(base) == "0.9.0"
    assert detect_version(base | timestep) == "0.9.1"
    assert detect_version(base | timestep | space_to_depth) == "0.9.5"
    assert detect_version(base | timestep | space_to_depth | block_47) == "0.9.7"
    assert detect_version(base | timestep | block_47) == "0.9.1"  # depth alone: not 13B's VAE


@pytest.mark.parametrize("version", sorted(STOCK_CONFIGS))
def test_every_published_vae_has_the_geometry_code_without_a_vae_assumes(version):
    vae = STOCK_CONFIGS[version].vae
    assert (vae.temporal_compression, vae.spatial_compression, vae.spatial_compression) == VAE_SCALE


# ---------------------------------------------------------------- both layouts


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_and_diffusers_folder_of_the_same_weights_give_identical_outputs(tmp_path, family):
    """If a key map or a config translation were wrong, the two loads would differ."""
    single = load_checkpoint(write_official_single_file(tmp_path / "m.safetensors", family, seed=3))
    folder = load_checkpoint(write_diffusers_folder(tmp_path / "diffusers", family, seed=3))
    assert folder.info.layout == "diffusers" and folder.version == single.version == family
    assert folder.configs.transformer == single.configs.transformer
    assert folder.configs.vae == single.configs.vae

    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 128, 2, 1, 2, generator=gen)
    tokens = latent.flatten(2).transpose(1, 2)
    text = torch.randn(1, 4, single.configs.transformer.caption_channels, generator=gen)
    coords = fractional_coords(pixel_coords(latent_coords(2, 1, 2, 1), causal_fix=False), 24.0)
    sigma = torch.full((1, tokens.shape[1]), 0.7)
    with torch.no_grad():
        for model in ("transformer", "vae"):
            a, b = getattr(single, model), getattr(folder, model)
            if model == "transformer":
                out_a, out_b = a(tokens, sigma, text, None, coords), b(tokens, sigma, text, None, coords)
            else:
                out_a = a.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(1))
                out_b = b.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(1))
            torch.testing.assert_close(out_a, out_b, atol=ATOL, rtol=0, msg=model)


def test_dtype_and_device_are_applied(official_file):
    loaded = load_checkpoint(official_file, dtype="bf16", device="cpu")
    tensors = [*loaded.transformer.parameters(), *loaded.vae.parameters()]
    assert {t.dtype for t in tensors} == {torch.bfloat16}
    assert {t.device.type for t in tensors} == {"cpu"}
    assert not loaded.transformer.training and not loaded.vae.training


def test_load_transformer_and_load_vae_read_one_model_each(official_file):
    transformer, info = load_transformer(official_file)
    vae, _ = load_vae(official_file)
    full = load_checkpoint(official_file)
    assert info.version == "0.9.5"
    for name, tensor in full.vae.state_dict().items():
        assert torch.equal(vae.state_dict()[name], tensor)
    for name, tensor in full.transformer.state_dict().items():
        assert torch.equal(transformer.state_dict()[name], tensor)


# ---------------------------------------------------------------- bad model files


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nothing\.safetensors' does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")


class WritesAMarker:
    """Unpickling this creates a file: proof of whether anything was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin", "model.pth", "model.safetensors"])
def test_pickles_are_refused_without_being_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled"
    (tmp_path / name).write_bytes(pickle.dumps(WritesAMarker(marker), protocol=4))
    with pytest.raises(CheckpointError, match="pickle.*refused.*only .safetensors files are loaded"):
        load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_torch_zip_pickle_named_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="is a PyTorch pickle despite its name"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 40, 3])
def test_truncated_safetensors_file_is_named_truncated_or_corrupt(tmp_path, official_file, keep):
    data = official_file.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors' is truncated or corrupt"):
        load_checkpoint(path)


def test_an_image_model_is_not_an_ltx_video_checkpoint(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),
            "model.diffusion_model.output_blocks.0.0.weight": torch.zeros(2),
            "first_stage_model.decoder.conv_in.weight": torch.zeros(2),
        },
        str(path),
    )
    with pytest.raises(
        CheckpointError,
        match=r"not an LTX-Video checkpoint: it looks like a Stable Diffusion UNet; "
        r"found 3 tensors under .*model\.diffusion_model\.input_blocks\.\*",
    ):
        load_checkpoint(path)


def test_a_t5_encoder_in_the_checkpoint_slot_is_named(tiny_t5_folder):
    with pytest.raises(CheckpointError, match="not an LTX-Video checkpoint: it looks like a T5 text encoder"):
        load_checkpoint(tiny_t5_folder / "model.safetensors")


def test_a_file_with_only_the_vae_says_the_transformer_is_missing(tmp_path, official_file):
    path = rewritten(
        official_file,
        tmp_path / "vae.safetensors",
        lambda t: {k: v for k, v in t.items() if k.startswith("vae.")},
    )
    with pytest.raises(
        CheckpointError, match=r"holds no LTX-Video transformer \(no model\.diffusion_model\.\* tensors\)"
    ):
        load_checkpoint(path)


def test_missing_tensors_are_counted_and_named(tmp_path):
    drop = (
        "model.diffusion_model.transformer_blocks.1.attn1.to_q.weight",
        "model.diffusion_model.transformer_blocks.1.attn1.to_k.weight",
    )
    path = write_official_single_file(tmp_path / "m.safetensors", "0.9.5", drop=drop)
    with pytest.raises(
        CheckpointError,
        match=r"lacks 2 of the \d+ transformer tensors its config needs, "
        r"e.g. transformer_blocks.1.attn1.to_k.weight, transformer_blocks.1.attn1.to_q.weight",
    ):
        load_checkpoint(path)


def test_a_missing_unused_vae_statistic_is_allowed(tmp_path):
    """diffusers folders and some exports lack these; nothing computes with them."""
    path = write_official_single_file(tmp_path / "m.safetensors", "0.9.5", drop=("vae.per_channel_statistics.channel",))
    assert load_checkpoint(path).version == "0.9.5"


def test_unexpected_tensors_are_named(tmp_path, official_file):
    def add(tensors):
        return {**tensors, "vae.decoder.extra.weight": torch.zeros(3)}

    with pytest.raises(CheckpointError, match="has 1 vae tensors its config does not use, e.g. decoder.extra.weight"):
        load_checkpoint(rewritten(official_file, tmp_path / "m.safetensors", add))


def test_tensors_of_other_models_bundled_in_the_file_are_ignored_with_a_warning(tmp_path, official_file):
    def bundle(tensors):
        return {**tensors, "text_encoders.t5xxl.shared.weight": torch.zeros(4, 2)}

    path = rewritten(official_file, tmp_path / "m.safetensors", bundle)
    with pytest.warns(UserWarning, match=r"1 tensors outside model\.diffusion_model\. and vae\. are ignored"):
        assert load_checkpoint(path).version == "0.9.5"


def test_a_wrongly_shaped_tensor_names_the_key_and_both_shapes(tmp_path, official_file):
    key = "model.diffusion_model.proj_out.weight"

    def reshape(tensors):
        return {**tensors, key: torch.zeros(128, 8)}

    path = rewritten(official_file, tmp_path / "m.safetensors", reshape)
    with pytest.raises(
        CheckpointError,
        match=r"transformer tensor 'model\.diffusion_model\.proj_out\.weight' in "
        r"'.*m\.safetensors' has shape \[128, 8\], but the config asks for \[128, 16\]",
    ):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("missing", "has no `config` metadata entry"),
        ("not-json", "has a `config` metadata entry that is not JSON"),
    ],
)
def test_unreadable_metadata_falls_back_to_the_stock_config_of_the_detected_version(tmp_path, metadata, problem):
    """The tiny file then fails the strict check against the stock 2B config (28 blocks):
    the warning and the error both say what happened."""
    path = write_official_single_file(tmp_path / "m.safetensors", "0.9.1", metadata=metadata)
    with pytest.warns(UserWarning, match=f"{problem}; its tensors are LTX-Video 0.9.1: using that version's stock"):
        with pytest.raises(
            CheckpointError,
            match=r"lacks \d+ of the \d+ transformer tensors .*the config is the "
            "stock 0.9.1 one, as the file's metadata is unreadable",
        ):
            load_checkpoint(path)


def test_stock_config_fallback_is_the_published_one_for_each_version(tmp_path):
    path = write_official_single_file(tmp_path / "m.safetensors", "0.9.7", metadata="missing")
    with pytest.warns(UserWarning, match="LTX-Video 0.9.7"):
        info, *_ = inspect_checkpoint(path)
    assert info.config_source == "stock"
    assert info.configs == STOCK_CONFIGS["0.9.7"]
    assert info.configs.transformer.num_layers == 48 and info.configs.transformer.attention_head_dim == 128


def test_metadata_with_unsupported_settings_is_refused_naming_the_file(tmp_path, official_file):
    _, metadata = header_of(official_file)
    config = json.loads(metadata["config"])
    config["transformer"]["activation_fn"] = "geglu"
    path = rewritten(official_file, tmp_path / "m.safetensors", metadata={"config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"m\.safetensors': its metadata config cannot be used: .*activation_fn"):
        load_checkpoint(path)


def test_non_safetensors_file_suffix_is_refused(tmp_path, official_file):
    path = tmp_path / "model.gguf"
    path.write_bytes(official_file.read_bytes())
    with pytest.raises(CheckpointError, match=r"is not a \.safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", ["int8", "fp64", "float8", torch.int32])
def test_unknown_dtype_lists_the_allowed_names(official_file, dtype):
    with pytest.raises(SettingsError, match=r"is not supported; allowed: fp32, float32, bf16, bfloat16, fp16"):
        load_checkpoint(official_file, dtype=dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_where_absent_is_refused_before_reading(official_file):
    with pytest.raises(SettingsError, match="device 'cuda' asked for, but no CUDA GPU is available"):
        load_checkpoint(official_file, device="cuda")


@pytest.mark.parametrize(("device", "message"), [("mps", "is not supported"), ("tpu", "is not a device name")])
def test_unknown_device_is_refused(official_file, device, message):
    with pytest.raises(SettingsError, match=message):
        load_checkpoint(official_file, device=device)


def test_default_model_paths_say_what_to_pass_when_the_shipped_model_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "SHIPPED_ASSETS", tmp_path)
    with pytest.raises(CheckpointError, match="no shipped model found .*; pass --checkpoint and --text-encoder"):
        preflight.default_model_paths()


def test_loaded_checkpoint_unpacks_as_transformer_vae_info(official_file):
    transformer, vae, info = load_checkpoint(official_file)
    assert isinstance(info, CheckpointInfo) and info.layout == "single_file"
    assert transformer.cfg == info.configs.transformer and vae.cfg == info.configs.vae


# ---------------------------------------------------------------- non-finite weights


def with_value(key: str, value: float, index: int = 0):
    """A `rewritten` change that puts `value` at one element of tensor `key`."""

    def change(tensors):
        damaged = tensors[key].clone()
        damaged.view(-1)[index] = value
        return {**tensors, key: damaged}

    return change


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("model.diffusion_model.transformer_blocks.0.attn1.to_q.weight", float("nan"), "1 NaN and 0 infinite"),
        ("vae.decoder.conv_in.conv.weight", float("inf"), "0 NaN and 1 infinite"),
    ],
)
def test_a_non_finite_weight_is_refused_at_load_naming_the_tensor(tmp_path, official_file, key, value, named):
    damaged = rewritten(official_file, tmp_path / "damaged.safetensors", with_value(key, value, index=5))
    with pytest.raises(CheckpointError, match="tensor.* hold NaN or infinite values") as refused:
        load_checkpoint(damaged)
    message = str(refused.value)
    assert f"{key} ({named} of " in message and "damaged.safetensors" in message
    assert "the file is damaged" in message and "download it again" in message


def test_every_non_finite_tensor_is_counted_and_the_first_named(tmp_path, official_file):
    keys = [
        f"model.diffusion_model.transformer_blocks.{block}.{name}"
        for block in (0, 1)
        for name in ("attn1.to_q.weight", "attn1.to_k.weight", "ff.net.2.weight", "scale_shift_table")
    ]

    def change(tensors):
        for key in keys:
            tensors = with_value(key, float("nan"))(tensors)
        return tensors

    damaged = rewritten(official_file, tmp_path / "damaged.safetensors", change)
    with pytest.raises(CheckpointError, match=r"8 transformer tensor\(s\) hold NaN .* and 3 more; the file is damaged"):
        load_transformer(damaged)


def test_a_finite_weight_beyond_fp16_says_to_load_in_bf16_or_fp32(tmp_path, official_file):
    key = "vae.decoder.conv_in.conv.weight"
    big = rewritten(official_file, tmp_path / "big.safetensors", with_value(key, 1e6))
    with pytest.raises(
        CheckpointError, match="finite in the file but overflow float16; load the model in bf16 or fp32"
    ):
        load_vae(big, dtype="fp16")
    load_vae(big, dtype="bf16")  # bf16 has fp32's range


def test_non_finite_names_looks_at_floating_tensors_only():
    state = {
        "a": torch.tensor([1.0, float("nan")]),
        "b": torch.tensor([1, 2]),
        "c": torch.empty(0),
        "d": torch.tensor([float("-inf")], dtype=torch.bfloat16),
        "e": torch.ones(3),
    }
    assert non_finite_names(state) == ["a", "d"]


def test_building_the_models_to_load_them_imports_no_sympy_and_keeps_them_on_meta():
    """Every load builds the models on the meta device; an op there that runs torch's Python
    reference imports sympy on its first call, about a second of every CLI start. A tensor
    made off the meta device (torch.normal ignores the device context) would be real memory."""
    import subprocess

    code = (
        "import sys, torch\n"
        "from ltx_core.models import configs as C\n"
        "from ltx_core.models.transformer import LTXVTransformer\n"
        "from ltx_core.models.vae import CausalVideoVAE\n"
        "with torch.device('meta'):\n"
        "    models = LTXVTransformer(C.TINY_TRANSFORMER), CausalVideoVAE(C.TINY_VAE_0_9_1), CausalVideoVAE(C.LTXV_VAE_0_9_5)\n"
        "print('sympy' in sys.modules, {t.device.type for m in models for t in [*m.parameters(), *m.buffers()]})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False {'meta'}"
