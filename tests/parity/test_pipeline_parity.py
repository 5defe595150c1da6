"""Whole runs against diffusers' LTXPipeline (text-to-video) and LTXImageToVideoPipeline
(first frame), fp32 on CPU: tiny diffusers models with seeded random weights, mapped into
ours through `ltx_core.checkpoint.keymaps`, the same prompt embeddings, the same generator seed.

Both draw from one generator in the same order (first-frame posterior, initial noise,
decode noise), so nothing but the seed is shared. If this fails, our sampler, schedule,
conditioning or decode differs from the reference pipelines. diffusers' pipelines place
time coordinates without the causal fix and mix decode noise into the denormalized
latent; our stages take both as parameters (`causal_fix`, `mix_noise_denormalized`).
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, LTXImageToVideoPipeline, LTXPipeline
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
from einops import rearrange
from transformers import T5EncoderModel, T5Tokenizer

from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.pipeline import Models, Request, decode_frames, generate, prepare_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import explicit_sigmas, flow_sigmas

from .conftest import diffusers_transformer, ours_from_diffusers_transformer

pytestmark = pytest.mark.parity

ATOL = 1e-4
WIDTH, HEIGHT, FRAMES, FRAME_RATE, STEPS, SEED = 64, 96, 17, 25, 3, 7
DECODE_TIMESTEP, DECODE_NOISE_SCALE = 0.05, 0.025
SLOW_FRAME_RATE = 2

# Lightricks/LTX-Video scheduler/scheduler_config.json
PUBLISHED_SCHEDULER = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    num_train_timesteps=1000,
    shift=1.0,
    shift_terminal=0.1,
    time_shift_type="exponential",
    use_dynamic_shifting=True,
)


def reference_pipeline(cls, transformer_pair, vae_pair, text_encoder=None, tokenizer=None):
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler(**PUBLISHED_SCHEDULER),
        vae=vae_pair[0],
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer_pair[0],
    )


@pytest.fixture(scope="module")
def image():
    """A first frame, (1, 3, H, W) in [0, 1] as diffusers takes it."""
    return torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5))


def reference_call(pipe, texts, guidance, output_type, frame_rate=FRAME_RATE, **kwargs):
    prompt, negative = texts
    return pipe(
        prompt_embeds=prompt.embeds,
        prompt_attention_mask=prompt.mask,
        negative_prompt_embeds=negative.embeds,
        negative_prompt_attention_mask=negative.mask,
        width=WIDTH,
        height=HEIGHT,
        num_frames=FRAMES,
        frame_rate=frame_rate,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(SEED),
        decode_timestep=DECODE_TIMESTEP,
        decode_noise_scale=DECODE_NOISE_SCALE,
        output_type=output_type,
        return_dict=False,
        **kwargs,
    )[0]


def our_run(transformer_pair, vae_pair, texts, guidance, first_frame=None):
    """Our stages as `generate` composes them; returns (latent tokens, frames)."""
    transformer, vae = transformer_pair[1], vae_pair[1]
    prompt, negative = texts
    generator = torch.Generator().manual_seed(SEED)
    latent = prepare_latent(vae, FRAMES, HEIGHT, WIDTH, first_frame=first_frame, generator=generator)
    sigmas = flow_sigmas(STEPS, latent.num_tokens)
    latent = denoise(
        transformer,
        latent,
        prompt,
        negative if guidance != 1 else None,
        sigmas,
        guidance,
        FRAME_RATE,
        generator,
        causal_fix=False,
    )
    frames = decode_frames(
        vae, latent.samples, DECODE_TIMESTEP, DECODE_NOISE_SCALE, generator, mix_noise_denormalized=True
    )
    return rearrange(latent.samples, "b c f h w -> b (f h w) c"), frames


def assert_frames_match(ours, theirs):
    """ours (B, F, H, W, 3); diffusers' output_type="pt" gives (B, F, 3, H, W)."""
    assert ours.shape == (1, FRAMES, HEIGHT, WIDTH, 3)
    assert (ours - theirs.permute(0, 1, 3, 4, 2)).abs().max() <= ATOL


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["cfg 3", "cfg 1 (no negative pass)"])
@torch.no_grad()
def test_text_to_video_matches_ltx_pipeline(transformer_pair, vae_pair, texts, guidance):
    pipe = reference_pipeline(LTXPipeline, transformer_pair, vae_pair)
    their_latent = reference_call(pipe, texts, guidance, "latent")
    their_frames = reference_call(pipe, texts, guidance, "pt")
    our_latent, our_frames = our_run(transformer_pair, vae_pair, texts, guidance)
    assert their_latent.abs().max() > 0.1, "a vacuous run would match anything"
    assert (our_latent - their_latent).abs().max() <= ATOL
    assert_frames_match(our_frames, their_frames)


@torch.no_grad()
def test_image_to_video_matches_ltx_image_to_video_pipeline(transformer_pair, vae_pair, texts, image):
    """The first latent frame is conditioning (t = 0, never stepped); its posterior sample
    and all noise come from the same generator."""
    pipe = reference_pipeline(LTXImageToVideoPipeline, transformer_pair, vae_pair)
    their_latent = reference_call(pipe, texts, 3.0, "latent", image=image)
    their_frames = reference_call(pipe, texts, 3.0, "pt", image=image)
    first_frame = image[0].permute(1, 2, 0)  # (H, W, 3), the core's image layout
    our_latent, our_frames = our_run(transformer_pair, vae_pair, texts, 3.0, first_frame)
    assert (our_latent - their_latent).abs().max() <= ATOL
    assert_frames_match(our_frames, their_frames)


@pytest.fixture(scope="module")
def t5_pair(tiny_t5_folder):
    reference = (T5EncoderModel.from_pretrained(tiny_t5_folder).eval(), T5Tokenizer.from_pretrained(tiny_t5_folder))
    return reference, load_text_encoder(tiny_t5_folder)


@pytest.mark.parametrize("with_image", [False, True], ids=["text-to-video", "image-to-video"])
@torch.no_grad()
def test_generate_from_prompts_matches_the_diffusers_pipelines(transformer_pair, vae_pair, t5_pair, image, with_image):
    """`generate` itself, T5 included. Decode noise scale 0: `generate` mixes decode noise
    into the normalized latent (Lightricks, ComfyUI), diffusers after denormalizing."""
    (t5, tokenizer), encoder = t5_pair
    cls = LTXImageToVideoPipeline if with_image else LTXPipeline
    pipe = reference_pipeline(cls, transformer_pair, vae_pair, t5, tokenizer)
    settings = dict(
        prompt="a red fox jumps over the lazy dog",
        negative_prompt="blurry",
        width=WIDTH,
        height=HEIGHT,
        num_frames=FRAMES,
        frame_rate=FRAME_RATE,
        guidance_scale=3.0,
        decode_timestep=DECODE_TIMESTEP,
        decode_noise_scale=0.0,
    )
    extra = {"image": image} if with_image else {}
    theirs = pipe(
        **settings,
        **extra,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(SEED),
        output_type="pt",
        return_dict=False,
    )[0]
    first_frame = image[0].permute(1, 2, 0) if with_image else None
    request = Request(**settings, steps=STEPS, seed=SEED, first_frame=first_frame)
    ours = generate(Models(transformer_pair[1], vae_pair[1], encoder), request)
    assert_frames_match(ours[None], theirs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 copy= inside diffusers' scheduler
@torch.no_grad()
def test_causal_time_and_hard_first_frame_match_ltx_condition_pipeline(vae_pair, texts, image):
    """diffusers' LTXConditionPipeline follows Lightricks' pipeline: causal time
    coordinates (`causal_fix=True`), conditioning tokens at min(t, 1 - strength), the
    per-token scheduler step. At strength 1 that is our `sigma * noise_mask` rule.
    It draws the initial noise before encoding the image, so our two stages get
    generators at those two positions; no re-noising, latents only (no decode draws).
    At 2 frames per second the causal shift (7 frames) moves RoPE time enough that
    `causal_fix=False` would miss ATOL by far."""
    cfg = TINY_TRANSFORMER  # causal_temporal_positioning=True, the 0.9.5+ setting
    transformer = diffusers_transformer(cfg)
    pipe = LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
        vae=vae_pair[0],
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )
    condition = LTXVideoCondition(image=image, frame_index=0, strength=1.0)
    theirs = reference_call(
        pipe, texts, 3.0, "latent", frame_rate=SLOW_FRAME_RATE, conditions=[condition], image_cond_noise_scale=0.0
    )
    assert theirs.shape == (1, 128, (FRAMES - 1) // 8 + 1, HEIGHT // 32, WIDTH // 32)
    sigmas = explicit_sigmas(pipe.scheduler.sigmas.tolist())  # Lightricks' linear-quadratic schedule

    latent_shape = (1, 128, (FRAMES - 1) // 8 + 1, HEIGHT // 32, WIDTH // 32)
    after_noise = torch.Generator().manual_seed(SEED)
    torch.randn(latent_shape, generator=after_noise)  # where diffusers encodes the image
    latent = prepare_latent(vae_pair[1], FRAMES, HEIGHT, WIDTH, image[0].permute(1, 2, 0), 1.0, after_noise)
    prompt, negative = texts
    ours = denoise(
        ours_from_diffusers_transformer(transformer, cfg),
        latent,
        prompt,
        negative,
        sigmas,
        3.0,
        SLOW_FRAME_RATE,
        torch.Generator().manual_seed(SEED),
    )
    assert theirs.abs().max() > 0.1
    assert (ours.samples - theirs).abs().max() <= ATOL  # this pipeline returns (B, C, f, h, w)
