"""The evaluation scripts in benchmarks/ run end to end on the shipped model (a few prompts,
few steps), so a committed result can always be re-made."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_script(name: str):
    """A fixture giving benchmarks/NAME.py as a module; afterwards every module imported from
    benchmarks/ is dropped again, so no test sees another's patched copy."""

    @pytest.fixture()
    def fixture(monkeypatch):
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module(name)
        for module_name, module in list(sys.modules.items()):
            if Path(getattr(module, "__file__", None) or "/").parent == BENCHMARKS:
                sys.modules.pop(module_name)

    return fixture


sweep_sampling = benchmark_script("sweep_sampling")
vae_probe = benchmark_script("probe_vae_capacity")
summarize_candidates = benchmark_script("summarize_candidates")
eval_first_last = benchmark_script("eval_first_last")
screen_motion = benchmark_script("screen_motion")


def test_sweep_setting_syntax(sweep_sampling):
    assert sweep_sampling.parse_setting("3.0") == {
        "guidance_scale": 3.0, "stg_scale": 0.0, "stg_blocks": (), "steps": 20}
    assert sweep_sampling.parse_setting("4.5:1.0@3x30") == {
        "guidance_scale": 4.5, "stg_scale": 1.0, "stg_blocks": (3,), "steps": 30}


def test_sweep_validation_prompts_are_trained_combinations(sweep_sampling):
    from ltx_core.training import data

    specs = sweep_sampling.validation_specs(16)
    assert len(specs) == 16
    assert not any(data.is_heldout(s.main.color, s.main.shape, s.main.motion) for s in specs)
    assert all(s.second is None for s in specs)


def test_sweep_writes_accuracy_per_setting(sweep_sampling, tmp_path):
    out = tmp_path / "sweep.json"
    result = sweep_sampling.main(["--count", "2", "--setting", "3.0x2", "--setting", "1.0x2",
                                  "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert [r["setting"] for r in written["results"]] == ["3.0x2", "1.0x2"]
    for row in written["results"]:
        assert set(row["accuracy"]) == {"color", "shape", "motion", "speed"}
        assert all(0.0 <= v <= 1.0 for v in row["accuracy"].values())
    assert written["best_on_validation"] in ("3.0x2", "1.0x2")


def test_the_eager_decode_chunk_bench_needs_a_gpu_and_says_so(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_decode_chunks

    monkeypatch.setattr(sys, "argv", ["bench_decode_chunks.py"])
    with pytest.raises(SystemExit, match="times a GPU decode; no CUDA device here"):
        bench_decode_chunks.main()
    sys.modules.pop("bench_decode_chunks", None)


def test_the_fp8_attention_probe_quantizes_per_tensor_within_one_fp8_step(monkeypatch):
    """The probe's own math (its cuDNN part needs a Hopper GPU and the optional package):
    one scale for the whole tensor, the largest value at the top of the FP8 range."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import probe_fp8_attention as probe

    x = torch.randn(2, 16, 4, 8) * 3
    values, descale = probe.per_tensor_fp8(x)
    assert values.dtype == torch.float8_e4m3fn and descale.shape == (1, 1, 1, 1)
    assert values.float().abs().max() == probe.FP8_MAX
    back = values.float() * descale
    assert ((back - x).abs() <= x.abs() / 16 + 2**-9 * descale.item() * probe.FP8_MAX).all()
    stats = probe.error(back, x)
    assert 0 < stats["rel_l2"] < 0.05 and stats["ref_max_abs"] == x.abs().max().item()
    sys.modules.pop("probe_fp8_attention", None)


def test_the_vae_probe_measures_the_same_bound_as_the_first_last_eval(vae_probe, tmp_path):
    """With no training (--vae-seconds 0) the probe's bound is the shipped VAE's whole-clip round
    trip, as `eval_first_last` computes it for the same held-out clip, before and after alike;
    the weights it writes are the shipped VAE's."""
    import torch
    from eval_first_last import clip_round_trip, ground_truth, psnr
    from safetensors.torch import load_file

    from ltx_core.checkpoint import load_checkpoint
    from ltx_core.training import data

    vae_probe.main(["--out", str(tmp_path), "--vae-seconds", "0", "--count", "1", "--from-shipped",
                    "--decoder-only", "--device", "cpu"])
    result = json.loads((tmp_path / "vae_capacity.json").read_text())
    assert result["steps"] == 0 and result["before"]["means"] == result["after"]["means"]
    _, vae, _ = load_checkpoint(vae_probe.DEMO_CHECKPOINT)
    truth = ground_truth(data.heldout_specs(1)[0])
    whole = clip_round_trip(vae.float(), truth, 0.05)
    assert result["after"]["rows"][0]["last_db"] == pytest.approx(psnr(whole[-1], truth[-1]), abs=0.05)
    saved = {k: v for path in sorted(tmp_path.glob("resume.*.safetensors")) for k, v in load_file(path).items()}
    shipped = load_file(str(vae_probe.DEMO_CHECKPOINT))
    assert torch.equal(saved["vae.decoder.conv_out.conv.weight"].bfloat16(),
                       shipped["vae.decoder.conv_out.conv.weight"])


def test_the_vae_probe_refuses_a_decoder_fine_tune_without_an_encoder(vae_probe, tmp_path):
    with pytest.raises(SystemExit, match="--decoder-only keeps a trained encoder"):
        vae_probe.main(["--out", str(tmp_path), "--decoder-only"])


def test_the_candidate_table_reads_the_targets_as_the_demo_eval_does(summarize_candidates, tmp_path):
    """For the shipped model the table's verdicts are eval_demo's own (color, motion, i2v),
    and every committed candidate's row comes from its own evaluation files."""
    result = summarize_candidates.main(["--out", str(tmp_path / "table.json")])
    shipped_eval = json.loads((BENCHMARKS / "results" / "demo_eval.json").read_text())["meets_targets"]
    for key in ("color", "motion", "i2v_first_frame_psnr_db"):
        assert result["shipped"]["meets"][key] == shipped_eval[key]
    folder = BENCHMARKS / "results" / "keyframe_candidates"
    for name, row in result["candidates"].items():
        demo = json.loads((folder / f"{name}_demo.json").read_text())
        assert row["text_to_video_motion"] == demo["text_to_video_accuracy"]["motion"]
        assert row["meets"]["motion"] == demo["meets_targets"]["motion"]


def test_the_first_last_eval_reads_issue_7s_target_with_its_stated_settings(eval_first_last, tmp_path):
    """--keyframe-settings runs both conditioned generations and the VAE bound with no CFG and
    a plain decode, and says so in the results; without it the pipeline's defaults hold."""
    from eval_first_last import clip_round_trip, ground_truth, psnr

    from ltx_core.checkpoint import load_checkpoint
    from ltx_core.pipeline import Request
    from ltx_core.training import data

    result = eval_first_last.main(["--count", "1", "--steps", "2", "--keyframe-settings",
                                   "--out", str(tmp_path / "kf.json")])
    assert json.loads((tmp_path / "kf.json").read_text())["settings"]["decode_timestep"] == 0.0
    assert {k: result["settings"][k] for k in eval_first_last.KEYFRAME_SETTINGS} == eval_first_last.KEYFRAME_SETTINGS
    _, vae, _ = load_checkpoint(eval_first_last.DEMO_CHECKPOINT)
    truth = ground_truth(data.heldout_specs(1)[0])
    plain = psnr(clip_round_trip(vae, truth, 0.0, eval_first_last.seeded(0))[-1], truth[-1])
    # the same weights and the same seeded decoder noise: the same bound
    assert result["rows"][0]["vae_clip_last_db"] == pytest.approx(plain, abs=1e-4)
    default = eval_first_last.main(["--count", "1", "--steps", "2", "--out", str(tmp_path / "d.json")])
    assert default["settings"]["guidance_scale"] == Request.guidance_scale
    assert default["settings"]["decode_timestep"] == Request.decode_timestep
    assert abs(default["rows"][0]["vae_clip_last_db"] - plain) > 0.05


def test_the_motion_screen_reads_eval_demos_prompts_from_start_on(screen_motion, monkeypatch, tmp_path, capsys):
    """screen_motion reads held-out prompts start.. (eval_demo's own, in its order) and
    validation prompts of eval_demo's seen stream, and writes per-model accuracy."""
    import eval_demo

    from ltx_core.training import data

    read_prompts = []
    real = eval_demo.eval_text_to_video

    def recording(models, specs, keep=0):
        read_prompts.append([data.caption(s) for s in specs])
        return real(models, specs, keep)

    monkeypatch.setattr(eval_demo, "eval_text_to_video", recording)
    monkeypatch.setattr(eval_demo, "STEPS", 2)
    checkpoint = eval_demo.DEMO_CHECKPOINT
    result = screen_motion.main([str(checkpoint), "--start", "1", "--count", "2",
                                 "--out", str(tmp_path / "s.json")])
    assert read_prompts[0] == [data.caption(s) for s in data.heldout_specs(3)[1:]]
    seen = eval_demo.single_shape_specs(eval_demo.SEEN_SEED, 3)[1:]
    assert read_prompts[1] == [data.caption(s) for s in seen]
    model = result["models"][checkpoint.stem]
    assert model["heldout"]["count"] == model["validation"]["count"] == 2
    assert set(model["heldout"]["accuracy"]) == set(eval_demo.ATTRIBUTES)
    assert json.loads((tmp_path / "s.json").read_text())["settings"]["start"] == 1
    only = screen_motion.main([str(checkpoint), "--count", "1", "--heldout-only",
                               "--out", str(tmp_path / "h.json")])
    assert "validation" not in only["models"][checkpoint.stem]
    with pytest.raises(SystemExit):
        screen_motion.main([str(checkpoint), "--start", "-1", "--out", str(tmp_path / "x.json")])
    assert "--start -1" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
