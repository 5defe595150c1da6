"""LoRAs applied to an `LTXVTransformer` through its one seam, `replace_linear`, and taken
off again: a node graph changes strengths without reloading the base.

    applied = apply_loras(transformer, [(read_lora("style.safetensors"), 0.8), (other, 0.5)])
    ...
    applied.remove()  # the exact base layers are back

How each layer takes its updates, per kind of base layer:
- a float `nn.Linear`: merged into a copy of its weight, W + sum strength * alpha / rank *
  up @ down, computed in fp32 and cast once to the weight's dtype. Sampling then runs no
  extra matmul per step, and the base layer is kept aside (not changed) for `remove`;
- a quantized layer (`FP8Linear`, `QuantizedLinear`, anything else called as `layer(x)`):
  a low-rank branch beside it, base(x) + (x @ D.T) @ U.T, where D stacks every LoRA's
  down and U their ups times strength * scale, placed at the output rows each LoRA
  changes. Merging would need a dequantize-add-requantize, which loses the small update
  in the quantization steps and changes the base's own rounding.

A LoRA module of a fused projection (`attn1.to_k`) changes only its rows of the fused
layer (`checkpoint_linear`). Everything is checked before any layer changes: modules no
layer has are ignored with a warning, a module of another model's shapes is refused.
Applying new strengths is `remove()` then `apply_loras` again.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, SettingsError
from .files import LoRAFile, LoRAWeights

# Unmatched module names spelled out in the warning; the rest are counted.
UNMATCHED_NAMED = 5


@dataclass(frozen=True)
class _Update:
    """One LoRA module on one layer: rows of its output, strength * scale folded in later."""

    weights: LoRAWeights
    rows: slice
    factor: float  # strength * alpha / rank


@dataclass
class AppliedLoRAs:
    """What `apply_loras` changed: each layer name and the layer it replaced."""

    transformer: nn.Module
    replaced: dict[str, nn.Module | None] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    removable: bool = True

    offloaded: set[str] = field(default_factory=set)  # names whose base waits on another device

    def remove(self) -> None:
        """Put every replaced base layer back: the same module objects, moved back beside the
        model where they were offloaded (a copy of the same bits): bit-equal outputs."""
        if not self.removable and self.replaced:
            raise SettingsError("these LoRAs were applied with keep_base=False: reload the model to remove them")
        current = self.transformer.linear_layers() if self.offloaded else {}
        for name, layer in self.replaced.items():
            if name in self.offloaded:
                layer.to(_home(current[name])[0])
            self.transformer.replace_linear(name, layer)
        self.replaced, self.offloaded = {}, set()

    @property
    def layer_names(self) -> list[str]:
        return list(self.replaced)


class LoRABranch(nn.Module):
    """A quantized (or any non-float) linear layer plus low-rank updates beside it."""

    def __init__(self, base: nn.Module, down: Tensor, up: Tensor):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.register_buffer("down", down)  # (total rank, in_features)
        self.register_buffer("up", up)  # (out_features, total rank), strengths folded in

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        # in the activations' precision, as a float layer computes (a no-op cast when equal)
        branch = (x @ self.down.t().to(x.dtype)) @ self.up.t().to(x.dtype)
        return out + branch.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.down.shape[0]}"


def apply_loras(
    transformer: nn.Module,
    loras: Sequence[tuple[LoRAFile, float]],
    keep_base: bool = True,
    base_device: torch.device | str | None = None,
) -> AppliedLoRAs:
    """Apply each (LoRA, strength) to `transformer` (see the module docstring); returns the
    handle whose `remove()` restores the base layers.

    A merged layer is a copy, so the base layers kept for `remove()` hold as much memory
    again as the changed weights: `base_device="cpu"` keeps them there instead (moved back
    on `remove()`), and `keep_base=False` (a run that never removes them) lets each go at
    once, so the merge needs the memory of one extra layer, not of every changed one."""
    loras = list(loras)
    for index, (lora, strength) in enumerate(loras):
        _check_strength(strength, lora, index)
    layers = transformer.linear_layers()  # once: each call walks every module
    updates, unmatched = _updates_by_layer(transformer, layers, loras)
    if unmatched:
        named = ", ".join(repr(name) for name in unmatched[:UNMATCHED_NAMED])
        more = f" (+{len(unmatched) - UNMATCHED_NAMED} more)" if len(unmatched) > UNMATCHED_NAMED else ""
        warnings.warn(
            f"{len(unmatched)} LoRA module(s) match no layer of the transformer, ignored: {named}{more}",
            stacklevel=2,
        )
    applied = AppliedLoRAs(transformer, unmatched=unmatched, removable=keep_base)
    for name, layer_updates in updates.items():  # all checked: from here on nothing is refused
        with torch.no_grad():
            layer = _updated_layer(layers[name], layer_updates)
        previous = transformer.replace_linear(name, layer)
        if keep_base and base_device is not None and not isinstance(layer, LoRABranch):
            previous.to(base_device)  # a merged layer's base is no longer used by the model
            applied.offloaded.add(name)
        applied.replaced[name] = previous if keep_base else None
    return applied


def _check_strength(strength, lora: LoRAFile, index: int) -> None:
    ok = isinstance(strength, (int, float)) and not isinstance(strength, bool) and math.isfinite(strength)
    if not ok:
        raise SettingsError(
            f"LoRA strength {strength!r} (LoRA {index + 1}, {lora.source}) is not allowed; allowed: a finite number"
        )


def _updates_by_layer(
    transformer: nn.Module, layers: dict[str, nn.Module], loras: list[tuple[LoRAFile, float]]
) -> tuple[dict[str, list[_Update]], list[str]]:
    """Layer name -> its updates, and the module names no layer has; shapes checked."""
    updates: dict[str, list[_Update]] = {}
    unmatched: list[str] = []
    for lora, strength in loras:
        places = {module: _layer_of(transformer, layers, module) for module in lora.modules}
        missing = [module for module, place in places.items() if place is None]
        if missing and len(missing) == len(lora.modules):
            raise CheckpointError(
                f"{lora.source}: none of its {len(missing)} LoRA modules is a layer of this transformer "
                f"(first: {missing[0]!r}): a LoRA of another model; allowed: LoRAs of LTX-Video 0.9.x"
            )
        unmatched += missing
        for module, weights in lora.modules.items():
            if places[module] is None:
                continue
            layer_name, rows = places[module]
            _check_shapes(lora, module, weights, layers[layer_name], rows)
            if strength != 0:
                updates.setdefault(layer_name, []).append(_Update(weights, rows, strength * weights.scale))
    return updates, unmatched


def _layer_of(transformer: nn.Module, layers: dict[str, nn.Module], module: str) -> tuple[str, slice] | None:
    """(layer name, output rows) of a checkpoint module, None where the model has none. A
    layer of its own is looked up here; the fused projections' parts go through the
    model's `checkpoint_linear` (which walks every module for the others)."""
    if module in layers:
        return module, slice(0, layers[module].out_features)
    try:
        return transformer.checkpoint_linear(module)
    except (SettingsError, AttributeError):
        return None


def _check_shapes(lora: LoRAFile, module: str, weights: LoRAWeights, layer: nn.Module, rows: slice) -> None:
    """A LoRA of another model: its update's shape is not the weight's it would change."""
    expected = (rows.stop - rows.start, layer.in_features)
    found = (weights.up.shape[0], weights.down.shape[1])
    if found != expected:
        raise CheckpointError(
            f"{lora.source}: LoRA module {module!r} changes a weight of shape {found} "
            f"(up {tuple(weights.up.shape)}, down {tuple(weights.down.shape)}), but the transformer's "
            f"{module!r} has shape {expected}: a LoRA of another model; allowed: LoRAs of this model"
        )


def _updated_layer(base: nn.Module, updates: list[_Update]) -> nn.Module:
    if is_float_linear(base):
        return _merged(base, updates)
    return _branched(base, updates)


def is_float_linear(layer: nn.Module) -> bool:
    """An `nn.Linear` with a floating weight the LoRA can be merged into (not FP8)."""
    return (
        type(layer) is nn.Linear
        and layer.weight.is_floating_point()
        and layer.weight.dtype.itemsize >= 2
        and layer.weight.device.type != "meta"
    )


def _merged(base: nn.Linear, updates: list[_Update]) -> nn.Linear:
    """A new layer with W + sum delta (fp32) in the base's dtype; the base is not touched."""
    weight = base.weight.detach().float().clone()
    for update in updates:
        up = update.weights.up.to(weight.device, torch.float32)
        down = update.weights.down.to(weight.device, torch.float32)
        weight[update.rows] += update.factor * (up @ down)
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
    merged.weight = nn.Parameter(weight.to(base.weight.dtype), requires_grad=base.weight.requires_grad)
    if base.bias is not None:
        merged.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=base.bias.requires_grad)
    return merged


def _branched(base: nn.Module, updates: list[_Update]) -> LoRABranch:
    """The stacked low-rank pair, strengths folded into the up, zero outside each LoRA's rows."""
    device, dtype = _home(base)
    rank = sum(update.weights.rank for update in updates)
    down = torch.zeros(rank, base.in_features, device=device, dtype=torch.float32)
    up = torch.zeros(base.out_features, rank, device=device, dtype=torch.float32)
    start = 0
    for update in updates:
        stop = start + update.weights.rank
        down[start:stop] = update.weights.down.to(device, torch.float32)
        up[update.rows, start:stop] = update.factor * update.weights.up.to(device, torch.float32)
        start = stop
    return LoRABranch(base, down.to(dtype), up.to(dtype))


def _home(layer: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device of a layer's tensors and the dtype its output has (the branch computes in it)."""
    tensors = list(layer.parameters()) + list(layer.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = getattr(layer, "out_dtype", None)
    if dtype is None:
        floats = [t.dtype for t in tensors if t.is_floating_point() and t.dtype.itemsize >= 2]
        dtype = floats[0] if floats else torch.float32
    return device, dtype
