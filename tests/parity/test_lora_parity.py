"""LoRA'd LTXVTransformer against diffusers' LTXVideoTransformer3DModel, fp32 on CPU.

Both start from the same random base weights (conftest). diffusers loads each file through
`LTXVideoLoraLoaderMixin` (`lora_state_dict`, then `load_lora_into_transformer`, peft
underneath) and weighs the adapters with `set_adapters`. The layouts diffusers' LTX-Video
loader does not take are checked against a merge by hand into diffusers' weights instead:
kohya's `lora_unet_` names, and `.alpha` tensors (its loader refuses keys without "lora").
"""

from __future__ import annotations

import pytest
import torch

from ltx_core.lora import LoRAWeights, apply_loras, read_lora, save_lora
from ltx_core.lora.files import _diffusers_module_name
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords

from .conftest import TINY_TRANSFORMER_UNSHIFTED, diffusers_transformer, ours_from_diffusers_transformer

pytest.importorskip("peft")
from diffusers.loaders.lora_pipeline import LTXVideoLoraLoaderMixin

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")]

ATOL = 1e-4
FRAMES, HEIGHT, WIDTH, BATCH, TEXT_LEN, FPS = 2, 2, 3, 2, 5, 24
VAE_TIME, VAE_SPACE = 8, 32
CFG = TINY_TRANSFORMER_UNSHIFTED
D = CFG.inner_dim
# Modules spelled the same by the official file and diffusers, both attentions' parts included.
SHARED_MODULES = {
    **{f"transformer_blocks.{b}.attn1.{p}": (D, D) for b in (0, 1) for p in ("to_q", "to_k", "to_v", "to_out.0")},
    **{f"transformer_blocks.{b}.attn2.to_q": (D, D) for b in (0, 1)},
    **{f"transformer_blocks.1.attn2.{p}": (D, CFG.cross_attention_dim) for p in ("to_k", "to_v")},
    "transformer_blocks.1.attn2.to_out.0": (D, D),
    "transformer_blocks.0.ff.net.0.proj": (4 * D, D),
    "transformer_blocks.0.ff.net.2": (D, 4 * D),
    "caption_projection.linear_1": (D, CFG.caption_channels),
    "proj_out": (CFG.out_channels, D),
}
# Modules diffusers spells otherwise (`proj_in`, `time_embed`): the diffusers layout's names.
RENAMED_MODULES = {"patchify_proj": (D, CFG.in_channels), "adaln_single.linear": (6 * D, D)}


def random_lora(modules: dict, rank: int, seed: int, alpha: float | None = None) -> dict[str, LoRAWeights]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: LoRAWeights(torch.randn(rank, i, generator=g) * 0.3, torch.randn(o, rank, generator=g) * 0.3, alpha)
        for name, (o, i) in modules.items()
    }


def inputs():
    g = torch.Generator().manual_seed(1)
    tokens = FRAMES * HEIGHT * WIDTH
    latent = torch.randn(BATCH, tokens, CFG.in_channels, generator=g)
    sigma = torch.rand(BATCH, generator=g)
    text = torch.randn(BATCH, TEXT_LEN, CFG.caption_channels, generator=g)
    mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    mask[1, 3:] = 0
    return latent, sigma, text, mask


@torch.no_grad()
def run_ours(model):
    latent, sigma, text, mask = inputs()
    coords = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, BATCH), causal_fix=False), FPS)
    return model(latent, sigma, text, mask, coords)


@torch.no_grad()
def run_reference(reference):
    latent, sigma, text, mask = inputs()
    scale = (VAE_TIME / FPS, VAE_SPACE, VAE_SPACE)
    return reference(
        latent,
        text,
        sigma * 1000,
        mask,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        rope_interpolation_scale=scale,
        return_dict=False,
    )[0]


@pytest.fixture
def pair():
    """A fresh pair per test: peft changes diffusers' model in place."""
    reference = diffusers_transformer(CFG, std=0.3)
    return reference, ours_from_diffusers_transformer(reference, CFG)


def load_in_diffusers(reference, files_and_strengths):
    names = []
    for index, (path, _) in enumerate(files_and_strengths):
        state_dict, metadata = LTXVideoLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
        name = f"lora{index}"
        LTXVideoLoraLoaderMixin.load_lora_into_transformer(state_dict, reference, adapter_name=name, metadata=metadata)
        names.append(name)
    reference.set_adapters(names, weights=[strength for _, strength in files_and_strengths])


def check_parity(pair, files_and_strengths):
    reference, ours = pair
    base = run_ours(ours)
    apply_loras(ours, [(read_lora(path), strength) for path, strength in files_and_strengths])
    load_in_diffusers(reference, files_and_strengths)
    expected, got = run_reference(reference), run_ours(ours)
    assert (got - base).abs().max() > 100 * ATOL, "the LoRAs must change the output for the test to mean anything"
    error = (got - expected).abs().max().item()
    assert error <= ATOL, f"max abs error {error}"
    return error


def test_two_comfyui_loras_with_strengths_match_diffusers(pair, tmp_path):
    first = save_lora(tmp_path / "a.safetensors", random_lora(SHARED_MODULES, 4, seed=2), "comfyui")
    second = save_lora(tmp_path / "b.safetensors", random_lora(dict(list(SHARED_MODULES.items())[::2]), 2, seed=3))
    check_parity(pair, [(first, 0.7), (second, -0.45)])


def test_diffusers_layout_loras_with_alphas_and_renamed_modules_match_diffusers(pair, tmp_path):
    modules = {**SHARED_MODULES, **RENAMED_MODULES}
    lora = random_lora(modules, 4, seed=4, alpha=8.0)
    lora["transformer_blocks.0.attn1.to_k"] = LoRAWeights(
        lora["transformer_blocks.0.attn1.to_k"].down, lora["transformer_blocks.0.attn1.to_k"].up, 2.0
    )
    first = save_lora(tmp_path / "a.safetensors", lora, "diffusers")
    second = save_lora(tmp_path / "b.safetensors", random_lora(RENAMED_MODULES, 3, seed=5), "diffusers")
    assert read_lora(first).modules["patchify_proj"].scale == 2.0
    check_parity(pair, [(first, 1.0), (second, 0.6)])


def merge_by_hand(reference, loras_and_strengths):
    """W += strength * alpha / rank * up @ down on diffusers' own linear layers."""
    layers = dict(reference.named_modules())
    with torch.no_grad():
        for lora, strength in loras_and_strengths:
            for name, w in lora.items():
                scale = 1.0 if w.alpha is None else w.alpha / w.down.shape[0]
                layers[_diffusers_module_name(name)].weight += strength * scale * (w.up @ w.down)


@pytest.mark.parametrize("layout", ["kohya", "comfyui", "official"])
def test_layouts_diffusers_does_not_take_match_a_merge_by_hand(pair, tmp_path, layout):
    reference, ours = pair
    modules = {**SHARED_MODULES, **RENAMED_MODULES}
    first, second = random_lora(modules, 4, seed=6, alpha=2.0), random_lora(SHARED_MODULES, 3, seed=7, alpha=6.0)
    paths = [save_lora(tmp_path / f"{i}.safetensors", lora, layout) for i, lora in enumerate((first, second))]
    base = run_ours(ours)
    apply_loras(ours, [(read_lora(paths[0]), 0.8), (read_lora(paths[1]), 1.3)])
    merge_by_hand(reference, [(first, 0.8), (second, 1.3)])
    got = run_ours(ours)
    assert (got - base).abs().max() > 100 * ATOL
    assert (got - run_reference(reference)).abs().max().item() <= ATOL
