"""wav2vec 2.0 / HuBERT Transformer encoder, batch-first.

Input: projected front-end features (B, T, D).  Pipeline: zero padded frames -> add a
convolutional positional embedding (weight-normed grouped Conv1d, kernel 128, 16 groups, GELU;
data2vec: a stack of ``pos_conv_depth`` convs with LayerNorm) -> [post-norm: LayerNorm] -> dropout -> N layers -> [pre-norm: final LayerNorm].

Layers are post-norm (Base: x = LN(x + MHA(x)); x = LN(x + FFN(x))) or pre-norm (Large:
x = x + MHA(LN(x)); x = x + FFN(LN(x))).  Layer drop skips whole layers while training.
``qkv_bias=False`` removes the Q/K/V biases (SpidR). ``gated_rel_pos_bias=True`` adds WavLM's
gated relative position bias to every layer's attention logits (see :class:`RelativePositionBias`
and :class:`MultiheadSelfAttention`); off, the model and its state dict are HuBERT's.

Parameter names mirror fairseq's ``TransformerEncoder`` (``pos_conv``, ``layers.N.self_attn.
{q,k,v,out}_proj``, ``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``,
``layer_norm``) so a fairseq HuBERT state dict maps with a few renames (docs/encoders.md).
"""
import math
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from icefall.nn.scaling import choose, random_draw
from icefall.utils import make_pad_mask


class ConvPositionalEmbedding(nn.Module):
    """x (B, T, D) -> GELU(weight_norm(Conv1d(D, D, kernel, groups))(x)) trimmed to T frames.

    Weight norm is over dim 2 (one gain per kernel tap), as in fairseq.  An even kernel with
    padding kernel//2 gives T+1 frames; the last is dropped ("SamePad").
    """

    def __init__(self, embed_dim: int, kernel_size: int = 128, groups: int = 16):
        super().__init__()
        conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * embed_dim)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor, pad: Optional[Tensor] = None) -> Tensor:
        """x (B, T, D) with zeros at padding; ``pad`` unused (one layer sees only x)."""
        y = self.conv(x.transpose(1, 2))
        if self.remove:
            y = y[..., : -self.remove]
        return nn.functional.gelu(y).transpose(1, 2)


class _PosConvLayer(nn.Module):
    """Conv1d (groups, "same" length) -> LayerNorm without parameters -> GELU, on (B, D, T)."""

    def __init__(self, embed_dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        nn.init.normal_(self.conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * embed_dim)))
        nn.init.zeros_(self.conv.bias)
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.remove:
            y = y[..., : -self.remove]
        y = nn.functional.layer_norm(y.transpose(1, 2), (y.shape[1],)).transpose(1, 2)
        return nn.functional.gelu(y)


class StackedConvPositionalEmbedding(nn.Module):
    """data2vec's positional embedding (fairseq ``pos_conv_depth`` > 1): ``depth`` layers of
    grouped Conv1d (kernel ``max(3, width // depth)``) -> parameterless LayerNorm -> GELU.

    Padded frames are zeroed again before each layer, so that a valid frame sees what it sees
    in an unpadded utterance (fairseq and Hugging Face let the padding leak in after layer 1).
    """

    def __init__(self, embed_dim: int, width: int = 95, groups: int = 16, depth: int = 5):
        super().__init__()
        kernel = max(3, width // depth)
        self.layers = nn.ModuleList(_PosConvLayer(embed_dim, kernel, groups) for _ in range(depth))

    def forward(self, x: Tensor, pad: Optional[Tensor] = None) -> Tensor:
        """x (B, T, D) with zeros at padding; pad (B, T, 1) True at padded frames."""
        y = x.transpose(1, 2)
        for i, layer in enumerate(self.layers):
            if i > 0 and pad is not None:
                y = y.masked_fill(pad.transpose(1, 2), 0.0)
            y = layer(y)
        return y.transpose(1, 2)


def relative_position_bucket(relative_position: Tensor, num_buckets: int = 320,
                             max_distance: int = 800) -> Tensor:
    """WavLM's (T5-style, bidirectional) bucket of each relative position ``key - query``.

    Half the buckets are for positive offsets. Within a half, offsets below ``n // 2`` (``n =
    num_buckets // 2``) get a bucket each; larger ones share buckets spaced logarithmically up
    to ``max_distance``, beyond which all fall in the half's last bucket.

    Args:
      relative_position: int tensor of any shape.
    Returns:
      long tensor of the same shape, values in ``[0, num_buckets)``.
    """
    half = num_buckets // 2
    exact = half // 2
    offset = (relative_position > 0).long() * half
    distance = relative_position.abs()
    # distance >= exact here wherever the value is used; the clamp only keeps log() finite
    far = exact + (torch.log(distance.clamp(min=exact).float() / exact)
                   / math.log(max_distance / exact) * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return offset + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """T -> (1, H, T, T) attention-logit bias: one learned value per head and relative position
    bucket (:func:`relative_position_bucket`), computed once and shared by every layer (WavLM)."""

    def __init__(self, num_heads: int, num_buckets: int = 320, max_distance: int = 800):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, num_frames: int) -> Tensor:
        pos = torch.arange(num_frames, device=self.embedding.weight.device)
        bucket = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.embedding(bucket).permute(2, 0, 1).unsqueeze(0)  # (1, H, query, key)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with separate q/k/v/out projections (fairseq names).

    With ``gated_rel_pos_bias`` the forward takes a relative position bias (1, H, T, T) and
    scales it, per head and query frame, by WavLM's GRU-style gate computed from the attention
    input x: each head's slice x_h (head_dim) -> ``gru_rel_pos_linear`` (8 values, shared by the
    heads) -> two sums of 4 -> sigmoid -> (a, b); gate = a * (b * c_h - 1) + 2 with a learned
    ``gru_rel_pos_const`` c_h (init 1), so the gate lies in (1, 2) at initialisation. The gated
    bias is added to the scaled q.k logits.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = True,
                 gated_rel_pos_bias: bool = False):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.num_heads = num_heads
        # Fixed logit scale: channel pruning (icefall.prune.nas) may shrink the q/k/v width.
        self.scaling = (embed_dim // num_heads) ** -0.5
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # fairseq init: xavier with gain 1/sqrt(2) for q/k/v
        for lin in (self.k_proj, self.v_proj, self.q_proj):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        self.gated_rel_pos_bias = gated_rel_pos_bias
        if gated_rel_pos_bias:  # WavLM names
            self.gru_rel_pos_linear = nn.Linear(embed_dim // num_heads, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def gate(self, x: Tensor) -> Tensor:
        """x (B, T, D) -> the bias gate (B, H, T, 1), one value per head and query frame."""
        B, T, D = x.shape
        g = self.gru_rel_pos_linear(x.reshape(B, T, self.num_heads, -1).transpose(1, 2))  # (B,H,T,8)
        a, b = torch.sigmoid(g.reshape(B, self.num_heads, T, 2, 4).sum(-1)).chunk(2, dim=-1)
        return a * (b * self.gru_rel_pos_const - 1.0) + 2.0

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                rel_pos_bias: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, D); attn_mask: (B, 1, 1, T) bool, True = may attend; rel_pos_bias: (1, H,
        T, T), required with ``gated_rel_pos_bias``, ignored without."""
        B, T, D = x.shape
        H = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, T, H, -1).transpose(1, 2)

        if self.gated_rel_pos_bias:
            if rel_pos_bias is None:
                raise ValueError("gated relative position bias: the encoder must pass rel_pos_bias")
            bias = self.gate(x) * rel_pos_bias.to(x.dtype)  # (B, H, T, T)
            if attn_mask is not None:
                bias = bias.masked_fill(~attn_mask, float("-inf"))
            attn_mask = bias
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
        )
        return self.out_proj(out.transpose(1, 2).reshape(B, T, -1))


class TransformerEncoderLayer(nn.Module):
    """One wav2vec 2.0 / HuBERT layer; ``layer_norm_first`` selects pre-norm (Large)."""

    def __init__(self, embed_dim: int = 768, ffn_dim: int = 3072, num_heads: int = 12,
                 dropout: float = 0.1, attention_dropout: float = 0.1, activation_dropout: float = 0.0,
                 layer_norm_first: bool = False, qkv_bias: bool = True, gated_rel_pos_bias: bool = False):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = MultiheadSelfAttention(embed_dim, num_heads, attention_dropout, qkv_bias,
                                                gated_rel_pos_bias)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(nn.functional.gelu(self.fc1(x)))))

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                rel_pos_bias: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, D) -> (B, T, D); rel_pos_bias: (1, H, T, T) with gated_rel_pos_bias."""
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), attn_mask, rel_pos_bias))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attn_mask, rel_pos_bias)))
        return self.final_layer_norm(x + self._ffn(x))


class TransformerEncoder(nn.Module):
    """HuBERT / wav2vec 2.0 encoder: (B, T, D) features -> (B, T, D), lengths unchanged.

    Args:
      embed_dim, ffn_dim, num_heads, num_layers: 768/3072/12/12 (Base), 1024/4096/16/24 (Large).
      layer_norm_first: pre-norm layers (Large) instead of post-norm (Base).
      dropout, attention_dropout, activation_dropout: as fairseq.
      layerdrop: probability of skipping each layer while training (same for the whole batch).
      conv_pos, conv_pos_groups: positional convolution kernel and groups (128, 16).
      pos_conv_depth: 1 for wav2vec 2.0 / HuBERT's weight-normed conv; > 1 for data2vec's stack
        of that many convs of kernel ``max(3, conv_pos // pos_conv_depth)`` with LayerNorm
        (:class:`StackedConvPositionalEmbedding`; data2vec: conv_pos 95, depth 5).
      qkv_bias: False removes Q/K/V biases (SpidR).
      gated_rel_pos_bias: WavLM's gated relative position bias (``rel_pos_bias`` embedding with
        ``rel_pos_buckets`` buckets up to ``rel_pos_max_distance`` frames, shared by all layers;
        a gate per layer). The convolutional positional embedding stays, as in WavLM.
    """

    def __init__(self, embed_dim: int = 768, ffn_dim: int = 3072, num_heads: int = 12,
                 num_layers: int = 12, layer_norm_first: bool = False, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0,
                 layerdrop: float = 0.05, conv_pos: int = 128, conv_pos_groups: int = 16,
                 qkv_bias: bool = True, gated_rel_pos_bias: bool = False, rel_pos_buckets: int = 320,
                 rel_pos_max_distance: int = 800, pos_conv_depth: int = 1):
        super().__init__()
        self.input_dim = self.output_dim = embed_dim
        self.layer_norm_first = layer_norm_first
        self.layerdrop = layerdrop
        if pos_conv_depth == 1:
            self.pos_conv = ConvPositionalEmbedding(embed_dim, conv_pos, conv_pos_groups)
        else:
            self.pos_conv = StackedConvPositionalEmbedding(embed_dim, conv_pos, conv_pos_groups, pos_conv_depth)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.rel_pos_bias = (RelativePositionBias(num_heads, rel_pos_buckets, rel_pos_max_distance)
                             if gated_rel_pos_bias else None)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(embed_dim, ffn_dim, num_heads, dropout, attention_dropout,
                                    activation_dropout, layer_norm_first, qkv_bias, gated_rel_pos_bias)
            for _ in range(num_layers)
        )
        self._init_bert_params()

    def _init_bert_params(self) -> None:
        # BERT-style init of the layers' linear maps (fairseq init_bert_params): N(0, 0.02).
        for layer in self.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                        layer.self_attn.out_proj, layer.fc1, layer.fc2):
                nn.init.normal_(lin.weight, mean=0.0, std=0.02)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            if layer.self_attn.gated_rel_pos_bias:
                nn.init.normal_(layer.self_attn.gru_rel_pos_linear.weight, mean=0.0, std=0.02)
                nn.init.zeros_(layer.self_attn.gru_rel_pos_linear.bias)
        if self.rel_pos_bias is not None:
            nn.init.normal_(self.rel_pos_bias.embedding.weight, mean=0.0, std=0.02)

    def forward(
        self, x: Tensor, x_lens: Tensor, return_hidden: bool = False
    ) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, List[Tensor]]]:
        """
        Args:
          x: (B, T, D) features; x_lens: (B,) valid frames.
        Returns:
          out (B, T, D) zero at padding, out_lens (= x_lens), and with ``return_hidden`` the
          list of each layer's output (B, T, D) (before the final LayerNorm of pre-norm models).
        """
        pad = make_pad_mask(x_lens, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
        # Zero padding before the positional conv so it sees what an unpadded utterance sees.
        x = x.masked_fill(pad, 0.0)
        x = x + self.pos_conv(x, pad)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)

        # (B, 1, 1, T), True = attend; None without padding lets SDPA use its fused kernels.
        # (The test reads the lengths: a compiled graph always takes the mask instead.)
        full = not torch.compiler.is_compiling() and bool((x_lens >= x.shape[1]).all())
        attn_mask = None if full else ~pad.squeeze(-1)[:, None, None, :]
        rel_pos_bias = self.rel_pos_bias(x.shape[1]) if self.rel_pos_bias is not None else None
        hidden: List[Tensor] = []
        for layer in self.layers:
            # Layer drop: a Python draw in eager, a tensor decision while compiling (one graph).
            keep = not self.training or self.layerdrop <= 0 or random_draw(x.device) >= self.layerdrop
            x = choose(keep, lambda: layer(x, attn_mask, rel_pos_bias), x)
            if return_hidden:
                hidden.append(x.masked_fill(pad, 0.0))
        if self.layer_norm_first:
            x = self.layer_norm(x)
        x = x.masked_fill(pad, 0.0)
        return (x, x_lens, hidden) if return_hidden else (x, x_lens)
