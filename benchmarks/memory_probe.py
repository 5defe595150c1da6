"""Peak bytes of the tensors a piece of code creates, counted at the dispatcher, on any
device: the CPU (where there is no allocator statistic) and the meta device, where only
shapes exist, so the activation peak of the real model at the real size is measured in
seconds without its memory or its compute.

    with PeakLiveBytes() as probe:
        vae.decode(latent, time_chunk=8)
    probe.peak   # bytes

Counted: every new storage an operator returns, from its creation until it is freed.
Not counted: tensors made before entering (weights, inputs), views and in-place results
(they reuse a storage), and memory inside kernels (convolution workspaces) or kept by a
caching allocator, so a GPU's `max_memory_allocated` reads somewhat higher.
"""

from __future__ import annotations

import weakref

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakLiveBytes(TorchDispatchMode):
    """`current`: bytes of the storages created inside and still alive; `peak`: their most."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}  # id of the storage object -> bytes
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # an output on one of the inputs' storages is a view or an in-place result
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)}
        for value in tree_flatten(out)[0]:
            if isinstance(value, Tensor):
                storage = value.untyped_storage()
                if id(storage) not in inputs:
                    self._track(storage)
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self.live:  # the same storage returned twice (an op's aliased outputs)
            return
        self.live[key] = storage.nbytes()
        self.current += self.live[key]
        self.peak = max(self.peak, self.current)
        # the storage's Python object lives exactly as long as the storage (PyTorch keeps it)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)
