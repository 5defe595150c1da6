"""The VAE decoder depth-first in time: each layer computes `time_chunk` of its output
frames as soon as the layer before has computed the input frames they read, and each
layer keeps only the frames the next chunk still reads. Every chunk reads the few
neighbouring frames its time convs reach (`time_windows.time_window`), padded by repeats
only at the clip's real ends, so the frames are those of the whole-layer decode; but
alive at once are a chunk's window per layer instead of a whole layer's input and output
for the whole clip (ComfyUI's LTX-Video decoder streams its layers in the same order)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .time_windows import ConvSpan, UpsampleSpan, schedule, time_window
from .vae_layers import DepthToSpaceUpsample, ResnetBlock3D


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
        self.block, self.causal, self.embed, self.noises = block, causal, embed, noises
        pads = (block.conv1.time_padding(causal), block.conv2.time_padding(causal))
        self.span = ConvSpan(frames, pads)

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        pads1, pads2 = self.span.windows(start, end)[2]
        return self.block.forward_window(window, self.causal, self.embed, *self.noises, pads1, pads2)


class UpsampleStage:
    """A depth-to-space upsampler (`time_windows.UpsampleSpan`)."""

    def __init__(self, block: DepthToSpaceUpsample, frames: int, causal: bool):
        self.block, self.causal = block, causal
        self.span = UpsampleSpan(frames, block.stride[0], block.dropped_frames, block.conv.time_padding(causal))

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        first, last = self.span.inputs(start, end)
        pads = time_window(first, last, self.span.frames, self.span.pads)[2]
        piece = self.block.forward_window(window, self.causal, pads)
        return piece[:, :, self.span.dropped :] if first == 0 else piece


class FinishStage:
    """The output stage (norm, modulation, SiLU, conv_out, unpatchify)."""

    def __init__(self, finish: Callable, conv, frames: int, causal: bool):
        self.finish, self.span = finish, ConvSpan(frames, (conv.time_padding(causal),))

    def run(self, window: Tensor, start: int, end: int) -> Tensor:
        return self.finish(window, self.span.windows(start, end)[2][0])


def stream(stages: list, first: Tensor, time_chunk: int, emit: Callable[[int, Tensor], None]) -> None:
    """Run `stages` depth-first on `first` (the first stage's whole input) in the order of
    `time_windows.schedule`; `emit(start, frames)` gets the last stage's chunks in order."""
    buffers = [FrameBuffer(first)] + [FrameBuffer() for _ in stages[:-1]]
    for step in schedule([stage.span for stage in stages], time_chunk):
        out = stages[step.stage].run(buffers[step.stage].window(step.lo, step.hi), step.start, step.end)
        if step.stage + 1 < len(stages):
            buffers[step.stage + 1].add(out)
        else:
            emit(step.start, out)
        del out  # an emitted chunk is copied out: not kept through the next chunk's run
        buffers[step.stage].drop_before(step.keep_from)
