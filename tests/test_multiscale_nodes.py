"""The multi-scale pipeline's nodes in-process, with the real ComfyUI modules (as
tests/test_nodes.py) and tiny random models: the latent upsampler's loader and node, the
release schedule, the guided sampler's guidance input and second-pass start, and tone
mapping at decode. If these fail, the multi-scale workflows upsample the wrong latent,
sample a pass with other sigmas or guidance than Lightricks' configs, or start the second
pass from noise.
"""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest
import torch

from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER, TINY_TEMPORAL_UPSAMPLER

from .fixtures_checkpoints import write_official_single_file
from .test_guide_nodes import SAMPLER, TEXT
from .test_latent_upsampler import write_upsampler_file, write_upsampler_folder
from .test_nodes import PACK_NAME, pack, tiny_models  # noqa: F401 (fixtures)

KEYFRAMES_KEY = "ltxv_core_keyframes"
NEGATIVE = [
    [
        torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(9)),
        {"attention_mask": torch.ones(1, 8, dtype=torch.bool)},
    ]
]
STG = dict(stg_scale=0.0, stg_blocks="", stg_mode="attention_values", stg_rescale=0.7, strength_rule="held")
DISTILLED = "ltxv-13b-0.9.8-distilled"
# its published timesteps (ltx_core/assets/release_configs/ltxv-13b-0.9.8-distilled.yaml)
FIRST_PASS = [1.0, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250]
SECOND_PASS = [0.9094, 0.7250, 0.4219]


@pytest.fixture(scope="module")
def upsample(pack):
    return importlib.import_module(f"{PACK_NAME}.nodes.upsample")


@pytest.fixture(scope="module")
def core(pack):
    return sys.modules[f"{PACK_NAME}.ltx_core"]


def _module(core, name: str):
    return importlib.import_module(f"{core.__name__}.{name}")


@pytest.fixture
def upscale_folder(tmp_path, monkeypatch):
    """ComfyUI's `latent_upscale_models` folder, here a temporary one."""
    import folder_paths

    folder = tmp_path / "latent_upscale_models"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "latent_upscale_models", ([str(folder)], {".safetensors"}))
    return folder


@pytest.fixture
def spatial(upsample, upscale_folder):
    write_upsampler_file(upscale_folder / "ltxv-spatial-upscaler-tiny.safetensors", TINY_SPATIAL_UPSAMPLER, seed=3)
    (upsampler,) = upsample.LTXVCoreUpsamplerLoader().load("ltxv-spatial-upscaler-tiny.safetensors", "float32", "cpu")
    return upsampler


def _empty(pack, width=64, height=32, frames=17):
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=width, height=height, frames=frames, batch_size=1
    )
    return latent


def _first_pass_like(pack, seed=1):
    """A sampled-looking latent (random values) with its first frame held, as i2v leaves it."""
    latent = _empty(pack)
    latent["samples"] = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(seed))
    frame = {"samples": latent["samples"][:, :, :1]}
    (held,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreConditionFirstFrame"]().condition(latent, frame, strength=1.0)
    return held


# ---------------------------------------------------------------- the loader


def test_the_loader_lists_files_and_diffusers_folders_and_loads_both_for_comfyuis_memory_manager(
    upsample, upscale_folder
):
    write_upsampler_file(upscale_folder / "ltxv-spatial-upscaler-tiny.safetensors", TINY_SPATIAL_UPSAMPLER)
    write_upsampler_folder(upscale_folder / "ltxv-temporal-upscaler-tiny", TINY_TEMPORAL_UPSAMPLER)
    names = upsample.LTXVCoreUpsamplerLoader.INPUT_TYPES()["required"]["upsampler_name"][0]
    assert names == ["ltxv-spatial-upscaler-tiny.safetensors", "ltxv-temporal-upscaler-tiny"], "a folder is one choice"
    loader = upsample.LTXVCoreUpsamplerLoader()
    for name, cfg in zip(names, (TINY_SPATIAL_UPSAMPLER, TINY_TEMPORAL_UPSAMPLER)):
        assert loader.VALIDATE_INPUTS(name) is True
        (patcher,) = loader.load(name, "float32", "cpu")
        model = patcher.model.core
        assert model.cfg.to_metadata() == cfg.to_metadata() and patcher.model_dtype() == torch.float32
        assert patcher.model_size() == sum(p.nbytes for p in model.parameters())


def test_an_upsampler_not_in_the_folder_is_refused_at_queue_time_naming_the_folder(upsample, upscale_folder):
    message = upsample.LTXVCoreUpsamplerLoader.VALIDATE_INPUTS("ltxv-spatial-upscaler-0.9.8.safetensors")
    assert "latent upsampler 'ltxv-spatial-upscaler-0.9.8.safetensors' is not in the model folders" in message
    assert str(upscale_folder) in message


def test_a_full_checkpoint_given_as_the_upsampler_is_refused_saying_what_it_is(upsample, upscale_folder):
    write_official_single_file(upscale_folder / "ltxv-13b-0.9.8-distilled.safetensors", "0.9.5")
    with pytest.raises(
        ValueError,
        match=r"is an LTX-Video model checkpoint \(transformer and VAE\), not a latent "
        r"upsampler; load it as the checkpoint",
    ):
        upsample.LTXVCoreUpsamplerLoader().load("ltxv-13b-0.9.8-distilled.safetensors", "float32", "cpu")


# ---------------------------------------------------------------- the upsample


def test_the_upsample_doubles_the_latent_as_the_core_does_and_carries_its_noise_mask(
    pack,
    upsample,
    core,
    tiny_models,
    spatial,
):
    _, vae = tiny_models
    latent = _first_pass_like(pack)
    (upsampled,) = upsample.LTXVCoreLatentUpsample().upsample(
        spatial, vae, latent, adain_factor=1.0, tone_map_compression=0.0
    )
    assert upsampled["samples"].shape == (1, 128, 3, 2, 4)
    expected = _module(core, "sampling.latent_ops").upsample_latent(
        spatial.model.core, vae.model.core, latent["samples"], adain_factor=1.0
    )
    assert torch.equal(upsampled["samples"], expected)
    mask = upsampled["noise_mask"]
    assert mask.shape == (1, 1, 3, 2, 4) and (mask[:, :, 0] == 0).all() and (mask[:, :, 1:] == 1).all()
    # AdaIN against the first pass: each channel keeps the input's mean and spread
    for reduce in (torch.mean, torch.std):
        before, after = (reduce(x["samples"][0].flatten(1), dim=1) for x in (latent, upsampled))
        assert torch.allclose(before, after, atol=1e-4)


def test_adain_and_tone_mapping_change_the_upsampled_latent(pack, upsample, tiny_models, spatial):
    _, vae = tiny_models
    latent = _first_pass_like(pack)
    node = upsample.LTXVCoreLatentUpsample()
    results = [
        node.upsample(spatial, vae, latent, adain, tone)[0]["samples"]
        for adain, tone in ((1.0, 0.0), (0.0, 0.0), (1.0, 0.6))
    ]
    assert (results[0] - results[1]).abs().max() > 1e-3 and (results[0] - results[2]).abs().max() > 1e-3


def test_a_temporal_upsampler_gives_each_frames_mask_to_the_frames_it_became(
    pack,
    upsample,
    tiny_models,
    upscale_folder,
):
    _, vae = tiny_models
    write_upsampler_file(upscale_folder / "temporal.safetensors", TINY_TEMPORAL_UPSAMPLER)
    (temporal,) = upsample.LTXVCoreUpsamplerLoader().load("temporal.safetensors", "float32", "cpu")
    latent = _first_pass_like(pack)
    latent["noise_mask"] = latent["noise_mask"].clone()
    latent["noise_mask"][:, :, 1] = 0.5
    (upsampled,) = upsample.LTXVCoreLatentUpsample().upsample(temporal, vae, latent, 1.0, 0.0)
    assert upsampled["samples"].shape == (1, 128, 5, 1, 2)
    # causal layout: frame 0 stays one frame, frame k becomes frames 2k - 1 and 2k
    assert upsampled["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_a_latent_of_other_channels_is_refused_naming_both_counts(upsample, tiny_models, spatial):
    _, vae = tiny_models
    image_latent = {"samples": torch.zeros(1, 16, 3, 1, 2)}  # e.g. another video model's
    with pytest.raises(ValueError, match="latent has 16 channels but the latent upsampler takes 128"):
        upsample.LTXVCoreLatentUpsample().upsample(spatial, vae, image_latent, 1.0, 0.0)


def test_a_latent_with_keyframes_is_refused_saying_to_add_the_guides_after_the_upsample(
    pack,
    upsample,
    tiny_models,
    spatial,
):
    _, vae = tiny_models
    image = torch.rand(1, 32, 64, 3, generator=torch.Generator().manual_seed(2))
    (guided,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreAddGuide"]().add(vae, _empty(pack), image, -1, 1.0)
    assert guided[KEYFRAMES_KEY]
    with pytest.raises(ValueError, match=r"carries 1 keyframe\(s\) .* add the guides to the upsampled latent"):
        upsample.LTXVCoreLatentUpsample().upsample(spatial, vae, guided, 1.0, 0.0)


# ---------------------------------------------------------------- the release schedule


def test_the_schedule_gives_the_presets_published_timesteps_and_guidance(upsample, core):
    node = upsample.LTXVCoreReleaseSchedule()
    release = _module(core, "release_config").load_preset(DISTILLED)
    for pass_name, timesteps, settings in (
        ("first", FIRST_PASS, release.first_pass),
        ("second", SECOND_PASS, release.second_pass),
    ):
        sigmas, wire = node.schedule(DISTILLED, pass_name)
        assert torch.allclose(sigmas, torch.tensor([*timesteps, 0.0]))
        assert torch.equal(sigmas, _module(core, "sampling.scheduler").explicit_sigmas(settings.timesteps))
        guidance = _module(core, "sampling.guidance").Guidance
        assert wire.guidance == guidance(**settings.guidance_settings("attention_values"))
        assert not wire.stochastic and not wire.guidance.needs_negative, "distilled: no CFG"


def test_a_pass_of_steps_counts_the_latents_tokens_and_drops_the_skipped_steps(pack, upsample, core):
    """ltxv-13b-0.9.8-dev: 30 steps less the last 3, then a second pass from step 17 of 30."""
    scheduler = _module(core, "sampling.scheduler")
    node = upsample.LTXVCoreReleaseSchedule()
    latent = _empty(pack)
    tokens = 3 * 1 * 2
    first, wire = node.schedule("ltxv-13b-0.9.8-dev", "first", latent)
    assert torch.equal(first, scheduler.skip_steps(scheduler.flow_sigmas(30, tokens), 0, 3)) and len(first) == 28
    assert first[0] == 1.0 and wire.guidance.guidance_timesteps is not None and wire.guidance.cfg_star_rescale
    second, _ = node.schedule("ltxv-13b-0.9.8-dev", "second", latent)
    assert torch.equal(second, scheduler.skip_steps(scheduler.flow_sigmas(30, tokens), 17, 0)) and second[0] < 1
    with pytest.raises(ValueError, match="takes 30 steps shifted by the latent's token count; connect the latent"):
        node.schedule("ltxv-13b-0.9.8-dev", "first")


def test_from_checkpoint_means_the_schedule_of_the_loaded_checkpoints_metadata(
    pack,
    upsample,
    core,
    tmp_path,
    monkeypatch,
):
    import folder_paths

    write_official_single_file(tmp_path / "ltxv.safetensors", "0.9.5")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(tmp_path)], {".safetensors"}))
    model, _ = pack.NODE_CLASS_MAPPINGS["LTXVCoreCheckpointLoader"]().load("ltxv.safetensors", "float32", "cpu")
    info = _module(core, "checkpoint.loading").inspect_checkpoint(tmp_path / "ltxv.safetensors")[0]
    assert model.model.scheduler == info.configs.scheduler
    # a checkpoint of its own schedule: Lightricks' linear-quadratic spacing, unshifted
    configs = _module(core, "models.configs")
    own = configs.SchedulerConfig(sampler="linear-quadratic", use_dynamic_shifting=False, shift_terminal=None)
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    transformer = memory.patcher(model.model.core, "diffusion", "cpu", scheduler=own)
    latent = _empty(pack)
    sigmas, _ = upsample.LTXVCoreReleaseSchedule().schedule("ltxv-13b-0.9.8-dev", "first", latent, transformer)
    settings = _module(core, "release_config").load_preset("ltxv-13b-0.9.8-dev").first_pass
    assert torch.equal(sigmas, _module(core, "multiscale").pass_sigmas(settings, 6, own))
    default, _ = upsample.LTXVCoreReleaseSchedule().schedule("ltxv-13b-0.9.8-dev", "first", latent)
    assert (sigmas - default).abs().max() > 1e-3


def test_one_pass_configs_take_single_and_bring_their_stochastic_steps(pack, upsample):
    sigmas, wire = upsample.LTXVCoreReleaseSchedule().schedule("ltxv-2b-0.9.6-distilled", "single", _empty(pack))
    assert len(sigmas) == 8 + 1 and sigmas[0] == 1.0 and sigmas[-1] == 0.0 and wire.stochastic


@pytest.mark.parametrize(
    "preset, pass_name, message",
    [
        ("ltxv-2b-0.9.6-distilled", "first", r"one-pass config; pass_name 'first' is not allowed; allowed: single"),
        (DISTILLED, "single", r"multi-scale config of two passes; pass_name 'single' is not allowed; allowed: first"),
        ("ltxv-99", "first", r"release config 'ltxv-99' is not known; known: .*ltxv-13b-0.9.8-distilled"),
    ],
)
def test_a_pass_the_preset_does_not_have_is_refused_with_the_ones_it_has(upsample, preset, pass_name, message):
    with pytest.raises(ValueError, match=message):
        upsample.LTXVCoreReleaseSchedule().schedule(preset, pass_name)


# ---------------------------------------------------------------- sampling with it


def test_the_guidance_input_replaces_the_samplers_cfg_and_stg_widgets(pack, upsample, tiny_models):
    transformer, _ = tiny_models
    sigmas, wire = upsample.LTXVCoreReleaseSchedule().schedule(DISTILLED, "first")
    sampler = pack.NODE_CLASS_MAPPINGS["LTXVCoreGuidedSampler"]()
    latent = _empty(pack)
    widgets = {**SAMPLER, "cfg": 3.0}

    def run(**changes):
        return sampler.sample(transformer, TEXT, NEGATIVE, latent, **{**widgets, **STG, **changes}, sigmas=sigmas)[0]

    with_wire, cfg_3, cfg_1 = run(guidance=wire), run(), run(cfg=1.0)
    assert (with_wire["samples"] - cfg_3["samples"]).abs().max() > 1e-3, "the wire's CFG 1, not the widget's 3"
    assert torch.equal(with_wire["samples"], cfg_1["samples"])


def test_a_second_pass_starts_from_the_upsampled_latent_noised_to_its_first_sigma(
    pack,
    upsample,
    core,
    tiny_models,
    spatial,
):
    transformer, vae = tiny_models
    (upsampled,) = upsample.LTXVCoreLatentUpsample().upsample(spatial, vae, _first_pass_like(pack), 1.0, 0.0)
    sigmas, wire = upsample.LTXVCoreReleaseSchedule().schedule(DISTILLED, "second", upsampled)
    (second,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreGuidedSampler"]().sample(
        transformer, TEXT, TEXT, upsampled, **SAMPLER, **STG, sigmas=sigmas, guidance=wire
    )
    convert = sys.modules[f"{PACK_NAME}.nodes.convert"]
    expected = _module(core, "sampling.denoise").denoise(
        transformer.model.core,
        convert.latent_to_core(upsampled),
        *convert.text_pair(TEXT, TEXT),
        sigmas,
        wire.guidance,
        SAMPLER["frame_rate"],
        torch.Generator().manual_seed(SAMPLER["seed"]),
        start_sigma=float(sigmas[0]),
        stochastic=wire.stochastic,
        token_major_noise=True,  # the nodes draw as the CLI's default does
    )
    assert torch.equal(second["samples"], expected.samples)
    assert torch.equal(second["samples"][:, :, 0], upsampled["samples"][:, :, 0]), "the held first frame stays"


def test_tone_mapping_at_decode_gives_the_frames_of_the_cores_multiscale_decode(pack, core, tiny_models):
    """In the official order (decode noise, tone map, decoder) with the same draws, so a
    seed gives the command line's frames."""
    _, vae = tiny_models
    latent = {"samples": 2 * torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(4))}
    decode = pack.NODE_CLASS_MAPPINGS["LTXVCoreDenoisingDecode"]().decode
    settings = dict(timestep=0.05, decode_noise_scale=0.025, seed=5, time_chunk=32)
    (mapped,) = decode(vae, latent, **settings, tone_map_compression=0.6)
    (plain,) = decode(vae, latent, **settings)
    request = SimpleNamespace(
        decode_timestep=0.05, decode_noise_scale=0.025, decode_time_chunk=32, decode_tiles=None, decode_tile_overlap=2
    )
    expected = _module(core, "multiscale").decode_second_pass(
        vae.model.core, latent["samples"], request, 0.6, _module(core, "pipeline").seeded_generator(5)
    )
    assert torch.equal(mapped, expected) and (mapped - plain).abs().max() > 1e-3


@pytest.mark.filterwarnings("ignore:image of 128x64 was center-cropped")  # the first pass's guide, resized
def test_the_whole_chain_makes_a_video_of_twice_the_first_pass_size(pack, upsample, tiny_models, spatial):
    transformer, vae = tiny_models
    nodes = pack.NODE_CLASS_MAPPINGS
    schedule, sampler = upsample.LTXVCoreReleaseSchedule(), nodes["LTXVCoreGuidedSampler"]()
    image = torch.rand(1, 64, 128, 3, generator=torch.Generator().manual_seed(6))
    latent = nodes["LTXVCoreAddGuide"]().add(vae, _empty(pack, frames=9), image, 0, 1.0)[0]
    sigmas, wire = schedule.schedule(DISTILLED, "first", latent)
    first = sampler.sample(transformer, TEXT, TEXT, latent, **SAMPLER, **STG, sigmas=sigmas, guidance=wire)[0]
    upsampled = upsample.LTXVCoreLatentUpsample().upsample(spatial, vae, first, 1.0, 0.0)[0]
    upsampled = nodes["LTXVCoreAddGuide"]().add(vae, upsampled, image, 0, 1.0)[0]  # the image at the new size
    sigmas, wire = schedule.schedule(DISTILLED, "second", upsampled)
    second = sampler.sample(transformer, TEXT, TEXT, upsampled, **SAMPLER, **STG, sigmas=sigmas, guidance=wire)[0]
    (frames,) = nodes["LTXVCoreDenoisingDecode"]().decode(vae, second, 0.05, 0.025, 3, tone_map_compression=0.6)
    assert frames.shape == (9, 64, 128, 3) and torch.isfinite(frames).all()
