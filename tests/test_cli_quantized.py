"""Quantized checkpoints through the command line: a GGUF transformer with the VAE of
`--vae` (an official file or a VAE-alone file), an FP8 single file as it is; a GGUF file
without `--vae` refused before loading, naming the flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import cli
from ltx_core.checkpoint.keymaps import VAE_PREFIX
from ltx_core.checkpoint.quantized_writing import fp8_tensors, gguf_types, transformer_only, write_gguf_checkpoint
from ltx_core.checkpoint.vae_file import inspect_vae, load_vae_file
from ltx_core.checkpoint.versions import ModelConfigs
from ltx_core.checkpoint.writing import config_metadata, official_tensors
from ltx_core.models import configs as C
from tests.fixtures_checkpoints import random_models

CONFIGS = ModelConfigs(C.TINY_TRANSFORMER_WIDE, C.TINY_VAE_0_9_5)
SIZE = ["--device", "cpu", "--width", "32", "--height", "32", "--frames", "9", "--steps", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli_quantized")
    tensors = official_tensors(*random_models(CONFIGS, seed=5))
    metadata = {"config": json.dumps(config_metadata(CONFIGS)), "format": "pt"}
    paths = {name: folder / f"{name}.safetensors" for name in ("plain", "fp8", "vae_alone", "vae_stock")}
    save_file(tensors, str(paths["plain"]), metadata=metadata)
    save_file(fp8_tensors(tensors, scaled=False), str(paths["fp8"]), metadata=metadata)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in tensors.items() if k.startswith(VAE_PREFIX)}
    vae_config = {"config": json.dumps({"vae": config_metadata(CONFIGS)["vae"]})}
    save_file(vae, str(paths["vae_alone"]), metadata=vae_config)  # no prefix, the VAE's config alone
    save_file(vae, str(paths["vae_stock"]))  # no metadata: its family's stock config
    weights = transformer_only(tensors)
    paths["gguf"] = write_gguf_checkpoint(folder / "transformer.gguf", weights, gguf_types(weights, "F32"), CONFIGS)
    return paths


def frames(capsys, monkeypatch, tmp_path, t5, checkpoint, *flags) -> torch.Tensor:
    written = []
    monkeypatch.setattr(cli, "write_mp4", lambda frames, *a, **k: written.append(frames))
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(checkpoint), "--text-encoder", str(t5)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE, *flags]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return written[0]


def test_a_gguf_transformer_with_the_vae_of_another_file_makes_the_official_files_video(
    capsys, monkeypatch, tmp_path, files, tiny_t5_folder
):
    """F32 GGUF blocks hold the weights exactly: the same frames as the official file."""
    run = lambda *args: frames(capsys, monkeypatch, tmp_path, tiny_t5_folder, *args)
    official = run(files["plain"])
    assert torch.equal(run(files["gguf"], "--vae", str(files["plain"])), official)
    assert torch.equal(run(files["gguf"], "--vae", str(files["vae_alone"])), official)


def test_an_fp8_single_file_runs_as_it_is(capsys, monkeypatch, tmp_path, files, tiny_t5_folder):
    video = frames(capsys, monkeypatch, tmp_path, tiny_t5_folder, files["fp8"])
    assert video.shape == (9, 32, 32, 3) and torch.isfinite(video.float()).all()


def test_a_gguf_without_vae_is_refused_before_loading_naming_the_flag(capsys, tmp_path, files, tiny_t5_folder):
    code = cli.main(
        ["generate", "--prompt", "a fox", "--checkpoint", str(files["gguf"]), "--text-encoder", str(tiny_t5_folder)]
        + ["--output", str(tmp_path / "o.mp4"), *SIZE]
    )
    err = capsys.readouterr().err
    assert code == 2 and "holds only the transformer" in err and "--vae" in err
    assert not (tmp_path / "o.mp4").exists()


def test_a_vae_alone_file_takes_its_config_from_metadata_else_its_familys_and_a_non_vae_is_refused(files, tmp_path):
    assert inspect_vae(files["vae_alone"])[0] == C.TINY_VAE_0_9_5 == inspect_vae(files["plain"])[0]
    assert inspect_vae(files["vae_stock"])[0] == C.LTXV_VAE_0_9_5  # the published one of the 0.9.5 layout
    assert load_vae_file(files["vae_alone"]).cfg == C.TINY_VAE_0_9_5
    other = tmp_path / "other.safetensors"
    save_file({"encoder.block.0.weight": torch.zeros(2)}, str(other))
    with pytest.raises(Exception, match="holds no LTX-Video VAE"):
        load_vae_file(other)
