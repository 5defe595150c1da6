"""Guidance (`ltx_core.sampling.guidance`) and its spatiotemporal skip guidance (STG, as in Lightricks' code): the
perturbed pass for each strategy against a forward built here by hand, the guidance
arithmetic, scale 0 as plain CFG, one batched forward, and bad settings.

If these fail, STG perturbs something else than Lightricks' `SkipLayerStrategy`
(attention values: the self-attention's output is its value projection, an identity
attention map; attention skip: the self-attention's input goes straight to its output
projection), or mixes the three predictions differently from `LTXVideoPipeline`."""

import pytest
import torch
import torch.nn.functional as F

from ltx_core.errors import SettingsError
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.guidance import guided_velocity, perturbed_forward
from ltx_core.pipeline import Request, prepare_latent
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.models.text_encoder import TextEmbeddings

ATOL = 1e-5  # the same fp32 operations in the same order, up to batching
FRAMES, HEIGHT, WIDTH = 2, 1, 2
TOKENS = FRAMES * HEIGHT * WIDTH


@pytest.fixture(scope="module")
def inputs(tiny_transformer):
    """Two items (an unperturbed one beside the perturbed one) of tiny-model inputs."""
    g = torch.Generator().manual_seed(3)
    cfg = tiny_transformer.cfg
    latent = torch.randn(2, TOKENS, cfg.in_channels, generator=g)
    timestep = torch.rand(2, TOKENS, generator=g)
    text = torch.randn(2, 4, cfg.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    coords = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, 2), causal_fix=True), 25.0)
    return latent, timestep, text, mask, coords


def attention_replaced(attn, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The perturbed self-attention as Lightricks defines it, from the module's weights."""
    # the value projection, from the checkpoint's to_v weights (the model stores q, k, v fused)
    state = attn.state_dict()
    kept = F.linear(x, state["to_v.weight"], state["to_v.bias"]) if mode == "attention_values" else x
    return attn.to_out[0](kept)


def hand_built_forward(model, latent, timestep, text, mask, coords, block_index: int, mode: str):
    """Our transformer's forward written out, with block `block_index`'s self-attention
    replaced by `attention_replaced` for every item."""
    x, modulation, embedded_t, context, text_bias, rope = model.prepare(latent, timestep, text, mask, coords)
    for index, block in enumerate(model.transformer_blocks):
        if index != block_index:
            x = block(x, modulation, rope, context, text_bias)
            continue
        ada = block.scale_shift_table + modulation.unflatten(-1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)
        attn_input = block.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * attention_replaced(block.attn1, attn_input, mode)
        x = x + block.attn2(x, context=context, bias=text_bias)
        x = x + gate_mlp * block.ff(block.norm2(x) * (1 + scale_mlp) + shift_mlp)
    return model.finish(x, embedded_t)


@pytest.mark.parametrize("mode", ["attention_values", "attention_skip"])
@pytest.mark.parametrize("block_index", [0, 1])
@torch.no_grad()
def test_the_perturbed_item_equals_a_forward_with_that_blocks_attention_replaced(
    tiny_transformer, inputs, mode, block_index
):
    latent, timestep, text, mask, coords = inputs
    perturbed = torch.tensor([False, True])
    # guidance's perturbed forward (the transformer's own STG inputs were removed: STG lives in guidance)
    out = perturbed_forward(tiny_transformer, (block_index,), mode)(latent, timestep, text, mask, coords, perturbed)
    expected = hand_built_forward(tiny_transformer, latent, timestep, text, mask, coords, block_index, mode)
    plain = tiny_transformer(latent, timestep, text, mask, coords)
    torch.testing.assert_close(out[1], expected[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[0], plain[0], atol=ATOL, rtol=0)  # the other item is not perturbed
    assert (out[1] - plain[1]).abs().max() > 1e-3, "the perturbation changes the prediction"


@torch.no_grad()
def test_the_two_strategies_perturb_differently(tiny_transformer, inputs):
    latent, timestep, text, mask, coords = inputs
    perturbed = torch.tensor([True, True])
    values, skip = (perturbed_forward(tiny_transformer, (0,), mode)(latent, timestep, text, mask, coords, perturbed)
                    for mode in ("attention_values", "attention_skip"))  # fmt: skip
    assert (values - skip).abs().max() > 1e-3


def fake_model(predictions: dict[str, torch.Tensor], calls: list):
    """A model_fn whose velocity per batch item is fixed by its text and perturbation:
    the negative text gives 'uncond', the prompt 'cond', the perturbed prompt 'perturbed'."""

    def model_fn(x, timesteps, text, text_mask, perturbed=None):
        calls.append(x.shape[0])
        flags = perturbed if perturbed is not None else torch.zeros(x.shape[0], dtype=torch.bool)
        items = [
            predictions["perturbed" if flag else ("cond" if t[0, 0] > 0 else "uncond")] for t, flag in zip(text, flags)
        ]
        return torch.stack(items)

    return model_fn


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["with CFG", "without CFG"])
@pytest.mark.parametrize("rescale", [0.7, 0.0, 1.0])
def test_guidance_mixes_the_three_predictions_as_lightricks_pipeline(guidance, rescale):
    g = torch.Generator().manual_seed(4)
    predictions = {name: torch.randn(TOKENS, 8, generator=g) for name in ("uncond", "cond", "perturbed")}
    calls = []
    text, negative = torch.ones(1, 3, 2), -torch.ones(1, 3, 2)
    velocity = guided_velocity(fake_model(predictions, calls), text, torch.ones(1, 3), negative, torch.ones(1, 3),
                               guidance, stg_scale=2.0, stg_rescale=rescale)  # fmt: skip
    out = velocity(torch.zeros(1, TOKENS, 8), torch.ones(1, TOKENS))
    u, c, p = predictions["uncond"], predictions["cond"], predictions["perturbed"]
    expected = (u + guidance * (c - u) if guidance != 1.0 else c) + 2.0 * (c - p)
    if rescale != 1.0:  # Lightricks applies no rescale at exactly 1
        factor = c.std() / expected.std()
        expected = expected * (rescale * factor + 1 - rescale)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=1e-6)
    assert calls == [3 if guidance != 1.0 else 2], "one batched forward: (uncond,) cond, perturbed"


@pytest.fixture(scope="module")
def run(tiny_transformer, tiny_vae):
    g = torch.Generator().manual_seed(5)
    prompt = TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6, dtype=torch.bool))
    negative = TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6, dtype=torch.bool))
    latent = prepare_latent(tiny_vae, 9, 32, 64)
    sigmas = flow_sigmas(2, latent.num_tokens)

    def denoised(**stg):
        return denoise(tiny_transformer, latent, prompt, negative, sigmas, 3.0, 25.0,
                       torch.Generator().manual_seed(0), **stg).samples  # fmt: skip

    return denoised


@torch.no_grad()
def test_stg_scale_0_gives_exactly_the_cfg_result(run):
    assert torch.equal(run(stg_scale=0.0, stg_blocks=(1,), stg_mode="attention_skip"), run())


@pytest.mark.parametrize("mode", ["attention_values", "attention_skip"])
@torch.no_grad()
def test_stg_changes_the_result(run, mode):
    assert (run(stg_scale=1.0, stg_blocks=(1,), stg_mode=mode) - run()).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stg_scale": 1.0}, r"stg_scale 1.0 needs stg_blocks"),
        ({"stg_scale": -1.0, "stg_blocks": (0,)}, r"stg_scale -1.0 is not allowed; allowed: a finite number >= 0"),
        ({"stg_scale": 1.0, "stg_blocks": (0,), "stg_mode": "residual"}, r"stg_mode 'residual' is not known"),
        ({"stg_scale": 1.0, "stg_blocks": (-1,)}, r"stg_blocks \(-1,\) must be block indices"),
        ({"stg_rescale": float("nan")}, r"stg_rescale nan is not allowed"),
    ],
)
def test_bad_stg_settings_are_refused_with_what_is_allowed(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(prompt="a fox", **change)


@torch.no_grad()
def test_a_block_the_model_lacks_is_refused(run):
    with pytest.raises(SettingsError, match=r"stg_blocks \(5,\) name blocks this model lacks; allowed: 0 to 1"):
        run(stg_scale=1.0, stg_blocks=(5,))
