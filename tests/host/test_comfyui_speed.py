"""The ComfyUI speed benchmark's CPU dry run: its own server, ComfyUI's LTXV nodes and the
pack's workflow on one tiny checkpoint, each run timed to a decodable mp4."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.comfy_server


def test_the_comfyui_speed_bench_times_both_graphs_to_an_mp4_of_the_asked_length(tmp_path):
    from benchmarks import comfyui_speed

    out = tmp_path / "comfyui.json"
    report = comfyui_speed.main(["--tiny", "--runs", "2", "--out", str(out)])
    # the loader's default only, on the CPU
    assert set(report["rows"]) == {"native", "native_comfyui_save", "pack_kernels"}
    for row in report["rows"].values():
        assert [run["frames"] for run in row["runs"]] == [report["size"]["frames"]] * 2
        assert row["seconds"] > 0 and row["warm_up_s"] > 0
        assert "peak_gpu_memory_gib" in row and row["peak_gpu_memory_gib"] is None  # the CPU: no GPU peak
        # where each run's time went, node by node: the nodes that ran, within the run's seconds
        assert 0 < sum(row["node_seconds"].values()) <= row["seconds"]
    assert "SaveVideo" in report["rows"]["native_comfyui_save"]["node_seconds"]
    assert "LTXVCoreSaveVideo" not in report["rows"]["native_comfyui_save"]["node_seconds"]
    assert "LTXVCoreSaveVideo" in report["rows"]["native"]["node_seconds"]
    assert {"SamplerCustom", "VAEDecode"} <= set(report["rows"]["native"]["node_seconds"])
    assert {"LTXVCoreSampler", "LTXVCoreDenoisingDecode"} <= set(report["rows"]["pack_kernels"]["node_seconds"])
    native, pack = report["comfyui_native_s"], report["comfyui_pack_s"]
    assert report["comfyui_pack_vs_native_ratio"] == round(native / pack, 3)
    save = {
        name: row["node_seconds"]["LTXVCoreSaveVideo"]
        for name, row in report["rows"].items()
        if name != "native_comfyui_save"
    }
    before_save = (native - save["native"]) / (pack - save["pack_kernels"])
    assert report["comfyui_pack_vs_native_ratio_before_save"] == round(before_save, 3)
    own = report["comfyui_native_own_save_s"]
    assert report["comfyui_pack_vs_native_own_save_ratio"] == round(own / pack, 3)
    assert report["comfyui"] not in ("", "unknown")
    assert json.loads(out.read_text())["rows"].keys() == report["rows"].keys()


def test_the_comfyui_speed_bench_refuses_an_unknown_optimization_before_starting_comfyui(capsys):
    from benchmarks import comfyui_speed

    with pytest.raises(SystemExit):
        comfyui_speed.main(["--tiny", "--optimizations", "none,turbo"])
    assert "--optimizations: unknown ['turbo']" in capsys.readouterr().err
