"""Bad inputs of /work/shared/BAD_INPUTS.md that no other test file pinned (the table
of which test covers which item is docs/BAD_INPUTS_COVERAGE.md): a 16-channel latent
into the sampler, a 4-channel one into the decoder (items 26), inputs made on another
device or in another dtype than the model's (item 30), and items 31 to 34 from the
command line: damaged weights, sizes beyond the device, unreadable prompt words, part
files of killed runs, and how fast flag and file errors are answered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import cli, memory_plan as planner
from ltx_core.errors import SettingsError
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.pipeline import decode_frames
from ltx_core.sampling.conditioning import ConditionedLatent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import flow_sigmas

from .fixtures_checkpoints import header_of, write_official_single_file

CAPTION_WIDTH = 32  # the tiny transformer's caption projection (tests/conftest.py)


def tiny_text(generator: torch.Generator) -> TextEmbeddings:
    """Embeddings that fp16 holds exactly, so a half-precision copy carries the same numbers."""
    embeds = torch.randn(1, 4, CAPTION_WIDTH, generator=generator).half().float()
    return TextEmbeddings(embeds, torch.ones(1, 4, dtype=torch.bool))


def test_a_16_channel_latent_of_another_model_is_refused_by_the_sampler(tiny_transformer):
    text = tiny_text(torch.Generator().manual_seed(0))
    latent = ConditionedLatent(torch.zeros(1, 16, 2, 1, 2))
    with pytest.raises(SettingsError, match="latent has 16 channels; this LTX-Video transformer takes 128"):
        denoise(tiny_transformer, latent, text, None, flow_sigmas(2, 4), 1.0, 25.0, torch.Generator())


def test_a_4_channel_latent_of_an_image_model_is_refused_by_the_decoder(tiny_vae):
    with pytest.raises(SettingsError, match=r"latent of shape \(1, 4, 2, 1, 1\) is not an LTX-Video latent"):
        decode_frames(tiny_vae, torch.zeros(1, 4, 2, 1, 1), generator=torch.Generator())


def test_inputs_made_elsewhere_are_moved_to_the_models_device_and_dtype(tiny_transformer, tiny_vae):
    """Item 30 is not an error: `denoise` and `decode_frames` put the latent (keyframes
    included) and the text on the model's device and dtype with one `.to(device=, dtype=)`
    each. The CPU test machine has no second device, so inputs in another dtype (a
    float64 latent, fp16 text, as another node or device may hand them) go through the
    same calls; the numbers must be those of inputs made in the model's own dtype."""
    text = tiny_text(torch.Generator().manual_seed(0))
    half_text = TextEmbeddings(text.embeds.half(), text.mask)
    samples = torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(1))
    run = lambda latent, t: denoise(
        tiny_transformer,
        ConditionedLatent(latent),
        t,
        t,
        flow_sigmas(2, 4),
        3.0,
        25.0,
        torch.Generator().manual_seed(2),
        device=torch.device("cpu"),
    )
    own = run(samples, text)
    elsewhere = run(samples.double(), half_text)
    assert elsewhere.samples.dtype == torch.float32 and elsewhere.samples.device == own.samples.device
    assert torch.equal(elsewhere.samples, own.samples)

    decode = lambda latent: decode_frames(tiny_vae, latent, generator=torch.Generator().manual_seed(3))
    assert torch.equal(decode(own.samples.double()), decode(own.samples))


# ---------------------------------------------------------------- 31-34: refused before computing
#
# Found when tried as a new user would, on the command line: a damaged checkpoint, a size
# far beyond the device, words the tokenizer cannot read, a part file a killed run left.
# Each run names the problem and leaves no file.

SMALL = ["--width", "32", "--height", "32", "--frames", "9", "--steps", "2"]
REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "av", "numpy")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    """A random 0.9.1-layout single file whose caption width (32) matches the tiny T5."""
    return write_official_single_file(tmp_path_factory.mktemp("bad") / "tiny.safetensors", "0.9.1")


def damaged(source: Path, target: Path, key: str, value: float) -> Path:
    """`source` with one element of tensor `key` set to `value`, metadata kept."""
    tensors, metadata = header_of(source)
    tensor = tensors[key].clone()
    tensor.view(-1)[3] = value
    save_file({**tensors, key: tensor}, str(target), metadata=metadata)
    return target


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["generate", "--prompt", "a red fox", *args])
    return code, capsys.readouterr().err


def one_line(stderr: str) -> str:
    """The run's one error line (a plan line may come before it), no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize(
    ("key", "value", "counted"),
    [
        ("model.diffusion_model.transformer_blocks.1.ff.net.2.weight", float("nan"), "1 NaN and 0 infinite"),
        ("vae.decoder.up_blocks.0.res_blocks.0.conv1.conv.weight", float("inf"), "0 NaN and 1 infinite"),
    ],
)
def test_31_a_checkpoint_with_nan_or_inf_is_refused_before_sampling_naming_the_tensor(
    capsys, tmp_path, monkeypatch, tiny_file, tiny_t5_folder, key, value, counted
):
    monkeypatch.setattr(cli, "generate", lambda *a, **k: pytest.fail("sampling started"))
    checkpoint = damaged(tiny_file, tmp_path / "damaged.safetensors", key, value)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_cli(
        capsys,
        "--checkpoint",
        str(checkpoint),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(out / "o.mp4"),
        *SMALL,
    )
    assert code == 2
    assert f"{key} ({counted} of " in one_line(err) and "hold NaN or infinite values" in err
    assert "the file is damaged" in err
    assert list(out.iterdir()) == []


def test_31_a_latent_that_turns_nan_while_sampling_stops_the_run_with_no_file(
    capsys, tmp_path, monkeypatch, tiny_file, tiny_t5_folder
):
    from ltx_core.models.transformer import LTXVTransformer

    real = LTXVTransformer.forward
    monkeypatch.setattr(LTXVTransformer, "forward", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
    code, err = run_cli(
        capsys,
        "--checkpoint",
        str(tiny_file),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(tmp_path / "o.mp4"),
        *SMALL,
    )
    assert code == 2
    assert "the latent after sampling step 1 of 2 holds NaN or infinite values, so sampling stopped" in err
    assert "no video is made" in err and not (tmp_path / "o.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_31_a_decode_that_turns_infinite_stops_the_run_with_no_file(
    capsys, tmp_path, monkeypatch, tiny_file, tiny_t5_folder
):
    from ltx_core.models.vae import CausalVideoVAE

    real = CausalVideoVAE.decode
    monkeypatch.setattr(CausalVideoVAE, "decode", lambda self, *a, **k: real(self, *a, **k) / 0.0)
    code, err = run_cli(
        capsys,
        "--checkpoint",
        str(tiny_file),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(tmp_path / "o.mp4"),
        *SMALL,
    )
    assert code == 2 and "the decoded video holds NaN or infinite values, so decoding stopped" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("width", "height", "frames"), [(8192, 8192, 257), (4096, 4096, 121), (2048, 2048, 257)])
def test_32_a_size_far_beyond_the_memory_is_refused_before_loading_with_what_fits(
    capsys, tmp_path, monkeypatch, width, height, frames
):
    """The shipped model on a CPU with 16 GiB free: the first two once ended in an
    OverflowError after a minute and in 'sigmas [nan, ...]', the third ran for hours."""
    monkeypatch.setattr(planner, "available_memory", lambda device: 16 * planner.GIB)
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    started = time.perf_counter()
    code, err = run_cli(
        capsys,
        "--device",
        "cpu",
        "--width",
        str(width),
        "--height",
        str(height),
        "--frames",
        str(frames),
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 2 and time.perf_counter() - started < 10
    assert f"error: {width}x{height}, {frames} frames in fp32 on cpu needs about " in one_line(err)
    assert "at its peak (decode; by stage: load" in err and "but 16.0 GiB is available on cpu" in err
    fits = err.split("Nearest settings that fit: ")[1]
    assert "--width " in fits and "(the largest size at this aspect)" in fits and "(the most that fit)" in fits
    assert err.strip().endswith("Pass --ignore-memory-check to run anyway.")
    assert list(tmp_path.iterdir()) == []


def test_32_the_suggested_size_runs_within_the_memory(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "available_memory", lambda device: 16 * planner.GIB)
    monkeypatch.setattr(cli, "load_models", lambda *a: pytest.fail("a model was loaded"))
    _, err = run_cli(
        capsys,
        "--device",
        "cpu",
        "--width",
        "8192",
        "--height",
        "8192",
        "--frames",
        "257",
        "--output",
        str(tmp_path / "o.mp4"),
    )
    width, height = (
        int(v) for v in err.split("Nearest settings that fit: --width ")[1].split(" (")[0].split(" --height ")
    )
    sentinel = SettingsError("stopped after the plan")
    monkeypatch.setattr(cli, "load_models", lambda *a: (_ for _ in ()).throw(sentinel))
    code, err = run_cli(
        capsys,
        "--device",
        "cpu",
        "--width",
        str(width),
        "--height",
        str(height),
        "--frames",
        "257",
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 2 and "stopped after the plan" in err and f"plan: {width}x{height}, 257 frames" in err


def test_32_the_estimate_comes_first_and_the_check_can_be_overridden(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "available_memory", lambda device: 16 * planner.GIB)
    monkeypatch.setattr(cli, "load_models", lambda *a: (_ for _ in ()).throw(SettingsError("stopped before loading")))
    code, err = run_cli(
        capsys,
        "--device",
        "cpu",
        "--width",
        "2048",
        "--height",
        "2048",
        "--frames",
        "257",
        "--ignore-memory-check",
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 2 and "stopped before loading" in err
    plan = next(line for line in err.splitlines() if line.startswith("plan: "))
    assert plan.startswith("plan: 2048x2048, 257 frames in fp32 on cpu needs about ")
    assert any(word in plan for word in ("hours", "days"))
    assert plan.endswith("16.0 GiB available; more than available, run as asked")


def test_33_words_the_tokenizer_cannot_read_are_named_in_a_warning(capsys, tmp_path):
    code, err = run_cli(
        capsys,
        "--prompt",
        "a red ball 猫が走る قطة تجري 🐱 rolls",
        "--width",
        "32",
        "--height",
        "32",
        "--frames",
        "9",
        "--steps",
        "1",
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert code == 0, err
    assert (
        "warning: prompt 0: the text encoder's tokenizer cannot read '猫が走る', 'قطة', 'تجري', '🐱'; they reach "
        "the model as its unknown token and do not steer the video"
    ) in err


def test_33_the_function_a_node_can_log_with_names_only_the_unreadable_words():
    from ltx_core.models.text_encoder import load_tokenizer, unreadable_words
    from ltx_core.preflight import shipped_model_paths

    tokenizer = load_tokenizer(shipped_model_paths()[1])
    assert unreadable_words(tokenizer, "a red ball rolls") == []
    assert unreadable_words(tokenizer, "a ball 🐱 and 🐱, café") == ["🐱", "🐱,", "café"]


def test_34_a_stale_part_file_of_the_output_is_cleaned_by_the_next_run(capsys, tmp_path, tiny_file, tiny_t5_folder):
    stale, other = tmp_path / ".o.0123abcd.part", tmp_path / ".other.0123abcd.part"
    for part in (stale, other):
        part.write_bytes(b"half a video")
        os.utime(part, (time.time() - 3600,) * 2)
    code, err = run_cli(
        capsys,
        "--checkpoint",
        str(tiny_file),
        "--text-encoder",
        str(tiny_t5_folder),
        "--output",
        str(tmp_path / "o.mp4"),
        *SMALL,
    )
    assert code == 0, err
    assert f"warning: removed {str(stale)!r}, a partial file an interrupted run left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.0123abcd.part", "o.mp4"]


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("generate", "--help"),
        ("generate", "--prompt", "x", "--width", "500"),
        ("generate", "--prompt", "x", "--frames", "24"),
        ("generate", "--prompt", "x", "--checkpoint", "missing.safetensors"),
        ("generate", "--prompt", "x", "--output", "no/such/folder/o.mp4"),
        ("generate", "--prompt", "x", "--dtype", "int8"),
        ("generate", "--prompt", "x", "--image", "missing.png"),
        ("generate", "--prompt", "x", "--fp8", "--device", "cpu"),
    ],
)
def test_flag_and_file_errors_are_answered_without_importing_torch(tmp_path, args):
    """What makes them answer in well under a second (benchmarks/results/cli_startup.json)."""
    code = (
        "import sys\nfrom ltx_core import cli\ntry:\n    code = cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    code = e.code\nheavy = sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[0].split(',')))\n"
        "print(code, heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code.replace("sys.argv[0]", repr(",".join(HEAVY))), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip().splitlines()[-1] in ("0 []", "2 []"), (done.stdout, done.stderr)
    assert list(tmp_path.iterdir()) == []
