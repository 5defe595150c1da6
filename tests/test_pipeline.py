"""Request validation (every bad setting gets a message with what is allowed), the
stages, and whole tiny runs: seeded, guided, conditioned, interruptible."""

import copy
import math
from dataclasses import replace

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from ltx_core.errors import LTXVError, SettingsError
from ltx_core.models.text_encoder import TextEncoder, load_text_encoder
from ltx_core.pipeline import (
    Models,
    Request,
    check_fp8_device,
    decode_frames,
    encode_first_frame,
    encode_text,
    generate,
    optimize_models,
)
from ltx_core.sampling.conditioning import ConditioningItem
from ltx_core.sampling.latent_ops import latent_preview
from ltx_core.sampling.scheduler import denoise_sigmas, flow_sigmas
from ltx_core.speed.optimize import Speed
from tests.conftest import TINY_T5

# Time-chunked decode computes each frame from the inputs of the whole decode; only the
# convolution algorithm picked per input size may round differently (as test_vae).
CHUNK_ATOL = 1e-5
# Dynamo's traced graph runs the same ops as the eager model ('eager' backend).
COMPILE_ATOL = 1e-6
SMALL = dict(prompt="a red fox jumps over the lazy dog", width=64, height=32, num_frames=9, steps=2)


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


def count_forwards(module):
    """Batch size of every forward of `module`, and a handle to stop counting."""
    batches = []
    handle = module.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    return batches, handle


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 500}, "width 500 is not a positive multiple of 32; nearest valid: 480 or 512"),
        ({"height": 100}, "height 100 is not a positive multiple of 32; nearest valid: 96 or 128"),
        ({"height": 0}, "height 0 is not a positive multiple of 32; nearest valid: 32"),
        ({"num_frames": 24}, r"num_frames 24 is not 8k \+ 1 .*nearest valid: 17 or 25"),
        ({"num_frames": 100}, r"num_frames 100 is not 8k \+ 1 .*nearest valid: 97 or 105"),
        ({"num_frames": 0}, r"num_frames 0 is not 8k \+ 1 .*nearest valid: 1"),
        ({"num_frames": -9}, r"num_frames -9 is not 8k \+ 1"),
        ({"steps": 0}, "steps 0 must be a whole number of at least 1"),
        ({"steps": -4}, "steps -4 must be a whole number of at least 1"),
        ({"guidance_scale": -1.0}, "guidance_scale -1.0 is not allowed; allowed: a finite number >= 0"),
        ({"guidance_scale": math.nan}, "guidance_scale nan is not allowed"),
        ({"guidance_scale": math.inf}, "guidance_scale inf is not allowed"),
        ({"frame_rate": 0}, "frame_rate 0 is not allowed; allowed: frames per second above 0"),
        ({"frame_rate": -24.0}, "frame_rate -24.0 is not allowed"),
        ({"seed": -1}, r"seed -1 is outside the accepted range 0 to 18446744073709551615 \(2\*\*64 - 1\)"),
        ({"seed": 2**64}, "seed 18446744073709551616 is outside the accepted range"),
        ({"decode_timestep": 1.5}, r"decode_timestep 1.5 is outside \[0, 1\]"),
        ({"decode_timestep": -0.1}, r"decode_timestep -0.1 is outside \[0, 1\]"),
        ({"decode_noise_scale": -0.01}, r"decode_noise_scale -0.01 is outside \[0, 1\]"),
        ({"conditioning_strength": 1.5}, r"strength 1.5 is outside \[0, 1\]"),
        ({"conditioning_strength": -0.5}, r"strength -0.5 is outside \[0, 1\]"),
        ({"image_cond_noise_scale": -1.0}, "image_cond_noise_scale -1.0 is not allowed"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "  \n "}, "prompt is empty"),
        ({"first_frame": torch.zeros(3, 32, 64)}, r"first_frame \(3, 32, 64\) is not an image"),
        ({"sigmas": (0.5, 0.7)}, "strictly decreasing"),
        ({"max_tokens": 0}, "max_tokens 0 must be a whole number of at least 1"),
        ({"decode_time_chunk": 0}, r"decode_time_chunk 0 is not allowed; allowed: a whole number of frames >= 1"),
        ({"decode_time_chunk": -3}, "decode_time_chunk -3 is not allowed"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(**{**SMALL, **change})


def test_good_settings_pass_and_the_negative_prompt_may_be_empty():
    Request(**SMALL, negative_prompt="", seed=2**64 - 1, guidance_scale=0.0, first_frame=torch.rand(10, 20, 3))


def test_a_prompt_over_the_token_limit_is_cut_with_a_warning_not_an_error(models):
    with pytest.warns(UserWarning, match="tokens past the limit of 4 were cut"):
        text, _ = encode_text(models.text_encoder, SMALL["prompt"], None, max_tokens=4)
    assert text.embeds.shape[1] == 4


def test_the_same_request_gives_the_same_frames_and_another_seed_others(models):
    request = Request(**SMALL, seed=3)
    frames = generate(models, request)
    assert frames.shape == (9, 32, 64, 3) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    assert torch.equal(frames, generate(models, request))
    assert not torch.equal(frames, generate(models, Request(**SMALL, seed=4)))


def test_a_one_shot_run_gives_the_same_frames_and_frees_the_text_encoder_and_transformer(models):
    """The command line's one video: the text encoder and the transformer leave the device
    once done, so the decode holds only the VAE; the frames are those of a run that keeps them."""
    request = Request(**SMALL, seed=3)
    kept = generate(models, request)
    once = replace(copy.deepcopy(models), one_shot=True)
    stages = []

    def transformer_gone_by_decode(name):
        if name == "denoise":
            stages.append({p.device.type for p in once.transformer.parameters()})

    assert torch.equal(generate(once, request, on_stage=transformer_gone_by_decode), kept)
    assert stages == [{"meta"}]
    assert {p.device.type for p in once.text_encoder.model.parameters()} == {"meta"}
    assert {p.device.type for p in once.vae.parameters()} == {"cpu"}
    assert {p.device.type for p in models.transformer.parameters()} == {"cpu"}  # the models kept for reuse


def test_explicit_sigmas_replace_steps(models):
    batches, handle = count_forwards(models.transformer)
    try:
        generate(models, Request(**{**SMALL, "steps": 0}, sigmas=(1.0, 0.7, 0.3), guidance_scale=1.0))
    finally:
        handle.remove()
    assert batches == [1, 1, 1]


def test_the_models_scheduler_and_the_skipped_steps_give_the_sigmas(models, monkeypatch):
    """`Models.scheduler` (the checkpoint's) is the schedule `steps` become, at the run's
    token count, less the skipped steps (Lightricks' `retrieve_timesteps`)."""
    from dataclasses import replace

    from ltx_core import pipeline
    from ltx_core.models.configs import SchedulerConfig
    from ltx_core.sampling.scheduler import skip_steps

    seen = []
    real_denoise = pipeline.denoise
    monkeypatch.setattr(pipeline, "denoise", lambda *a, **k: (seen.append(a[4]), real_denoise(*a, **k))[1])
    quadratic = replace(models, scheduler=SchedulerConfig(sampler="linear-quadratic"))
    plain = generate(models, Request(**{**SMALL, "steps": 4}, skip_final_steps=1))
    generate(quadratic, Request(**{**SMALL, "steps": 4}, skip_final_steps=1))
    tokens = 2 * 1 * 2  # 9 frames of 32x64
    assert torch.equal(seen[0], skip_steps(flow_sigmas(4, tokens), 0, 1))
    assert torch.equal(seen[1], skip_steps(flow_sigmas(4, tokens, quadratic.scheduler), 0, 1))
    assert not torch.equal(seen[0], seen[1]) and plain.shape == (9, 32, 64, 3)


def test_stochastic_sampling_is_seeded_and_changes_the_video(models):
    stochastic = Request(**SMALL, seed=3, stochastic_sampling=True)
    frames = generate(models, stochastic)
    assert torch.equal(frames, generate(models, stochastic))
    assert (frames - generate(models, Request(**SMALL, seed=3))).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(skip_initial_steps=1), "skip_initial_steps 1 needs a source_video to start from"),
        (dict(skip_final_steps=2), "skipping 0 initial and 2 final steps of 2 leaves none"),
        (dict(skip_final_steps=-1), "skip_final_inference_steps -1 must be a whole number >= 0"),
        (dict(skip_final_steps=1, sigmas=(1.0, 0.5)), "cut the scheduler's steps, not a schedule of one's own"),
        (dict(stochastic_sampling=1), "stochastic_sampling 1 must be True or False"),
    ],
)
def test_skipped_steps_and_stochastic_sampling_are_checked(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(**SMALL, **change)


@pytest.mark.parametrize(("guidance", "batch"), [(3.0, 2), (1.0, 1)])
def test_guidance_batches_cond_and_uncond_and_scale_one_skips_the_negative(models, guidance, batch):
    batches, handle = count_forwards(models.transformer)
    try:
        generate(models, Request(**SMALL, guidance_scale=guidance))
    finally:
        handle.remove()
    assert batches == [batch] * SMALL["steps"]


def test_the_callback_sees_latents_and_an_exception_in_it_stops_within_one_step(models):
    seen = []

    def interrupt(step, total, x, denoised):
        seen.append((step, total, tuple(x.shape), tuple(denoised.shape)))
        raise KeyboardInterrupt

    batches, handle = count_forwards(models.transformer)
    try:
        with pytest.raises(KeyboardInterrupt):
            generate(models, Request(**{**SMALL, "steps": 5}), callback=interrupt)
    finally:
        handle.remove()
    assert seen == [(0, 5, (1, 128, 2, 1, 2), (1, 128, 2, 1, 2))]
    assert len(batches) == 1


def test_decode_frames_is_seeded_and_in_the_users_layout(models):
    latent = torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(1))
    frames = decode_frames(models.vae, latent, 0.05, 0.025, torch.Generator().manual_seed(5))
    assert frames.shape == (1, 9, 32, 64, 3) and frames.min() >= 0 and frames.max() <= 1
    assert torch.equal(frames, decode_frames(models.vae, latent, 0.05, 0.025, torch.Generator().manual_seed(5)))


def test_latent_preview_is_a_small_rgb_image_in_0_1():
    preview = latent_preview(torch.randn(2, 128, 3, 4, 6))
    assert preview.shape == (4, 6, 3) and preview.min() >= 0 and preview.max() <= 1
    assert preview.std() > 0


def test_an_image_batch_without_frames_is_refused_by_the_first_frame_encode(models):
    with pytest.raises(SettingsError, match=r"first_frame \(0, 32, 64, 3\) is not an image"):
        encode_first_frame(models.vae, torch.zeros(0, 32, 64, 3), 64, 32)


def test_a_first_frame_of_another_size_is_fitted_with_a_warning(models):
    with pytest.warns(UserWarning, match="image of 50x40 was center-cropped to the aspect of 64x32 and resized"):
        latent = encode_first_frame(models.vae, torch.rand(2, 40, 50, 3), 64, 32)
    assert latent.shape == (1, 128, 1, 1, 2)


def test_a_text_encoder_of_the_wrong_width_is_refused_before_anything_runs(models):
    """BAD_INPUTS 15: a T5 whose width the transformer's caption projection does not take."""
    narrow = T5EncoderModel(T5Config(vocab_size=160, **{**TINY_T5, "d_model": 24})).eval()
    wrong = Models(models.transformer, models.vae, TextEncoder(models.text_encoder.tokenizer, narrow))
    batches, handle = count_forwards(models.transformer)
    try:
        with pytest.raises(SettingsError, match="text embeddings are 24 wide .* takes 32"):
            generate(wrong, Request(**SMALL))
    finally:
        handle.remove()
    assert batches == []


# ---------------------------------------------------------------- any-frame conditioning, video-to-video


def clip(count: int, seed: int = 3, height: int = 32, width: int = 64) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"conditions": (ConditioningItem(clip(1), 9),)},
            r"conditioning frame index 9 with 1 frame\(s\) reaches past the clip of 9 frames; allowed: 0 to 8",
        ),
        (
            {"conditions": (ConditioningItem(clip(1, height=64), 8),)},
            r"conditioning item of 64x64 pixels is not the video's 64x32; resize it first",
        ),
        (
            {"num_frames": 17, "conditions": (ConditioningItem(clip(9), 4),)},
            r"conditioning clip at frame 4 does not start a latent frame",
        ),
        ({"conditions": (clip(1),)}, r"conditions holds a Tensor; allowed: ConditioningItem"),
        ({"source_video": clip(1)}, r"source_video of shape \(1, 32, 64, 3\) is not the video's \(9, 32, 64, 3\)"),
        ({"source_video": clip(9), "denoise_strength": 0.0}, r"denoise_strength 0.0 is outside \(0, 1\]"),
        ({"denoise_strength": 0.5}, r"denoise_strength 0.5 needs a source_video"),
        ({"strength_rule": "comfy"}, r"strength_rule 'comfy' is not known; allowed: scaled, held"),
    ],
)
def test_bad_conditioning_settings_are_refused_with_what_is_allowed(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(**{**SMALL, **change})


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (lambda: clip(4), r"conditioning clip frame count 4 is not 8k \+ 1"),
        (lambda: torch.rand(32, 64), r"conditioning item \(32, 64\) is not an image or a clip"),
    ],
)
def test_a_conditioning_clip_that_is_not_8k_plus_1_frames_is_refused(frames, message):
    with pytest.raises(SettingsError, match=message):
        ConditioningItem(frames(), 0)


def test_a_denoise_strength_keeping_no_step_is_refused():
    with pytest.raises(SettingsError, match=r"denoise_strength 0.1 keeps no step of 2; allowed: at least 0.5"):
        denoise_sigmas(flow_sigmas(2, 4), 0.1)


def test_first_and_last_frame_conditioning_runs_and_changes_the_video(models):
    """The last frame is keyframe tokens (9 pixel frames: latent frame 1 starts at 1, not
    8); its tokens are dropped before decoding, so the frames have the asked size."""
    plain = generate(models, Request(**SMALL))
    items = (ConditioningItem(clip(1, 1), 0), ConditioningItem(clip(1, 2), 8))
    batches, handle = count_forwards(models.transformer)
    try:
        conditioned = generate(models, Request(**SMALL, conditions=items))
    finally:
        handle.remove()
    assert conditioned.shape == plain.shape == (9, 32, 64, 3)
    assert (conditioned - plain).abs().max() > 1e-3
    assert batches == [2, 2]


def test_video_to_video_runs_the_kept_steps_from_the_noised_source(models):
    """Denoise strength 0.5 of 2 steps: one forward (a CFG pair); strength 1 ignores the
    source (pure noise), as diffusers' LTXConditionPipeline does; the source's posterior
    mean is used, so nothing else changes."""
    source = clip(9, 7)
    batches, handle = count_forwards(models.transformer)
    try:
        half = generate(models, Request(**SMALL, source_video=source, denoise_strength=0.5))
    finally:
        handle.remove()
    assert batches == [2]
    full = generate(models, Request(**SMALL, source_video=source))
    plain = generate(models, Request(**SMALL))
    assert (half - full).abs().max() > 1e-3
    assert half.shape == (9, 32, 64, 3)
    assert torch.equal(full, plain), "at strength 1 the source is pure noise: text-to-video"


def test_a_conditioning_clip_longer_than_the_video_is_refused():
    with pytest.raises(SettingsError, match=r"allowed: none, the item has more frames \(17\) than the video"):
        Request(**{**SMALL, "conditions": (ConditioningItem(clip(17), 0),)})


# ---------------------------------------------------------------- speed levers (issue 6)


def test_decode_frames_in_time_chunks_gives_the_frames_of_the_whole_decode(models):
    latent = torch.randn(1, 128, 5, 1, 2, generator=torch.Generator().manual_seed(1))
    whole = decode_frames(models.vae, latent, 0.05, 0.025, torch.Generator().manual_seed(5))
    for time_chunk in (1, 2):
        chunked = decode_frames(
            models.vae, latent, 0.05, 0.025, torch.Generator().manual_seed(5), time_chunk=time_chunk
        )
        assert chunked.shape == whole.shape == (1, 33, 32, 64, 3)
        assert (chunked - whole).abs().max() <= CHUNK_ATOL


def test_a_request_decoded_in_chunks_gives_the_frames_of_the_whole_decode(models):
    request = dict(SMALL, num_frames=25, steps=1)
    whole = generate(models, Request(**request))
    chunked = generate(models, Request(**request, decode_time_chunk=2))
    assert chunked.shape == whole.shape == (25, 32, 64, 3)
    assert (chunked - whole).abs().max() <= CHUNK_ATOL


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_decode_frames_refuses_a_chunk_that_is_not_a_whole_number_of_frames(models, value):
    latent = torch.zeros(1, 128, 2, 1, 2)
    with pytest.raises(SettingsError, match=rf"time_chunk {value!r} is not allowed; allowed: a whole number"):
        decode_frames(models.vae, latent, time_chunk=value)


def test_fp8_on_the_cpu_is_refused_with_what_it_needs(models):
    with pytest.raises(
        SettingsError,
        match=r"fp8 needs a CUDA GPU with FP8 tensor cores \(compute capability 8\.9 "
        r"or newer.*the models are on cpu",
    ):
        optimize_models(Models(copy.deepcopy(models.transformer), models.vae, models.text_encoder), Speed(fp8=True))


def test_no_lever_asked_leaves_the_models_as_they_are(models):
    assert optimize_models(models, Speed()) is models


@pytest.mark.parametrize("stg", [{}, {"stg_scale": 1.0, "stg_blocks": (1,)}])
def test_a_compiled_transformer_gives_the_frames_of_the_eager_one(models, stg):
    """Regional compile traced by Dynamo ('eager' backend: no C++ compiler needed on CPU);
    STG's perturbed batch runs the compiled model directly."""
    fast = optimize_models(
        Models(copy.deepcopy(models.transformer), models.vae, models.text_encoder),
        Speed(compile=True, compile_backend="eager"),
    )
    assert fast.runner.levers["compile"] and not fast.runner.levers["cuda_graphs"]
    request = Request(**SMALL, **stg)
    assert (generate(fast, request) - generate(models, request)).abs().max() <= COMPILE_ATOL
    with pytest.raises(SettingsError, match="already optimized; load the models again"):
        optimize_models(fast, Speed(compile=True))


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused_naming_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(
        SettingsError,
        match=r"fp8 needs .*; cuda:0 \(NVIDIA A100-SXM4-80GB\) has compute capability "
        r"8\.0\. Leave fp8 off, or use compile alone",
    ):
        check_fp8_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    check_fp8_device("cuda:0")  # Hopper: accepted


# ---------------------------------------------------------------- numbers that go wrong


def test_a_latent_that_turns_nan_stops_generate_at_the_step_that_broke(models, monkeypatch):
    forwards = []

    def broken(*args, **kwargs):
        forwards.append(1)
        out = real(*args, **kwargs)
        return out * float("nan") if len(forwards) == 2 else out

    real = models.transformer.forward
    monkeypatch.setattr(models.transformer, "forward", broken)
    seen = []
    request = Request("a fox", width=32, height=32, num_frames=9, steps=4, guidance_scale=1.0)
    with pytest.raises(
        LTXVError,
        match=r"^the latent after sampling step 2 of 4 holds NaN or infinite values, so "
        r"sampling stopped and no video is made: .* run it in bf16 or fp32",
    ):
        generate(models, request, callback=lambda step, *a: seen.append(step))
    assert seen == [0] and len(forwards) == 2


def test_a_decode_that_turns_non_finite_is_refused(models, monkeypatch):
    real = models.vae.decode
    monkeypatch.setattr(
        models.vae, "decode", lambda *a, **k: real(*a, **k).index_fill(2, torch.tensor([1]), float("inf"))
    )
    latent = torch.randn(1, 128, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(LTXVError, match="^the decoded video holds NaN or infinite values, so decoding stopped"):
        decode_frames(models.vae, latent, generator=torch.Generator().manual_seed(1))
