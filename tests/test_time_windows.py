"""The time-chunked decode's schedule (`models.time_windows`), on its own arithmetic:
every stage's chunks tile its output in order, a chunk runs only once the frames it reads
exist, and no frame is forgotten while a later chunk still reads it."""

import pytest

from ltx_core.models.time_windows import ConvSpan, UpsampleSpan, schedule, time_window

CAUSAL, SYMMETRIC = (2, 0), (1, 1)


def decoder_spans(frames: int, pads: tuple[int, int]) -> list:
    """A decoder's shape: resnet blocks, a time-doubling upsampler, more blocks, the output stage."""
    up = UpsampleSpan(frames, 2, 1, pads)
    return [ConvSpan(frames, (pads, pads)), up, ConvSpan(up.frames_out, (pads, pads)),
            UpsampleSpan(up.frames_out, 1, 0, pads), ConvSpan(up.frames_out, (pads,))]  # fmt: skip


@pytest.mark.parametrize("pads", [CAUSAL, SYMMETRIC], ids=["causal", "symmetric"])
@pytest.mark.parametrize("frames, chunk", [(7, 1), (7, 2), (16, 3), (16, 32), (5, 4)])
def test_the_schedule_computes_each_frame_once_after_what_it_reads_and_keeps_what_is_read_later(frames, chunk, pads):
    spans = decoder_spans(frames, pads)
    made = [spans[0].frames] + [0] * len(spans)  # frames computed: stage i's input is made[i]
    kept = [0] * len(spans)  # the first frame each stage's input still holds
    for step in schedule(spans, chunk):
        i = step.stage
        assert step.start == made[i + 1], "each stage's chunks follow each other"
        assert step.lo >= kept[i] and step.hi <= made[i], "its input frames exist and were kept"
        assert (step.lo, step.hi) == spans[i].input_range(step.start, step.end)
        made[i + 1], kept[i] = step.end, max(kept[i], step.keep_from)
    assert made[1:] == [span.frames_out for span in spans]


def test_a_windows_edge_repeats_are_needed_only_at_the_clips_ends():
    assert time_window(0, 4, 10, CAUSAL) == (0, 4, (2, 0))  # the clip's first frame repeated twice
    assert time_window(4, 8, 10, CAUSAL) == (2, 8, (0, 0))  # two real frames in front instead
    assert time_window(6, 10, 10, SYMMETRIC) == (5, 10, (0, 1))
    resnet = ConvSpan(10, (SYMMETRIC, SYMMETRIC))
    assert resnet.windows(4, 6) == (2, 8, [(0, 0), (0, 0)])  # two convs: two frames each side


def test_an_upsampler_reads_the_inputs_of_its_output_frames():
    up = UpsampleSpan(4, 2, 1, SYMMETRIC)  # output frames 0..6: input 0 gives output 0 only
    assert up.frames_out == 7
    assert up.inputs(0, 1) == (0, 1) and up.inputs(1, 3) == (1, 2) and up.inputs(5, 7) == (3, 4)
    assert up.input_range(1, 3) == (0, 3)  # input 1 and the frames its conv reaches
