"""Long videos in temporal windows (`ltx_core.long_video`): the windows and their overlap
(checked against diffusers' own arithmetic), bad settings refused with what is allowed,
prompts per window, the seams' joining, and runs on the tiny transformer that give a
latent of the whole clip while the transformer never sees more than a window."""

import pytest
import torch
from diffusers.pipelines.ltx.pipeline_ltx_i2v_long_multi_prompt import split_into_temporal_windows

from ltx_core.errors import SettingsError
from ltx_core.long_video import (
    ClipKeyframe,
    FirstFrame,
    PromptSegment,
    fuse_window,
    generate_long_latent,
    join_window,
    temporal_windows,
    window_texts,
)
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.sampling.guidance import Guidance

SIGMAS = torch.tensor([1.0, 0.5, 0.0])
HEIGHT, WIDTH = 1, 2  # latent rows and columns


def embeddings(seed: int) -> TextEmbeddings:
    g = torch.Generator().manual_seed(seed)
    return TextEmbeddings(torch.randn(1, 6, 32, generator=g), torch.tensor([[1] * 4 + [0] * 2]).bool())


@pytest.mark.parametrize(
    "frames, window, overlap, expected",
    [
        (8, 4, 2, [(0, 4), (2, 6), (4, 8)]),
        (7, 4, 2, [(0, 4), (2, 6), (4, 7)]),  # the last window is shorter
        (10, 10, 3, [(0, 10)]),
        (5, 2, 1, [(0, 2), (1, 3), (2, 4), (3, 5)]),
        (21, 10, 3, [(0, 10), (7, 17), (14, 21)]),  # diffusers' defaults: 161 frames, tiles 80, overlap 24
        (12, 5, 4, [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 11), (7, 12)]),
    ],
)
def test_windows_table(frames, window, overlap, expected):
    assert temporal_windows(frames, window, overlap) == expected


def test_windows_are_diffusers_windows_for_every_allowed_setting():
    for frames in range(2, 26):
        for window in range(2, frames + 1):
            for overlap in range(1, window):
                expected = split_into_temporal_windows(frames, window, overlap, 8)
                assert temporal_windows(frames, window, overlap) == expected, (frames, window, overlap)


@pytest.mark.parametrize(
    "frames, window, overlap, message",
    [
        (8, 4, 4, r"window overlap 4 is not allowed for a window of 4 latent frames; allowed: 1 to 3"),
        (8, 4, 5, r"window overlap 5 .* allowed: 1 to 3"),
        (8, 4, 0, r"window overlap 0 .* allowed: 1 to 3"),
        (8, 4, 1.5, r"window overlap 1.5 .* allowed: 1 to 3"),
        (8, 9, 2, r"window size 9 is longer than the clip of 8 latent frames; allowed: 2 to 8"),
        (8, 0, 0, r"window size 0 is not allowed; allowed: a whole number of latent frames >= 1"),
        (0, 4, 2, r"latent frame count 0 is not allowed"),
        (8, True, 0, r"window size True is not allowed"),
    ],
)
def test_bad_windows_are_refused_with_what_is_allowed(frames, window, overlap, message):
    with pytest.raises(SettingsError, match=message):
        temporal_windows(frames, window, overlap)


def test_prompt_segments_give_one_prompt_per_window_filling_gaps_as_the_reference():
    a, b, c = embeddings(1), embeddings(2), embeddings(3)
    segments = [PromptSegment(0, 1, a), PromptSegment(3, 3, b), PromptSegment(4, 4, c)]
    assert window_texts(segments, 7) == [a, a, a, b, c, c, c]  # the gap keeps a, the end keeps c
    assert window_texts(a, 3) == [a, a, a]


@pytest.mark.parametrize(
    "segments, message",
    [
        ([(0, 1), (1, 2)], r"prompt segment of windows 1 to 2 is out of order .* allowed: 2 <= start <= end <= 3"),
        ([(0, 2), (0, 1)], r"windows 0 to 1 is out of order"),
        ([(0, 4)], r"windows 0 to 4 is out of order or outside the clip's 4 windows"),
        ([(2, 1)], r"windows 2 to 1 is out of order"),
        ([(-1, 1)], r"windows -1 to 1"),
        ([(1, 3)], r"the first prompt segment starts at window 1; allowed: 0"),
        ([], r"prompt segments are empty"),
    ],
)
def test_bad_prompt_segments_are_refused(segments, message):
    text = embeddings(1)
    with pytest.raises(SettingsError, match=message):
        window_texts([PromptSegment(start, end, text) for start, end in segments], 4)


def test_a_seam_crossfades_linearly_and_keeps_the_clip_length():
    done, window = torch.zeros(1, 1, 4, 1, 1), torch.ones(1, 1, 3, 1, 1)
    fused = fuse_window(done, window, 2)
    assert fused.flatten().tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1])
    assert torch.equal(fuse_window(done, window, 0), torch.cat([done, window], dim=2))


@pytest.mark.parametrize("frames, window, overlap", [(8, 4, 2), (7, 4, 2), (9, 5, 1), (12, 5, 4), (21, 10, 3)])
def test_joined_windows_are_as_long_as_the_clip(frames, window, overlap):
    done = first = None
    for start, end in temporal_windows(frames, window, overlap):
        done = join_window(done, torch.randn(1, 2, end - start, 1, 1), first, overlap, 0.25)
        first = done if first is None else first
    assert done.shape[2] == frames


def run(transformer, frames, window, overlap, prompts=None, **kwargs):
    return generate_long_latent(
        transformer,
        (1, 128, frames, HEIGHT, WIDTH),
        prompts if prompts is not None else embeddings(1),
        embeddings(9),
        SIGMAS,
        kwargs.pop("guidance", 1.0),
        25.0,
        window=window,
        overlap=overlap,
        **kwargs,
    )


def token_counter(transformer):
    """Record the tokens of every forward of `transformer` (its first input, (B, T, C))."""
    seen = []
    handle = transformer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[1]))
    return seen, handle


def test_three_windows_give_a_latent_of_the_whole_length(tiny_transformer):
    calls = []
    latent = run(tiny_transformer, 8, 4, 2, callback=lambda k, n, result: calls.append((k, n, result.shape[2])))
    assert latent.shape == (1, 128, 8, HEIGHT, WIDTH) and torch.isfinite(latent).all()
    assert calls == [(0, 3, 4), (1, 3, 4), (2, 3, 4)]
    assert torch.equal(latent, run(tiny_transformer, 8, 4, 2))  # seeded: the same again


def test_cfg_and_stg_guide_every_window(tiny_transformer):
    guidance = Guidance(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(0,))
    latent = run(tiny_transformer, 7, 4, 2, guidance=guidance)
    assert latent.shape[2] == 7 and torch.isfinite(latent).all()
    assert not torch.allclose(latent, run(tiny_transformer, 7, 4, 2))


def test_a_windows_memory_does_not_grow_with_the_clip(tiny_transformer):
    """The transformer sees one window and its overlap's tokens per forward, however long."""
    per_frame = HEIGHT * WIDTH
    maxima = {}
    for frames in (7, 19):
        seen, handle = token_counter(tiny_transformer)
        try:
            run(tiny_transformer, frames, 4, 2)
        finally:
            handle.remove()
        # the first window; the next ones with the previous tail; the last, shorter one
        assert set(seen) == {4 * per_frame, (4 + 2) * per_frame, (3 + 2) * per_frame}
        maxima[frames] = max(seen)
    assert maxima[7] == maxima[19] == (4 + 2) * per_frame


def test_each_window_is_sampled_with_its_segments_prompt(tiny_transformer):
    a, b = embeddings(1), embeddings(2)
    texts = []
    handle = tiny_transformer.register_forward_pre_hook(lambda module, inputs: texts.append(inputs[2][:1].clone()))
    try:
        run(tiny_transformer, 8, 4, 2, prompts=[PromptSegment(0, 0, a), PromptSegment(1, 2, b)])
    finally:
        handle.remove()
    assert len(texts) == 3 * (len(SIGMAS) - 1)  # two steps per window
    for index, expected in enumerate([a, a, b, b, b, b]):
        assert torch.equal(texts[index], expected.embeds), index


def test_the_first_window_is_not_changed_by_later_prompts(tiny_transformer):
    a, b = embeddings(1), embeddings(2)
    same = run(tiny_transformer, 8, 4, 2, prompts=a)
    mixed = run(tiny_transformer, 8, 4, 2, prompts=[PromptSegment(0, 0, a), PromptSegment(1, 2, b)])
    assert torch.equal(same[:, :, :3], mixed[:, :, :3])  # frame 3 is the first seam's
    assert not torch.allclose(same[:, :, 4:], mixed[:, :, 4:])


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(overlap_strength=0.0), r"overlap strength 0.0 is not allowed; allowed: a number in \(0, 1\]"),
        (dict(overlap_strength=1.5), r"overlap strength 1.5 is not allowed"),
        (dict(adain_factor=-0.1), r"AdaIN factor -0.1 is not allowed; allowed: a number from 0"),
        (dict(adain_factor=2.0), r"AdaIN factor 2.0 is not allowed"),
        (dict(guidance=3.0, window=5), r"window size 5 is longer than the clip of 4 latent frames"),
    ],
)
def test_bad_long_video_settings_are_refused_before_any_model_call(tiny_transformer, settings, message):
    seen, handle = token_counter(tiny_transformer)
    try:
        with pytest.raises(SettingsError, match=message):
            run(tiny_transformer, 4, settings.pop("window", 3), 1, **settings)
    finally:
        handle.remove()
    assert seen == []


def test_a_latent_shape_of_another_model_is_refused(tiny_transformer):
    with pytest.raises(SettingsError, match="latent shape has 4 channels; this transformer takes 128"):
        generate_long_latent(
            tiny_transformer, (1, 4, 8, 1, 2), embeddings(1), None, SIGMAS, 1.0, 25.0, window=4, overlap=2
        )


def image_latent(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 128, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(6))


def test_a_first_frame_at_strength_one_is_the_clips_first_latent_frame(tiny_transformer):
    image = image_latent()
    seen, handle = token_counter(tiny_transformer)
    try:
        latent = run(tiny_transformer, 8, 4, 2, first_frame=FirstFrame(image, strength=1.0))
    finally:
        handle.remove()
    assert torch.equal(latent[:, :, :1], image)
    assert not torch.equal(latent, run(tiny_transformer, 8, 4, 2))
    # every window carries one latent frame of guide tokens (guide strength 1 by default)
    per_frame = HEIGHT * WIDTH
    assert sorted(set(seen)) == [(4 + 1) * per_frame, (4 + 2 + 1) * per_frame]


def test_a_first_frame_without_its_guide_adds_no_tokens(tiny_transformer):
    seen, handle = token_counter(tiny_transformer)
    try:
        run(tiny_transformer, 8, 4, 2, first_frame=FirstFrame(image_latent(), guide_strength=0.0))
    finally:
        handle.remove()
    assert max(seen) == (4 + 2) * HEIGHT * WIDTH


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(strength=0.0), r"first-frame strength 0.0 is not allowed; allowed: a number in \(0, 1\]"),
        (dict(strength=1.2), r"first-frame strength 1.2 is not allowed; allowed: a number up to 1"),
        (dict(guide_strength=-1), r"first-frame guide strength -1 is not allowed"),
        (dict(samples=torch.zeros(1, 128, 2, HEIGHT, WIDTH)), r"first frame latent \(1, 128, 2, 1, 2\) is not one"),
    ],
)
def test_bad_first_frames_are_refused(settings, message):
    with pytest.raises(SettingsError, match=message):
        FirstFrame(**{"samples": image_latent(), **settings})


def test_a_first_frame_of_another_size_is_refused(tiny_transformer):
    wrong = torch.zeros(1, 128, 1, HEIGHT, WIDTH + 1)
    with pytest.raises(SettingsError, match=r"first frame latent \(1, 128, 1, 1, 3\) does not fit the latent"):
        run(tiny_transformer, 8, 4, 2, first_frame=FirstFrame(wrong))


# ---------------------------------------------------------------- keyframes inside the clip


@pytest.mark.parametrize(
    "frame, start, expected",
    [(30, 0, 30), (30, 2, 14), (25, 4, 0), (26, 3, 2), (8, 1, 7), (9, 0, 9), (9, 1, 1)],
)
def test_a_keyframe_sits_at_its_frames_time_within_each_window(frame, start, expected):
    """Latent frame j of a window starts at pixel max(8j - 7, 0), as the clip's do."""
    assert ClipKeyframe(image_latent(), frame).in_window(start) == expected


def test_a_keyframe_guides_only_the_windows_that_hold_its_frame(tiny_transformer):
    """Windows of 4 latent frames overlapping by 2 over 8: (0, 4), (2, 6), (4, 8). A keyframe
    in latent frame 6 (pixel frames 41 to 48) is one latent frame of extra tokens of the
    last window alone; the earlier windows come out as without it."""
    seen, handle = token_counter(tiny_transformer)
    results, plain = [], []
    try:
        run(tiny_transformer, 8, 4, 2, keyframes=[ClipKeyframe(image_latent(), 45)],
            callback=lambda k, n, result: results.append(result))  # fmt: skip
    finally:
        handle.remove()
    run(tiny_transformer, 8, 4, 2, callback=lambda k, n, result: plain.append(result))
    per_frame = HEIGHT * WIDTH
    assert seen.count((4 + 2 + 1) * per_frame) == len(SIGMAS) - 1  # the last window's steps
    assert torch.equal(results[0], plain[0]) and torch.equal(results[1], plain[1])
    assert not torch.equal(results[2], plain[2])


@pytest.mark.parametrize(
    "frame, samples, message",
    [
        (0, None, r"keyframe at frame 0 is outside the clip; allowed: 1 to 56 \(frame 0 is the first frame"),
        (57, None, r"keyframe at frame 57 is outside the clip; allowed: 1 to 56"),
        (9, torch.zeros(1, 128, 1, HEIGHT, WIDTH + 1), r"latent \(1, 128, 1, 1, 3\) does not fit the latent"),
    ],
)
def test_keyframes_outside_the_clip_or_of_another_size_are_refused(tiny_transformer, frame, samples, message):
    keyframe = ClipKeyframe(image_latent() if samples is None else samples, frame)
    with pytest.raises(SettingsError, match=message):
        run(tiny_transformer, 8, 4, 2, keyframes=[keyframe])


def test_a_clip_as_a_long_videos_keyframe_is_refused():
    with pytest.raises(SettingsError, match=r"keyframe latent \(1, 128, 2, 1, 2\) is not one latent frame"):
        ClipKeyframe(torch.zeros(1, 128, 2, HEIGHT, WIDTH), 9)


# ---------------------------------------------------------------- stochastic steps


def _toy_velocity(target: torch.Tensor):
    """A velocity from `target` towards x: its estimate `x - sigma * v` depends on x, so
    stochastic and plain steps end in different places."""
    return lambda x, timesteps, sigma: x - target


def test_a_window_of_free_tokens_takes_the_samplers_stochastic_steps():
    """Mask 1 everywhere: the window's stochastic steps are `euler.sample`'s, with the noise
    drawn from the window's generator after its starting noise."""
    from ltx_core.long_video import _sample_window, window_generator
    from ltx_core.sampling.euler import sample

    shape, sigmas = (1, 3, 2, 2, 2), torch.tensor([1.0, 0.7, 0.3, 0.0])
    target = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(5))
    mask, clean = torch.ones(shape), torch.zeros(shape)
    generator = window_generator(7, 2)
    noise = torch.randn(shape, generator=generator)
    got = _sample_window(_toy_velocity(target), noise, clean, mask, sigmas, generator=generator)

    reference_generator = window_generator(7, 2)
    start = torch.randn(shape, generator=reference_generator).flatten(2).transpose(1, 2)
    expected = sample(_toy_velocity(target), start, sigmas, torch.ones(1, 8), generator=reference_generator,
                      stochastic=True)  # fmt: skip
    torch.testing.assert_close(got.flatten(2).transpose(1, 2), expected, atol=1e-6, rtol=0)
    plain = _sample_window(_toy_velocity(target), noise, clean, mask, sigmas)
    assert not torch.allclose(got, plain)  # fresh noise each step: another end


def test_stochastic_steps_keep_the_conditioning_tokens_and_are_seeded(tiny_transformer):
    """The previous window's tail and a first frame at strength 1 stay as given; the same
    seed gives the same clip, and the clip differs from the plain steps'."""
    first = FirstFrame(image_latent(), strength=1.0)
    stochastic = run(tiny_transformer, 8, 4, 2, first_frame=first, stochastic=True)
    assert torch.equal(stochastic[:, :, :1], first.samples)
    assert torch.equal(stochastic, run(tiny_transformer, 8, 4, 2, first_frame=first, stochastic=True))
    assert not torch.allclose(stochastic, run(tiny_transformer, 8, 4, 2, first_frame=first))
    assert torch.isfinite(stochastic).all()
