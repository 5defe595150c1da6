"""The tiny T5 text encoder (`ltx_core.training.t5`): built, initialized and saved without
transformers, and read back by the core exactly as T5-XXL is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ltx_core.models.text_encoder import encode_prompt, load_text_encoder
from ltx_core.training import t5


def test_the_seeded_initialization_is_the_same_anywhere_and_keeps_t5s_scales():
    a, b = t5.new_text_encoder(3, num_layers=1), t5.new_text_encoder(3, num_layers=1)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    q = a.encoder.block[0].layer[0].SelfAttention.q.weight.detach()
    assert abs(float(q.std()) - (a.config.d_model * a.config.d_kv) ** -0.5) < 0.1 * float(q.std())
    assert abs(float(a.shared.weight.detach().std()) - 1.0) < 0.05


def test_a_saved_encoder_loads_through_the_core_and_encodes_as_it_did(tmp_path):
    """The folder is T5's layout: config.json, model.safetensors with transformers' key
    names, spiece.model, and the captions' words; the core's loader reads it strictly and
    gives the same numbers, and knows the words."""
    folder = t5.write_text_encoder(tmp_path / "t5", seed=1)
    names = ["config.json", "model.safetensors", "spiece.model", "vocabulary.txt"]
    assert sorted(p.name for p in folder.iterdir()) == names
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "t5" and config["feed_forward_proj"] == "gated-gelu"
    encoder = load_text_encoder(folder)
    assert len(encoder.tokenizer) <= encoder.model.config.vocab_size == t5.TINY_T5["vocab_size"]
    assert {"pink", "ball", "rises", "backdrop"} <= encoder.vocabulary and "magenta" not in encoder.vocabulary
    model = t5.new_text_encoder(1)
    ids, _ = encoder.tokenizer.padded(["a pink ball rises"], 16)
    with torch.no_grad():
        torch.testing.assert_close(encode_prompt(encoder, ["a pink ball rises"], 16).embeds, model(ids))


def test_building_and_training_the_encoder_needs_no_transformers():
    """The training call runs where only torch and the carried wheels are."""
    code = (
        "import sys\n"
        "import ltx_core.training.run_tiny, ltx_core.training.train_text, ltx_core.training.t5\n"
        "print('transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[2], check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
