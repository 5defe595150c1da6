"""The VAE decoder depth-first in time: each layer computes `time_chunk` of its output
frames as soon as the layer before has computed the input frames they read, and each
layer keeps only the frames the next chunk still reads. Every chunk reads the few
neighbouring frames its time convs reach (`vae_layers.time_window`), padded by repeats
only at the clip's real ends, so the frames are those of the whole-layer decode; but
alive at once are a chunk's window per layer instead of a whole layer's input and output
for the whole clip (ComfyUI's LTX-Video decoder streams its layers in the same order)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .vae_layers import DepthToSpaceUpsample, ResnetBlock3D, time_window


class FrameBuffer:
    """A layer's output frames computed so far and still read: parts in time order."""

    def __init__(self, first: Tensor | None = None):
        self.parts: list[tuple[int, Tensor]] = []  # (first frame index, frames)
        self.end = 0
        if first is not None:
            self.add(first)

    def add(self, frames: Tensor) -> None:
        self.parts.append((self.end, frames))
        self.end += frames.shape[2]

    def window(self, lo: int, hi: int) -> Tensor:
        """Frames [lo, hi): a view when one part holds them, else a copy."""
        pieces = [t[:, :, max(lo - s, 0) : hi - s] for s, t in self.parts if s < hi and s + t.shape[2] > lo]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)

    def drop_before(self, index: int) -> None:
        """Forget the parts that end before frame `index` (no later chunk reads them)."""
        self.parts = [(s, t) for s, t in self.parts if s + t.shape[2] > index]


class ResnetStage:
    """A resnet block: output frame t from input frames around t (its two convs)."""

    def __init__(self, block: ResnetBlock3D, frames: int, causal: bool, embed, noises):
        self.block, self.frames, self.causal, self.embed, self.noises = block, frames, causal, embed, noises
        self.frames_out = frames

    def next_chunk(self, done: int, size: int) -> tuple[int, int]:
        return done, min(done + size, self.frames)

    def _windows(self, start: int, end: int):
        mid_lo, mid_hi, pads2 = time_window(start, end, self.frames, self.block.conv2.time_padding(self.causal))
        lo, hi, pads1 = time_window(mid_lo, mid_hi, self.frames, self.block.conv1.time_padding(self.causal))
        return lo, hi, pads1, pads2

    def input_range(self, start: int, end: int) -> tuple[int, int]:
        return self._windows(start, end)[:2]

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        _, _, pads1, pads2 = self._windows(start, end)
        return self.block.forward_window(window, self.causal, self.embed, *self.noises, pads1, pads2)


class UpsampleStage:
    """A depth-to-space upsampler: input frame i gives output frames st*i .. st*i + st - 1,
    less the first output frame of the clip where time is doubled."""

    def __init__(self, block: DepthToSpaceUpsample, frames: int, causal: bool):
        self.block, self.frames, self.causal = block, frames, causal
        self.st, self.drop = block.stride[0], block.dropped_frames
        self.frames_out = frames * self.st - self.drop

    def _inputs(self, start: int, end: int) -> tuple[int, int]:
        return (start + self.drop) // self.st, -(-(end + self.drop) // self.st)

    def next_chunk(self, done: int, size: int) -> tuple[int, int]:
        first = self._inputs(done, done)[0]
        return done, min(first + size, self.frames) * self.st - self.drop

    def input_range(self, start: int, end: int) -> tuple[int, int]:
        return time_window(*self._inputs(start, end), self.frames, self.block.conv.time_padding(self.causal))[:2]

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        first, last = self._inputs(start, end)
        pads = time_window(first, last, self.frames, self.block.conv.time_padding(self.causal))[2]
        piece = self.block.forward_window(window, self.causal, pads)
        return piece[:, :, self.drop :] if first == 0 else piece


class FinishStage:
    """The output stage (norm, modulation, SiLU, conv_out, unpatchify)."""

    def __init__(self, finish: Callable, conv, frames: int, causal: bool):
        self.finish, self.frames, self.pads = finish, frames, conv.time_padding(causal)
        self.frames_out = frames

    def next_chunk(self, done: int, size: int) -> tuple[int, int]:
        return done, min(done + size, self.frames)

    def input_range(self, start: int, end: int) -> tuple[int, int]:
        return time_window(start, end, self.frames, self.pads)[:2]

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        return self.finish(window, time_window(start, end, self.frames, self.pads)[2])


def stream(stages: list, first: Tensor, time_chunk: int, emit: Callable[[int, Tensor], None]) -> None:
    """Run `stages` depth-first on `first` (the first stage's whole input), `time_chunk`
    frames a chunk at each stage's input rate; `emit(start, frames)` gets the last stage's
    chunks in order."""
    buffers = [FrameBuffer(first)] + [FrameBuffer() for _ in stages[:-1]]
    done = [0] * len(stages)

    def pull(i: int, end: int) -> None:  # stage i's output computed up to frame `end`
        stage = stages[i]
        while done[i] < end:
            start, stop = stage.next_chunk(done[i], time_chunk)
            lo, hi = stage.input_range(start, stop)
            if i > 0:
                pull(i - 1, hi)
            out = stage.run(buffers[i].window(lo, hi), start, stop)
            if i + 1 < len(stages):
                buffers[i + 1].add(out)
            else:
                emit(start, out)
            done[i] = stop
            # what the next chunk no longer reads (all of it after the last chunk)
            last = stop >= stage.frames_out
            buffers[i].drop_before(buffers[i].end if last else stage.input_range(stop, stop + 1)[0])

    pull(len(stages) - 1, stages[-1].frames_out)
