"""Multi-process generation (`ltx_core.parallel.distributed`, `ltx_core.parallel.split_decode`) on CPU with
gloo: spawned processes, a tiny fp32 model, every output compared with one process.

If these fail, a multi-GPU run gives other videos than one GPU, or a dead rank leaves the
others hanging or a half-written file behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from ltx_core.errors import SettingsError
from ltx_core.models.configs import TINY_TRANSFORMER, TINY_VAE
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.parallel.collectives import RankFailure
from ltx_core.parallel.distributed import (
    ParallelLayout,
    ParallelRun,
    ParallelTransformer,
    _shard,
    init_parallel,
    make_groups,
)
from ltx_core.parallel.split_decode import TimeSplitVAE, time_split
from ltx_core.pipeline import prepare_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.scheduler import flow_sigmas

ATOL = 1e-5  # fp32; the ranks sum in another order than one process
# 4 heads of 4 channels (16 wide, as TINY_TRANSFORMER): 4-way sequence parallel needs 4 heads.
CONFIG = replace(TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=4)
CAUSAL_VAE = replace(TINY_VAE, causal_decoder=True)  # two border frames in front, none behind
TOKENS = 9  # divisible by neither 2 nor 4: the sequence split pads
LAYOUTS = {2: ((2, 1), (1, 2)), 4: ((4, 1), (2, 2))}  # (sequence, cfg)
JOIN_TIMEOUT_S = 120
CLI_ARGS = [
    "generate",
    "--prompt",
    "a fox",
    "--device",
    "cpu",
    "--width",
    "32",
    "--height",
    "64",
    "--frames",
    "9",
    "--steps",
    "4",
]


# ---------------------------------------------------------------- what every process builds


def tiny_models() -> tuple[LTXVTransformer, CausalVideoVAE, CausalVideoVAE]:
    torch.manual_seed(0)
    transformer = LTXVTransformer(CONFIG).eval()
    torch.manual_seed(1)
    vae = CausalVideoVAE(TINY_VAE).eval()
    torch.manual_seed(2)
    causal_vae = CausalVideoVAE(CAUSAL_VAE).eval()
    return transformer, vae, causal_vae


def forward_inputs() -> tuple:
    """Guidance-sized batch of 2, per-token sigmas, a text mask that drops tokens."""
    g = torch.Generator().manual_seed(3)
    latent = torch.randn(2, TOKENS, CONFIG.in_channels, generator=g)
    timestep = torch.rand(2, TOKENS, generator=g)
    text = torch.randn(2, 5, CONFIG.caption_channels, generator=g)
    mask = torch.ones(2, 5)
    mask[0, 3:] = 0
    coords = torch.rand(2, 3, TOKENS, generator=g) * 10
    return latent, timestep, text, mask, coords


def texts() -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(4)
    mask = torch.ones(1, 6, dtype=torch.bool)
    return (
        TextEmbeddings(torch.randn(1, 6, CONFIG.caption_channels, generator=g), mask),
        TextEmbeddings(torch.randn(1, 6, CONFIG.caption_channels, generator=g), mask),
    )


def run_denoise(transformer, vae, stg: bool = False) -> torch.Tensor:
    """Three guided Euler steps over a 3 x 1 x 3 latent (9 tokens) with a first-frame-like
    mask; with `stg`, spatiotemporal skip guidance makes the batch 3 (CFG ranks pad it)."""
    latent = prepare_latent(vae, num_frames=17, height=32, width=96)
    latent.noise_mask[:, :, 0] = 0.5
    text, negative = texts()
    sigmas = flow_sigmas(3, TOKENS)
    stg_settings = dict(stg_scale=1.0, stg_blocks=(1,)) if stg else {}
    return denoise(
        transformer,
        latent,
        text,
        negative,
        sigmas,
        Guidance(3.0, **stg_settings),
        25.0,
        torch.Generator().manual_seed(5),
    ).samples


def run_decode(vae) -> torch.Tensor:
    """4 latent frames (25 pixel frames) through the denoising decode, seeded noise; the
    latent laid out as `denoise` returns it (channels innermost), so time slices are
    dense but not contiguous."""
    tokens = torch.randn(1, 4, 2, 2, 128, generator=torch.Generator().manual_seed(6))
    latent = tokens.permute(0, 4, 1, 2, 3)  # (1, 128, 4, 2, 2)
    return vae.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(7))


def single_process_outputs() -> dict[str, torch.Tensor]:
    transformer, vae, causal_vae = tiny_models()
    with torch.no_grad():
        return {
            "forward": transformer(*forward_inputs()),
            "denoise": run_denoise(transformer, vae),
            "denoisestg": run_denoise(transformer, vae, stg=True),
            "decode": run_decode(vae),
            "decode_causal": run_decode(causal_vae),
        }


# ---------------------------------------------------------------- spawned ranks


def _init(rank: int, world: int, init_file: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def _parity_rank(rank: int, world: int, init_file: Path, out: Path) -> None:
    """Every layout of this world size on one set of processes; each rank saves its outputs."""
    _init(rank, world, init_file)
    transformer, vae, causal_vae = tiny_models()
    results = {}
    with torch.no_grad():
        for sequence, cfg in LAYOUTS[world]:
            layout = ParallelLayout(sequence, cfg)
            run = ParallelRun(layout, rank, torch.device("cpu"), *make_groups(layout))
            parallel = ParallelTransformer(transformer, run)
            results[f"forward_s{sequence}_c{cfg}"] = parallel(*forward_inputs())
            results[f"denoise_s{sequence}_c{cfg}"] = run_denoise(parallel, vae)
            results[f"denoisestg_s{sequence}_c{cfg}"] = run_denoise(parallel, vae, stg=True)
            parallel.close()
        results["decode"] = run_decode(TimeSplitVAE(vae))
        results["decode_causal"] = run_decode(TimeSplitVAE(causal_vae))
    save_file({k: v.contiguous() for k, v in results.items()}, out / f"rank{rank}.safetensors")
    dist.destroy_process_group()


def _cli_rank(rank: int, world: int, init_file: Path, out: Path, port: int, failure: str, *flags: str) -> None:
    """`python -m ltx_core generate` as torchrun starts it (its environment variables);
    with `failure`, rank 1 dies at step 2."""
    from ltx_core import cli

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    real_generate = cli.generate

    def generate(models, request, callback=None, **kwargs):
        def dying(step, total, x, denoised):
            callback(step, total, x, denoised)
            if rank == 1 and step == 1 and failure != "none":
                if failure == "killed":
                    os._exit(9)  # as SIGKILL: no exception handling, no cleanup
                raise RuntimeError("rank 1 broke")

        return real_generate(models, request, callback=dying, **kwargs)

    cli.generate = generate
    real_write = cli.write_mp4

    def write_keeping_frames(frames, path, **kwargs):  # the frames before H.264 rounds them
        save_file({"frames": frames.contiguous()}, out / f"frames{rank}.safetensors")
        return real_write(frames, path, **kwargs)

    cli.write_mp4 = write_keeping_frames
    stderr = open(out / f"stderr{rank}.txt", "w")
    sys.stderr = stderr
    try:
        code = cli.main([*CLI_ARGS, *flags, "--output", str(out / "video.mp4")])
    finally:
        sys.stderr = sys.__stderr__
        stderr.close()
    (out / f"code{rank}.json").write_text(json.dumps(code))
    cli.exit_with(code)  # as `python -m ltx_core` ends: the process's exit code is what torchrun sees


def _hanging_rank(rank: int, world: int, init_file: Path, out: Path, timeout_s: float, hang_s: float) -> None:
    """Rank 1 stops answering (alive, not crashed); rank 0 records what its forward raised."""
    import datetime
    import time

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),  # a rank slow to start on a busy machine is not the hang
    )
    layout, transformer = ParallelLayout(sequence=2), tiny_models()[0]
    dist.barrier()  # both ranks built: only the collectives below run under the short timeout
    parallel = ParallelTransformer(
        transformer, ParallelRun(layout, rank, torch.device("cpu"), *make_groups(layout, timeout_s))
    )
    if rank == 1:
        time.sleep(hang_s)
        os._exit(0)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            parallel(*forward_inputs())
    except RankFailure as error:
        (out / "failure.json").write_text(json.dumps([str(error), time.perf_counter() - start]))
    os._exit(0)  # leave without waiting for the silent rank


def _catching(target, rank: int, *args) -> None:
    """Record a rank's traceback in a file the test shows, then fail the process."""
    out = args[2]
    try:
        target(rank, *args)
    except Exception:
        (out / f"error{rank}.txt").write_text(traceback.format_exc())
        raise


def spawn(target, world: int, tmp_path: Path, *args) -> list[int | None]:
    """Start `world` spawned processes of `target(rank, world, init_file, out, *args)`; their
    exit codes (None: still running at the timeout, then killed)."""
    context = mp.get_context("spawn")
    init_file = tmp_path / "init"
    processes = [
        context.Process(target=_catching, args=(target, rank, world, init_file, tmp_path, *args))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
    return codes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _errors(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("error*.txt")))


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return single_process_outputs()


@pytest.mark.parametrize("world", [2, 4])
def test_every_layout_gives_the_single_process_outputs_on_every_rank(tmp_path, reference, world):
    """Sequence parallel, CFG parallel and both (4 ranks: 2 x 2): the transformer's velocity,
    three guided denoise steps (also with STG) and the time-split decode (non-causal and
    causal decoder) match one process on every rank."""
    codes = spawn(_parity_rank, world, tmp_path)
    assert codes == [0] * world, _errors(tmp_path)
    for rank in range(world):
        results = load_file(tmp_path / f"rank{rank}.safetensors")
        assert len(results) == 3 * len(LAYOUTS[world]) + 2
        for key, value in results.items():
            expected = reference[key.split("_s")[0]]
            assert value.shape == expected.shape, key
            torch.testing.assert_close(value, expected, atol=ATOL, rtol=0, msg=f"rank {rank}: {key}")


@pytest.mark.parametrize("failure", ["killed", "raising"])
def test_a_rank_that_dies_mid_run_ends_the_run_with_a_clear_error_and_no_file(tmp_path, failure):
    """The CLI under torchrun (2-way sequence parallel, the shipped model): rank 1 is killed
    (or raises) at step 2; rank 0 stops at its next collective, says that another
    rank failed, writes no video, and its process ends with exit code 3."""
    codes = spawn(_cli_rank, 2, tmp_path, free_port(), failure, "--sequence-parallel", "2")
    assert codes[1] != 0
    assert json.loads((tmp_path / "code0.json").read_text()) == 3, _errors(tmp_path)
    assert codes[0] == 3  # the process ends with main's code: no abort in the backend's teardown
    message = (tmp_path / "stderr0.txt").read_text()
    assert "error: rank 0 of 2:" in message and "another rank crashed, was killed or did not answer" in message
    assert "no video is written" in message
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*mp4*"))


def test_a_torchrun_cli_run_writes_one_video_with_the_single_process_frames(tmp_path, monkeypatch):
    """2 ranks, 2-way CFG, launched through torchrun's environment variables: rank 0
    writes the video, rank 1 writes nothing, and the frames it writes are one process's
    (compared before H.264, which turns a rounding flip into a few levels nearby)."""
    from ltx_core import cli

    codes = spawn(_cli_rank, 2, tmp_path, free_port(), "none", "--cfg-parallel", "2")
    assert codes == [0, 0], _errors(tmp_path)
    assert [json.loads((tmp_path / f"code{rank}.json").read_text()) for rank in (0, 1)] == [0, 0]
    assert [p.name for p in tmp_path.glob("*.mp4")] == ["video.mp4"]
    assert not (tmp_path / "frames1.safetensors").exists()  # rank 1 never writes
    single = {}
    monkeypatch.setattr(cli, "write_mp4", lambda frames, path, **kwargs: single.setdefault("frames", frames))
    assert cli.main([*CLI_ARGS, "--output", str(tmp_path / "single.mp4")]) == 0
    parallel = load_file(tmp_path / "frames0.safetensors")["frames"]
    # frames in [0, 1] after 20 CFG steps and the decode: the ranks' other summation order
    # grows to ~1.4e-5 with the shipped VAE, far below one 8-bit level (3.9e-3)
    torch.testing.assert_close(parallel, single["frames"], atol=5e-5, rtol=0)


def test_a_rank_that_stops_answering_fails_the_others_at_the_collective_timeout(tmp_path):
    timeout_s, hang_s = 1.0, 5.0
    codes = spawn(_hanging_rank, 2, tmp_path, timeout_s, hang_s)
    assert codes == [0, 0], _errors(tmp_path)
    message, waited_s = json.loads((tmp_path / "failure.json").read_text())
    assert message.startswith("rank 0 of 2: all_to_all_single failed (")
    assert "did not answer within the timeout" in message
    assert timeout_s <= waited_s < hang_s


def test_a_sequence_split_that_does_not_divide_the_heads_names_the_sizes_that_do():
    layout = ParallelLayout(sequence=3)
    run = ParallelRun(layout, 0, torch.device("cpu"), sequence_group=object(), cfg_group=None)
    with pytest.raises(
        SettingsError,
        match=r"sequence-parallel 3 does not divide the model's 4 attention heads; "
        r"allowed sizes: 1, 2, 4",
    ):
        ParallelTransformer(LTXVTransformer(CONFIG), run)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ((0, 1), "sequence-parallel size 0 must be a whole number of at least 1"),
        ((1, -2), "cfg-parallel size -2 must be a whole number of at least 1"),
    ],
)
def test_bad_parallel_sizes_are_refused(sizes, message):
    with pytest.raises(SettingsError, match=message):
        ParallelLayout(*sizes)


def test_a_parallel_layout_outside_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SettingsError, match=r"needs 4 processes; launch with torchrun --nproc-per-node 4"):
        init_parallel(ParallelLayout(sequence=2, cfg=2), "cpu")


def test_a_one_by_one_layout_outside_torchrun_is_a_plain_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = init_parallel(ParallelLayout(), "cpu")
    assert run.is_writer and run.sequence_group is None and run.cfg_group is None and not dist.is_initialized()


def test_time_split_is_even_first_ranks_take_the_rest_and_short_clips_stay_whole():
    assert time_split(33, 4, 1) == [9, 8, 8, 8]
    assert time_split(4, 4, 1) == [1, 1, 1, 1]
    assert time_split(4, 4, 2) is None  # a causal decoder borrows two frames from the rank before


def test_the_time_split_decode_refuses_time_chunked_layers_whose_windows_cross_shards():
    vae = TimeSplitVAE(CausalVideoVAE(TINY_VAE))
    with pytest.raises(SettingsError, match="time_chunk does not combine with the time-split decode"):
        vae.decode(torch.zeros(1, 128, 2, 1, 2), time_chunk=2)


def test_shards_pad_tokens_with_zeros_and_the_batch_with_its_last_item():
    tokens = torch.arange(1.0, 10.0).view(1, 9)
    assert _shard(tokens, 1, 4, 3).tolist() == [[0.0, 0.0, 0.0]]  # 9 -> 12: (7, 8, 9), (0, 0, 0)
    assert _shard(tokens, 1, 4, 2).tolist() == [[7.0, 8.0, 9.0]]
    batch = torch.tensor([[1.0], [2.0], [3.0]])
    assert _shard(batch, 0, 2, 1, "repeat").tolist() == [[3.0], [3.0]]


def test_rank_failure_is_a_runtime_error_not_a_bad_setting():
    """The CLI maps LTXVError (bad input) to exit 2; a dead rank is not the user's input."""
    assert issubclass(RankFailure, RuntimeError) and not issubclass(RankFailure, ValueError)


def test_the_time_split_decode_stands_on_the_collectives_alone():
    """No import cycle: the decode split needs nothing of the sharded transformer, and the
    transformer side catches the collectives' own RankFailure."""
    code = (
        "import sys; import ltx_core.parallel.split_decode; "
        "assert 'ltx_core.parallel.distributed' not in sys.modules; "
        "from ltx_core.parallel import collectives, distributed; "
        "assert distributed.RankFailure is collectives.RankFailure"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 0, done.stderr
