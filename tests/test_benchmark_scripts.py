"""The benchmarks in benchmarks/ import as modules of the `benchmarks` package (run as
`python -m benchmarks.NAME`, no `sys.path` edits), and a GPU benchmark on a machine without
a GPU says so. The tiny model's evaluation tools are tested in tests/training/evaluation/."""

from __future__ import annotations

import importlib
import sys

import pytest

BENCHMARKS = (
    "bench_cpu_demo",
    "bench_decode_chunks",
    "bench_gpu_speed",
    "bench_multi_gpu",
    "cli_startup",
    "memory_planner",
    "gpu_kernel_rates",
    "gpu_measure",
    "gpu_speed_pipelines",
    "vae_decode_memory",
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_imports_as_a_module_of_the_package(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__


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
