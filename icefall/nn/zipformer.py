"""Zipformer2 encoder (Yao et al., "Zipformer: A faster and better encoder for automatic speech
recognition", ICLR 2024), batch-first.

The encoder is a sequence of *stacks*.  Stack i runs ``num_encoder_layers[i]`` layers of width
``encoder_dim[i]`` at ``1/downsampling_factor[i]`` of the input frame rate: its input is
downsampled by a learned weighted average, the layers run, the output is upsampled by
repetition and mixed with the stack input by a learned per-channel bypass.  Between stacks the
channel count is truncated or zero-padded.  The final output takes every channel from the most
recent stack that has it (dim ``max(encoder_dim)``) and is optionally downsampled by 2.

Each layer (see :class:`ZipformerLayer`) computes relative-position attention weights once and
reuses them in a NonlinAttention module and two value-attention modules, around three
feed-forward modules and two convolution modules, then BiasNorm and a bypass to the layer input.

Padding is honoured everywhere: attention never looks at padded keys, convolutions see zeros
there, and downsampling repeats each utterance's *own* last frame, so an utterance gives the
same output alone as in a padded batch (eval mode).  Padded output frames are zeroed.
"""
import copy
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from icefall.utils import make_pad_mask
from icefall.nn.scaling import (
    Balancer,
    BiasNorm,
    Dropout2,
    FloatLike,
    float_value,
    ScaledLinear,
    ScheduledFloat,
    Whiten,
    choose,
    convert_num_channels,
    limit_param_value,
    penalize_abs_values_gt,
    random_draw,
    swoosh_l,
    swoosh_r,
    whitening_schedule,
)

IntOrTuple = Union[int, Sequence[int]]


class Zipformer2(nn.Module):
    """Multi-rate Zipformer encoder.

    Args:
      output_downsampling_factor: 1 (keep the input frame rate, e.g. 50 Hz for SSL) or 2.
      downsampling_factor: per stack, e.g. (1, 2, 4, 8, 4, 2).
      encoder_dim: per stack; the input must have ``encoder_dim[0]`` channels.
      num_encoder_layers, feedforward_dim, num_heads, query_head_dim, pos_head_dim,
      value_head_dim, cnn_module_kernel: per stack (an int means the same for all).
      encoder_unmasked_dim: per stack, channels never zeroed by the training-time feature
        masks (the rest are zeroed on ~12.5% / ~23% of frames, acting like a smaller model).
      pos_dim: size of the relative positional encoding before projection.
      dropout: dropout rate (may be a ScheduledFloat); default 0.3 -> 0.1 over 20k batches.
      warmup_batches: layer-skipping warm-up; stacks warm up one after the other.
      feature_mask_per_frame: draw the feature masks per frame (True) or per utterance.
    """

    def __init__(
        self,
        output_downsampling_factor: int = 2,
        downsampling_factor: Sequence[int] = (2, 4),
        encoder_dim: IntOrTuple = 384,
        num_encoder_layers: IntOrTuple = 4,
        encoder_unmasked_dim: IntOrTuple = 256,
        query_head_dim: IntOrTuple = 24,
        pos_head_dim: IntOrTuple = 4,
        value_head_dim: IntOrTuple = 12,
        num_heads: IntOrTuple = 8,
        feedforward_dim: IntOrTuple = 1536,
        cnn_module_kernel: IntOrTuple = 31,
        pos_dim: int = 192,
        dropout: Optional[FloatLike] = None,
        warmup_batches: float = 4000.0,
        feature_mask_per_frame: bool = True,
    ) -> None:
        super().__init__()
        assert output_downsampling_factor in (1, 2), output_downsampling_factor
        n = len(downsampling_factor)

        def per_stack(x: IntOrTuple) -> Tuple[int, ...]:
            x = (x,) if isinstance(x, int) else tuple(x)
            x = x * n if len(x) == 1 else x
            assert len(x) == n, (x, n)
            return tuple(int(v) for v in x)

        if dropout is None:
            dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
        self.output_downsampling_factor = output_downsampling_factor
        self.downsampling_factor = per_stack(downsampling_factor)
        self.encoder_dim = per_stack(encoder_dim)
        self.encoder_unmasked_dim = per_stack(encoder_unmasked_dim)
        self.num_encoder_layers = per_stack(num_encoder_layers)
        self.feature_mask_per_frame = feature_mask_per_frame
        assert all(u <= d for u, d in zip(self.encoder_unmasked_dim, self.encoder_dim))
        heads, qdim, pdim = per_stack(num_heads), per_stack(query_head_dim), per_stack(pos_head_dim)
        vdim, ffdim, kernel = per_stack(value_head_dim), per_stack(feedforward_dim), per_stack(cnn_module_kernel)

        self.input_dim = self.encoder_dim[0]
        self.output_dim = max(self.encoder_dim)
        self.encoders = nn.ModuleList()
        for i in range(n):
            layer = ZipformerLayer(
                embed_dim=self.encoder_dim[i],
                pos_dim=pos_dim,
                num_heads=heads[i],
                query_head_dim=qdim[i],
                pos_head_dim=pdim[i],
                value_head_dim=vdim[i],
                feedforward_dim=ffdim[i],
                dropout=dropout,
                cnn_module_kernel=kernel[i],
            )
            # Stacks warm up one after another (the front end gets the first slot).
            stack = ZipformerStack(
                layer,
                self.num_encoder_layers[i],
                pos_dim=pos_dim,
                downsample=self.downsampling_factor[i],
                warmup_begin=warmup_batches * (i + 1) / (n + 1),
                warmup_end=warmup_batches * (i + 2) / (n + 1),
                final_layerdrop_rate=0.035 * self.downsampling_factor[i] ** 0.5,
            )
            self.encoders.append(stack)
        self.downsample_output = SimpleDownsample(output_downsampling_factor)

    def get_feature_masks(self, x: Tensor) -> List[Union[float, Tensor]]:
        """Random channel masks, one per stack, shape (B, T or 1, encoder_dim[i]) at the
        stack's own frame rate; ``[1.0, ...]`` in eval mode.  Channels beyond
        ``encoder_unmasked_dim`` are zeroed in two bands: the upper half of the extra
        channels on ~23% of frames, the lower half on ~12.5% (a subset of those)."""
        if not self.training:
            return [1.0] * len(self.encoders)
        B, T, _ = x.shape
        t = T if self.feature_mask_per_frame else 1
        p = 0.125
        keep1 = (torch.rand(B, t, 1, device=x.device) > p).to(x.dtype)
        keep2 = keep1 * (torch.rand(B, t, 1, device=x.device) > p).to(x.dtype)
        masks = []
        for ds, d, u1 in zip(self.downsampling_factor, self.encoder_dim, self.encoder_unmasked_dim):
            u2 = u1 + (d - u1) // 2
            k1, k2 = keep1[:, ::ds], keep2[:, ::ds]
            ones = torch.ones(B, k1.shape[1], u1, dtype=x.dtype, device=x.device)
            masks.append(torch.cat((ones, k1.expand(-1, -1, u2 - u1), k2.expand(-1, -1, d - u2)), dim=-1))
        return masks

    def forward(
        self, x: Tensor, x_lens: Tensor, return_hidden: bool = False
    ) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, List[Tensor]]]:
        """
        Args:
          x: (B, T, encoder_dim[0]) input features.
          x_lens: (B,) number of valid frames.
          return_hidden: also return every layer's output.
        Returns:
          out: (B, T', output_dim), T' = ceil(T / output_downsampling_factor), zero at padding.
          out_lens: (B,) valid output frames, ceil(x_lens / output_downsampling_factor).
          hidden (if requested): list over all layers of (B, T', encoder_dim[stack]) tensors,
            upsampled by repetition to the input rate and then downsampled like the output.
        """
        B, T, C = x.shape
        assert C == self.input_dim, (C, self.input_dim)
        feature_masks = self.get_feature_masks(x)
        hidden: Optional[List[Tensor]] = [] if return_hidden else None
        outputs = []
        for i, stack in enumerate(self.encoders):
            x = convert_num_channels(x, self.encoder_dim[i])
            x = stack(x, x_lens, feature_mask=feature_masks[i], hidden=hidden)
            outputs.append(x)
        x = self._full_dim_output(outputs)

        ds = self.output_downsampling_factor
        out_lens = (x_lens + ds - 1) // ds
        x = self.downsample_output(x, x_lens)
        pad = make_pad_mask(out_lens, x.shape[1]).unsqueeze(-1)
        x = x.masked_fill(pad, 0.0)
        if hidden is None:
            return x, out_lens
        hidden = [self.downsample_output(h, x_lens).masked_fill(pad, 0.0) for h in hidden]
        return x, out_lens, hidden

    def _full_dim_output(self, outputs: List[Tensor]) -> Tensor:
        # Channel c comes from the latest stack whose width exceeds c.
        pieces = [outputs[-1]]
        cur = self.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            d = self.encoder_dim[i]
            if d > cur:
                pieces.append(outputs[i][..., cur:d])
                cur = d
        return torch.cat(pieces, dim=-1)


def _pad_with_last_frame(x: Tensor, lengths: Tensor, total: int) -> Tensor:
    """(B, T, C) -> (B, total, C) where frame t >= lengths[b] is a copy of frame lengths[b]-1.

    Downsampling averages groups of frames; repeating each utterance's own last frame into the
    padding makes the result independent of how much padding the batch adds.
    """
    B, T, C = x.shape
    t = torch.arange(total, device=x.device).unsqueeze(0)
    idx = torch.minimum(t, (lengths.clamp(min=1) - 1).unsqueeze(1))  # (B, total)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(B, total, C))


class SimpleDownsample(nn.Module):
    """Downsample (B, T, C) -> (B, ceil(T/ds), C) by a learned softmax-weighted average of each
    group of ``ds`` frames (the weights do not depend on the channel)."""

    def __init__(self, downsample: int):
        super().__init__()
        self.downsample = downsample
        self.bias = nn.Parameter(torch.zeros(downsample))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        ds = self.downsample
        if ds == 1:
            return x
        B, T, C = x.shape
        Td = (T + ds - 1) // ds
        x = _pad_with_last_frame(x, lengths, Td * ds).reshape(B, Td, ds, C)
        w = self.bias.softmax(dim=0).to(x.dtype)
        return torch.einsum("btdc,d->btc", x, w)


class BypassModule(nn.Module):
    """``out = x_orig + (x - x_orig) * scale`` with a learned per-channel scale.

    While training the scale is kept in ``[scale_min, scale_max]`` (scale_min falls from 0.9
    to 0.2 over 20k batches, forcing early layers to learn) and, with probability
    ``skip_rate`` per utterance, set to 0 (layer drop)."""

    def __init__(
        self,
        embed_dim: int,
        skip_rate: FloatLike = 0.0,
        scale_min: FloatLike = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0.0),
        scale_max: FloatLike = 1.0,
    ):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = copy.deepcopy(skip_rate)
        self.scale_min = copy.deepcopy(scale_min)
        self.scale_max = copy.deepcopy(scale_max)

    def forward(self, x_orig: Tensor, x: Tensor) -> Tensor:
        """x_orig, x: (B, T, C)."""
        scale = self.bypass_scale
        if self.training:
            scale = limit_param_value(scale, float_value(self.scale_min), float_value(self.scale_max))
            skip = float_value(self.skip_rate)
            if skip != 0.0:
                keep = torch.rand(x.shape[0], 1, 1, device=x.device) > skip
                scale = scale * keep.to(scale.dtype)
        return x_orig + (x - x_orig) * scale


class ZipformerStack(nn.Module):
    """``num_layers`` copies of a :class:`ZipformerLayer` run at 1/``downsample`` of the input
    rate; input and output are at the full rate (output mixed with the input by a bypass)."""

    def __init__(
        self,
        layer: "ZipformerLayer",
        num_layers: int,
        pos_dim: int,
        downsample: int,
        warmup_begin: float,
        warmup_end: float,
        initial_layerdrop_rate: float = 0.5,
        final_layerdrop_rate: float = 0.05,
    ) -> None:
        super().__init__()
        dim = layer.embed_dim
        self.downsample_factor = downsample
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        # Layer drop: each layer starts at a high skip rate and falls to the final one during
        # its slice of the stack's warm-up window.
        delta = (warmup_end - warmup_begin) / num_layers
        for i, lyr in enumerate(self.layers):
            b = warmup_begin + i * delta
            lyr.bypass.skip_rate = ScheduledFloat(
                (b, initial_layerdrop_rate), (b + delta, final_layerdrop_rate), default=0.0
            )
        if downsample != 1:
            self.downsample = SimpleDownsample(downsample)
            self.out_combiner = BypassModule(dim)

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        feature_mask: Union[float, Tensor] = 1.0,
        hidden: Optional[List[Tensor]] = None,
    ) -> Tensor:
        """x: (B, T, C) at the full rate; x_lens: (B,); feature_mask broadcasts with the
        downsampled x.  Appends each layer's output (at the full rate) to ``hidden``."""
        ds = self.downsample_factor
        x_orig = x
        T = x.shape[1]
        if ds != 1:
            x = self.downsample(x, x_lens)
        lens = (x_lens + ds - 1) // ds
        pad_mask = make_pad_mask(lens, x.shape[1])
        pos_emb = self.encoder_pos(x.shape[1], x.device, x.dtype)
        x = x * feature_mask
        for layer in self.layers:
            x = layer(x, pos_emb, key_padding_mask=pad_mask)
            x = x * feature_mask
            if hidden is not None:
                hidden.append(self._upsample(x, T))
        if ds == 1:
            return x
        return self.out_combiner(x_orig, self._upsample(x, T))

    def _upsample(self, x: Tensor, T: int) -> Tensor:
        ds = self.downsample_factor
        return x if ds == 1 else x.repeat_interleave(ds, dim=1)[:, :T]


class CompactRelPositionalEncoding(nn.Module):
    """Relative positional encoding for offsets -(T-1)..(T-1), shape (1, 2T-1, embed_dim).

    Offsets are compressed logarithmically beyond ~sqrt(embed_dim), mapped into a finite
    interval with atan, then Fourier-encoded, so nearby offsets are distinguishable while
    1000 vs 1001 look alike.  The last channel is constant 1 (a bias).  The value for a given
    offset does not depend on T.
    """

    def __init__(self, embed_dim: int, dropout_rate: FloatLike, length_factor: float = 1.0):
        super().__init__()
        assert embed_dim % 2 == 0 and length_factor >= 1.0
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = Dropout2(dropout_rate)
        self._cache: Optional[Tensor] = None

    def encode(self, offsets: Tensor) -> Tensor:
        """offsets: (N,) float -> (N, embed_dim) encoding."""
        x = offsets.float().unsqueeze(1)
        freqs = 1 + torch.arange(self.embed_dim // 2, device=x.device)
        c = self.embed_dim**0.5  # slope 1 near 0, logarithmic beyond ~c
        x_compressed = c * x.sign() * ((x.abs() + c).log() - math.log(c))
        length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
        x_atan = (x_compressed / length_scale).atan()
        pe = torch.empty(x.shape[0], self.embed_dim, device=x.device)
        pe[:, 0::2] = (x_atan * freqs).cos()
        pe[:, 1::2] = (x_atan * freqs).sin()
        pe[:, -1] = 1.0
        return pe

    def forward(self, T: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        cache = self._cache
        if cache is None or cache.shape[0] < 2 * T - 1 or cache.device != device:
            n = max(T, 1000)
            cache = self.encode(torch.arange(-(n - 1), n, device=device))
            self._cache = cache
        mid = cache.shape[0] // 2
        pe = cache[mid - (T - 1) : mid + T].to(dtype)
        return self.dropout(pe.unsqueeze(0))


class RelPositionAttentionWeights(nn.Module):
    """Multi-head attention weights with relative positions, computed once per layer.

    score[b,h,i,j] = q_i . k_j + p_i . P(j - i), where P is a projection of the positional
    encoding of offset j - i and p_i a small per-head "position query".  The usual
    1/sqrt(head_dim) is folded into the initial scale of ``in_proj`` (ScaledAdam keeps it).
    Returns (B, H, T, T) weights, exactly zero on padded keys.
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        pos_emb_skip_rate: FloatLike = ScheduledFloat((0.0, 0.5), (4000.0, 0.0)),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.pos_emb_skip_rate = copy.deepcopy(pos_emb_skip_rate)
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        self.in_proj = ScaledLinear(embed_dim, in_proj_dim, bias=True, initial_scale=query_head_dim**-0.25)
        # Keys: whitened per head; balanced toward zero mean (the weights are invariant to a
        # key bias, which Adam-style updates would otherwise let drift).
        self.whiten_keys = Whiten(num_heads, whitening_schedule(3.0), prob=(0.025, 0.25), grad_scale=0.025)
        self.balance_keys = Balancer(
            query_head_dim * num_heads, channel_dim=-1, min_positive=0.4, max_positive=0.6,
            min_abs=0.0, max_abs=100.0, prob=0.025,
        )
        self.linear_pos = ScaledLinear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C); pos_emb: (1, 2T-1, pos_dim); key_padding_mask: (B, T) True = pad."""
        B, T, _ = x.shape
        H, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        x = self.in_proj(x)
        q, k, p = x.split([H * dq, H * dq, H * dp], dim=-1)
        k = self.whiten_keys(self.balance_keys(k))
        q = q.reshape(B, T, H, dq).transpose(1, 2)  # (B, H, T, dq)
        k = k.reshape(B, T, H, dq).permute(0, 2, 3, 1)  # (B, H, dq, T)
        scores = torch.matmul(q, k)  # (B, H, T, T)

        def with_pos_scores() -> Tensor:
            pq = p.reshape(B, T, H, dp).transpose(1, 2)  # (B, H, T, dp)
            pos = self.linear_pos(pos_emb).reshape(1, 2 * T - 1, H, dp).permute(0, 2, 3, 1)
            pos_scores = torch.matmul(pq, pos).contiguous()  # (B, H, T, 2T-1), offset index
            return scores + rel_to_abs(pos_scores)

        use_pos = not self.training or random_draw(x.device) >= float_value(self.pos_emb_skip_rate)
        scores = choose(use_pos, with_pos_scores, scores)

        if self.training:
            # Failsafe against implausibly large scores (gradient-only penalty).
            penalize = random_draw(x.device) < 0.1
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1.0e-4, active=penalize)
        if key_padding_mask is not None:
            # -1000 (not -inf) so fully masked rows stay finite; exp(-1000) is exactly 0.
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -1000.0)
        return scores.softmax(dim=-1)


def rel_to_abs(pos_scores: Tensor) -> Tensor:
    """(..., T, 2T-1) scores indexed by relative offset -> (..., T, T) indexed by key.

    Column ``r`` of row ``i`` holds offset ``r - (T-1)``; the output at (i, j) is the column
    for offset ``j - i``, i.e. input[..., i, (T-1) - i + j]. In the flattened rows that is
    element (T-1) + i (2T-2) + j: a slice of the flat view, split into rows of 2T-2, first T
    columns. All views, no copy, and traceable by torch.compile (no storage offsets).
    """
    *lead, T, T2 = pos_scores.shape
    assert T2 == 2 * T - 1, pos_scores.shape
    if T == 1:
        return pos_scores
    flat = pos_scores.reshape(*lead, T * T2)
    return flat[..., T - 1 : T - 1 + T * (T2 - 1)].unflatten(-1, (T, T2 - 1))[..., :T]


class ValueAttention(nn.Module):
    """Attention output from precomputed weights: project values, mix them with the weights,
    project back."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, bias=True, initial_scale=0.05)
        self.whiten = Whiten(1, whitening_schedule(7.5, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (B, T, C); attn_weights: (B, H, T, T) -> (B, T, C)."""
        B, T, _ = x.shape
        H = attn_weights.shape[1]
        v = self.in_proj(x).reshape(B, T, H, -1).transpose(1, 2)  # (B, H, T, dv)
        out = torch.matmul(attn_weights, v).transpose(1, 2).reshape(B, T, -1)
        return self.whiten(self.out_proj(out))


class FeedforwardModule(nn.Module):
    """Linear -> SwooshL -> dropout (mask shared over time) -> Linear."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(
            feedforward_dim, channel_dim=-1, min_positive=0.3, max_positive=1.0, min_abs=0.75, max_abs=5.0
        )
        self.dropout = Dropout2(dropout, shared_dim=1)
        self.out_proj = ScaledLinear(feedforward_dim, embed_dim, bias=True, initial_scale=0.1)
        self.out_whiten = Whiten(1, whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.hidden_balancer(self.in_proj(x))
        x = self.dropout(swoosh_l(x))
        return self.out_whiten(self.out_proj(x))


class NonlinAttention(nn.Module):
    """Like the convolution module, with the convolution replaced by the (first head's)
    attention weights: ``out_proj((A @ (x * tanh(s))) * y)`` with [s, x, y] = in_proj(input)."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, 3 * hidden_channels, bias=True)
        # Well-trained instances have |pre-tanh| around 3 or more; keep it from collapsing.
        self.balancer = Balancer(
            hidden_channels, channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
            max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
            min_abs=0.5, max_abs=5.0,
        )
        self.out_proj = ScaledLinear(hidden_channels, channels, bias=True, initial_scale=0.05)
        self.whiten1 = Whiten(1, whitening_schedule(5.0), prob=(0.025, 0.25), grad_scale=0.01)
        self.whiten2 = Whiten(1, whitening_schedule(5.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (B, T, C); attn_weights: (B, 1, T, T) -> (B, T, C)."""
        s, x, y = self.in_proj(x).chunk(3, dim=-1)
        x = self.whiten1(x) * torch.tanh(self.balancer(s))
        x = torch.matmul(attn_weights, x.unsqueeze(1)).squeeze(1)  # (B, T, hidden)
        return self.whiten2(self.out_proj(x * y))


class ConvolutionModule(nn.Module):
    """GLU-style gate, depthwise conv over time (zeros at padded frames), SwooshR, Linear."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        assert kernel_size % 2 == 1
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.balancer1 = Balancer(
            channels, channel_dim=-1,
            min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)), max_positive=1.0,
            min_abs=1.5, max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0),
        )
        self.depthwise_conv = nn.Conv1d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.balancer2 = Balancer(
            channels, channel_dim=1,
            min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)), max_positive=1.0,
            min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0,
        )
        self.whiten = Whiten(1, whitening_schedule(7.5), prob=(0.025, 0.25), grad_scale=0.01)
        self.out_proj = ScaledLinear(channels, channels, initial_scale=0.05)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        x, s = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(self.balancer1(s))
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        x = self.balancer2(self.depthwise_conv(x.transpose(1, 2))).transpose(1, 2)
        return self.out_proj(swoosh_r(self.whiten(x)))


class ZipformerLayer(nn.Module):
    """One Zipformer2 layer (B, T, C) -> (B, T, C).

    ff1 -> NonlinAttention -> attention 1 -> conv 1 -> ff2 -> mid bypass -> attention 2 ->
    conv 2 -> ff3 -> BiasNorm -> bypass, all residual, sharing one set of attention weights.
    Feed-forward dims are 3/4, 1, 5/4 of ``feedforward_dim``.  While training, whole modules
    are skipped per utterance at scheduled rates (high early in training).
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        dropout: FloatLike = 0.1,
        cnn_module_kernel: int = 31,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.bypass = BypassModule(embed_dim, skip_rate=ScheduledFloat((0.0, 0.5), (4000.0, 0.02), default=0))
        self.bypass_mid = BypassModule(embed_dim)
        self.attention_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.conv_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.const_attention_rate = ScheduledFloat((0.0, 0.25), (4000.0, 0.025), default=0)
        self.ff2_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))

        self.self_attn_weights = RelPositionAttentionWeights(
            embed_dim, pos_dim, num_heads, query_head_dim, pos_head_dim
        )
        self.self_attn1 = ValueAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = ValueAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, feedforward_dim * 3 // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, feedforward_dim * 5 // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel)
        self.norm = BiasNorm(embed_dim)

        def out_balancer(min_abs: float) -> Balancer:
            return Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                            min_abs=min_abs, max_abs=4.0)

        self.balancer1 = out_balancer(0.2)
        self.balancer2 = out_balancer(0.1)
        self.balancer_na = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)), prob=0.05,
        )
        self.balancer_ff2 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0), max_abs=2.0, prob=0.05,
        )
        self.balancer_ff3 = Balancer(
            embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
            min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0), max_abs=4.0, prob=0.05,
        )
        self.whiten = Whiten(1, whitening_schedule(4.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def _keep_mask(self, x: Tensor, rate: FloatLike) -> Optional[Tensor]:
        """Per-utterance 0/1 mask (B, 1, 1) that drops a module's output at ``rate``."""
        r = float_value(rate) if self.training else 0.0
        if r == 0.0:
            return None
        return (torch.rand(x.shape[0], 1, 1, device=x.device) > r).to(x.dtype)

    @staticmethod
    def _masked(y: Tensor, mask: Optional[Tensor]) -> Tensor:
        return y if mask is None else y * mask

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C); pos_emb: (1, 2T-1, pos_dim); key_padding_mask: (B, T) True = pad."""
        x_orig = x
        attn_weights = self.self_attn_weights(x, pos_emb, key_padding_mask)  # (B, H, T, T)
        x = x + self.feed_forward1(x)

        attn_keep = self._keep_mask(x, self.attention_skip_rate)
        na_weights = attn_weights[:, 0:1]

        def constant_attention() -> Tensor:
            # Uniform weights over the unmasked keys: nudges the module toward averaging.
            w = (na_weights > 0.0).to(na_weights.dtype)
            return w / w.sum(dim=-1, keepdim=True)

        if self.training:
            const = random_draw(x.device) < float_value(self.const_attention_rate)
            na_weights = choose(const, constant_attention, na_weights)
        x = x + self._masked(self.balancer_na(self.nonlin_attention(x, na_weights)), attn_keep)
        x = x + self._masked(self.self_attn1(x, attn_weights), attn_keep)
        x = x + self._masked(self.conv_module1(x, key_padding_mask), self._keep_mask(x, self.conv_skip_rate))
        x = x + self._masked(self.balancer_ff2(self.feed_forward2(x)), self._keep_mask(x, self.ff2_skip_rate))

        x = self.bypass_mid(x_orig, x)
        x = x + self._masked(self.self_attn2(x, attn_weights), attn_keep)
        x = x + self._masked(self.conv_module2(x, key_padding_mask), self._keep_mask(x, self.conv_skip_rate))
        x = x + self._masked(self.balancer_ff3(self.feed_forward3(x)), self._keep_mask(x, self.ff3_skip_rate))

        x = self.norm(self.balancer1(x))
        x = self.bypass(x_orig, x)
        return self.whiten(self.balancer2(x))
