"""The benchmarks in benchmarks/ import as modules of the `benchmarks` package (run as
`python -m benchmarks.NAME`, no `sys.path` edits), and a GPU benchmark on a machine without
a GPU says so. The tiny model's evaluation tools are tested in tests/training/evaluation/."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from einops import rearrange

REPO_ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS = (
    "bench_cpu_demo",
    "bench_decode_chunks",
    "bench_gpu_speed",
    "bench_multi_gpu",
    "bench_multiscale",
    "cli_gpu_speed",
    "cli_startup",
    "comfyui_speed",
    "decode_node_output",
    "dit_three_way",
    "memory_planner",
    "mp4_write",
    "multiscale_three_way",
    "gpu_kernel_rates",
    "gpu_measure",
    "gpu_speed_pipelines",
    "kernel_levers",
    "long_video_demo",
    "low_vram",
    "vae_decode_memory",
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_imports_as_a_module_of_the_package(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__


def test_the_kernel_levers_bench_runs_every_row_on_the_same_weights(tmp_path):
    """The CPU dry run: every row is timed and compared with PyTorch's own layers; no fused
    kernel runs on the CPU, so every bf16 row's tokens are those layers' exactly, and both
    FP8 rows' are the same FP8 tokens (the one-pass quantization is the reference there)."""
    from benchmarks import kernel_levers

    report = kernel_levers.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "k.json")])
    rows = report["rows"]
    assert list(rows) == [name for name, row in kernel_levers.ROWS.items() if not row.gpu_only]
    for name, row in rows.items():
        assert row["dit_nocfg_s"] > 0 and row["dit_cfg_s"] > 0 and row["dit_cfg_first_s"] >= row["dit_cfg_s"]
        assert not row["levers"].get("cuda_graphs")
        assert "fused_modulation" not in row["levers"]
        if not name.startswith("fp8"):
            assert row["tokens_vs_torch_layers"] == {"rel_l2": 0.0, "max_abs": 0.0}
    assert 0 < rows["fp8"]["tokens_vs_torch_layers"]["rel_l2"] < 0.2
    assert rows["fp8"]["tokens_vs_torch_layers"] == rows["fp8_torch_quantize"]["tokens_vs_torch_layers"]
    assert rows["fp8"]["levers"]["fp8_one_pass_quantize"] > 0
    assert "fp8_one_pass_quantize" not in rows["fp8_torch_quantize"]["levers"]


def test_the_eager_decode_chunk_bench_needs_a_gpu_and_says_so(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run")
    # imported as a module of the package: the script no longer imports its helpers from
    # beside itself, so the benchmarks folder is not put on sys.path any more
    from benchmarks import bench_decode_chunks

    monkeypatch.setattr(sys, "argv", ["bench_decode_chunks.py"])
    with pytest.raises(SystemExit, match="times a GPU decode; no CUDA device here"):
        bench_decode_chunks.main()


def test_each_way_of_handing_the_decoded_frames_to_comfyui_gives_the_same_image():
    """The ways `decode_node_output` times give the node's IMAGE values exactly, from the
    same decoded video (the bf16 way from the decoder's video, as `decode_frames` converts it)."""
    from benchmarks import decode_node_output as bench

    video = (torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1).bfloat16()
    frames = rearrange(video.float().div(2).add(0.5).clamp(0, 1), "b c f h w -> b f h w c")
    reference = bench.float_contiguous_cpu(frames)
    assert reference.shape == (9, 16, 24, 3) and reference.is_contiguous()
    assert torch.equal(bench.strided_cpu(frames), reference)
    assert torch.equal(bench.bf16_cpu_then_convert(video), reference)
    buffer = torch.empty((bench.PINNED_FRAMES, 16, 24, 3))
    assert torch.equal(bench.pinned_chunks(frames, buffer), reference)


def test_the_multiscale_bench_runs_the_preset_on_tiny_models(tmp_path):
    """The CPU dry run of the 13B multi-scale benchmark: the preset's two passes (7 + 3
    steps, the second at twice the first's size) give finite frames of the asked size."""
    import json

    from benchmarks import bench_multiscale

    bench_multiscale.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "ms.json")])
    result = json.loads((tmp_path / "ms.json").read_text())
    assert result["steps"] == 10 and result["frames_finite"]
    assert result["frames_shape"] == [17, 160, 256, 3]
    first, second = result["pass_sizes"]
    assert second == [2 * first[0], 2 * first[1]]


def test_the_low_vram_bench_runs_its_rows_on_tiny_models(tmp_path):
    """The CPU dry run of the low-VRAM benchmark: a resident row runs and decodes every
    frame; a cap nothing fits under is planned (every block streamed) and reported as not
    fitting instead of run."""
    import json

    from benchmarks import low_vram

    low_vram.main(["--tiny", "--caps", "none,0.0001", "--out", str(tmp_path / "lv.json")])
    resident, capped = json.loads((tmp_path / "lv.json").read_text())["rows"]
    assert {"model", "dtype", "cap_gib", "peak_gib", "dit_s", "whole_s"} <= set(resident)
    assert resident["fits"] and resident["offload"] == "none" and resident["frames"] == 9
    assert capped["cap_gib"] == 0.0001 and not capped["fits"]
    assert capped["offload"] == "blocks" and capped["streamed_blocks"] == 2


def test_the_long_video_demo_reads_each_prompt_segment_and_draws_the_strip(tmp_path):
    """Three windows of 17 frames at 64 x 64, one prompt each: every segment is read over
    the frames its windows add, the frames cover the clip once, and the strip is drawn."""
    import json

    from benchmarks import long_video_demo

    out, strip = tmp_path / "long.json", tmp_path / "strip.png"
    long_video_demo.main(
        ["--size", "64", "--frames", "41", "--window-frames", "17", "--segment-starts", "16", "32",
         "--steps", "2", "--seeds", "0", "--out", str(out), "--strip", str(strip)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert {"date", "device", "torch", "settings", "segments_matching", "strip", "runs"} <= set(result)
    assert result["strip"]["seed"] == 0 and strip.stat().st_size > 0
    [run] = result["runs"]
    assert [segment["frames"] for segment in run["segments"]] == [[0, 16], [17, 32], [33, 40]]
    assert [segment["prompt"] for segment in run["segments"]] == [prompt for _, prompt in long_video_demo.SEGMENTS]
    for segment in run["segments"]:
        assert {"color", "shape", "motion", "background"} == set(segment["matches"]) == set(segment["asked"])
        assert segment["all_match"] == all(segment["matches"].values())


def test_the_cli_speed_bench_reads_each_cli_process_timings_on_tiny_models(tmp_path):
    """The CPU dry run: every row is a CLI process on files the script wrote, its seconds
    after the text encoder read from the process's own --timings; the user-path keys go
    into gpu_speed.json beside what is there."""
    import json

    from benchmarks import cli_gpu_speed

    report = cli_gpu_speed.main(["--tiny", "--repeats", "1", "--profile", "--out", str(tmp_path / "cli.json")])
    assert set(report["rows"]) == {"default_nocfg", "default_cfg"}
    profile = (tmp_path / "cli_profile.txt").read_text()  # the profiled process's own functions
    assert "run_generate" in profile and "decode_frames" in profile and report["profile"]["after_text_s"] > 0
    for row in report["rows"].values():
        (run,) = row["runs"]
        assert 0 < row["after_text_s"] == run["after_text_s"] < run["process_s"]
        assert list(run["seconds_since_start"])[-1] == "written"
        assert row["peak_gpu_memory_gib"] is None and run["peak_gpu_memory_gib"] is None  # the CPU has none
    assert report["cold_start_first_step_s"] > 0 and report["warm_start_first_step_s"] is None
    assert json.loads((tmp_path / "cli.json").read_text())["rows"].keys() == report["rows"].keys()

    speed = tmp_path / "gpu_speed.json"
    speed.write_text(json.dumps({"kept": 1}))
    rows = {f"{name}_{g}": {"after_text_s": float(i)} for i, (name, g) in enumerate(
        (n, g) for n, _ in cli_gpu_speed.FLAG_ROWS for g in cli_gpu_speed.GUIDANCE)}  # fmt: skip
    cli_gpu_speed.update_gpu_speed({"rows": rows, "date": "d", "device": "x", "cold_start_first_step_s": 9.0}, speed)
    written = json.loads(speed.read_text())
    assert written["kept"] == 1 and written["cold_start_first_step_s"] == 9.0
    assert written["cli_fp8_cfg_s"] == rows["fp8_eager_cfg"]["after_text_s"] and written["cli_bf16_nocfg_s"] == 0.0
    # a run of some rows leaves no older figure of the others beside its own
    bf16_only = {name: row for name, row in rows.items() if name.startswith("default")}
    cli_gpu_speed.update_gpu_speed({"rows": bf16_only, "date": "e", "device": "x"}, speed)
    written = json.loads(speed.read_text())
    assert written["cli_fp8_cfg_s"] is None and written["cli_bf16_cfg_s"] == rows["default_cfg"]["after_text_s"]


def test_a_cli_speed_row_is_its_warm_processes_median_beside_the_first():
    """The first process fills the compile and page caches: a row's seconds are the later
    processes' median, the first's given beside it; a lone process is its own."""
    from benchmarks import cli_gpu_speed

    runs = [{"after_text_s": 44.0, "peak_gpu_memory_gib": 7.5}, {"after_text_s": 6.0, "peak_gpu_memory_gib": 7.0},
            {"after_text_s": 5.0, "peak_gpu_memory_gib": None}]  # fmt: skip
    row = cli_gpu_speed.row_summary(runs)
    assert (row["after_text_s"], row["first_process_after_text_s"], row["peak_gpu_memory_gib"]) == (5.5, 44.0, 7.5)
    assert cli_gpu_speed.row_summary(runs[:1])["after_text_s"] == 44.0


def test_the_cli_speed_bench_refuses_an_unknown_row_before_any_work(capsys):
    from benchmarks import cli_gpu_speed

    with pytest.raises(SystemExit):
        cli_gpu_speed.main(["--tiny", "--rows", "default,turbo"])
    assert (
        "--rows: unknown ['turbo']; allowed: ['default', 'compile', 'fp8', 'fp8_eager', 'no_kernels']"
        in capsys.readouterr().err
    )


def test_the_three_way_bench_times_the_same_dit_and_decode_in_ours_comfyui_and_diffusers(tmp_path):
    """The CPU dry run: one set of random weights read by all three, so one forward of
    each agrees with ours to fp32 rounding, and its VAE decodes our latent to the same frames,
    before any row's seconds mean anything."""
    import json
    import subprocess

    from tests.host.comfy_env import ensure_comfyui

    # a process of its own: ComfyUI's modules, once imported, pick a device for every later
    # import in this one (and in the processes it spawns). `--comfyui` named as on the GPU
    # machine: ComfyUI's folder then heads sys.path, and its own `tests` package with it.
    out = tmp_path / "d3.json"
    command = [sys.executable, "-m", "benchmarks.dit_three_way", "--tiny", "--repeats", "1", "--out", str(out),
               "--comfyui", str(ensure_comfyui())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["ours", "comfyui", "diffusers"]
    for name in ("comfyui", "diffusers"):
        assert report["rows"][name]["probe_max_abs_diff_vs_ours"] < 1e-5
        # each library's VAE decodes our latent to the same frames in [0, 1]
        assert report["rows"][name]["frames_max_abs_diff_vs_ours"] < 1e-4
    for row in report["rows"].values():
        assert row["dit_nocfg_s"] > 0 and row["dit_cfg_s"] > 0 and row["decode_s"] > 0
        assert row["whole_nocfg_s"] == pytest.approx(row["dit_nocfg_s"] + row["decode_s"], abs=2e-4)


def test_the_three_way_dit_bench_runs_each_librarys_fp8(tmp_path):
    """--fp8: each library's FP8 path really runs (its probe moves off ours in bf16, as FP8
    rounding does) and stays near it (the same model read three ways)."""
    import json
    import subprocess

    from tests.host.comfy_env import ensure_comfyui

    out = tmp_path / "d3_fp8.json"
    command = [sys.executable, "-m", "benchmarks.dit_three_way", "--tiny", "--fp8", "--repeats", "1",
               "--out", str(out), "--comfyui", str(ensure_comfyui())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["fp8"] is True and list(report["rows"]) == ["ours", "comfyui", "diffusers"]
    for name, row in report["rows"].items():
        assert 1e-4 < row["probe_max_abs_diff_vs_bf16"] < 0.15, name


def test_the_three_way_multiscale_bench_runs_the_distilled_pipeline_in_each_library(tmp_path):
    """The distilled config's passes (7 + 3 steps, the second at twice the first's size)
    with each library's transformer, upsampler and decode: diffusers' frames are ours to
    rounding (the same AdaIN); ComfyUI's upsampler is ours without the AdaIN its node lacks."""
    import json
    import subprocess

    from tests.host.comfy_env import ensure_comfyui

    out = tmp_path / "ms3.json"
    command = [sys.executable, "-m", "benchmarks.multiscale_three_way", "--tiny", "--repeats", "1",
               "--out", str(out), "--comfyui", str(ensure_comfyui())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["pass_steps"] == [7, 3] and report["pass_sizes"] == [[32, 32], [64, 64]]
    rows = report["rows"]
    assert list(rows) == ["ours", "comfyui", "diffusers"]
    assert rows["diffusers"]["frames_max_abs_diff_vs_ours"] < 1e-4
    assert rows["diffusers"]["upsampled_max_abs_diff_vs_ours"] < 1e-4
    assert rows["comfyui"]["upsampled_max_abs_diff_vs_ours"] < 1e-4
    assert rows["comfyui"]["frames_max_abs_diff_vs_ours"] > 1e-3  # no AdaIN: another second pass
    for row in rows.values():
        stages = ("first_pass_s", "upsample_s", "second_pass_s", "decode_s")
        assert all(row[stage] > 0 for stage in stages)
        assert row["whole_s"] == pytest.approx(sum(row[stage] for stage in stages), abs=5e-4)


def test_the_mp4_write_bench_reads_every_preset_back_and_keeps_the_rule(tmp_path):
    """Each preset's file decodes close to the frames given, and the choice is the fastest
    one inside the margins (here on tiny clips, where the numbers are the script's own)."""
    from benchmarks import mp4_write

    report = mp4_write.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "mp4.json")])
    for by_preset in report["rows"].values():
        assert set(by_preset) == {"medium", "fast", "veryfast"}
        assert all(row["psnr_db"] > 30 and row["kib"] > 0 for row in by_preset.values())
    for by_kind in report["thread_types"].values():  # both threadings make a file that reads back
        assert set(by_kind) == {"SLICE", "AUTO"} and all(row["psnr_db"] > 30 for row in by_kind.values())
    assert report["chosen"] == mp4_write.choose(report["rows"])
    rows = {"clip": {"medium": {"seconds": 3, "kib": 100, "psnr_db": 40.0},
                     "fast": {"seconds": 2, "kib": 104, "psnr_db": 39.95},
                     "veryfast": {"seconds": 1, "kib": 100, "psnr_db": 39.5}}}  # fmt: skip
    assert mp4_write.choose(rows) == "fast"  # veryfast loses 0.5 dB
