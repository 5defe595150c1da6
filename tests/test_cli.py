"""`python -m ltx_core generate`: one-line errors with exit code 2, Ctrl-C -> 130 and no
file, and a real run on a tiny random checkpoint that PyAV decodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
import torch
from PIL import Image

from ltx_core import cli, preflight
from ltx_core.cli_arguments import build_parser, fast_kernels_chosen
from ltx_core.pipeline import Models
from ltx_core.speed.optimize import Speed
from ltx_core.video import read_video_metadata

from .fixtures_checkpoints import write_diffusers_folder, write_official_single_file

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--width", "32", "--height", "32", "--frames", "9", "--steps", "2"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random 0.9.1-layout file whose caption width (32) matches the tiny T5."""
    return write_official_single_file(tmp_path_factory.mktemp("cli") / "tiny.safetensors", "0.9.1")


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ltx_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def generate_fox(capsys, checkpoint, text_encoder, output) -> tuple[int, str]:
    """A small "a fox" run of the CLI on the given tiny models."""
    return run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(checkpoint),
        "--text-encoder",
        str(text_encoder),
        "--output",
        str(output),
        *SMALL,
    )


def assert_one_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: --prompt"),
        (("--prompt", "a fox", "--width", "abc"), "argument --width: invalid int value: 'abc'"),
        (
            ("--prompt", "a fox", "--width", "500"),
            "width 500 is not a positive multiple of 32; nearest valid: 480 or 512",
        ),
        (
            ("--prompt", "a fox", "--decode-time-chunk", "-2"),
            "argument --decode-time-chunk: '-2' is not a whole number of at least 1",
        ),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2_from_the_command_line(tmp_path, args, message):
    done = run_module("generate", *args, "--output", str(tmp_path / "out.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert_one_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_fast_kernels_are_on_by_default_on_one_cuda_gpu_only_and_refused_where_asked_off_cuda():
    assert fast_kernels_chosen(None, torch.device("cuda", 0)) is True
    assert fast_kernels_chosen(None, torch.device("cpu")) is False
    # measured on one GPU holding the whole model: ranks and offloaded blocks keep torch's layers
    assert fast_kernels_chosen(None, torch.device("cuda", 0), stays_put=False) is False
    assert fast_kernels_chosen(True, torch.device("cuda", 0), stays_put=False) is True
    assert fast_kernels_chosen(False, torch.device("cuda")) is False  # --no-fast-kernels
    assert fast_kernels_chosen(True, torch.device("cuda")) is True
    with pytest.raises(cli.SettingsError, match="the device is cpu: leave the flag off there"):
        fast_kernels_chosen(True, torch.device("cpu"))
    parser = build_parser()
    assert parser.parse_args(["generate", "--prompt", "p"]).fast_kernels is None
    assert parser.parse_args(["generate", "--prompt", "p", "--no-fast-kernels"]).fast_kernels is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--frames", "24"), "num_frames 24 is not 8k + 1"),
        (("--frames", "0"), "num_frames 0"),
        (("--steps", "0"), "steps 0 must be a whole number of at least 1"),
        (("--cfg", "-1"), "guidance_scale -1.0 is not allowed"),
        (("--cfg", "nan"), "guidance_scale nan is not allowed"),
        (("--fps", "0"), "frame_rate 0.0 is not allowed"),
        (("--seed", "-1"), "seed -1 is outside the accepted range"),
        (("--decode-timestep", "2"), r"decode_timestep 2.0 is outside [0, 1]"),
        (("--decode-noise-scale", "-0.5"), "decode_noise_scale -0.5 is outside [0, 1]"),
        (("--dtype", "int8"), "dtype 'int8' is not supported; allowed: fp32"),
        (("--device", "mps"), "device 'mps' is not supported"),
        (("--image", "missing.png"), "image 'missing.png' does not exist"),
        (("--fp8", "--device", "cpu"), "fp8 needs a CUDA GPU with FP8 tensor cores (compute capability 8.9"),
        (("--fast-kernels", "--device", "cpu"), "the device is cpu: leave the flag off there"),
        (("--decode-time-chunk", "2", "--cfg-parallel", "2"), "--decode-time-chunk does not combine with"),
        (("--decode-time-chunk", "8", "--sequence-parallel", "2"), "--decode-time-chunk does not combine with"),
        (("--offload", "blocks", "--device", "cpu"), "--offload blocks keeps weights in CPU memory for a GPU run"),
        (("--offload", "models", "--cfg-parallel", "2"), "--offload models does not combine with --sequence-parallel"),
    ],
)
def test_bad_settings_print_one_line_and_exit_2_before_loading_a_model(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    code, err = run_main(capsys, "generate", "--prompt", "a fox", "--output", "out.mp4", *args)
    assert code == 2
    assert message in err
    assert_one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_whitespace_prompt_is_refused(capsys, tmp_path):
    code, err = run_main(capsys, "generate", "--prompt", "  ", "--output", str(tmp_path / "o.mp4"))
    assert code == 2 and "prompt is empty" in err


def test_missing_output_folder_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    code, err = run_main(capsys, "generate", "--prompt", "a fox", "--output", str(tmp_path / "no" / "o.mp4"))
    assert code == 2 and "output folder" in err and "does not exist" in err
    assert_one_line(err)


def test_existing_output_is_refused_without_overwrite_and_kept(capsys, tmp_path):
    target = tmp_path / "o.mp4"
    target.write_bytes(b"old video")
    code, err = run_main(capsys, "generate", "--prompt", "a fox", "--output", str(target))
    assert code == 2 and "already exists; pass overwrite=True (CLI: --overwrite)" in err
    assert target.read_bytes() == b"old video"


def test_not_an_image_is_refused(capsys, tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--image",
        str(tmp_path / "notes.png"),
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 2 and "is not an image" in err


def test_bad_checkpoint_is_one_line_naming_the_file(capsys, tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04N.")
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(tmp_path / "model.ckpt"),
        "--text-encoder",
        str(tmp_path),
        "--output",
        str(tmp_path / "o.mp4"),
        *SMALL,
    )
    assert code == 2 and "model.ckpt' is a pickle file" in err
    assert_one_line(err)


def test_a_missing_text_encoder_is_named_before_the_checkpoint_is_loaded(
    capsys, tmp_path, tiny_checkpoint, monkeypatch
):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    code, err = generate_fox(capsys, tiny_checkpoint, tmp_path / "t5", tmp_path / "o.mp4")
    assert code == 2 and "--text-encoder" in err and "t5' does not exist" in err


def test_a_checkpoint_without_text_encoder_asks_for_one(capsys, tmp_path, tiny_checkpoint):
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(tiny_checkpoint),
        "--output",
        str(tmp_path / "o.mp4"),
        *SMALL,
    )
    assert code == 2 and "holds no text encoder; pass --text-encoder" in err


def test_without_a_shipped_model_the_error_says_what_to_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "SHIPPED_ASSETS", tmp_path)
    code, err = run_main(capsys, "generate", "--prompt", "a fox", "--output", str(tmp_path / "o.mp4"), *SMALL)
    assert code == 2 and "no shipped model found" in err and "pass --checkpoint and --text-encoder" in err


def test_size_sampling_and_decode_defaults_depend_on_whether_a_checkpoint_is_named():
    parser = cli.build_parser()
    shipped = parser.parse_args(["generate", "--prompt", "x"])
    named = parser.parse_args(["generate", "--prompt", "x", "--checkpoint", "m.safetensors", "--width", "64"])
    cli.apply_model_defaults(shipped)
    cli.apply_model_defaults(named)
    assert (shipped.width, shipped.height, shipped.frames) == (256, 256, 25)
    assert (named.width, named.height, named.frames) == (64, 512, 121)
    # the shipped model samples with stochastic steps unless told; a named model as its flags say
    assert shipped.stochastic_sampling is True and named.stochastic_sampling is None
    plain = parser.parse_args(["generate", "--prompt", "x", "--no-stochastic-sampling"])
    cli.apply_model_defaults(plain)
    assert plain.stochastic_sampling is False
    # the shipped model's 25-frame clips decode whole layers (a chunk that long); others the default
    assert shipped.decode_time_chunk == 25 and named.decode_time_chunk is None


def test_out_of_memory_names_the_size_and_writes_nothing(capsys, tmp_path, monkeypatch, tiny_checkpoint):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    chunkable_vae = SimpleNamespace(decoder=SimpleNamespace(can_chunk_time=True))
    loaded = Models(transformer=None, vae=chunkable_vae, text_encoder=None)
    monkeypatch.setattr(cli, "load_models", lambda *a: (loaded, None))
    monkeypatch.setattr(cli, "generate", out_of_memory)
    code, err = generate_fox(capsys, tiny_checkpoint, tmp_path, tmp_path / "o.mp4")
    assert code == 1
    assert "out of memory generating 32x32, 9 frames" in err and "lower --width/--height/--frames" in err
    assert "--decode-time-chunk 8" in err and "use --dtype bf16" in err  # fp32 on the CPU
    assert not (tmp_path / "o.mp4").exists()


def test_out_of_memory_in_bf16_does_not_advise_bf16():
    args = SimpleNamespace(width=768, height=512, frames=121, device="cuda", dtype="bf16")
    message = cli._out_of_memory_message(args)
    assert "lower --width/--height/--frames" in message and "--dtype" not in message


# ---------------------------------------------------------------- runs


def test_interrupt_during_sampling_exits_130_and_leaves_no_file(
    capsys, tmp_path, monkeypatch, tiny_checkpoint, tiny_t5_folder
):
    """A KeyboardInterrupt from the progress callback (what Ctrl-C raises mid-step)."""
    real_generate = cli.generate
    steps_seen = []

    def interrupted_generate(models, request, callback=None, **kwargs):
        def interrupting(step, total, x, denoised):
            callback(step, total, x, denoised)
            steps_seen.append(step)
            raise KeyboardInterrupt

        return real_generate(models, request, callback=interrupting, **kwargs)

    monkeypatch.setattr(cli, "generate", interrupted_generate)
    out = tmp_path / "out"
    out.mkdir()
    code, err = generate_fox(capsys, tiny_checkpoint, tiny_t5_folder, out / "o.mp4")
    assert code == 130 and "interrupted: no video written" in err
    assert steps_seen == [0]
    assert list(out.iterdir()) == []


def test_interrupt_during_decoding_exits_130_and_leaves_no_file(
    capsys, tmp_path, monkeypatch, tiny_checkpoint, tiny_t5_folder
):
    """Ctrl-C while the VAE decodes (after every sampling step ran): the same exit code and
    no file, as during sampling."""
    from ltx_core import pipeline

    decodes = []

    def interrupted_decode(*args, **kwargs):
        decodes.append(args[1].shape)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "decode_frames", interrupted_decode)
    out = tmp_path / "out"
    out.mkdir()
    code, err = generate_fox(capsys, tiny_checkpoint, tiny_t5_folder, out / "o.mp4")
    assert code == 130 and "interrupted: no video written" in err
    assert len(decodes) == 1
    assert list(out.iterdir()) == []


def test_overwrite_replaces_an_existing_video(capsys, tmp_path, tiny_checkpoint, tiny_t5_folder):
    target = tmp_path / "o.mp4"
    target.write_bytes(b"old video")
    code, _ = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(tiny_checkpoint),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(target),
        "--overwrite",
        *SMALL,
    )
    assert code == 0
    with av.open(str(target)) as container:
        assert container.streams.video[0].frames == 9


def test_a_diffusers_folder_brings_its_own_text_encoder(capsys, tmp_path, tiny_t5_folder):
    folder = write_diffusers_folder(tmp_path / "diffusers", "0.9.5", text_encoder=tiny_t5_folder)
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(folder),
        "--output",
        str(tmp_path / "o.mp4"),
        "--cfg",
        "1",
        *SMALL,
    )
    assert code == 0, err
    tags = read_video_metadata(tmp_path / "o.mp4")
    assert tags["comment"] == "a fox"
    assert json.loads(tags["ltx_core"])["dtype"] == "fp32"  # no --dtype, on the CPU
    assert json.loads(tags["ltx_core"])["stochastic_sampling"] is False  # a named model: plain steps


def test_without_dtype_a_gpu_run_takes_bf16_and_the_cpu_fp32():
    assert cli.default_dtype_name("cuda") == "bf16" and cli.default_dtype_name("cpu") == "fp32"
    assert cli.build_parser().parse_args(["generate", "--prompt", "x"]).dtype is None


def test_end_to_end_run_writes_an_mp4_pyav_decodes_with_the_right_frames_and_size(
    tmp_path, tiny_checkpoint, tiny_t5_folder
):
    """The real command line, with a first frame of another size (fitted, with a warning)."""
    Image.new("RGB", (80, 40), (200, 30, 30)).save(tmp_path / "first.png")
    done = run_module(
        "generate",
        "--prompt",
        "a red fox runs",
        "--checkpoint",
        str(tiny_checkpoint),
        "--text-encoder",
        str(tiny_t5_folder),
        "--image",
        "first.png",
        "--width",
        "64",
        "--height",
        "32",
        "--frames",
        "17",
        "--steps",
        "2",
        "--fps",
        "12",
        "--seed",
        "3",
        "--output",
        "clip.mp4",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "center-cropped" in done.stderr and "sampling" in done.stderr
    assert done.stdout.strip() == "clip.mp4"
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        assert (stream.width, stream.height, stream.average_rate) == (64, 32, 12)
    assert len(frames) == 17
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "first.png"]


SHIPPED_MODEL = preflight.shipped_model_paths()[0]


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="the shipped model is not in ltx_core/assets yet")
def test_without_model_flags_the_shipped_model_generates_at_its_default_size(capsys, tmp_path):
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a red ball bounces",
        "--output",
        str(tmp_path / "o.mp4"),
        "--frames",
        "9",
        "--steps",
        "2",
    )
    assert code == 0, err
    with av.open(str(tmp_path / "o.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (256, 256, 9)
    # the shipped model samples with stochastic steps unless told, and the file says so
    assert json.loads(read_video_metadata(tmp_path / "o.mp4")["ltx_core"])["stochastic_sampling"] is True


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="the shipped model is not in ltx_core/assets yet")
def test_timings_mark_each_stage_in_order_after_the_video_is_written(capsys, tmp_path):
    """--timings FILE: the marks of a one-window run, in the order the run reaches them,
    epoch seconds beside seconds since start, and the time after the text encoder."""
    code, err = run_main(capsys, "generate", "--prompt", "a red ball bounces", "--output", str(tmp_path / "o.mp4"),
                         "--frames", "9", "--steps", "2", "--timings", str(tmp_path / "t.json"))  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "t.json").read_text())
    since = report["seconds_since_start"]
    order = ["start", "loaded", "text", "latent", "first_step", "denoise", "decode", "frames", "written"]
    assert list(since) == order
    assert all(a <= b for a, b in zip(list(since.values()), list(since.values())[1:]))
    assert report["epoch"]["written"] - report["epoch"]["start"] == pytest.approx(since["written"], abs=1e-3)
    assert (
        report["after_text_s"] == pytest.approx(since["decode"] - since["text"], abs=1e-3)
        and 0 < report["after_text_s"]
    )
    assert report["peak_gpu_memory_gib"] is None  # a CPU run; on a GPU, torch's peak of the run
    assert (tmp_path / "o.mp4").stat().st_size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_timings_report_the_runs_peak_gpu_memory(tmp_path):
    from ltx_core.timings import RunClock

    torch.cuda.reset_peak_memory_stats()
    clock = RunClock(torch.device("cuda"))
    held = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # a quarter of a GiB
    clock.mark("text")
    clock.mark("decode")
    clock.write(tmp_path / "t.json")
    assert 0.25 <= json.loads((tmp_path / "t.json").read_text())["peak_gpu_memory_gib"] < 0.25 + 0.1
    del held


def test_timings_into_a_missing_folder_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    code, err = run_main(capsys, "generate", "--prompt", "a fox", "--output", str(tmp_path / "o.mp4"),
                         "--timings", str(tmp_path / "no" / "t.json"))  # fmt: skip
    assert code == 2 and "--timings" in err and "folder does not exist" in err
    assert_one_line(err)


# ---------------------------------------------------------------- speed flags

# Chunked decode and Dynamo's traced graph compute the same numbers as the plain run, up
# to convolution algorithms picked per input size (see test_pipeline).
SPEED_ATOL = 1e-5


def test_help_documents_the_speed_flags(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["generate", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--compile torch.compile the transformer's regions" in text
    assert "--fp8 FP8 linear layers in the transformer (a CUDA GPU with FP8 tensor cores" in text
    assert "--decode-time-chunk N compute each VAE decoder layer N frames at a time" in text


def generated_frames(capsys, monkeypatch, tmp_path, checkpoint, text_encoder, *flags) -> torch.Tensor:
    """The frames a run hands to the mp4 writer (before video compression)."""
    written = []
    write = cli.write_mp4
    monkeypatch.setattr(cli, "write_mp4", lambda frames, *a, **k: (written.append(frames), write(frames, *a, **k)))
    output = tmp_path / f"o{len(list(tmp_path.iterdir()))}.mp4"
    code, err = run_main(
        capsys,
        "generate",
        "--prompt",
        "a fox",
        "--checkpoint",
        str(checkpoint),
        "--text-encoder",
        str(text_encoder),
        "--output",
        str(output),
        "--device",
        "cpu",
        "--width",
        "32",
        "--height",
        "32",
        "--frames",
        "25",
        "--steps",
        "2",
        *flags,
    )
    assert code == 0, err
    return written[0]


def test_decode_time_chunks_and_compile_give_the_frames_of_the_plain_run(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    """--compile reaches `optimize_models` (traced with Dynamo's 'eager' backend here: no C++
    compiler on CI), --decode-time-chunk the decode; neither changes the frames."""
    calls = []

    def eager_compile(models, speed, device=None):
        calls.append(speed)
        return cli_optimize(models, replace(speed, compile_backend="eager"), device)

    cli_optimize = cli.optimize_models
    monkeypatch.setattr(cli, "optimize_models", eager_compile)

    def run(*flags):
        return generated_frames(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, *flags)

    plain = run()
    assert calls == []
    chunked = run("--decode-time-chunk", "4")
    compiled = run("--compile")
    assert calls == [Speed(compile=True, fp8=False, attention="default", cuda_graphs=False)]  # the CPU's choice
    assert plain.shape == (25, 32, 32, 3)
    assert (chunked - plain).abs().max() <= SPEED_ATOL
    assert (compiled - plain).abs().max() <= SPEED_ATOL


def test_the_decode_is_time_chunked_by_default_except_across_ranks(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    """Without --decode-time-chunk a run decodes each layer DEFAULT_DECODE_TIME_CHUNK frames at
    a time (the frames of the whole decode, less memory); a run split across ranks decodes
    whole layers, which its time-split decode needs; a given value is kept."""
    from ltx_core.parallel.distributed import ParallelLayout
    from ltx_core.pipeline import DEFAULT_DECODE_TIME_CHUNK

    requests = []
    real_generate = cli.generate
    monkeypatch.setattr(
        cli, "generate", lambda models, request, **k: (requests.append(request), real_generate(models, request, **k))[1]
    )
    generated_frames(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder)
    generated_frames(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, "--decode-time-chunk", "3")
    assert [r.decode_time_chunk for r in requests] == [DEFAULT_DECODE_TIME_CHUNK, 3]
    from dataclasses import replace

    from ltx_core.models.configs import TINY_VAE_0_9_0
    from ltx_core.models.vae import CausalVideoVAE

    vae = CausalVideoVAE(TINY_VAE_0_9_0)
    assert cli.resolved_decode_time_chunk(None, ParallelLayout(2, 1), vae) is None
    assert cli.resolved_decode_time_chunk(None, ParallelLayout(1, 2), vae) is None
    assert cli.resolved_decode_time_chunk(None, ParallelLayout(1, 1), vae) == DEFAULT_DECODE_TIME_CHUNK
    # group norm's statistics span every frame: such a decoder decodes whole layers by default
    group_norm = CausalVideoVAE(
        replace(TINY_VAE_0_9_0, norm_layer="group_norm", encoder_base_channels=32, decoder_base_channels=32)
    )
    assert not group_norm.decoder.can_chunk_time
    assert cli.resolved_decode_time_chunk(None, ParallelLayout(1, 1), group_norm) is None


def test_out_of_memory_advice_offers_only_flags_the_run_accepts():
    from argparse import Namespace

    assert cli._may_lower_time_chunk(Namespace(sequence_parallel=1, cfg_parallel=1, decode_time_chunk=None))
    assert cli._may_lower_time_chunk(Namespace(sequence_parallel=1, cfg_parallel=1, decode_time_chunk=32))
    assert not cli._may_lower_time_chunk(Namespace(sequence_parallel=1, cfg_parallel=1, decode_time_chunk=8))
    assert not cli._may_lower_time_chunk(Namespace(sequence_parallel=2, cfg_parallel=1, decode_time_chunk=None))


def test_decode_tiles_reach_the_decode_and_a_bad_grid_is_a_usage_error(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    """--decode-tiles 1x2 --decode-tile-overlap 1: the request carries them to the decode."""
    import ltx_core.pipeline as pipeline

    seen = []
    real = pipeline.decode_frames
    monkeypatch.setattr(pipeline, "decode_frames", lambda *a, **k: seen.append(k) or real(*a, **k))
    code, err = run_main(
        capsys, "generate", "--prompt", "a fox", "--checkpoint", str(tiny_checkpoint), "--text-encoder",
        str(tiny_t5_folder), "--output", str(tmp_path / "o.mp4"), "--width", "128", "--height", "32",
        "--frames", "9", "--steps", "1", "--device", "cpu", "--decode-tiles", "1x2", "--decode-tile-overlap", "1",
    )  # fmt: skip
    assert code == 0, err
    assert (seen[-1]["tiles"], seen[-1]["tile_overlap"]) == ((1, 2), 1)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--prompt", "a fox", "--decode-tiles", "2by2"])
    assert exit_.value.code == 2 and "'2by2' is not ROWSxCOLUMNS" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="offloading moves weights to a GPU (run on the GPU)")
def test_offloaded_runs_give_the_frames_of_the_resident_run_on_the_gpu(
    capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder
):
    placements = []
    place = cli.place_models
    monkeypatch.setattr(cli, "place_models", lambda *a: placements.append(a[2]) or place(*a))

    def run(*flags):
        frames = generated_frames(capsys, monkeypatch, tmp_path, tiny_checkpoint, tiny_t5_folder, *flags)
        return frames

    def on_gpu(*flags):  # generated_frames runs on the CPU: the last --device wins
        return run("--device", "cuda", *flags)

    resident = on_gpu("--offload", "none")
    assert torch.equal(on_gpu("--offload", "models"), resident)
    assert torch.equal(on_gpu("--offload", "blocks"), resident)
    assert placements == [0, 2]  # the tiny transformer's two blocks streamed
