"""Front ends: map raw input to encoder-input frames at 50 Hz.

* :class:`Conv2dSubsampling` - 80-dim fbank at 100 Hz -> (B, (T-7)//2, out_dim), icefall's
  Zipformer front end (three Conv2d layers, a ConvNeXt block, Linear, BiasNorm).
* :class:`Wav2Vec2FrontEnd` - 16 kHz waveform -> (B, T', out_dim) with the wav2vec 2.0 / HuBERT
  CNN (7 conv layers, total stride 320), LayerNorm over its 512 channels and a projection
  (fairseq's ``layer_norm`` and ``post_extract_proj``).

Both take ``(x, lengths)`` and return ``(feats, feat_lengths)``, batch-first, and give the same
valid frames for an utterance alone and inside a padded batch.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from icefall.utils import make_pad_mask
from icefall.nn.scaling import (
    Balancer,
    BiasNorm,
    Dropout2,
    FloatLike,
    float_value,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
    scale_grad,
)

# (channels, kernel, stride) of the wav2vec 2.0 / HuBERT feature extractor.
WAV2VEC2_CONV_LAYERS: List[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


class ConvNeXt(nn.Module):
    """Residual depthwise 7x7 Conv2d -> 1x1 (x3 channels) -> SwooshL -> 1x1 on (B, C, T, F)."""

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7),
                 layerdrop_rate: Optional[FloatLike] = None):
        super().__init__()
        padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        hidden = channels * hidden_ratio
        self.layerdrop_rate = ScheduledFloat((0.0, 0.2), (20000.0, 0.015)) if layerdrop_rate is None else layerdrop_rate
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, padding=padding, groups=channels)
        self.pointwise_conv1 = nn.Conv2d(channels, hidden, 1)
        self.hidden_balancer = Balancer(hidden, channel_dim=1, min_positive=0.3, max_positive=1.0,
                                        min_abs=0.75, max_abs=5.0)
        self.activation = SwooshL()
        self.pointwise_conv2 = nn.Conv2d(hidden, channels, 1)
        with torch.no_grad():  # start as (almost) identity
            self.pointwise_conv2.weight.mul_(0.01)
            nn.init.uniform_(self.pointwise_conv2.bias, -0.001, 0.001)
        self.out_balancer = Balancer(channels, channel_dim=1, min_positive=0.4, max_positive=0.6,
                                     min_abs=1.0, max_abs=6.0)
        self.out_whiten = Whiten(1, 5.0, prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, time_pad_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, C, T, F); time_pad_mask: (B, T) True at padded frames (zeroed before the
        depthwise conv so that it sees the same zero padding as an unpadded utterance)."""
        y = x if time_pad_mask is None else x.masked_fill(time_pad_mask[:, None, :, None], 0.0)
        y = self.pointwise_conv1(self.depthwise_conv(y))
        y = self.pointwise_conv2(self.activation(self.hidden_balancer(y)))
        rate = float_value(self.layerdrop_rate) if self.training else 0.0
        if rate > 0.0:
            y = y * (torch.rand(x.shape[0], 1, 1, 1, device=x.device) > rate).to(y.dtype)
        x = self.out_balancer(x + y)
        if self.training and x.requires_grad:
            x = self.out_whiten(x.transpose(1, 3)).transpose(1, 3)  # channels last for Whiten
        return x


class Conv2dSubsampling(nn.Module):
    """Fbank front end: (B, T, in_channels) at 100 Hz -> (B, (T-7)//2, out_channels) at 50 Hz.

    Valid output frames depend only on valid input frames (the time convolutions are
    unpadded), and the ConvNeXt block sees zeros beyond each utterance's end.
    """

    def __init__(self, in_channels: int = 80, out_channels: int = 192, layer1_channels: int = 8,
                 layer2_channels: int = 32, layer3_channels: int = 128, dropout: FloatLike = 0.1):
        super().__init__()
        assert in_channels >= 7
        self.output_dim = out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, 3, padding=(0, 1)),  # (time, freq)
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, 3, stride=2),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, 3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels)
        out_width = ((in_channels - 1) // 2 - 1) // 2
        self.out = nn.Linear(out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(1, ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0),
                                 prob=(0.025, 0.25), grad_scale=0.02)
        self.out_norm = BiasNorm(out_channels)
        self.dropout = Dropout2(dropout, shared_dim=1)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        return ((lengths - 7) // 2).clamp(min=0)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (B, T, in_channels) fbank, lengths: (B,) -> ((B, (T-7)//2, out), (B,))."""
        out_lens = self.output_lengths(lengths)
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        x = self.convnext(x, make_pad_mask(out_lens, x.shape[2]))
        B, C, T, F = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * F))
        x = self.dropout(self.out_norm(self.out_whiten(x)))
        return x, out_lens


def _norm_input(x: Tensor, norm_weight: Tensor) -> Tensor:
    """Normalisation input in at least the norm's precision: fp16/bf16 -> fp32, fp64 stays."""
    return x.to(torch.promote_types(x.dtype, norm_weight.dtype))


class _MaskedGroupNorm(nn.Module):
    """GroupNorm with one channel per group (fairseq's first-layer norm in "default" mode),
    with statistics over each utterance's valid frames only.  Parameter names match
    ``nn.GroupNorm`` (weight, bias)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, C, T), lengths: (B,) valid frames."""
        dtype = x.dtype
        x = _norm_input(x, self.weight)
        # No padding: the fused kernel is ~5x cheaper (eager only: the test reads the lengths,
        # which would break a compiled graph; the masked form gives the same result).
        if not torch.compiler.is_compiling() and bool((lengths >= x.shape[-1]).all()):
            return nn.functional.group_norm(x, x.shape[1], self.weight, self.bias, self.eps).to(dtype)
        valid = (~make_pad_mask(lengths, x.shape[-1])).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        n = lengths.clamp(min=1).to(x.dtype).view(-1, 1, 1)
        mean = (x * valid).sum(-1, keepdim=True) / n
        var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / n
        x = (x - mean) * (var + self.eps).rsqrt()
        return (x * self.weight[:, None] + self.bias[:, None]).to(dtype)


class _ConvBlock(nn.Module):
    """Conv1d -> optional norm ("group": per-channel over time, "layer": per-frame over
    channels) -> GELU."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, norm: Optional[str], bias: bool):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_type = norm
        if norm == "group":
            self.norm = _MaskedGroupNorm(n_out)
        elif norm == "layer":
            self.norm = nn.LayerNorm(n_out)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return (torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1).clamp(min=0)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (B, C_in, N) -> (B, C_out, N'), valid lengths updated."""
        x = self.conv(x)
        lengths = self.output_lengths(lengths)
        if self.norm_type == "group":
            x = self.norm(x, lengths)
        elif self.norm_type == "layer":
            x = self.norm(_norm_input(x, self.norm.weight).transpose(1, 2)).transpose(1, 2).to(x.dtype)
        return nn.functional.gelu(x), lengths


class Wav2Vec2FeatureExtractor(nn.Module):
    """The wav2vec 2.0 CNN: waveform (B, N) -> (B, T, C_last), T = frames at 16000/320 = 50 Hz.

    mode "group": GroupNorm after the first conv only (Base); "layer": LayerNorm after every
    conv (Large, used with conv_bias=True).  A valid output frame reads only valid samples, so
    padding cannot leak into it; the group norm's statistics skip padded frames.
    """

    def __init__(self, conv_layers: Sequence[Tuple[int, int, int]] = WAV2VEC2_CONV_LAYERS,
                 mode: str = "group", conv_bias: bool = False):
        super().__init__()
        assert mode in ("group", "layer"), mode
        blocks = []
        n_in = 1
        for i, (dim, k, s) in enumerate(conv_layers):
            norm = "layer" if mode == "layer" else ("group" if i == 0 else None)
            blocks.append(_ConvBlock(n_in, dim, k, s, norm, conv_bias))
            n_in = dim
        self.conv_layers = nn.ModuleList(blocks)
        self.output_dim = n_in

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for block in self.conv_layers:
            lengths = block.output_lengths(lengths)
        return lengths

    def forward(self, wav: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wav: (B, N) float, lengths: (B,) samples -> ((B, T, C), (B,) frames)."""
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x.transpose(1, 2), lengths


class Wav2Vec2FrontEnd(nn.Module):
    """Waveform front end: CNN -> gradient scaling -> LayerNorm -> Linear -> dropout.

    Args:
      out_dim: encoder input dim (``post_extract_proj`` output).
      mode, conv_bias, conv_layers: see :class:`Wav2Vec2FeatureExtractor`.
      feature_grad_mult: gradient multiplier into the CNN (fairseq HuBERT Base uses 0.1;
        0 freezes it: no graph is built through it).
      dropout_input: dropout on the projected features (fairseq ``dropout_input``).
      normalize: normalize each waveform to zero mean, unit variance over its valid samples
        (fairseq ``normalize=True``, used with the "layer" mode models).

    Parameter names follow fairseq's HuBERT model (``feature_extractor``, ``layer_norm``,
    ``post_extract_proj``); see docs/encoders.md for the checkpoint mapping.
    """

    def __init__(self, out_dim: int = 768, mode: str = "group", conv_bias: bool = False,
                 conv_layers: Sequence[Tuple[int, int, int]] = WAV2VEC2_CONV_LAYERS,
                 feature_grad_mult: float = 1.0, dropout_input: float = 0.0, normalize: bool = False):
        super().__init__()
        self.feature_extractor = Wav2Vec2FeatureExtractor(conv_layers, mode, conv_bias)
        embed = self.feature_extractor.output_dim
        self.layer_norm = nn.LayerNorm(embed)
        self.post_extract_proj = nn.Linear(embed, out_dim) if embed != out_dim else None
        self.dropout_input = nn.Dropout(dropout_input)
        self.feature_grad_mult = feature_grad_mult
        self.normalize = normalize
        self.output_dim = out_dim

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Samples -> frames: L <- floor((L - kernel) / stride) + 1 per conv layer."""
        return self.feature_extractor.output_lengths(lengths)

    def cnn_features(self, wav: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """The raw CNN output (B, T, 512) (after gradient scaling) and frame lengths; e.g. for
        HuBERT's feature penalty ``features.float().pow(2).mean()``."""
        if self.normalize:
            valid = (~make_pad_mask(lengths, wav.shape[1])).to(wav.dtype)
            n = lengths.clamp(min=1).to(wav.dtype).unsqueeze(1)
            mean = (wav * valid).sum(1, keepdim=True) / n
            var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / n
            wav = (wav - mean) * (var + 1e-5).rsqrt()
        if self.feature_grad_mult > 0:
            x, lengths = self.feature_extractor(wav, lengths)
            if self.training:
                x = scale_grad(x, self.feature_grad_mult)
        else:
            with torch.no_grad():
                x, lengths = self.feature_extractor(wav, lengths)
        return x, lengths

    def normalized(self, features: Tensor) -> Tensor:
        """(B, T, 512) CNN features after the LayerNorm (what wav2vec 2.0 quantizes)."""
        return self.layer_norm(_norm_input(features, self.layer_norm.weight)).to(features.dtype)

    def project(self, features: Tensor, normalized: Optional[Tensor] = None) -> Tensor:
        """(B, T, 512) CNN features -> (B, T, out_dim); ``normalized``: their
        :meth:`normalized` when already computed."""
        x = self.normalized(features) if normalized is None else normalized
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.dropout_input(x)

    def forward(self, wav: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wav: (B, N) 16 kHz, lengths: (B,) samples -> ((B, T, out_dim), (B,) frames)."""
        x, lengths = self.cnn_features(wav, lengths)
        return self.project(x), lengths
