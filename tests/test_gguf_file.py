"""GGUF files: `write_gguf` out, `GGUFFile` in (names, torch-order shapes, types, bytes,
metadata), `is_gguf`, and the refusal of files that are not LTX-Video GGUF files."""

from __future__ import annotations

import gc

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx_core.checkpoint.gguf_file import GGUFFile, is_gguf
from ltx_core.checkpoint.gguf_quants import dequantize
from ltx_core.checkpoint.gguf_writing import choose_types, write_gguf
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.transformer import LTXVTransformer


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """The tiny transformer's official tensors (random), plus two 256-wide weights that
    K-quants can hold: every tiny layer's rows are narrower than a 256-value block."""
    torch.manual_seed(0)
    tensors = {name: torch.randn_like(t) * 0.05 for name, t in LTXVTransformer(TINY_TRANSFORMER).state_dict().items()}
    tensors["wide.0.weight"] = torch.randn(8, 512) * 0.02
    tensors["wide.1.weight"] = torch.randn(2, 3, 256) * 0.02
    return tensors


@pytest.fixture(scope="module")
def tensors():
    return tiny_state_dict()


@pytest.fixture(scope="module")
def q4k_file(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("gguf") / "ltxv-Q4_K.gguf"
    return path, write_gguf(path, tensors, "Q4_K")


def test_one_type_falls_back_to_f32_where_ComfyUI_GGUF_does(q4k_file, tensors):
    _, types = q4k_file
    assert types["wide.0.weight"] == types["wide.1.weight"] == "Q4_K"
    assert types["scale_shift_table"] == "F32"  # an nn.Parameter, kept exact
    assert types["patchify_proj.bias"] == "F32"  # 1-D
    assert types["transformer_blocks.0.attn1.to_q.weight"] == "F32"  # 16 wide: no whole 256-value block
    assert choose_types(tensors, "Q8_0")["transformer_blocks.0.attn1.to_q.weight"] == "F32"
    assert choose_types(tensors, "Q8_0")["caption_projection.linear_1.weight"] == "Q8_0"  # 32 wide


def test_round_trip_names_shapes_types_and_values(q4k_file, tensors):
    path, types = q4k_file
    file = GGUFFile(path)
    assert file.names == list(tensors)
    assert file.architecture == "ltxv" and file.metadata["general.architecture"] == "ltxv"
    for name, tensor in tensors.items():
        assert file.shape(name) == tuple(tensor.shape), name
        assert file.qtype(name) == types[name]
        raw = file.raw(name)
        assert raw.dtype == torch.uint8
        values = dequantize(raw, file.qtype(name), file.shape(name))
        if types[name] == "F32":
            assert torch.equal(values, tensor), name
        else:
            assert float((values - tensor).norm() / tensor.norm()) < 0.08, name


def test_shapes_are_gguf_s_dimensions_reversed(q4k_file):
    path, _ = q4k_file
    stored = {t.name: tuple(int(d) for d in t.shape) for t in gguf.GGUFReader(path).tensors}
    file = GGUFFile(path)
    assert stored["wide.1.weight"] == (256, 3, 2) and file.shape("wide.1.weight") == (2, 3, 256)
    assert all(file.shape(name) == dims[::-1] for name, dims in stored.items())
    assert file.raw("wide.1.weight").shape == (2, 3, 144)  # rows of one 144-byte Q4_K block


def test_raw_bytes_outlive_the_file_object_and_writes_stay_in_memory(q4k_file):
    path, _ = q4k_file
    before = path.read_bytes()
    file = GGUFFile(path)
    raw, values = file.raw("wide.0.weight"), dequantize(file.raw("wide.0.weight"), "Q4_K", (8, 512))
    del file
    gc.collect()
    torch.testing.assert_close(dequantize(raw, "Q4_K", (8, 512)), values, atol=0, rtol=0)
    raw.zero_()  # copy-on-write: the process's own copy of the pages changes, not the file
    assert path.read_bytes() == before
    assert GGUFFile(path).raw("wide.0.weight").any()


def test_a_prefix_is_kept_as_stored(tmp_path, tensors):
    prefixed = {f"model.diffusion_model.{name}": t for name, t in tensors.items()}
    path = tmp_path / "prefixed.gguf"
    write_gguf(path, prefixed, "F16")
    file = GGUFFile(path)
    assert file.names == list(prefixed)
    assert file.qtype("model.diffusion_model.wide.0.weight") == "F16"


def test_per_tensor_types(tmp_path, tensors):
    chosen = {name: "F32" for name in tensors} | {"wide.0.weight": "Q6_K", "wide.1.weight": "BF16"}
    path = tmp_path / "mixed.gguf"
    assert write_gguf(path, tensors, chosen) == chosen
    file = GGUFFile(path)
    assert file.qtype("wide.0.weight") == "Q6_K" and file.qtype("wide.1.weight") == "BF16"
    bf16 = dequantize(file.raw("wide.1.weight"), "BF16", file.shape("wide.1.weight"), torch.bfloat16)
    assert torch.equal(bf16, tensors["wide.1.weight"].to(torch.bfloat16))


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "meta.gguf"
    metadata = {"config": '{"transformer": {}}', "ltxv.blocks": 2, "ltxv.scale": 0.5, "ltxv.flag": True}
    write_gguf(path, {"a.weight": torch.zeros(2, 32)}, "Q8_0", metadata=metadata)
    read = GGUFFile(path).metadata
    assert {key: read[key] for key in metadata} == metadata
    assert all(type(read[key]) is type(value) for key, value in metadata.items())
    with pytest.raises(SettingsError, match="GGUF metadata 'bad' is a list; allowed: str, int, float, bool"):
        write_gguf(tmp_path / "bad.gguf", {"a.weight": torch.zeros(2, 32)}, "Q8_0", metadata={"bad": [1]})


def test_per_tensor_types_are_checked(tensors):
    with pytest.raises(SettingsError, match="no GGUF type for tensors"):
        choose_types(tensors, {"wide.0.weight": "Q4_K"})
    every = {name: "F32" for name in tensors}
    with pytest.raises(SettingsError, match=r"'patchify_proj.weight' of shape \[16, 128\] cannot be Q4_K"):
        choose_types(tensors, every | {"patchify_proj.weight": "Q4_K"})
    with pytest.raises(SettingsError, match="GGUF type 'Q2_K' cannot be written"):
        choose_types(tensors, "Q2_K")


def test_comfy_original_shape_wins(tmp_path):
    """ComfyUI-GGUF flattens some tensors to rows of 256 for K-quants and keeps the real
    shape in `comfy.gguf.orig_shape.<name>`."""
    from ltx_core.checkpoint.gguf_writing import quantize

    weight = torch.randn(4, 2, 3, 32) * 0.02  # 768 values, rows of 32
    path = tmp_path / "reshaped.gguf"
    writer = gguf.GGUFWriter(str(path), "ltxv")
    writer.add_array("comfy.gguf.orig_shape.conv.weight", list(weight.shape))
    writer.add_tensor(
        "conv.weight", quantize(weight.reshape(3, 256), "Q4_K").numpy(), raw_dtype=gguf.GGMLQuantizationType.Q4_K
    )
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    file = GGUFFile(path)
    assert file.shape("conv.weight") == (4, 2, 3, 32) and "comfy.gguf.orig_shape.conv.weight" not in file.metadata
    values = dequantize(file.raw("conv.weight"), "Q4_K", file.shape("conv.weight"))
    assert float((values - weight).norm() / weight.norm()) < 0.08


# ---------------------------------------------------------------- is_gguf


def test_is_gguf_reads_the_magic_not_the_name(tmp_path, q4k_file):
    path, _ = q4k_file
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(path.read_bytes())
    safetensors_named_gguf = tmp_path / "model.gguf"
    save_file({"a": torch.zeros(2)}, str(safetensors_named_gguf))
    assert is_gguf(path) and is_gguf(renamed)
    assert not is_gguf(safetensors_named_gguf)
    assert not is_gguf(tmp_path / "missing.gguf") and not is_gguf(tmp_path)


# ---------------------------------------------------------------- bad files


def test_a_truncated_file_is_named(tmp_path, q4k_file):
    path, _ = q4k_file
    cut = tmp_path / "cut.gguf"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"'.*cut.gguf' is a truncated or corrupt GGUF file"):
        GGUFFile(cut)
    cut.write_bytes(data[:40])  # inside the header
    with pytest.raises(CheckpointError, match=r"'.*cut.gguf' is a truncated or corrupt GGUF file"):
        GGUFFile(cut)


def test_another_architecture_is_named(tmp_path):
    path = tmp_path / "flux.gguf"
    write_gguf(path, {"double_blocks.0.img_attn.proj.weight": torch.zeros(4, 32)}, "Q8_0", architecture="flux")
    with pytest.raises(CheckpointError, match=r"'.*flux.gguf' is a GGUF file of architecture 'flux', not LTX-Video"):
        GGUFFile(path)


def test_no_architecture_is_guessed_from_ltxv_names(tmp_path, tensors):
    """ComfyUI-GGUF guesses files marked "pig" (or unmarked) from their tensor names."""
    ltxv, other = tmp_path / "pig-ltxv.gguf", tmp_path / "pig-other.gguf"
    write_gguf(ltxv, {f"model.diffusion_model.{k}": t for k, t in tensors.items()}, "F16", architecture="pig")
    assert GGUFFile(ltxv).architecture == "ltxv"
    write_gguf(other, {"a.weight": torch.zeros(2, 32)}, "F16", architecture="pig")
    with pytest.raises(CheckpointError, match="architecture 'pig', not LTX-Video"):
        GGUFFile(other)


def test_an_unsupported_tensor_type_names_the_tensor_and_type(tmp_path):
    path = tmp_path / "iq4.gguf"
    writer = gguf.GGUFWriter(str(path), "ltxv")
    writer.add_tensor(
        "transformer_blocks.0.ff.net.2.weight", np.zeros((2, 18), np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ4_NL
    )
    writer.add_tensor("ok.weight", np.zeros((2, 4), np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    with pytest.raises(
        CheckpointError,
        match=r"'.*iq4.gguf' holds tensors of unsupported GGUF types: transformer_blocks.0.ff.net.2.weight \(IQ4_NL\); supported types: F32, .*Q6_K",
    ):
        GGUFFile(path)


@pytest.mark.parametrize("content", ["safetensors", "empty", "missing"])
def test_a_file_that_is_not_gguf_is_named(tmp_path, content):
    path = tmp_path / "model.gguf"
    if content == "safetensors":
        save_file({"a": torch.zeros(2)}, str(path))
    elif content == "empty":
        path.write_bytes(b"")
    match = (
        "does not exist" if content == "missing" else r"is not a GGUF file: it does not start with the bytes b'GGUF'"
    )
    with pytest.raises(CheckpointError, match=rf"'.*model.gguf' {match}" if content != "missing" else match):
        GGUFFile(path)


def test_an_unknown_tensor_name_is_named(q4k_file):
    path, _ = q4k_file
    with pytest.raises(CheckpointError, match="has no tensor 'nope'"):
        GGUFFile(path).shape("nope")
