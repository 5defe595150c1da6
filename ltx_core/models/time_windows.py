"""The frame arithmetic of the decoder's time-chunked decode, without torch: which input
frames a chunk of a layer's output reads, and the order in which the depth-first decode
(`vae_stream`) computes chunks and forgets frames. The decode runs this schedule on
tensors; the memory planner walks the same schedule counting bytes.

Every time convolution of the decoder is 3 frames wide, so a chunk of output frames reads
only the few input frames around it (`time_window`); everything between the convolutions
is per frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


def time_padding(kernel_size: int, causal: bool) -> tuple[int, int]:
    """Frames a time conv of `kernel_size` repeats (in front, behind) of the clip: what one
    output frame reads of the input on each side."""
    pad = kernel_size - 1
    return (pad, 0) if causal else (pad // 2, pad // 2)


def time_window(start: int, end: int, frames: int, pads: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
    """For output frames [start, end) of a time conv padded by `pads` (front, back) on a
    clip of `frames`: the input frames [lo, hi) it reads, clamped to the clip, and the
    edge repeats that window still needs. Those are nonzero only where the window meets
    the clip's real ends, so the window's output equals the whole conv's frames."""
    front, back = pads
    lo, hi = max(0, start - front), min(frames, end + back)
    return lo, hi, (front - (start - lo), back - (hi - end))


@dataclass(frozen=True)
class ConvSpan:
    """A layer whose output frame t reads input frames around t through its time convs
    (a resnet block's two, the output stage's one): `pads` of each conv in order."""

    frames: int
    pads: tuple[tuple[int, int], ...]

    @property
    def frames_out(self) -> int:
        return self.frames

    def next_chunk(self, done: int, size: int) -> tuple[int, int]:
        return done, min(done + size, self.frames)

    def windows(self, start: int, end: int) -> tuple[int, int, list[tuple[int, int]]]:
        """The input frames [lo, hi) output frames [start, end) read, and each conv's edge
        repeats (the last conv's window computed first, the first conv's from it)."""
        lo, hi, edges = start, end, []
        for pads in reversed(self.pads):
            lo, hi, edge = time_window(lo, hi, self.frames, pads)
            edges.insert(0, edge)
        return lo, hi, edges

    def input_range(self, start: int, end: int) -> tuple[int, int]:
        return self.windows(start, end)[:2]


@dataclass(frozen=True)
class UpsampleSpan:
    """A depth-to-space upsampler: input frame i gives output frames st*i .. st*i + st - 1,
    less the `dropped` first output frames of the clip (where time is doubled)."""

    frames: int
    stride: int
    dropped: int
    pads: tuple[int, int]

    @property
    def frames_out(self) -> int:
        return self.frames * self.stride - self.dropped

    def inputs(self, start: int, end: int) -> tuple[int, int]:
        """The input frames whose own output frames hold [start, end)."""
        return (start + self.dropped) // self.stride, -(-(end + self.dropped) // self.stride)

    def next_chunk(self, done: int, size: int) -> tuple[int, int]:
        first = self.inputs(done, done)[0]
        return done, min(first + size, self.frames) * self.stride - self.dropped

    def input_range(self, start: int, end: int) -> tuple[int, int]:
        return time_window(*self.inputs(start, end), self.frames, self.pads)[:2]


@dataclass(frozen=True)
class Step:
    """One chunk of the depth-first decode: stage `stage` computes its output frames
    [start, end) from its input frames [lo, hi); its input buffer then forgets the frames
    before `keep_from` (no later chunk reads them)."""

    stage: int
    start: int
    end: int
    lo: int
    hi: int
    keep_from: int


def schedule(spans: list, time_chunk: int) -> Iterator[Step]:
    """The depth-first order: the last stage's chunks in order, each stage computing a
    chunk only once the stage before has computed the input frames it reads, `time_chunk`
    frames at a time at each stage's input rate."""
    done = [0] * len(spans)

    def pull(i: int, end: int) -> Iterator[Step]:  # stage i's output computed up to frame `end`
        span = spans[i]
        while done[i] < end:
            start, stop = span.next_chunk(done[i], time_chunk)
            lo, hi = span.input_range(start, stop)
            if i > 0:
                yield from pull(i - 1, hi)
            done[i] = stop
            last = stop >= span.frames_out
            yield Step(i, start, stop, lo, hi, span.frames if last else span.input_range(stop, stop + 1)[0])

    yield from pull(len(spans) - 1, spans[-1].frames_out)
