"""The quantized-checkpoint benchmark's CPU dry run (`--tiny`): every format is written,
loaded quantized, run and compared with the bf16 weights; the JSON has what the GPU run reports."""

from __future__ import annotations

import json

from benchmarks import quantized_checkpoints as bench


def test_the_tiny_dry_run_measures_every_format(tmp_path):
    out = tmp_path / "quantized_checkpoints.json"
    report = bench.main(["--tiny", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert {"date", "device", "torch", "rows"} <= set(report) and not report["errors"] and not report["skipped"]
    rows = {row["format"]: row for row in report["rows"]}
    assert tuple(rows) == bench.FORMATS
    quantization = {"bf16": "plain", "fp8": "fp8", "scaled_fp8": "scaled_fp8", "gguf_q8_0": "gguf", "gguf_q4_k": "gguf"}
    for fmt, row in rows.items():
        assert row["quantization"] == quantization[fmt]
        assert row["file_gib"] > 0 and row["load_s"] > 0 and row["step_s"] > 0
        assert row["steps_20_s"] == round(row["step_s"] * 20, 2)
        if fmt != "bf16":
            assert row["weights_gib"] < rows["bf16"]["weights_gib"]
            assert 0 < row["velocity_error_vs_bf16"]["rel_l2"] < 0.2
    assert rows["gguf_q4_k"]["velocity_error_vs_bf16"]["rel_l2"] > rows["gguf_q8_0"]["velocity_error_vs_bf16"]["rel_l2"]
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.gguf"))


def test_formats_must_start_with_the_bf16_reference(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--formats", "fp8", "--out", str(tmp_path / "x.json")])
    assert "bf16 first" in capsys.readouterr().err
