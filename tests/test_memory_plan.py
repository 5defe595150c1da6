"""The memory planner: parameters counted from the configs as the models hold them, each
stage's estimate against the tensors a real CPU run of the tiny models creates (within
15%), the nearest settings that fit, and no torch needed to plan."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.memory_probe import PeakLiveBytes
from ltx_core import memory_plan as planner
from ltx_core.checkpoint.loading import DTYPES, load_checkpoint
from ltx_core.checkpoint.tensors import SafetensorsHeader
from ltx_core.errors import SettingsError
from ltx_core.memory_plan.device import _meminfo_available
from ltx_core.models import configs as C
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import DEFAULT_DECODE_TIME_CHUNK, CausalVideoVAE
from ltx_core.pipeline import decode_frames
from ltx_core.preflight import shipped_model_paths
from ltx_core.sampling.conditioning import condition_first_frame, empty_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import flow_sigmas

REPO = Path(__file__).resolve().parent.parent
SHIPPED = shipped_model_paths()[0]
TOLERANCE = 0.15
TRANSFORMERS = {"2B": C.LTXV_2B, "2B 0.9.5": C.LTXV_2B_0_9_5, "13B": C.LTXV_13B, "tiny": C.TINY_TRANSFORMER}
VAES = {
    "0.9.0": C.LTXV_VAE_0_9_0,
    "0.9.1": C.LTXV_VAE_0_9_1,
    "0.9.5": C.LTXV_VAE_0_9_5,
    "tiny 0.9.0": C.TINY_VAE_0_9_0,
    "tiny 0.9.1": C.TINY_VAE_0_9_1,
    "tiny 0.9.5": C.TINY_VAE_0_9_5,
}


def state_numel(model: torch.nn.Module) -> int:
    return sum(tensor.numel() for tensor in model.state_dict().values())


# ---------------------------------------------------------------- counted from the configs


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformer_parameters_are_counted_from_the_config(name):
    with torch.device("meta"):
        model = LTXVTransformer(TRANSFORMERS[name])
    assert planner.transformer_params(TRANSFORMERS[name]) == state_numel(model)


@pytest.mark.parametrize("name", list(VAES))
def test_vae_parameters_are_counted_from_the_config(name):
    with torch.device("meta"):
        vae = CausalVideoVAE(VAES[name])
    assert planner.vae_params(VAES[name]) == state_numel(vae)


def test_the_planners_copies_of_core_constants_agree_with_the_core():
    assert planner.DEFAULT_DECODE_TIME_CHUNK == DEFAULT_DECODE_TIME_CHUNK
    assert tuple(planner.DTYPE_BYTES) == tuple(DTYPES)
    assert all(planner.DTYPE_BYTES[name] == torch.finfo(dtype).bits // 8 for name, dtype in DTYPES.items())


def test_text_encoder_weights_are_counted_from_the_file_headers(tiny_t5_folder):
    from ltx_core.models.text_encoder import load_text_encoder

    encoder = load_text_encoder(tiny_t5_folder)
    held = {
        tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes()
        for tensor in encoder.model.state_dict().values()
    }  # the tied embedding once
    size, shape = planner.text_encoder_weights(tiny_t5_folder, "fp32")
    assert size == sum(held.values())
    assert (shape.width, shape.heads) == (encoder.width, encoder.model.config.num_heads)
    assert planner.text_encoder_weights(tiny_t5_folder, "bf16")[0] == size // 2


def test_the_safetensors_header_is_read_without_torch_and_a_broken_file_gives_nothing(tmp_path):
    shapes = planner.safetensors_shapes(SHIPPED)
    assert shapes == SafetensorsHeader(SHIPPED).shapes
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 16)
    assert planner.safetensors_shapes(tmp_path / "broken.safetensors") == {}


def test_planning_imports_no_torch():
    code = (
        "import sys; from ltx_core import memory_plan as m, preflight; from ltx_core.models import configs as c; "
        "p = m.estimate(m.Workload(c.LTXV_13B, c.LTXV_VAE_0_9_5, 8192, 8192, 257)); "
        "assert p.peak_bytes > 0; print(sorted(x for x in sys.modules if x.split('.')[0] == 'torch'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- against a real CPU run


@pytest.fixture(scope="module")
def shipped():
    """The shipped tiny model, as the CLI runs it (fp32, CPU)."""
    if not SHIPPED.is_file():
        pytest.skip("the shipped model is not in ltx_core/assets")
    return load_checkpoint(SHIPPED)


def work_for(shipped, width, height, frames, **settings) -> planner.Workload:
    return planner.Workload(
        shipped.transformer.cfg, shipped.vae.cfg, width, height, frames, dtype="fp32", device="cpu", **settings
    )


def peak_of(fn) -> int:
    with PeakLiveBytes() as probe:
        fn()
    return probe.peak


@pytest.mark.parametrize(
    ("size", "guidance", "first_frame"),
    [
        ((256, 256, 25), True, False),
        ((256, 256, 25), False, False),
        ((256, 256, 25), True, True),
        ((512, 320, 49), True, False),
    ],
)
def test_the_sampling_estimate_is_within_15_percent_of_a_real_run(shipped, size, guidance, first_frame):
    transformer, vae = shipped.transformer, shipped.vae
    width, height, frames = size
    latent = empty_latent(1, frames, height, width, vae)
    if first_frame:
        latent = condition_first_frame(latent, torch.zeros_like(latent.samples[:, :, :1]), 1.0)
    generator = torch.Generator().manual_seed(0)
    text = TextEmbeddings(
        torch.randn(1, 128, transformer.cfg.caption_channels, generator=generator), torch.ones(1, 128, dtype=torch.bool)
    )
    measured = peak_of(
        lambda: denoise(
            transformer,
            latent,
            text,
            text if guidance else None,
            flow_sigmas(2, latent.num_tokens),
            3.0 if guidance else 1.0,
            25.0,
            generator,
            lambda *a: None,
        )
    )
    work = work_for(shipped, width, height, frames, guidance=guidance, per_token_timesteps=first_frame)
    assert planner.sampling_bytes(work) == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.parametrize(
    ("size", "time_chunk"),
    [((256, 256, 25), DEFAULT_DECODE_TIME_CHUNK), ((256, 256, 25), None), ((512, 320, 49), 8), ((256, 256, 49), 32)],
)
def test_the_decode_estimate_is_within_15_percent_of_a_real_run(shipped, size, time_chunk):
    width, height, frames = size
    work = work_for(shipped, width, height, frames, decode_time_chunk=time_chunk)
    latent = torch.randn(1, 128, *work.latent_grid, generator=torch.Generator().manual_seed(1))
    measured = peak_of(
        lambda: decode_frames(shipped.vae, latent, generator=torch.Generator().manual_seed(2), time_chunk=time_chunk)
    )
    assert planner.decode_bytes(work) == pytest.approx(measured, rel=TOLERANCE)


# ---------------------------------------------------------------- what fits


def test_a_run_beyond_the_memory_is_refused_with_the_estimate_and_what_fits():
    work = planner.Workload(C.LTXV_2B_0_9_5, C.LTXV_VAE_0_9_5, 1216, 704, 257, device="cuda")
    plan = planner.estimate(work)
    available = 20 * planner.GIB
    assert plan.peak_bytes > available
    with pytest.raises(SettingsError) as refused:
        planner.check_fits(plan, available, advice=" Ask for more.")
    message = str(refused.value)
    assert message.startswith(f"1216x704, 257 frames in bf16 on cuda needs about {planner.gib(plan.peak_bytes)}")
    assert "but 20.0 GiB is available on cuda" in message and message.endswith(" Ask for more.")
    fits = planner.nearest_fits(work, available)
    assert fits and all(planner.estimate(replace(work, **fit.changes)).peak_bytes <= available for fit in fits)
    assert all(fit.description in message for fit in fits)


def test_the_largest_size_and_the_most_frames_that_fit_are_the_largest():
    work = planner.Workload(C.LTXV_13B, C.LTXV_VAE_0_9_5, 1216, 704, 257, device="cuda", decode_time_chunk=None)
    available = 40 * planner.GIB
    width, height = planner.largest_size(work, available)
    assert (width, height) < (1216, 704) and width % 32 == height % 32 == 0
    assert abs(width / height - 1216 / 704) < 0.1
    assert planner.estimate(replace(work, width=width, height=height)).peak_bytes <= available
    frames = planner.most_frames(work, available)
    assert (frames - 1) % 8 == 0 and planner.estimate(replace(work, frames=frames)).peak_bytes <= available
    assert planner.estimate(replace(work, frames=frames + 8)).peak_bytes > available


def test_a_run_that_fits_or_an_unknown_memory_is_let_through():
    plan = planner.estimate(planner.Workload(C.TINY_TRANSFORMER, C.TINY_VAE, 256, 256, 25, device="cpu"))
    planner.check_fits(plan, plan.peak_bytes)
    planner.check_fits(plan, None)


@pytest.mark.parametrize(("width", "height", "frames"), [(8192, 8192, 257), (4096, 4096, 121), (32, 32, 1)])
def test_any_size_gives_a_finite_estimate_and_time(width, height, frames):
    plan = planner.estimate(planner.Workload(C.LTXV_13B, C.LTXV_VAE_0_9_5, width, height, frames))
    assert 0 < plan.peak_bytes < 2**63 and plan.seconds >= 0
    assert plan.time_class


def test_levers_that_keep_the_video_come_first():
    work = planner.Workload(
        C.LTXV_2B, C.LTXV_VAE_0_9_1, 768, 512, 121, dtype="fp32", device="cuda", decode_time_chunk=None
    )
    need = planner.estimate(work).peak_bytes
    fits = planner.nearest_fits(work, int(need * 0.9))
    assert fits[0].changes == {"decode_time_chunk": 8}
    assert {"dtype": "bf16"} in [fit.changes for fit in fits]


def test_the_time_class_is_rough_words():
    assert planner.time_class(10) == "under a minute"
    assert planner.time_class(600) == "roughly 10 minutes"
    assert planner.time_class(5 * 3600) == "roughly 5 hours"
    assert planner.time_class(10 * 86400) == "roughly 10 days"


def test_the_cpu_memory_is_read_from_meminfo_or_psutil(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n")
    assert _meminfo_available(meminfo) == 12000000 * 1024
    assert _meminfo_available(tmp_path / "absent") is None
    assert planner.available_memory("cpu") > 0


@pytest.mark.parametrize(("size", "tiles"), [((512, 512, 25), (2, 2)), ((512, 320, 25), (1, 3))])
def test_the_tiled_decode_estimate_is_within_15_percent_of_a_real_run_and_below_the_whole(shipped, size, tiles):
    width, height, frames = size
    work = work_for(shipped, width, height, frames, decode_time_chunk=None, decode_tiles=tiles)
    latent = torch.randn(1, 128, *work.latent_grid, generator=torch.Generator().manual_seed(1))
    measured = peak_of(
        lambda: decode_frames(shipped.vae, latent, generator=torch.Generator().manual_seed(2), tiles=tiles)
    )
    assert planner.decode_bytes(work) == pytest.approx(measured, rel=TOLERANCE)
    assert planner.decode_bytes(work) < planner.decode_bytes(replace(work, decode_tiles=None))


def test_spatial_tiles_are_offered_as_a_fit_and_named_as_the_flag():
    from ltx_core.cli_plan import _as_flags

    work = planner.Workload(C.LTXV_2B_0_9_5, C.LTXV_VAE_0_9_5, 1216, 704, 121, device="cuda")
    [tiles] = [fit for fit in planner.fitting._levers(work, 10**12) if "decode_tiles" in fit.changes]
    assert _as_flags(tiles).startswith("--decode-tiles 2x2")


# ---------------------------------------------------------------- offloading


def test_offloading_chooses_the_least_that_fits_and_the_fewest_streamed_blocks():
    work = planner.Workload(C.LTXV_13B, C.LTXV_VAE_0_9_5, 768, 512, 121, device="cuda")
    assert planner.choose_offload(work, 200 * planner.GIB) == work  # everything fits resident
    assert planner.choose_offload(work, None) == work  # unknown memory: as asked
    capped = planner.choose_offload(work, 24 * planner.GIB)
    count, room = capped.streamed_blocks, planner.fitting.offload_room(24 * planner.GIB)
    assert capped.offload == "blocks" and 0 < count < C.LTXV_13B.num_layers
    assert planner.estimate(capped).peak_bytes <= room  # a margin left for the allocator
    assert planner.estimate(replace(capped, streamed_blocks=count - 1)).peak_bytes > room
    fp8 = planner.choose_offload(replace(work, fp8=True), 24 * planner.GIB)
    assert fp8.offload in ("none", "models")  # FP8 weights fit without streaming
    nothing = planner.choose_offload(work, planner.GIB // 2)
    assert nothing.streamed_blocks == C.LTXV_13B.num_layers  # the least memory; refused by check_fits


def test_streamed_blocks_leave_two_blocks_of_the_transformer_on_the_device():
    work = planner.Workload(C.LTXV_13B, C.LTXV_VAE_0_9_5, 768, 512, 121, device="cuda", models_stay=False)
    whole = planner.estimate(work).stages["sampling"]
    one_block = (
        planner.weight_bytes(work)["transformer"]
        * planner.parameters.block_params(C.LTXV_13B)
        / planner.transformer_params(C.LTXV_13B)
    )
    for count in (1, 2, 10, 48):
        streamed = planner.estimate(replace(work, streamed_blocks=count)).stages["sampling"]
        assert whole - streamed == pytest.approx(one_block * max(count - 2, 0), rel=1e-6)
    assert "load" not in planner.estimate(work).stages  # loaded into CPU memory


def test_block_params_count_a_built_block():
    block = LTXVTransformer(C.TINY_TRANSFORMER).transformer_blocks[0]
    assert planner.parameters.block_params(C.TINY_TRANSFORMER) == sum(p.numel() for p in block.parameters())


def test_offloading_is_offered_as_the_flags_that_make_it():
    from ltx_core.cli_plan import _as_flags

    work = planner.Workload(C.LTXV_13B, C.LTXV_VAE_0_9_5, 768, 512, 121, device="cuda")
    named = [_as_flags(fit) for fit in planner.nearest_fits(work, 24 * planner.GIB)]
    assert any(name.startswith("--offload blocks (") for name in named)
    with pytest.raises(SettingsError, match=r"--offload blocks \("):
        planner.check_fits(planner.estimate(work), 24 * planner.GIB, _as_flags)


def test_a_long_videos_decode_is_planned_at_the_whole_clip():
    window = planner.Workload(C.LTXV_2B_0_9_5, C.LTXV_VAE_0_9_5, 768, 512, 145, device="cuda")
    whole = replace(window, decode_frames=257)
    assert planner.estimate(whole).stages["decode"] > planner.estimate(window).stages["decode"]
    assert planner.estimate(whole).stages["sampling"] == planner.estimate(window).stages["sampling"]


def test_a_one_shot_run_plans_the_decode_beside_the_vae_alone():
    """The command line's one video releases the text encoder after the text and the
    transformer after sampling (`pipeline.generate(one_shot=True)`)."""
    kept = planner.Workload(C.LTXV_2B, C.LTXV_VAE_0_9_1, 768, 512, 121, device="cuda")
    once = replace(kept, one_shot=True)
    weights = planner.weight_bytes(kept)
    plans = planner.estimate(kept).stages, planner.estimate(once).stages
    assert plans[0]["load"] == plans[1]["load"] == sum(weights.values())  # all loaded first
    assert plans[0]["sampling"] - plans[1]["sampling"] == weights["text_encoder"]
    decode_work = plans[1]["decode"] - weights["vae"]
    assert plans[0]["decode"] - plans[1]["decode"] == weights["text_encoder"] + weights["transformer"]
    assert decode_work == planner.decode_bytes(once) > 0
