"""Guidance: classifier-free guidance (CFG, optionally CFG-star) and spatiotemporal skip
guidance (STG), each setting either one number or a schedule over the sampling steps.

Both turn the transformer into the sampler's `velocity_fn(x, timesteps, sigma)` by running
it on a batch of copies of the latent: (uncond, cond) for CFG, plus a perturbed copy for
STG, whose chosen blocks are perturbed through the transformer's `prepare` / `blocks` /
`finish` seam (`perturbed_forward`). Lightricks' release configs give the settings per
interval of the schedule (`guidance_timesteps`); `Guidance.at(sigma)` picks a step's, and
a step without CFG or STG leaves their copies out of its batch. The transformer itself
knows nothing of guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import SettingsError, check_number, is_int
from ..preflight import STG_MODES
from .euler import VelocityFn

# STG_MODES, how STG perturbs a block for its perturbed items (Lightricks' `SkipLayerStrategy`):
# "attention_values": the self-attention returns its values (an identity attention map);
# "attention_skip": the self-attention's input goes straight to its output projection;
# "residual": the self-attention's own residual connection is dropped, which changes
#   nothing in LTX-Video, whose attention has none (the block adds the residual), so the
#   perturbed pass equals the conditional one and only the rescale acts, as in the
#   official code;
# "transformer_block": the whole block is skipped (its input is handed on).

# Lightricks' CFG-star: the epsilon added to |v_uncond|^2 in the projection coefficient.
CFG_STAR_EPS = 1e-8

Scale = float | tuple[float, ...]  # one number, or one per guidance interval
# Guidance's scales and what each allows
SCALES = {
    "cfg_scale": "a finite number >= 0 (1: no guidance)",
    "stg_scale": "a finite number >= 0 (0: no STG)",
    "stg_rescale": "a finite number >= 0 (0 or 1: no rescale)",
}


@dataclass(frozen=True)
class GuidanceStep:
    """One step's guidance, plain numbers (`Guidance.at`)."""

    cfg_scale: float
    stg_scale: float
    stg_blocks: tuple[int, ...]
    stg_rescale: float
    cfg_star_rescale: bool = False

    @property
    def with_cfg(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def with_stg(self) -> bool:
        return self.stg_scale > 0


@dataclass(frozen=True)
class Guidance:
    """How each step's velocity is guided; checked on construction, with what is allowed.

    cfg_scale: classifier-free guidance (1: the conditional velocity alone); stg_scale:
    spatiotemporal skip guidance (0: off) perturbing `stg_blocks` as `stg_mode` says
    (STG_MODES); stg_rescale: Lightricks' `rescaling_scale` (0 or 1: no rescale);
    cfg_star_rescale: CFG-star (`cfg_star`).

    With `guidance_timesteps` (decreasing sigmas, one per interval), each of cfg_scale,
    stg_scale and stg_rescale may be a tuple with one value per interval and stg_blocks a
    tuple of block tuples, one per interval, as Lightricks' release configs give them
    (`guidance_scale: [1, 1, 6, 8, 6, 1, 1]`); a single value holds for every step.
    `at(sigma)` picks a step's values as Lightricks' pipeline does: interval i holds the
    steps with sigma in [guidance_timesteps[i], guidance_timesteps[i - 1]) (interval 0:
    sigma >= guidance_timesteps[0]), the last one also every sigma below its bound."""

    cfg_scale: Scale = 1.0
    stg_scale: Scale = 0.0
    stg_blocks: tuple[int, ...] | tuple[tuple[int, ...], ...] = ()
    stg_mode: str = "attention_values"
    stg_rescale: Scale = 0.7
    guidance_timesteps: tuple[float, ...] | None = None
    cfg_star_rescale: bool = False

    def __post_init__(self):
        bounds = _interval_bounds(self.guidance_timesteps)
        count = None if bounds is None else len(bounds)
        object.__setattr__(self, "guidance_timesteps", bounds)
        for name, allowed in SCALES.items():  # lists become tuples: the guidance stays hashable
            object.__setattr__(self, name, _scale_schedule(name, getattr(self, name), count, allowed))
        object.__setattr__(self, "stg_blocks", _blocks_schedule(self.stg_blocks, count))
        if self.stg_mode not in STG_MODES:
            raise SettingsError(f"stg_mode {self.stg_mode!r} is not known; allowed: {', '.join(STG_MODES)}")
        if not isinstance(self.cfg_star_rescale, bool):
            raise SettingsError(f"cfg_star_rescale {self.cfg_star_rescale!r} must be True or False")
        for step in self.intervals:
            if step.with_stg and not step.stg_blocks:
                raise SettingsError(
                    f"stg_scale {step.stg_scale} needs stg_blocks, the blocks to perturb (e.g. (19,) for the 2B model)"
                )

    def interval_of(self, sigma: float) -> int:
        """The interval of a step at `sigma`, by Lightricks' rule: the first whose
        guidance timestep is at or below sigma, else the last; compared in fp32, as its
        pipeline compares them with its fp32 timesteps."""
        if self.guidance_timesteps is None:
            return 0
        bounds = torch.tensor(self.guidance_timesteps, dtype=torch.float32)
        at_or_below = (bounds <= torch.tensor(float(sigma), dtype=torch.float32)).nonzero()
        return int(at_or_below[0]) if len(at_or_below) else len(bounds) - 1

    def at(self, sigma: float) -> GuidanceStep:
        """The guidance of the step at the schedule's `sigma`."""
        return self._step(self.interval_of(sigma))

    @property
    def intervals(self) -> tuple[GuidanceStep, ...]:
        """Each interval's guidance (one interval without `guidance_timesteps`)."""
        return tuple(self._step(i) for i in range(len(self.guidance_timesteps or (None,))))

    def _step(self, index: int) -> GuidanceStep:
        def pick(value):
            return value[index] if isinstance(value, tuple) else value

        blocks = self.stg_blocks[index] if _per_interval_blocks(self.stg_blocks) else self.stg_blocks
        return GuidanceStep(
            pick(self.cfg_scale), pick(self.stg_scale), blocks, pick(self.stg_rescale), self.cfg_star_rescale
        )

    @property
    def uses_stg(self) -> bool:
        return any(step.with_stg for step in self.intervals)

    @property
    def needs_negative(self) -> bool:
        return any(step.with_cfg for step in self.intervals)

    @property
    def stg_block_sets(self) -> tuple[tuple[int, ...], ...]:
        """The distinct block sets that steps with STG perturb."""
        return tuple(dict.fromkeys(step.stg_blocks for step in self.intervals if step.with_stg))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval_bounds(values) -> tuple[float, ...] | None:
    if values is None:
        return None
    ok = isinstance(values, (tuple, list)) and values and all(_is_number(v) and 0 <= v <= 1 for v in values)
    if not ok:
        raise SettingsError(f"guidance_timesteps {values!r} must be a non-empty list of sigmas in [0, 1]")
    if any(later >= earlier for earlier, later in zip(values, values[1:])):
        raise SettingsError(
            f"guidance_timesteps {list(values)} must be strictly decreasing: each bounds an "
            "interval of the schedule, from high noise down"
        )
    return tuple(float(v) for v in values)


def _check_count(name: str, values, intervals: int | None) -> None:
    if intervals is None:
        raise SettingsError(
            f"{name} {list(values)} gives one value per interval; it needs guidance_timesteps, "
            "the sigmas that bound the intervals"
        )
    if len(values) != intervals:
        raise SettingsError(
            f"{name} has {len(values)} values for {intervals} guidance_timesteps; allowed: one value per interval"
        )


def _scale_schedule(name: str, value, intervals: int | None, allowed: str) -> Scale:
    """A number, or one per interval (a tuple), each checked as `allowed` says."""
    if not isinstance(value, (tuple, list)):
        check_number(name, value, 0.0, allowed)
        return value
    _check_count(name, value, intervals)
    for index, item in enumerate(value):
        check_number(f"{name}[{index}]", item, 0.0, allowed)
    return tuple(value)


def _per_interval_blocks(blocks) -> bool:
    """Lightricks' `skip_block_list` is per interval when its first entry is a list."""
    return bool(blocks) and isinstance(blocks[0], (tuple, list))


def _block_list(name: str, blocks) -> tuple[int, ...]:
    if not isinstance(blocks, (tuple, list)) or not all(is_int(b) and b >= 0 for b in blocks):
        raise SettingsError(f"{name} {blocks!r} must be block indices, whole numbers >= 0")
    return tuple(blocks)


def _blocks_schedule(blocks, intervals: int | None):
    if not _per_interval_blocks(blocks):
        return _block_list("stg_blocks", blocks)
    _check_count("stg_blocks", blocks, intervals)
    return tuple(_block_list(f"stg_blocks[{index}]", item) for index, item in enumerate(blocks))


def check_stg_blocks(blocks: tuple[int, ...], layers: int) -> None:
    if any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < layers for b in blocks):
        raise SettingsError(f"stg_blocks {tuple(blocks)} name blocks this model lacks; allowed: 0 to {layers - 1}")


# ---------------------------------------------------------------- the perturbed forward


def perturbed_self_attention(skip: Tensor, mode: str):
    """A block's self-attention with the items where `skip` (B, 1, 1) is 0 perturbed as
    `mode` says, mixed in before `to_out` as Lightricks' AttnProcessor2_0 does."""

    def self_attention(attn, x: Tensor, rope, kernels) -> Tensor:
        q, k, v = attn.project(x)
        out = attn.attend(q, k, v, rope, None, kernels)
        kept = v if mode == "attention_values" else x
        return attn.to_out[0](out * skip + kept * (1.0 - skip))

    return self_attention


def skipped_block(skip: Tensor):
    """What a block hands on with the items where `skip` (B, 1, 1) is 0 skipped: its input
    there, mixed as Lightricks' BasicTransformerBlock does for `TransformerBlock`."""
    return lambda block_input, block_output: block_output * skip + block_input * (1.0 - skip)


def _perturbation(blocks: tuple[int, ...], mode: str, skip: Tensor) -> dict:
    """The `blocks(...)` replacements for `mode`; "residual" has none (see STG_MODES' note)."""
    if mode == "transformer_block":
        return {"outputs": dict.fromkeys(blocks, skipped_block(skip))}
    if mode in ("attention_values", "attention_skip"):
        return {"self_attention": dict.fromkeys(blocks, perturbed_self_attention(skip, mode))}
    return {}


def perturbed_forward(model, blocks: tuple[int, ...], mode: str) -> Callable[..., Tensor]:
    """`forward(latent, timestep, text, text_mask, coords, perturbed)`: the model's forward,
    with `blocks` perturbed (`mode`) in the items where `perturbed` (B,) is true."""
    if mode not in STG_MODES:
        raise SettingsError(f"stg_mode {mode!r} is not known; allowed: {', '.join(STG_MODES)}")
    check_stg_blocks(blocks, len(model.transformer_blocks))

    def forward(
        latent: Tensor, timestep: Tensor, text: Tensor, text_mask: Tensor | None, coords: Tensor, perturbed: Tensor
    ) -> Tensor:
        model.check_inputs(latent, timestep, text, text_mask, coords)
        if tuple(perturbed.shape) != (latent.shape[0],):
            raise SettingsError(f"perturbed has shape {tuple(perturbed.shape)}; allowed: ({latent.shape[0]},)")
        x, modulation, embedded_t, context, text_bias, rope = model.prepare(latent, timestep, text, text_mask, coords)
        skip = (~perturbed.bool()).to(x.dtype).view(-1, 1, 1)
        x = model.blocks(x, modulation, rope, context, text_bias, **_perturbation(blocks, mode, skip))
        return model.finish(x, embedded_t)

    return forward


# ---------------------------------------------------------------- the guided velocity


def guided_velocity(
    model_fn: Callable[..., Tensor],
    text: Tensor,
    text_mask: Tensor,
    negative_text: Tensor | None,
    negative_mask: Tensor | None,
    guidance: Guidance,
) -> VelocityFn:
    """The sampler's `velocity(x, timesteps, sigma)`: each step's guidance (`guidance.at
    (sigma)`, sigma the schedule's) over one batched call of `model_fn(x, timesteps, text,
    text_mask)`, or `model_fn(..., perturbed, blocks)` when the step has STG: the items
    where `perturbed` (B,) is true get `blocks` perturbed.

    The batch is (uncond, cond, perturbed) as in Lightricks' `LTXVideoPipeline.__call__`,
    without the unconditional copy at CFG scale 1 and the perturbed one without STG; the
    three predictions mix as `combine` says."""
    if guidance.needs_negative and (negative_text is None or negative_mask is None):
        raise SettingsError(f"guidance scale {guidance.cfg_scale} needs negative text embeddings and mask")
    prompts = _prompt_batches(text, text_mask, negative_text, negative_mask)

    def velocity(x: Tensor, timesteps: Tensor, sigma: float) -> Tensor:
        step = guidance.at(sigma)
        all_text, all_mask = prompts(step.with_cfg, step.with_stg)
        copies, batch = 1 + step.with_cfg + step.with_stg, x.shape[0]
        xs = torch.cat([x] * copies) if copies > 1 else x
        ts = torch.cat([timesteps] * copies) if copies > 1 else timesteps
        if step.with_stg:
            perturbed = torch.arange(copies * batch, device=x.device) >= (copies - 1) * batch
            out = model_fn(xs, ts, all_text, all_mask, perturbed, step.stg_blocks)
        else:
            out = model_fn(xs, ts, all_text, all_mask)
        predictions = list(out.chunk(copies))
        v_uncond = predictions.pop(0) if step.with_cfg else None
        v_perturbed = predictions.pop() if step.with_stg else None
        return combine(step, predictions[0], v_uncond, v_perturbed)

    return velocity


def _prompt_batches(text, text_mask, negative_text, negative_mask):
    """`batches(with_cfg, with_stg)` -> (texts, masks) of the step's copies, each built once."""
    built = {}

    def batches(with_cfg: bool, with_stg: bool) -> tuple[Tensor, Tensor]:
        if (with_cfg, with_stg) not in built:
            texts = [negative_text] * with_cfg + [text] + [text] * with_stg
            masks = [negative_mask] * with_cfg + [text_mask] + [text_mask] * with_stg
            single = len(texts) == 1
            built[with_cfg, with_stg] = (text, text_mask) if single else (torch.cat(texts), torch.cat(masks))
        return built[with_cfg, with_stg]

    return batches


def cfg_star(v_cond: Tensor, v_uncond: Tensor) -> Tensor:
    """CFG-star (Lightricks' `cfg_star_rescale`): the unconditional velocity scaled by
    alpha = <v_c, v_u> / (|v_u|^2 + eps) per video, its projection onto the conditional one,
    so that CFG extrapolates from the part of v_u that agrees with v_c."""
    batch = v_cond.shape[0]
    cond, uncond = v_cond.reshape(batch, -1), v_uncond.reshape(batch, -1)
    alpha = (cond * uncond).sum(dim=1) / ((uncond**2).sum(dim=1) + CFG_STAR_EPS)
    return v_uncond * alpha.view(batch, *([1] * (v_uncond.ndim - 1)))


def combine(
    step: GuidanceStep, v_cond: Tensor, v_uncond: Tensor | None = None, v_perturbed: Tensor | None = None
) -> Tensor:
    """Lightricks' `LTXVideoPipeline.__call__` guidance of one step: with CFG,
    v = v_u + g (v_c - v_u) (v_u first CFG-star scaled if asked), else v = v_c; with STG,
    v += s (v_c - v_p), then, unless the rescale is 1 (Lightricks skips it there),
    v *= r std(v_c) / std(v) + 1 - r, the standard deviations over each video's velocity."""
    v = v_cond
    if v_uncond is not None:
        if step.cfg_star_rescale:
            v_uncond = cfg_star(v_cond, v_uncond)
        v = v_uncond + step.cfg_scale * (v_cond - v_uncond)
    if v_perturbed is None:
        return v
    v = v + step.stg_scale * (v_cond - v_perturbed)
    if step.stg_rescale != 1.0:
        batch, rescale = v.shape[0], step.stg_rescale
        factor = v_cond.reshape(batch, -1).std(dim=1) / v.reshape(batch, -1).std(dim=1)
        v = v * (rescale * factor + (1 - rescale)).view(batch, *([1] * (v.ndim - 1)))
    return v
