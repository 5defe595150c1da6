"""Applying LoRAs to the transformer: merged into float layers, a branch beside quantized
ones, the fused projections' rows, removal back to the exact base, the refusals."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.lora import LoRABranch, LoRAFile, LoRAWeights, apply_loras
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.speed.fp8 import FP8Linear, fp8_supported

D = TINY_TRANSFORMER.inner_dim
MODULES = {
    "transformer_blocks.0.attn1.to_k": (D, D),
    "transformer_blocks.1.attn1.to_q": (D, D),
    "transformer_blocks.0.attn2.to_v": (D, TINY_TRANSFORMER.cross_attention_dim),
    "transformer_blocks.0.attn2.to_q": (D, D),
    "transformer_blocks.1.ff.net.2": (D, 4 * D),
    "patchify_proj": (D, TINY_TRANSFORMER.in_channels),
}


def lora(seed: int, modules=MODULES, rank: int = 3, alpha: float | None = 1.5) -> LoRAFile:
    g = torch.Generator().manual_seed(seed)
    weights = {
        name: LoRAWeights(torch.randn(rank, i, generator=g) * 0.2, torch.randn(o, rank, generator=g) * 0.2, alpha)
        for name, (o, i) in modules.items()
    }
    return LoRAFile(weights, source=f"'lora{seed}.safetensors'")


@pytest.fixture
def model() -> LTXVTransformer:
    torch.manual_seed(0)
    return LTXVTransformer(TINY_TRANSFORMER).eval()


@torch.no_grad()
def output(model: LTXVTransformer) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 12, TINY_TRANSFORMER.in_channels, generator=g)
    text = torch.randn(1, 4, TINY_TRANSFORMER.caption_channels, generator=g)
    coords = fractional_coords(pixel_coords(latent_coords(2, 2, 3, 1), causal_fix=True), 24)
    return model(latent, torch.tensor([0.6]), text, None, coords)


def test_a_float_layer_gets_the_update_merged_into_its_rows(model):
    base_qkv = model.transformer_blocks[0].attn1.to_qkv.weight.detach().clone()
    a, b = lora(1), lora(2, rank=2, alpha=None)
    applied = apply_loras(model, [(a, 0.5), (b, -1.25)])
    qkv = model.transformer_blocks[0].attn1.to_qkv
    assert type(qkv) is nn.Linear and "transformer_blocks.0.attn1.to_qkv" in applied.layer_names
    delta = lambda f, s: (
        s
        * f.modules["transformer_blocks.0.attn1.to_k"].scale
        * (f.modules["transformer_blocks.0.attn1.to_k"].up @ f.modules["transformer_blocks.0.attn1.to_k"].down)
    )
    expected = base_qkv.clone()
    expected[D : 2 * D] += delta(a, 0.5) + delta(b, -1.25)
    torch.testing.assert_close(qkv.weight, expected, atol=1e-6, rtol=0)
    assert torch.equal(qkv.weight[:D], base_qkv[:D]) and torch.equal(qkv.weight[2 * D :], base_qkv[2 * D :])
    # cross-attention: to_v is the second half of to_kv, to_q a layer of its own
    kv = model.transformer_blocks[0].attn2.to_kv.weight
    assert not torch.equal(kv[D:], applied.replaced["transformer_blocks.0.attn2.to_kv"].weight[D:])
    assert torch.equal(kv[:D], applied.replaced["transformer_blocks.0.attn2.to_kv"].weight[:D])
    assert "transformer_blocks.0.attn2.to_q" in applied.layer_names


def test_remove_restores_the_exact_base_and_reapplying_equals_a_fresh_apply(model):
    fresh_model = copy.deepcopy(model)
    base_layers = model.linear_layers()
    base = output(model)
    applied = apply_loras(model, [(lora(1), 0.8), (lora(2), 0.3)])
    assert not torch.allclose(output(model), base, atol=1e-3)
    applied.remove()
    assert torch.equal(output(model), base)
    assert all(model.linear_layers()[name] is layer for name, layer in base_layers.items())
    apply_loras(model, [(lora(1), -0.4), (lora(2), 1.1)])
    apply_loras(fresh_model, [(lora(1), -0.4), (lora(2), 1.1)])
    assert torch.equal(output(model), output(fresh_model))


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
)
def test_bases_kept_on_another_device_come_back_bit_equal(device):
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval().to(device)
    base = output(model.cpu()).clone()
    model.to(device)
    applied = apply_loras(model, [(lora(1), 0.8)], base_device="cpu")
    assert applied.offloaded == set(applied.layer_names) and len(applied.layer_names) == 6
    assert all(layer.weight.device.type == "cpu" for layer in applied.replaced.values())
    applied.remove()
    assert all(layer.weight.device.type == device for layer in model.linear_layers().values())
    assert torch.equal(output(model.cpu()), base)


def test_strength_zero_changes_nothing_and_keep_base_false_cannot_be_removed(model):
    base = output(model)
    applied = apply_loras(model, [(lora(1), 0.0)])
    assert applied.layer_names == [] and torch.equal(output(model), base)
    applied = apply_loras(model, [(lora(1), 1.0)], keep_base=False)
    assert set(applied.replaced.values()) == {None}
    with pytest.raises(SettingsError, match="applied with keep_base=False: reload the model"):
        applied.remove()


def by_hand_branch(x, base_layer, weights_and_factors_rows):
    out = base_layer(x)
    for w, factor, rows in weights_and_factors_rows:
        out[..., rows] += factor * (x @ w.down.T) @ w.up.T
    return out


@pytest.mark.skipif(not fp8_supported("cpu"), reason="this torch's CPU _scaled_mm takes no row-wise scales")
def test_a_quantized_layer_gets_a_branch_beside_it(model):
    name = "transformer_blocks.0.attn1.to_qkv"
    fp8 = FP8Linear(model.linear_layers()[name], out_dtype=torch.float32)
    model.replace_linear(name, fp8)
    a, b = lora(1), lora(2, rank=2)
    applied = apply_loras(model, [(a, 0.5), (b, 2.0)])
    branch = model.linear_layers()[name]
    assert isinstance(branch, LoRABranch) and branch.base is fp8 and branch.down.shape == (5, D)
    x = torch.randn(2, 7, D)
    k = "transformer_blocks.0.attn1.to_k"
    expected = by_hand_branch(
        x,
        fp8,
        [
            (a.modules[k], 0.5 * a.modules[k].scale, slice(D, 2 * D)),
            (b.modules[k], 2.0 * b.modules[k].scale, slice(D, 2 * D)),
        ],
    )
    with torch.no_grad():
        torch.testing.assert_close(branch(x), expected, atol=1e-5, rtol=0)
    applied.remove()
    assert model.linear_layers()[name] is fp8


def test_any_non_float_layer_called_as_layer_x_gets_a_branch(model):
    class Dequantizing(nn.Module):  # stands for QuantizedLinear: in/out features and forward
        def __init__(self, linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("stored", linear.weight.detach().to(torch.bfloat16))
            self.bias = linear.bias

        def forward(self, x):
            return nn.functional.linear(x, self.stored.to(x.dtype), self.bias)

    name = "transformer_blocks.1.ff.net.2"
    quantized = Dequantizing(model.linear_layers()[name])
    model.replace_linear(name, quantized)
    a = lora(3)
    apply_loras(model, [(a, 0.7)])
    x = torch.randn(5, 4 * D)
    w = a.modules[name]
    with torch.no_grad():
        expected = by_hand_branch(x, quantized, [(w, 0.7 * w.scale, slice(0, D))])
        torch.testing.assert_close(model.linear_layers()[name](x), expected, atol=1e-5, rtol=0)


def test_modules_no_layer_has_are_ignored_with_a_warning_naming_them(model):
    extra = {"transformer_blocks.7.attn1.to_q": (D, D), "transformer_blocks.0.norm1": (D, D), "proj_out": (128, D)}
    with pytest.warns(
        UserWarning,
        match=r"2 LoRA module\(s\) match no layer of the transformer, ignored: "
        r"'transformer_blocks.7.attn1.to_q', 'transformer_blocks.0.norm1'",
    ):
        applied = apply_loras(model, [(lora(4, modules=extra), 1.0)])
    assert applied.layer_names == ["proj_out"]
    assert applied.unmatched == ["transformer_blocks.7.attn1.to_q", "transformer_blocks.0.norm1"]


def test_a_lora_of_another_model_is_refused_naming_the_module_and_both_shapes(model):
    wrong = {"proj_out": (128, D), "transformer_blocks.1.attn1.to_v": (2 * D, D)}
    before = model.linear_layers()
    with pytest.raises(
        CheckpointError,
        match=r"'lora5.safetensors': LoRA module 'transformer_blocks.1.attn1.to_v' changes a weight of shape "
        r"\(32, 16\) \(up \(32, 3\), down \(3, 16\)\), but the transformer's 'transformer_blocks.1.attn1.to_v' "
        r"has shape \(16, 16\)",
    ):
        apply_loras(model, [(lora(5, modules=wrong), 1.0)])
    assert model.linear_layers() == before  # checked before any layer changed


def test_a_lora_none_of_whose_modules_the_model_has_is_refused(model):
    other = {"blocks.0.self_attn.q": (D, D), "blocks.0.ffn.0": (D, D)}  # another model's names
    with pytest.raises(CheckpointError, match=r"'lora6.safetensors': none of its 2 LoRA modules is a layer of this"):
        apply_loras(model, [(lora(6, modules=other), 1.0)])


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), True, "1"])
def test_a_strength_that_is_no_finite_number_is_refused(model, strength):
    with pytest.raises(
        SettingsError, match=rf"LoRA strength {strength!r} \(LoRA 2, 'lora1.safetensors'\) is not allowed"
    ):
        apply_loras(model, [(lora(1), 1.0), (lora(1), strength)])


def test_no_warning_for_a_lora_that_matches(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_loras(model, [(lora(1), 1.0)])
