"""Low-VRAM running: weights kept in CPU memory and brought to the GPU only while they run.

- `ModelPlacement`: the text encoder, the VAE and the transformer each on the device only
  while its stage runs (`on_device`), so the peak holds the largest model, not all three.
- `BlockStream`: the transformer's blocks beyond the first `resident` stay in pinned CPU
  memory; each is copied to the device on a side CUDA stream while the block before it
  computes, and dropped after it ran (through the transformer's block-weights seam). The
  copies of one forward then overlap its compute, and the device holds two streamed
  blocks at a time instead of all of them.

Both only swap a module's tensors for device copies of the same bytes and back, so the
frames are exactly those of a resident run. Choosing between them is the memory planner's
(`memory_plan.choose_offload`).

    placement = place_models(models, "cuda", streamed_blocks=40)
    with placement.on_device(models.transformer):
        ...  # the transformer's non-block weights and first blocks on the GPU, the rest streamed
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .errors import SettingsError


class HostWeights:
    """A module's parameters and buffers (those of `skip`ped children excluded) held in CPU
    memory, pinned where a GPU will read them so the copies can run asynchronously, and
    swapped for device copies while the module runs."""

    def __init__(self, module: nn.Module, pin: bool, skip: tuple[nn.Module, ...] = ()):
        skipped = {id(m) for child in skip for m in child.modules()}
        self.slots: list[tuple[nn.Module, str, bool]] = []  # (owner, name, is a parameter)
        self.host: list[Tensor] = []
        seen: set[int] = set()  # a tied tensor is moved once
        for owner in module.modules():
            if id(owner) in skipped:
                continue
            for table, is_parameter in ((owner._parameters, True), (owner._buffers, False)):
                for name, tensor in table.items():
                    if tensor is None or id(tensor) in seen:
                        continue
                    seen.add(id(tensor))
                    self.slots.append((owner, name, is_parameter))
                    self.host.append(_pinned(tensor.detach().to("cpu"), pin))
        self.attach(self.host)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.host)

    def copies(self, device: torch.device) -> list[Tensor]:
        """Fresh device copies of the host tensors (asynchronous from pinned memory)."""
        return [t.to(device, non_blocking=True, copy=True) for t in self.host]

    def attach(self, tensors: list[Tensor]) -> None:
        """Make the module compute with `tensors` (in the order of `host`)."""
        for (owner, name, is_parameter), tensor in zip(self.slots, tensors, strict=True):
            if is_parameter:
                owner._parameters[name].data = tensor
            else:
                owner._buffers[name] = tensor

    def detach(self) -> None:
        """Back to the host tensors; the device copies are freed once nothing holds them."""
        self.attach(self.host)


def _pinned(tensor: Tensor, pin: bool) -> Tensor:
    return tensor.pin_memory() if pin and not tensor.is_pinned() else tensor


class BlockStream:
    """The transformer blocks from `resident` on, streamed from CPU memory to `device` while
    they run; the first `resident` blocks come with the rest of the transformer
    (`ModelPlacement`). On CUDA each block's copy is issued on a side stream when the block
    before it starts, and the compute stream waits for it only when the block runs."""

    def __init__(self, transformer: nn.Module, device: torch.device | str, resident: int):
        blocks = list(transformer.transformer_blocks)
        if not 0 <= resident <= len(blocks):
            raise SettingsError(f"resident blocks {resident}; allowed: 0 to {len(blocks)}")
        self.device = torch.device(device)
        self.resident = resident
        on_cuda = self.device.type == "cuda"
        self.weights = {index: HostWeights(blocks[index], pin=on_cuda) for index in range(resident, len(blocks))}
        self.copy_stream = torch.cuda.Stream(self.device) if on_cuda else None
        self.pending: dict[int, tuple[list[Tensor], object]] = {}  # index -> (copies, their event)
        self.last_done = None  # the compute stream's event after the last streamed block ran

    @property
    def streamed(self) -> list[int]:
        return sorted(self.weights)

    def on_device(self, index: int) -> contextlib.AbstractContextManager:
        if index not in self.weights:
            return contextlib.nullcontext()
        return self._streamed(index)

    @contextlib.contextmanager
    def _streamed(self, index: int) -> Iterator[None]:
        copies = self._take(index)
        if self.last_done is not None:
            # the host may run ahead of the GPU by one block, no more: the block before
            # has run, so its copies' memory serves the next prefetch (two blocks live)
            self.last_done.synchronize()
        self._prefetch(self._next(index))  # overlaps this block's compute
        self.weights[index].attach(copies)
        try:
            yield
        finally:
            self.weights[index].detach()
            if self.copy_stream is not None:
                self.last_done = torch.cuda.Event()
                self.last_done.record(torch.cuda.current_stream(self.device))

    def _next(self, index: int) -> int:
        """The next streamed block, the first again after the last (the next forward's)."""
        order = self.streamed
        return order[(order.index(index) + 1) % len(order)]

    def _prefetch(self, index: int) -> None:
        if index in self.pending:
            return
        if self.copy_stream is None:  # no asynchronous copies: made when taken
            return
        with torch.cuda.stream(self.copy_stream):
            copies = self.weights[index].copies(self.device)
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        self.pending[index] = (copies, event)

    def _take(self, index: int) -> list[Tensor]:
        """The block's device copies: prefetched (waited for on the compute stream, and
        kept from reuse until that stream is done with them), or made now."""
        if index not in self.pending:
            self._prefetch(index)
        if index not in self.pending:
            return self.weights[index].copies(self.device)
        copies, event = self.pending.pop(index)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        for tensor in copies:
            tensor.record_stream(compute)
        return copies

    def release(self) -> None:
        """Drop prefetched copies (the transformer leaves the device)."""
        self.pending.clear()
        self.last_done = None


class ModelPlacement:
    """The models in CPU memory, each brought to `device` only for `on_device(module)`; the
    transformer's blocks streamed by `stream` when it has one."""

    def __init__(self, device: torch.device | str, modules: list[nn.Module], stream: BlockStream | None = None):
        self.device = torch.device(device)
        self.stream = stream
        pin = self.device.type == "cuda"
        skip = lambda module: (
            tuple(module.transformer_blocks[i] for i in stream.streamed)
            if stream is not None and hasattr(module, "transformer_blocks")
            else ()
        )
        self.weights = {id(module): HostWeights(module, pin, skip(module)) for module in modules}

    @contextlib.contextmanager
    def on_device(self, module: nn.Module) -> Iterator[torch.device]:
        weights = self.weights.get(id(module))
        if weights is None:
            raise SettingsError("this module is not one of the placed models")
        weights.attach(weights.copies(self.device))
        try:
            yield self.device
        finally:
            weights.detach()
            if self.stream is not None and hasattr(module, "transformer_blocks"):
                self.stream.release()

    def resident_bytes(self, module: nn.Module) -> int:
        """Bytes `on_device(module)` brings to the device at once (streamed blocks excluded)."""
        return self.weights[id(module)].nbytes


def place_models(models, device: torch.device | str, streamed_blocks: int = 0) -> ModelPlacement:
    """Keep `models` (a `pipeline.Models`) in CPU memory, each on `device` only while it
    runs, with the last `streamed_blocks` transformer blocks streamed block by block."""
    stream = _stream(models.transformer, device, streamed_blocks)
    return ModelPlacement(device, [models.text_encoder.model, models.vae, models.transformer], stream)


def stream_transformer(transformer: nn.Module, device: torch.device | str, streamed_blocks: int) -> ModelPlacement:
    """The transformer alone placed as `place_models` places it (a host that moves the
    other models itself: ComfyUI)."""
    return ModelPlacement(device, [transformer], _stream(transformer, device, streamed_blocks))


def _stream(transformer: nn.Module, device: torch.device | str, streamed_blocks: int) -> BlockStream | None:
    if not streamed_blocks:
        return None
    stream = BlockStream(transformer, device, len(transformer.transformer_blocks) - streamed_blocks)
    transformer.use_block_weights(stream)
    return stream
