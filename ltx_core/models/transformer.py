"""The LTX-Video DiT (paper 2.2, Fig. 6): PixArt-alpha blocks with RMSNorm, QK-norm and
RoPE, AdaLN-single modulation from a timestep per token (2.4), cross attention to T5 text.

Module names are the official single-file checkpoint's, so its transformer tensors load
with `strict=True` once the `model.diffusion_model.` prefix is stripped. The math follows
Lightricks' `ltx_video/models/transformers/{transformer3d,attention}.py`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import SettingsError
from .configs import TransformerConfig
from .modulation import modulation_table
from .rope import apply_rope, rope_cos_sin, rope_pair_cos_sin

# Width of the sinusoidal timestep features (PixArt-alpha's `Timesteps(256)`).
TIMESTEP_FEATURES = 256
# Text tokens the mask drops get this added to their attention logits (Lightricks' value).
MASKED_TEXT_BIAS = -10000.0
# QK-norm epsilon, fixed in the reference's Attention whatever the config's norm_eps.
QK_NORM_EPS = 1e-5


@dataclass(frozen=True)
class BlockKernels:
    """The seam where other kernels plug into the blocks (`LTXVTransformer.use_kernels`).

    `attention(q, k, v, attn_mask)` on heads-first (B, H, T, D/H) tensors replaces torch's
    SDPA in the self-attention; `qk_norm_rope(q, k, q_weight, k_weight, cos, sin, eps) ->
    (q, k)` replaces QK-norm then RoPE on (B, T, D) tensors and takes RoPE tables per channel
    pair (B, T, D / 2), which `prepare` then builds. Cross-attention always runs torch's own.
    `norm_modulate(x, scale, shift, norm_weight, eps)` replaces `norm(x) * (1 + scale) +
    shift` and `gated_residual(x, gate, y)` replaces `x + gate * y` (AdaLN-single, 2.2)."""

    attention: Callable[..., Tensor] = F.scaled_dot_product_attention
    qk_norm_rope: Callable[..., tuple[Tensor, Tensor]] | None = None
    norm_modulate: Callable[..., Tensor] | None = None
    gated_residual: Callable[..., Tensor] | None = None


TORCH_KERNELS = BlockKernels()


class ResidentBlocks:
    """The block-weights seam's default (`LTXVTransformer.use_block_weights`): every block's
    weights stay where they are. Another source (`ltx_core.offload.BlockStream`) brings a
    block's weights to the device for the duration of `on_device(index)`."""

    def on_device(self, index: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


RESIDENT_BLOCKS = ResidentBlocks()


def timestep_sinusoids(timesteps: Tensor, width: int = TIMESTEP_FEATURES, max_period: float = 10000.0) -> Tensor:
    """(N,) timesteps in [0, 1000] -> (N, width) features [cos | sin], fp32 (DDPM-style)."""
    half = width // 2
    exponents = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps[:, None].float() * torch.exp(exponents)[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def text_attention_bias(text_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, L) mask, 1 = keep -> (B, 1, 1, L) bias added to every head's cross-attention logits."""
    if text_mask is None:
        return None
    return ((1 - text_mask.to(dtype)) * MASKED_TEXT_BIAS)[:, None, None, :]


class TimestepEmbedder(nn.Module):
    """Sinusoids -> linear_1 -> SiLU -> linear_2."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(TIMESTEP_FEATURES, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, timesteps: Tensor, dtype: torch.dtype) -> Tensor:
        features = timestep_sinusoids(timesteps).to(dtype)
        return self.linear_2(F.silu(self.linear_1(features)))


class AdaLayerNormSingle(nn.Module):
    """PixArt-alpha's adaLN-single: one MLP turns each timestep into the six shift/scale/gate
    vectors every block adds to its own `scale_shift_table`, plus the embedding itself."""

    def __init__(self, dim: int):
        super().__init__()
        # The `emb` level is PixArt's combined timestep/size embedding, kept for the key names.
        self.emb = nn.ModuleDict({"timestep_embedder": TimestepEmbedder(dim)})
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timesteps: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        embedded = self.emb["timestep_embedder"](timesteps, dtype)  # (N, D)
        return self.linear(F.silu(embedded)), embedded  # (N, 6D), (N, D)


class CaptionProjection(nn.Module):
    """T5 features -> model width (PixArt-alpha's text projection)."""

    def __init__(self, caption_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(caption_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, text: Tensor) -> Tensor:
        return self.linear_2(F.gelu(self.linear_1(text), approximate="tanh"))


class GELUProjection(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """dim -> 4 dim (GELU, tanh approximation) -> dim."""

    def __init__(self, dim: int):
        super().__init__()
        # Slot 1 is the reference's dropout, kept so the checkpoint's `net.2` lines up.
        self.net = nn.Sequential(GELUProjection(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _join_projections(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Checkpoint names -> the fused layer, for every load (official file, diffusers, tests)."""
    fused, parts = module.fused
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in parts]
        if all(key in state_dict for key in keys):
            state_dict[f"{prefix}{fused}.{kind}"] = torch.cat([state_dict.pop(key) for key in keys])


def _split_projections(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """The fused layer -> checkpoint names (views into the fused tensor)."""
    fused, parts = module.fused
    for kind in ("weight", "bias"):
        tensor = state_dict.pop(f"{prefix}{fused}.{kind}", None)
        if tensor is not None:
            state_dict.update(zip((f"{prefix}{name}.{kind}" for name in parts), tensor.chunk(len(parts))))


class Attention(nn.Module):
    """Multi-head attention with RMS QK-norm across all heads (2.2.2) and optional RoPE."""

    def __init__(self, dim: int, context_dim: int, heads: int, bias: bool, self_attention: bool):
        super().__init__()
        self.heads = heads
        # One GEMM for q, k, v (self-attention) or for k, v (cross-attention); the state dict
        # keeps the checkpoints' separate to_q / to_k / to_v names (`_split_projections`).
        if self_attention:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.to_q = nn.Linear(dim, dim, bias=bias)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.q_norm = nn.RMSNorm(dim, eps=QK_NORM_EPS)
        self.k_norm = nn.RMSNorm(dim, eps=QK_NORM_EPS)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # `to_out.0`, as in the checkpoint
        self.fused = ("to_qkv", ("to_q", "to_k", "to_v")) if self_attention else ("to_kv", ("to_k", "to_v"))
        self.register_load_state_dict_pre_hook(_join_projections)
        self.register_state_dict_post_hook(_split_projections)

    def project(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q from `x`, k and v from `context` (or `x`): (B, T, D), (B, S, D), (B, S, D)."""
        if context is None:
            return self.to_qkv(x).chunk(3, dim=-1)
        return (self.to_q(x), *self.to_kv(context).chunk(2, dim=-1))

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        kernels: BlockKernels = TORCH_KERNELS,
    ) -> Tensor:
        """QK-norm, RoPE and attention of projected q, k, v -> (B, T, D), before `to_out`."""
        if rope is not None and kernels.qk_norm_rope is not None:
            q, k = kernels.qk_norm_rope(q, k, self.q_norm.weight, self.k_norm.weight, *rope, QK_NORM_EPS)
        else:
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:  # RoPE rotates the full width, before the split into heads
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        out = kernels.attention(q, k, v, attn_mask=bias)  # (B, H, T, D/H)
        return rearrange(out, "b h n d -> b n (h d)")

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        kernels: BlockKernels = TORCH_KERNELS,
    ) -> Tensor:
        return self.to_out[0](self.attend(*self.project(x, context), rope, bias, kernels))


# A replacement for one block's self-attention sub-layer, for one forward (`LTXVTransformer.
# blocks`): called with the block's `Attention`, its modulated input, RoPE and the kernels.
SelfAttention = Callable[["Attention", Tensor, tuple[Tensor, Tensor], BlockKernels], Tensor]


def plain_self_attention(attn: Attention, x: Tensor, rope: tuple[Tensor, Tensor], kernels: BlockKernels) -> Tensor:
    return attn(x, rope=rope, kernels=kernels)


# What one block hands on, replaced for one forward (`LTXVTransformer.blocks`): called with
# the block's input and its output, returns the tokens the next block gets.
BlockOutput = Callable[[Tensor, Tensor], Tensor]


class TransformerBlock(nn.Module):
    """Fig. 6: modulated self-attention with RoPE, plain cross-attention to the text,
    modulated feed-forward; shift/scale/gate come per token from AdaLN-single."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        dim = cfg.inner_dim
        self.norm1 = nn.RMSNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_elementwise_affine)
        self.attn1 = Attention(dim, dim, cfg.num_attention_heads, cfg.attention_bias, self_attention=True)
        self.attn2 = Attention(
            dim, cfg.cross_attention_dim, cfg.num_attention_heads, cfg.attention_bias, self_attention=False
        )
        self.norm2 = nn.RMSNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_elementwise_affine)
        self.ff = FeedForward(dim)
        self.scale_shift_table = modulation_table(6, dim)

    def forward(
        self,
        x: Tensor,
        modulation: Tensor,
        rope: tuple[Tensor, Tensor],
        text: Tensor,
        text_bias: Tensor | None,
        kernels: BlockKernels = TORCH_KERNELS,
        self_attention: SelfAttention = plain_self_attention,
    ) -> Tensor:
        # modulation: (B, 1 or T, 6D) -> six (B, 1 or T, D)
        ada = self.scale_shift_table + modulation.unflatten(-1, (6, -1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(dim=2)
        attn_input = modulated_norm(self.norm1, x, scale_msa, shift_msa, kernels)
        x = gated_add(x, gate_msa, self_attention(self.attn1, attn_input, rope, kernels), kernels)
        x = x + self.attn2(x, context=text, bias=text_bias)  # no norm, no modulation: the reference's
        return gated_add(x, gate_mlp, self.ff(modulated_norm(self.norm2, x, scale_mlp, shift_mlp, kernels)), kernels)


def modulated_norm(norm: nn.RMSNorm, x: Tensor, scale: Tensor, shift: Tensor, kernels: BlockKernels) -> Tensor:
    """AdaLN-single's modulated norm (2.2), through the seam's kernel where one is plugged in."""
    if kernels.norm_modulate is None:
        return norm(x) * (1 + scale) + shift
    return kernels.norm_modulate(x, scale, shift, norm.weight, norm.eps)


def gated_add(x: Tensor, gate: Tensor, y: Tensor, kernels: BlockKernels) -> Tensor:
    if kernels.gated_residual is None:
        return x + gate * y
    return kernels.gated_residual(x, gate, y)


class LTXVTransformer(nn.Module):
    """Latent tokens, per-token sigmas, text and RoPE coordinates -> velocity."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.kernels = TORCH_KERNELS
        self.block_weights = RESIDENT_BLOCKS
        dim = cfg.inner_dim
        self.patchify_proj = nn.Linear(cfg.in_channels, dim)
        self.adaln_single = AdaLayerNormSingle(dim)
        self.caption_projection = CaptionProjection(cfg.caption_channels, dim)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.scale_shift_table = modulation_table(2, dim)
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, cfg.out_channels)

    def linear_layers(self) -> dict[str, nn.Module]:
        """Every linear layer by module name (the fused `to_qkv` / `to_kv` as one), what
        `replace_linear` may swap: modules with `in_features` and `out_features`, not
        looking inside one (a replacement may hold the layer it wraps)."""
        found: dict[str, nn.Module] = {}
        outer = None  # the last layer found: its children follow it in `named_modules`' order
        for name, module in self.named_modules():
            if outer is not None and name.startswith(outer):
                continue
            if hasattr(module, "in_features") and hasattr(module, "out_features"):
                found[name], outer = module, f"{name}."
        return found

    def replace_linear(self, name: str, layer: nn.Module) -> nn.Module:
        """The seam where stored quantized weights, FP8 matmuls and LoRA change how one
        linear layer computes: `layer` (called as `layer(x)`, with the same `in_features`
        and `out_features`) takes the place of `name`; returns the layer it replaced."""
        previous = self._linear(name)
        sizes = lambda m: (m.in_features, m.out_features)
        if sizes(layer) != sizes(previous):
            raise SettingsError(f"a layer of sizes {sizes(layer)} cannot replace {name!r} of sizes {sizes(previous)}")
        parent, _, child = name.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, child, layer)
        return previous

    def checkpoint_linear(self, name: str) -> tuple[str, slice]:
        """A checkpoint's linear module name (`...attn1.to_k`) -> the layer holding it here
        and the rows of that layer's output it makes (the fused projections)."""
        parent, _, child = name.rpartition(".")
        attention = self.get_submodule(parent) if parent else None
        if isinstance(attention, Attention):
            fused, parts = attention.fused
            if child in parts:
                width = attention.to_out[0].in_features
                index = parts.index(child)
                return f"{parent}.{fused}", slice(index * width, (index + 1) * width)
        return name, slice(0, self._linear(name).out_features)

    def _linear(self, name: str) -> nn.Module:
        try:
            layer = self.get_submodule(name)
        except AttributeError:
            layer = None
        if not name or not hasattr(layer, "in_features") or not hasattr(layer, "out_features"):
            raise SettingsError(f"the transformer has no linear layer {name!r}")
        return layer

    def use_kernels(self, kernels: BlockKernels) -> BlockKernels:
        """Run every block through `kernels` (its self-attention, modulated norms and gated
        residuals) from now on; returns the kernels used before (to restore them)."""
        previous, self.kernels = self.kernels, kernels
        return previous

    def use_block_weights(self, source) -> object:
        """Take each block's weights from `source` while the block runs (`source.on_device(
        index)`, a context): the seam where offloading streams blocks from CPU memory. Returns
        the source used before (to restore it)."""
        previous, self.block_weights = self.block_weights, source
        return previous

    def forward(
        self, latent: Tensor, timestep: Tensor, text: Tensor, text_mask: Tensor | None, coords: Tensor
    ) -> Tensor:
        """latent (B, T, in_channels); timestep sigmas in [0, 1], (B, T) per token or (B,);
        text (B, L, caption_channels); text_mask (B, L), 1 = keep, or None; coords (B, 3, T)
        from `rope.fractional_coords` (seconds, pixels, pixels). Returns (B, T, out_channels)."""
        self.check_inputs(latent, timestep, text, text_mask, coords)
        x, modulation, embedded_t, context, text_bias, rope = self.prepare(latent, timestep, text, text_mask, coords)
        return self.finish(self.blocks(x, modulation, rope, context, text_bias), embedded_t)

    def blocks(
        self,
        x: Tensor,
        modulation: Tensor,
        rope: tuple[Tensor, Tensor],
        context: Tensor,
        text_bias: Tensor | None,
        self_attention: dict[int, SelfAttention] | None = None,
        outputs: dict[int, BlockOutput] | None = None,
    ) -> Tensor:
        """Every transformer block on the tokens; for this call only, `self_attention` maps
        block indices to a replacement of that block's self-attention and `outputs` to a
        replacement of what it hands on (a caller that perturbs chosen blocks for some batch items)."""
        replaced, handed_on = self_attention or {}, outputs or {}
        for index, block in enumerate(self.transformer_blocks):
            with self.block_weights.on_device(index):
                out = block(
                    x, modulation, rope, context, text_bias, self.kernels, replaced.get(index, plain_self_attention)
                )
            x = handed_on[index](x, out) if index in handed_on else out
        return x

    # `prepare`, each block and `finish` are the regions compiled for speed: the blocks
    # share one compiled graph.

    def prepare(self, latent: Tensor, timestep: Tensor, text: Tensor, text_mask: Tensor | None, coords: Tensor):
        """Inputs -> (tokens, modulation, timestep embedding, projected text, text bias, RoPE)."""
        batch = latent.shape[0]
        x = self.patchify_proj(latent)  # (B, T, D)

        t = timestep.float()
        if self.cfg.timestep_scale_multiplier:
            t = t * self.cfg.timestep_scale_multiplier  # sigma -> the 0..1000 the model was trained on
        modulation, embedded_t = self.adaln_single(t.flatten(), x.dtype)
        modulation = modulation.view(batch, -1, modulation.shape[-1])  # (B, 1 or T, 6D)
        embedded_t = embedded_t.view(batch, -1, embedded_t.shape[-1])  # (B, 1 or T, D)

        context = self.caption_projection(text)  # (B, L, D)
        text_bias = text_attention_bias(text_mask, x.dtype)  # (B, 1, 1, L)
        # RoPE in fp32, cast to the model's dtype once, as Lightricks' precompute_freqs_cis does.
        tables = rope_cos_sin if self.kernels.qk_norm_rope is None else rope_pair_cos_sin
        cos, sin = tables(
            coords, x.shape[-1], self.cfg.positional_embedding_theta, self.cfg.positional_embedding_max_pos
        )
        rope = (cos.to(x.dtype), sin.to(x.dtype))  # each (B, T, D), or (B, T, D / 2) as pairs
        return x, modulation, embedded_t, context, text_bias, rope

    def finish(self, x: Tensor, embedded_t: Tensor) -> Tensor:
        """Final modulated LayerNorm and projection to the velocity (B, T, out_channels)."""
        shift, scale = (self.scale_shift_table + embedded_t[:, :, None]).unbind(dim=2)
        x = self.norm_out(x) * (1 + scale) + shift
        return self.proj_out(x)

    def check_inputs(self, latent, timestep, text, text_mask, coords) -> None:
        """The shapes `forward` takes, refused with what is allowed."""
        cfg = self.cfg
        if latent.ndim != 3 or latent.shape[-1] != cfg.in_channels:
            raise SettingsError(
                f"latent tokens have shape {tuple(latent.shape)}; allowed: (batch, tokens, {cfg.in_channels})"
            )
        batch, tokens = latent.shape[:2]
        if tuple(timestep.shape) not in ((batch,), (batch, 1), (batch, tokens)):
            raise SettingsError(
                f"timestep has shape {tuple(timestep.shape)}; allowed: "
                f"({batch},) or ({batch}, {tokens}) for {tokens} tokens"
            )
        if text.ndim != 3 or text.shape[0] != batch or text.shape[-1] != cfg.caption_channels:
            raise SettingsError(
                f"text embeddings have shape {tuple(text.shape)}; allowed: ({batch}, length, {cfg.caption_channels})"
            )
        if text_mask is not None and tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise SettingsError(
                f"text_mask has shape {tuple(text_mask.shape)}; "
                f"allowed: {tuple(text.shape[:2])}, one entry per text token"
            )
        if tuple(coords.shape) != (batch, 3, tokens):
            raise SettingsError(f"coords have shape {tuple(coords.shape)}; allowed: ({batch}, 3, {tokens})")
