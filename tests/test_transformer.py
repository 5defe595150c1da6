"""The DiT on TINY_TRANSFORMER with seeded random weights, CPU, fp32; the real configs are
checked on the meta device (shapes only). Parity with diffusers: tests/parity/."""

from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from ltx_core.errors import SettingsError
from ltx_core.models.configs import LTXV_2B, LTXV_2B_0_9_5, LTXV_13B, TINY_TRANSFORMER, TransformerConfig
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer

FRAMES, HEIGHT, WIDTH, TEXT_LEN = 2, 2, 3, 5
TOKENS = FRAMES * HEIGHT * WIDTH
# fp32 rounding of the same sums batched differently (outputs are of order 10).
ATOL = 1e-4


def official_metadata(**changes):
    """config["transformer"] as the official 2B 0.9.x single file carries it; a change to
    `...` removes that key, as in a file that lacks it."""
    metadata = {
        "_class_name": "Transformer3DModel",
        "_diffusers_version": "0.25.1",
        "_name_or_path": "PixArt-alpha/PixArt-XL-2-256x256",
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "attention_head_dim": 64,
        "attention_type": "default",
        "caption_channels": 4096,
        "cross_attention_dim": 2048,
        "double_self_attention": False,
        "dropout": 0.0,
        "in_channels": 128,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "num_attention_heads": 32,
        "num_embeds_ada_norm": 1000,
        "num_layers": 28,
        "num_vector_embeds": None,
        "only_cross_attention": False,
        "out_channels": 128,
        "project_to_2d_pos": True,
        "upcast_attention": False,
        "use_linear_projection": False,
        "qk_norm": "rms_norm",
        "standardization_norm": "rms_norm",
        "positional_embedding_type": "rope",
        "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000,
    }
    metadata.update(changes)
    return {key: value for key, value in metadata.items() if value is not ...}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = LTXVTransformer(TINY_TRANSFORMER).eval()
    with torch.no_grad():  # biases are zero-initialised; random ones exercise every path
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.3)
    return net


def inputs(batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, TOKENS, TINY_TRANSFORMER.in_channels, generator=gen)
    sigma = torch.rand(batch, TOKENS, generator=gen)
    text = torch.randn(batch, TEXT_LEN, TINY_TRANSFORMER.caption_channels, generator=gen)
    mask = torch.ones(batch, TEXT_LEN)
    mask[-1, 3:] = 0
    coords = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, batch), causal_fix=True), 25)
    return latent, sigma, text, mask, coords


@torch.no_grad()
def test_the_output_has_the_latent_tokens_shape(model):
    latent, sigma, text, mask, coords = inputs()
    out = model(latent, sigma, text, mask, coords)
    assert out.shape == (2, TOKENS, TINY_TRANSFORMER.out_channels)
    assert torch.isfinite(out).all()


@torch.no_grad()
def test_a_token_s_own_timestep_changes_its_output(model):
    """Per-token timesteps (paper 2.4): a conditioning token at small t must be treated
    differently from the same token at t = 1, or image conditioning has no effect."""
    latent, sigma, text, mask, coords = inputs()
    sigma = torch.ones_like(sigma)
    out = model(latent, sigma, text, mask, coords)
    sigma[:, 0] = 0.05
    out_conditioned = model(latent, sigma, text, mask, coords)
    assert not torch.allclose(out[:, 0], out_conditioned[:, 0], atol=1e-3)


@torch.no_grad()
def test_one_timestep_per_sample_equals_the_same_timestep_on_every_token(model):
    latent, _, text, mask, coords = inputs()
    per_sample = torch.tensor([0.3, 0.8])
    out = model(latent, per_sample, text, mask, coords)
    out_per_token = model(latent, per_sample[:, None].expand(-1, TOKENS), text, mask, coords)
    torch.testing.assert_close(out, out_per_token, atol=ATOL, rtol=0)


@torch.no_grad()
def test_text_behind_a_zero_mask_does_not_reach_the_output(model):
    """Padded prompt tokens must not leak into the video (the -10000 bias of the reference)."""
    latent, sigma, text, mask, coords = inputs()
    out = model(latent, sigma, text, mask, coords)
    text_changed = text.clone()
    text_changed[-1, 3:] = torch.randn(2, TINY_TRANSFORMER.caption_channels)
    torch.testing.assert_close(model(latent, sigma, text_changed, mask, coords), out, atol=ATOL, rtol=0)
    mask_all = torch.ones_like(mask)
    assert not torch.allclose(model(latent, sigma, text, mask_all, coords)[-1], out[-1], atol=1e-3)


@torch.no_grad()
def test_the_model_multiplies_sigmas_by_the_timestep_scale_multiplier(model):
    """Sigmas in [0, 1] in, the 0..1000 timesteps the model was trained on inside."""
    latent, sigma, text, mask, coords = inputs()
    unscaled = LTXVTransformer(replace(TINY_TRANSFORMER, timestep_scale_multiplier=None)).eval()
    unscaled.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        unscaled(latent, sigma * 1000, text, mask, coords), model(latent, sigma, text, mask, coords), atol=ATOL, rtol=0
    )


@torch.no_grad()
def test_positions_reach_the_output_through_rope(model):
    latent, sigma, text, mask, coords = inputs()
    out_25 = model(latent, sigma, text, mask, coords)
    coords_24 = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, 2), causal_fix=True), 24)
    assert not torch.allclose(model(latent, sigma, text, mask, coords_24), out_25, atol=1e-4)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("timestep", torch.ones(2, 3), r"timestep has shape \(2, 3\); allowed: \(2,\) or \(2, 12\)"),
        ("coords", torch.zeros(2, 3, 5), r"coords have shape \(2, 3, 5\); allowed: \(2, 3, 12\)"),
        ("text", torch.zeros(2, 5, 7), r"text embeddings have shape \(2, 5, 7\); allowed: \(2, length, 32\)"),
        ("mask", torch.ones(2, 4), r"text_mask has shape \(2, 4\); allowed: \(2, 5\)"),
    ],
)
def test_inputs_of_the_wrong_shape_are_named_in_the_error(model, name, value, message):
    latent, sigma, text, mask, coords = inputs()
    args = {"timestep": sigma, "coords": coords, "text": text, "mask": mask} | {name: value}
    with pytest.raises(SettingsError, match=message):
        model(latent, args["timestep"], args["text"], args["mask"], args["coords"])


def state_dict_shapes(cfg):
    with torch.device("meta"):
        return {key: tuple(t.shape) for key, t in LTXVTransformer(cfg).state_dict().items()}


def test_the_2b_config_builds_the_official_checkpoints_715_tensors():
    """Official 2B single file: 28 blocks x 25 tensors + 15 outside the blocks, named so it
    loads with strict=True once `model.diffusion_model.` is stripped."""
    shapes = state_dict_shapes(LTXV_2B)
    assert len(shapes) == 715
    assert shapes["patchify_proj.weight"] == (2048, 128)
    assert shapes["adaln_single.emb.timestep_embedder.linear_1.weight"] == (2048, 256)
    assert shapes["adaln_single.linear.weight"] == (12288, 2048)
    assert shapes["caption_projection.linear_1.weight"] == (2048, 4096)
    assert shapes["transformer_blocks.27.attn1.q_norm.weight"] == (2048,)
    assert shapes["transformer_blocks.27.attn2.to_k.weight"] == (2048, 2048)
    assert shapes["transformer_blocks.27.attn2.to_out.0.bias"] == (2048,)
    assert shapes["transformer_blocks.27.ff.net.0.proj.weight"] == (8192, 2048)
    assert shapes["transformer_blocks.27.ff.net.2.weight"] == (2048, 8192)
    assert shapes["transformer_blocks.27.scale_shift_table"] == (6, 2048)
    assert shapes["scale_shift_table"] == (2, 2048)
    assert shapes["proj_out.weight"] == (128, 2048)


def test_the_13b_config_is_48_blocks_4096_wide():
    shapes = state_dict_shapes(LTXV_13B)
    assert len(shapes) == 48 * 25 + 15
    assert shapes["transformer_blocks.47.attn1.to_q.weight"] == (4096, 4096)
    assert shapes["transformer_blocks.47.ff.net.0.proj.weight"] == (16384, 4096)
    assert shapes["caption_projection.linear_1.weight"] == (4096, 4096)


def test_official_metadata_gives_the_published_configs():
    assert TransformerConfig.from_metadata(official_metadata()) == LTXV_2B
    assert TransformerConfig.from_metadata(official_metadata(causal_temporal_positioning=True)) == LTXV_2B_0_9_5
    big = official_metadata(
        num_layers=48, attention_head_dim=128, cross_attention_dim=4096, causal_temporal_positioning=True
    )
    assert TransformerConfig.from_metadata(big) == LTXV_13B


def test_absent_metadata_fields_take_lightricks_defaults():
    cfg = TransformerConfig.from_metadata(official_metadata(out_channels=..., timestep_scale_multiplier=...))
    assert cfg.out_channels == cfg.in_channels
    assert cfg.timestep_scale_multiplier is None
    assert cfg.causal_temporal_positioning is False
    assert isinstance(cfg.positional_embedding_max_pos, tuple)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"qk_norm": "layer_norm"}, r"qk_norm 'layer_norm' is not supported; allowed: 'rms_norm'"),
        ({"standardization_norm": ...}, r"standardization_norm 'layer_norm' is not supported; allowed: 'rms_norm'"),
        ({"adaptive_norm": "single_scale"}, r"adaptive_norm 'single_scale' is not supported"),
        ({"activation_fn": "geglu"}, r"activation_fn 'geglu' is not supported; allowed: 'gelu-approximate'"),
        (
            {"positional_embedding_type": "absolute"},
            r"positional_embedding_type 'absolute' is not supported; allowed: 'rope'",
        ),
        ({"only_cross_attention": True}, r"only_cross_attention True is not supported; allowed: False"),
        ({"in_channels": ...}, r"transformer metadata lacks in_channels"),
        (
            {"positional_embedding_theta": ..., "caption_channels": ...},
            r"lacks caption_channels, positional_embedding_theta",
        ),
        (
            {"cross_attention_dim": 4096},
            r"cross_attention_dim 4096 must equal num_attention_heads \* attention_head_dim = 2048",
        ),
        ({"num_layers": 0}, r"num_layers is 0; allowed: a positive integer"),
        (
            {"num_attention_heads": 3, "attention_head_dim": 21, "cross_attention_dim": 63},
            r"attention_head_dim = 63 is odd; allowed: an even width \(RoPE rotates channels in pairs\)",
        ),
        (
            {"positional_embedding_max_pos": [20, 2048]},
            r"positional_embedding_max_pos is \(20, 2048\); allowed: a tuple of three",
        ),
    ],
)
def test_an_unsupported_metadata_value_is_refused_with_what_is_allowed(changes, message):
    with pytest.raises(SettingsError, match=message):
        TransformerConfig.from_metadata(official_metadata(**changes))


def test_metadata_that_is_not_a_dict_is_refused():
    with pytest.raises(SettingsError, match=r"transformer metadata is a str; allowed: the dict"):
        TransformerConfig.from_metadata("{}")


def test_the_tiny_config_round_trips_through_metadata():
    metadata = asdict(TINY_TRANSFORMER)
    metadata["positional_embedding_max_pos"] = list(metadata["positional_embedding_max_pos"])
    assert TransformerConfig.from_metadata(metadata) == TINY_TRANSFORMER


@torch.no_grad()
def test_fused_projections_compute_the_checkpoints_separate_layers_and_keep_their_names():
    """q, k, v come from one GEMM (k, v from one in cross-attention); the state dict names
    and loads them as the checkpoints do (to_q / to_k / to_v)."""
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    state = model.state_dict()
    prefix = "transformer_blocks.0."
    assert not any("to_qkv" in key or "to_kv" in key for key in state)
    x = torch.randn(2, 5, TINY_TRANSFORMER.inner_dim)
    text = torch.randn(2, 3, TINY_TRANSFORMER.cross_attention_dim)
    separate = lambda name, inp: F.linear(inp, state[prefix + name + ".weight"], state[prefix + name + ".bias"])
    self_qkv = model.transformer_blocks[0].attn1.project(x)
    cross_qkv = model.transformer_blocks[0].attn2.project(x, text)
    for got, (name, inp) in zip(
        (*self_qkv, *cross_qkv),
        [(f"attn1.{n}", x) for n in ("to_q", "to_k", "to_v")]
        + [("attn2.to_q", x), ("attn2.to_k", text), ("attn2.to_v", text)],
    ):
        torch.testing.assert_close(got, separate(name, inp), atol=1e-6, rtol=0)
    other = LTXVTransformer(TINY_TRANSFORMER)
    other.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_linear_layers_and_the_replace_seam():
    """`replace_linear` is the one way a layer's computation changes (quantized weights,
    FP8, LoRA): same sizes or refused; checkpoint names map to the fused projections."""
    model = LTXVTransformer(TINY_TRANSFORMER)
    layers = model.linear_layers()
    assert "transformer_blocks.0.attn1.to_qkv" in layers and "transformer_blocks.0.attn1.to_q" not in layers
    width = TINY_TRANSFORMER.inner_dim
    assert model.checkpoint_linear("transformer_blocks.0.attn1.to_k") == (
        "transformer_blocks.0.attn1.to_qkv",
        slice(width, 2 * width),
    )
    assert model.checkpoint_linear("transformer_blocks.0.attn2.to_v") == (
        "transformer_blocks.0.attn2.to_kv",
        slice(width, 2 * width),
    )
    assert model.checkpoint_linear("proj_out") == ("proj_out", slice(0, TINY_TRANSFORMER.out_channels))
    name = "transformer_blocks.0.ff.net.2"
    old = layers[name]
    new = torch.nn.Linear(old.in_features, old.out_features)
    assert model.replace_linear(name, new) is old and model.linear_layers()[name] is new
    with pytest.raises(SettingsError, match="cannot replace"):
        model.replace_linear(name, torch.nn.Linear(3, 4))
    with pytest.raises(SettingsError, match="no linear layer 'nowhere'"):
        model.replace_linear("nowhere", new)
