"""The encoder half of T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer"), v1.1 flavour: the text encoder LTX-Video reads
(paper 2.3; PixArt-alpha's T5-v1.1-XXL).

One block: x + SelfAttention(norm(x)), then x + DenseReluDense(norm(x)); pre-norm
residuals, RMS norms without bias, linear layers without bias. Attention has no
1/sqrt(d) score scaling (T5 folds it into the initialization) and no absolute positions:
block 0 holds a learned scalar per head for each bucket of key - query offsets, and every
block adds the same biases to its scores (T5 paper 2.1).

Module names are those of the published state dicts (`shared`, `encoder.block.N.layer.0.
SelfAttention.q`, `encoder.block.N.layer.1.DenseReluDense.wi_0`, ...), so the files load
strictly; `encoder.embed_tokens` is `shared` itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# T5's feed-forward layers: "relu" (the original T5), "gated-gelu" (v1.1: GEGLU, Shazeer
# 2020, "GLU Variants Improve Transformer", with the tanh approximation of GELU).
FEED_FORWARDS = ("relu", "gated-gelu")


@dataclass(frozen=True)
class T5Config:
    """The encoder's sizes, named as in a T5 config.json; the defaults are T5's own."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # width of one head; T5 does not tie it to d_model / num_heads
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARDS:
            raise ValueError(
                f"feed_forward_proj {self.feed_forward_proj!r} is not supported; supported: "
                f"{', '.join(FEED_FORWARDS)} (T5 v1.1, as LTX-Video's T5-XXL, is gated-gelu)"
            )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @classmethod
    def from_dict(cls, values: dict) -> T5Config:
        """The fields of a config.json (other keys, such as the decoder's, are ignored)."""
        return cls(**{field.name: values[field.name] for field in fields(cls) if field.name in values})


# T5-XXL v1.1's encoder, LTX-Video's text encoder.
T5_V1_1_XXL = T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu")


def relative_position_bucket(offset: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """The bucket of each key - query `offset` (T5 paper 2.1, bidirectional: the encoder
    sees both sides). Half the buckets are for keys after the query, half for keys before;
    within a half, offsets below a quarter of the buckets get a bucket each and the rest
    share log-spaced buckets up to `max_distance`, beyond which all share the last."""
    half = num_buckets // 2
    bucket = (offset > 0).long() * half
    distance = offset.abs()
    exact = half // 2
    # log-spaced buckets serve distances of `exact` on; the clamp keeps the log finite
    # for the smaller ones, which take their exact bucket below
    far = distance.clamp(min=exact).float()
    spread = (torch.log(far / exact) / math.log(max_distance / exact) * (half - exact)).long()
    far_bucket = (exact + spread).clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, far_bucket)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (Hendrycks and Gimpel 2016), the one T5 v1.1 was trained
    with, written out term by term: torch's fused kernel rounds differently in half
    precision, and this order gives the same numbers as the reference implementations."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Embedding(nn.Embedding):
    """nn.Embedding whose random initialization is skipped on the meta device (a model
    built there to load weights into): torch draws normal_ on meta tensors through its
    Python decompositions, which import the whole compiler stack (torch._dynamo)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class RMSNorm(nn.Module):
    """T5's "layer norm": scale only, no mean, no bias (Zhang and Sennrich 2019). The mean
    square is taken in fp32 whatever the input; the result is cast to a half weight's
    dtype before the scale."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(mean_square + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class Attention(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.num_heads, self.d_kv = config.num_heads, config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.num_buckets = config.relative_attention_num_buckets
            self.max_distance = config.relative_attention_max_distance
            self.relative_attention_bias = Embedding(self.num_buckets, config.num_heads)

    def position_bias(self, length: int) -> torch.Tensor:
        """(1, heads, length, length): the learned bias of each key - query offset."""
        positions = torch.arange(length, device=self.relative_attention_bias.weight.device)
        offsets = positions[None, :] - positions[:, None]
        buckets = relative_position_bucket(offsets, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.num_heads, self.d_kv).transpose(1, 2) for proj in (self.q, self.k, self.v)
        )
        # scale 1: T5 scales its query initialization instead of the scores
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(batch, length, -1))


class DenseReluDense(nn.Module):
    """The feed-forward layer: relu(wi x), or GEGLU gelu(wi_0 x) * wi_1 x in T5 v1.1."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.gated = config.is_gated
        if self.gated:
            self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            hidden = gelu_tanh(self.wi_0(x)) * self.wi_1(x)
        else:
            hidden = F.relu(self.wi(x))
        # `wo` may be kept in fp32 under fp16 weights (its outputs overflow fp16); the
        # residual stream then continues in fp32
        return self.wo(hidden.to(self.wo.weight.dtype))


class SelfAttentionLayer(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.SelfAttention = Attention(config, has_relative_attention_bias)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class FeedForwardLayer(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = DenseReluDense(config)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


def clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """T5's activations can exceed fp16's range: an fp16 residual stream is clamped to
    it (a little inside where it already holds an infinity), so an overflow stays a
    large value instead of turning into NaN in the next norm."""
    if x.dtype != torch.float16:
        return x
    largest = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(x).any(), largest - 1000, largest)
    return x.clamp(-limit, limit)


class Block(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([SelfAttentionLayer(config, has_relative_attention_bias), FeedForwardLayer(config)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = clamp_fp16(self.layer[0](x, bias))
        return clamp_fp16(self.layer[1](x))


class Encoder(nn.Module):
    def __init__(self, config: T5Config, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        # only block 0 owns the relative position biases; all blocks use them
        self.block = nn.ModuleList(
            [Block(config, has_relative_attention_bias=index == 0) for index in range(config.num_layers)]
        )
        self.final_layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)

    def attention_bias(self, length: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The additive score bias of every block: position biases, and the dtype's lowest
        value on padded keys where `mask` (B, L; True on tokens) is given."""
        bias = self.block[0].layer[0].SelfAttention.position_bias(length)
        if mask is None:
            return bias
        keep = mask.bool()[:, None, None, :].to(bias.device)
        return torch.where(keep, bias, torch.finfo(bias.dtype).min)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        bias = self.attention_bias(input_ids.shape[1], mask)
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)


class T5EncoderModel(nn.Module):
    """Token ids (B, L) -> the last hidden state (B, L, d_model)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = Embedding(config.vocab_size, config.d_model)
        self.encoder = Encoder(config, self.shared)  # one embedding under both names

    @property
    def device(self) -> torch.device:
        return self.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.shared.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`attention_mask` (B, L), 1 on tokens and 0 on padding, keeps padding out of the
        attention; without it every position is attended to."""
        return self.encoder(input_ids, attention_mask)
