"""What the Triton kernels share: the autotuning each kernel gets (its timings kept on disk
for the next process) and its absence under the CPU interpreter."""

import pytest

from ltx_core.speed.triton_launch import autotuned

triton = pytest.importorskip("triton")


@triton.jit
def _copy_kernel(x_ptr, out_ptr, N, BLOCK: triton.language.constexpr):
    cols = triton.language.arange(0, BLOCK)
    inside = cols < N
    triton.language.store(out_ptr + cols, triton.language.load(x_ptr + cols, mask=inside), mask=inside)


def test_a_kernel_is_autotuned_over_the_warps_with_its_timings_kept_on_disk(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    tuned = autotuned(_copy_kernel, (2, 4, 8), key=["N"])
    assert [config.num_warps for config in tuned.configs] == [2, 4, 8]
    assert tuned.keys == ["N"]
    assert tuned.cache_results  # the Triton that torch ships takes cache_results (3.2 on)


def test_under_the_interpreter_the_kernel_is_left_as_it_is(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert autotuned(_copy_kernel, (2, 4, 8), key=["N"]) is _copy_kernel
