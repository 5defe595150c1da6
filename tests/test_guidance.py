"""Guidance (`ltx_core.sampling.guidance`) and its spatiotemporal skip guidance (STG, as in Lightricks' code): the
perturbed pass for each strategy against a forward built here by hand, the guidance
arithmetic (CFG-star included), scale 0 as plain CFG, one batched forward, per-interval
schedules picked by sigma as Lightricks' pipeline picks them, and bad settings.

If these fail, STG perturbs something else than Lightricks' `SkipLayerStrategy`
(attention values: the self-attention's output is its value projection, an identity
attention map; attention skip: the self-attention's input goes straight to its output
projection; residual: nothing, LTX-Video's attention having no residual of its own;
transformer block: the block's input is handed on), mixes the three predictions
differently from `LTXVideoPipeline`, or guides a step with another interval's values."""

import pytest
import torch
import torch.nn.functional as F

from ltx_core.errors import SettingsError
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.pipeline import Request, prepare_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.guidance import STG_MODES, Guidance, GuidanceStep, combine, guided_velocity, perturbed_forward
from ltx_core.sampling.scheduler import flow_sigmas

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
    """Our transformer's forward written out, with block `block_index` perturbed for every
    item: its self-attention replaced by `attention_replaced`, or (transformer_block) the
    whole block left out. "residual" drops the attention's own residual connection, which
    LTX-Video's attention does not have (the block adds x + gate * attn): nothing changes."""
    x, modulation, embedded_t, context, text_bias, rope = model.prepare(latent, timestep, text, mask, coords)
    for index, block in enumerate(model.transformer_blocks):
        if index == block_index and mode == "transformer_block":
            continue
        if index != block_index or mode == "residual":
            x = block(x, modulation, rope, context, text_bias)
            continue
        ada = block.scale_shift_table + modulation.unflatten(-1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)
        attn_input = block.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * attention_replaced(block.attn1, attn_input, mode)
        x = x + block.attn2(x, context=context, bias=text_bias)
        x = x + gate_mlp * block.ff(block.norm2(x) * (1 + scale_mlp) + shift_mlp)
    return model.finish(x, embedded_t)


@pytest.mark.parametrize("mode", STG_MODES)
@pytest.mark.parametrize("block_index", [0, 1])
@torch.no_grad()
def test_the_perturbed_item_equals_a_forward_with_that_block_perturbed_by_hand(
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
    if mode != "residual":
        assert (out[1] - plain[1]).abs().max() > 1e-3, "the perturbation changes the prediction"


@torch.no_grad()
def test_the_strategies_that_change_the_prediction_perturb_differently(tiny_transformer, inputs):
    latent, timestep, text, mask, coords = inputs
    perturbed = torch.tensor([True, True])
    outs = [
        perturbed_forward(tiny_transformer, (0,), mode)(latent, timestep, text, mask, coords, perturbed)
        for mode in ("attention_values", "attention_skip", "transformer_block")
    ]
    for i, first in enumerate(outs):
        for second in outs[i + 1 :]:
            assert (first - second).abs().max() > 1e-3


def fake_model(predictions: dict[str, torch.Tensor], calls: list):
    """A model_fn whose velocity per batch item is fixed by its text and perturbation:
    the negative text gives 'uncond', the prompt 'cond', the perturbed prompt 'perturbed'."""

    def model_fn(x, timesteps, text, text_mask, perturbed=None, blocks=()):
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
    velocity = guided_velocity(
        fake_model(predictions, calls),
        text,
        torch.ones(1, 3),
        negative,
        torch.ones(1, 3),
        Guidance(guidance, stg_scale=2.0, stg_blocks=(0,), stg_rescale=rescale),
    )
    out = velocity(torch.zeros(1, TOKENS, 8), torch.ones(1, TOKENS), 1.0)
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
        return denoise(
            tiny_transformer,
            latent,
            prompt,
            negative,
            sigmas,
            Guidance(3.0, **stg),
            25.0,
            torch.Generator().manual_seed(0),
        ).samples

    return denoised


@torch.no_grad()
def test_stg_scale_0_gives_exactly_the_cfg_result(run):
    assert torch.equal(run(stg_scale=0.0, stg_blocks=(1,), stg_mode="attention_skip"), run())


@pytest.mark.parametrize("mode", ["attention_values", "attention_skip", "transformer_block"])
@torch.no_grad()
def test_stg_changes_the_result(run, mode):
    assert (run(stg_scale=1.0, stg_blocks=(1,), stg_mode=mode) - run()).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stg_scale": 1.0}, r"stg_scale 1.0 needs stg_blocks"),
        ({"stg_scale": -1.0, "stg_blocks": (0,)}, r"stg_scale -1.0 is not allowed; allowed: a finite number >= 0"),
        (
            {"stg_scale": 1.0, "stg_blocks": (0,), "stg_mode": "stg_r"},
            r"stg_mode 'stg_r' is not known; allowed: "
            "attention_values, attention_skip, residual, transformer_block",
        ),
        ({"stg_scale": 1.0, "stg_blocks": (-1,)}, r"stg_blocks \(-1,\) must be block indices"),
        ({"stg_rescale": float("nan")}, r"stg_rescale nan is not allowed"),
    ],
)
def test_bad_stg_settings_are_refused_with_what_is_allowed(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(prompt="a fox", **change)
    with pytest.raises(SettingsError, match=message):
        Guidance(**change)


@torch.no_grad()
def test_a_block_the_model_lacks_is_refused(run):
    with pytest.raises(SettingsError, match=r"stg_blocks \(5,\) name blocks this model lacks; allowed: 0 to 1"):
        run(stg_scale=1.0, stg_blocks=(5,))


# ---------------------------------------------------------------- per-interval schedules

# Lightricks' configs/ltxv-13b-0.9.8-dev.yaml, first pass
DEV_FIRST_PASS = dict(
    cfg_scale=(1, 1, 6, 8, 6, 1, 1),
    stg_scale=(0, 0, 4, 4, 4, 2, 1),
    stg_rescale=(1, 1, 0.5, 0.5, 1, 1, 1),
    guidance_timesteps=(1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180),
    stg_blocks=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),
    cfg_star_rescale=True,
)


@pytest.mark.parametrize(
    ("sigma", "interval"),
    [
        # Lightricks' rule: the first interval whose guidance timestep is <= sigma, else the last
        (1.0, 0),
        (0.999, 1),  # 0.996 is the first guidance timestep at or below it
        (0.996, 1),  # a guidance timestep itself belongs to its interval
        (float(torch.tensor(0.996)), 1),  # fp32 0.996 is below the float 0.996; fp32 compares equal
        (0.995, 2),
        (0.99, 3),
        (0.98, 4),
        (0.977, 4),
        (0.95, 5),
        (0.9008, 5),
        (0.9, 6),
        (0.618, 6),
        (0.5, 6),  # below every guidance timestep: the last interval
        (0.0, 6),
    ],
)
def test_a_step_gets_the_interval_lightricks_pipeline_maps_its_sigma_to(sigma, interval):
    guidance = Guidance(**DEV_FIRST_PASS)
    assert guidance.interval_of(sigma) == interval
    step = guidance.at(sigma)
    expected = GuidanceStep(
        DEV_FIRST_PASS["cfg_scale"][interval],
        DEV_FIRST_PASS["stg_scale"][interval],
        DEV_FIRST_PASS["stg_blocks"][interval],
        DEV_FIRST_PASS["stg_rescale"][interval],
        cfg_star_rescale=True,
    )
    assert step == expected


def test_single_values_hold_for_every_step_and_a_flat_block_list_for_every_interval():
    assert Guidance(3.0).at(0.3) == GuidanceStep(3.0, 0.0, (), 0.7)
    # Lightricks' second pass: one interval, its skip_block_list a flat list
    second = Guidance((1,), (1,), (27,), stg_rescale=(1,), guidance_timesteps=(1.0,))
    assert [second.at(s) for s in (0.9, 0.1)] == [GuidanceStep(1, 1, (27,), 1)] * 2
    assert second.stg_block_sets == ((27,),) and second.uses_stg and not second.needs_negative
    dev = Guidance(**DEV_FIRST_PASS)
    # interval 1 names blocks at STG scale 0: no step perturbs them, as in Lightricks' pipeline
    assert dev.stg_block_sets == ((22, 35, 39), (28,))
    assert dev.needs_negative and dev.uses_stg


def test_lists_are_kept_as_tuples_so_the_guidance_stays_hashable_and_frozen():
    guidance = Guidance(
        **{
            **DEV_FIRST_PASS,
            "cfg_scale": [1, 1, 6, 8, 6, 1, 1],
            "stg_blocks": [[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]],
        }
    )
    assert guidance == Guidance(**DEV_FIRST_PASS) and hash(guidance) == hash(Guidance(**DEV_FIRST_PASS))


def test_a_step_without_cfg_or_stg_leaves_their_copies_out_of_the_batch():
    """Lightricks' pipeline batches only what the step uses: 1, 2 or 3 copies, and
    perturbs that step's blocks."""
    g = torch.Generator().manual_seed(6)
    predictions = {name: torch.randn(TOKENS, 8, generator=g) for name in ("uncond", "cond", "perturbed")}
    calls, blocks_seen = [], []
    model_fn = fake_model(predictions, calls)

    def recording(*args):
        if len(args) == 6:
            blocks_seen.append(args[5])
        return model_fn(*args)

    text, negative = torch.ones(1, 3, 2), -torch.ones(1, 3, 2)
    mask = torch.ones(1, 3)
    velocity = guided_velocity(recording, text, mask, negative, mask, Guidance(**DEV_FIRST_PASS))
    x, t = torch.zeros(1, TOKENS, 8), torch.ones(1, TOKENS)
    outs = [velocity(x, t, sigma) for sigma in (1.0, 0.995, 0.95, 0.5)]
    assert calls == [1, 3, 2, 2] and blocks_seen == [(22, 35, 39), (28,), (28,)]
    torch.testing.assert_close(outs[0], predictions["cond"][None])  # cfg 1, stg 0: the conditional velocity


def test_cfg_star_scales_the_unconditional_velocity_by_its_projection_coefficient():
    """Lightricks' cfg_star_rescale, by hand: alpha = <c, u> / (|u|^2 + 1e-8) over each
    video's whole velocity, u <- alpha u, then v = u + g (c - u)."""
    g = torch.Generator().manual_seed(8)
    cond, uncond = torch.randn(2, TOKENS, 8, generator=g), torch.randn(2, TOKENS, 8, generator=g)
    step = GuidanceStep(4.0, 0.0, (), 1.0, cfg_star_rescale=True)
    for item in range(2):
        c, u = cond[item].double(), uncond[item].double()
        alpha = float((c * u).sum() / ((u * u).sum() + 1e-8))
        expected = alpha * u + 4.0 * (c - alpha * u)
        torch.testing.assert_close(combine(step, cond, uncond)[item].double(), expected, atol=1e-5, rtol=1e-5)
    plain = combine(GuidanceStep(4.0, 0.0, (), 1.0), cond, uncond)
    torch.testing.assert_close(plain, uncond + 4.0 * (cond - uncond))
    assert (combine(step, cond, uncond) - plain).abs().max() > 1e-2


def test_cfg_star_then_stg_and_rescale_as_lightricks_pipeline():
    g = torch.Generator().manual_seed(9)
    c, u, p = (torch.randn(1, TOKENS, 8, generator=g) for _ in range(3))
    step = GuidanceStep(6.0, 4.0, (22,), 0.5, cfg_star_rescale=True)
    alpha = (c * u).sum() / ((u * u).sum() + 1e-8)
    v = alpha * u + 6.0 * (c - alpha * u) + 4.0 * (c - p)
    v = v * (0.5 * c.std() / v.std() + 0.5)
    torch.testing.assert_close(combine(step, c, u, p), v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cfg_scale": (1.0, 3.0)}, r"cfg_scale \[1.0, 3.0\] gives one value per interval; it needs guidance_time"),
        (
            {"cfg_scale": (1.0, 3.0), "guidance_timesteps": (1.0, 0.5, 0.2)},
            "cfg_scale has 2 values for 3 guidance_timesteps; allowed: one value per interval",
        ),
        (
            {"stg_scale": (0.0, -1.0), "stg_blocks": (1,), "guidance_timesteps": (1.0, 0.5)},
            r"stg_scale\[1\] -1.0 is not allowed; allowed: a finite number >= 0",
        ),
        (
            {"stg_scale": (0.0, 1.0), "stg_blocks": ((1,), ()), "guidance_timesteps": (1.0, 0.5)},
            "stg_scale 1.0 needs stg_blocks",
        ),
        ({"stg_blocks": ((1,), (-2,)), "guidance_timesteps": (1.0, 0.5)}, r"stg_blocks\[1\] \[?\(?-2"),
        ({"stg_blocks": ((1,), (2,))}, "it needs guidance_timesteps"),
        ({"guidance_timesteps": (0.5, 0.9)}, "guidance_timesteps .* must be strictly decreasing"),
        ({"guidance_timesteps": ()}, "guidance_timesteps .* must be a non-empty list of sigmas in"),
        ({"guidance_timesteps": (1.5,)}, "guidance_timesteps .* must be a non-empty list of sigmas in"),
        ({"cfg_star_rescale": "yes"}, "cfg_star_rescale 'yes' must be True or False"),
    ],
)
def test_bad_schedules_are_refused_with_what_is_allowed(change, message):
    with pytest.raises(SettingsError, match=message):
        Guidance(**change)


def test_a_request_takes_the_release_configs_schedules():
    fields = {("guidance_scale" if k == "cfg_scale" else k): v for k, v in DEV_FIRST_PASS.items()}
    request = Request(prompt="a fox", **fields)
    assert request.guidance() == Guidance(**DEV_FIRST_PASS)
    with pytest.raises(SettingsError, match=r"cfg_scale\[2\] -6 is not allowed"):
        Request(prompt="a fox", **{**fields, "guidance_scale": (1, 1, -6, 8, 6, 1, 1)})


@torch.no_grad()
def test_a_scheduled_run_equals_the_constant_run_when_every_interval_has_the_same_values(run):
    """Splitting the schedule into intervals of equal values changes nothing."""
    constant = run(stg_scale=1.0, stg_blocks=(1,))
    split = run(stg_scale=(1.0, 1.0), stg_blocks=((1,), (1,)), guidance_timesteps=(1.0, 0.5))
    assert torch.equal(constant, split)
