"""A small HiFi-GAN-style vocoder: frames (B, T, D) at 16000/hop Hz -> 16 kHz waveform (B, T*hop).

The generator is HiFi-GAN V1's (Kong et al. 2020): a kernel-7 input convolution, transposed-conv
upsampling stages (kernel 2*rate) each followed by a multi-receptive-field fusion (the mean) of
residual blocks, LeakyReLU(0.1), a kernel-7 output convolution and tanh. It is made small to
train on one CPU thread in minutes: 128 channels after the input convolution (V1: 512), halved
at each stage; one residual block per stage, kernel 3 with dilations 1, 3, 9 (MelGAN's residual
stack; V1 fuses three, kernels 3, 7, 11, dilations 1, 3, 5); no weight norm; upsampling rates
factored from the features' hop (fbank 160 = 8*5*4, a 50 Hz model 320 = 8*8*5). With fbank
input that is 0.33M parameters (V1: 13.9M); ``VocoderConfig`` builds V1's shape as well.

**No GAN.** It trains with a multi-resolution STFT loss only (spectral convergence + log-magnitude
L1 at three resolutions, as Parallel WaveGAN's auxiliary loss): phase is never judged, so the
output has the right spectral envelope but sounds buzzy/metallic and a little noisy, the typical
sound of a GAN-free neural vocoder; see docs/knn-vc.md.

Training runs through the shared :class:`~icefall.trainer.Trainer` (checkpoints, exact resume):

    data = VocoderData(features, waves, hop_length=160, segment_frames=32)
    trainer = train_vocoder(params, data)       # params: trainer options + vocoder_config
    vocoder, params = load_vocoder("exp/epoch-10.pt")
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icefall.utils import AttributeDict, MetricsTracker

LRELU_SLOPE = 0.1


def upsample_rates_for(hop_length: int) -> Tuple[int, ...]:
    """``hop_length`` factored into upsampling rates, large first (160 -> (8, 5, 4))."""
    rates, rest = [], hop_length
    for f in (8, 5, 4, 3, 2):
        while rest % f == 0 and rest > 1:
            rates.append(f)
            rest //= f
    if rest != 1:
        raise ValueError(f"hop length {hop_length} has a prime factor above 8: no upsampling plan")
    return tuple(rates)


@dataclass(frozen=True)
class VocoderConfig:
    """The generator's shape (HiFi-GAN's names in brackets)."""

    input_dim: int = 80
    hop_length: int = 160
    channels: int = 128  # [upsample_initial_channel], V1: 512
    resblock_kernel_sizes: Tuple[int, ...] = (3,)  # [resblock_kernel_sizes], V1: (3, 7, 11)
    resblock_dilations: Tuple[int, ...] = (1, 3, 9)  # [resblock_dilation_sizes], V1: (1, 3, 5) each

    def __post_init__(self) -> None:
        if self.channels < 2 ** len(self.upsample_rates):
            raise ValueError(f"VocoderConfig: channels={self.channels} is halved {len(self.upsample_rates)} times "
                             f"(hop {self.hop_length}): give at least {2 ** len(self.upsample_rates)}")

    @property
    def upsample_rates(self) -> Tuple[int, ...]:
        return upsample_rates_for(self.hop_length)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "VocoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"VocoderConfig: unknown fields {sorted(unknown)}; known {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class ResBlock(nn.Module):
    """HiFi-GAN's ResBlock1: per dilation, lrelu -> dilated conv -> lrelu -> conv, plus the input."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                              padding=d * (kernel_size - 1) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
                                    for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Vocoder(nn.Module):
    """``(feats (B, T, D)) -> wav (B, T * hop_length)`` in [-1, 1].

    Inputs are standardised with per-dimension ``feat_mean``/``feat_std`` buffers
    (:meth:`set_normalization`, from the training features; saved with the weights).
    """

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.register_buffer("feat_mean", torch.zeros(config.input_dim))
        self.register_buffer("feat_std", torch.ones(config.input_dim))
        self.conv_pre = nn.Conv1d(config.input_dim, c, 7, padding=3)
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        for i, r in enumerate(config.upsample_rates):
            cin, cout = c // 2**i, c // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(cin, cout, 2 * r, stride=r, padding=r // 2 + r % 2, output_padding=r % 2))
            self.mrfs.append(nn.ModuleList(ResBlock(cout, k, config.resblock_dilations)
                                           for k in config.resblock_kernel_sizes))
        self.conv_post = nn.Conv1d(c // 2 ** len(config.upsample_rates), 1, 7, padding=3)

    def set_normalization(self, feats: Sequence[Tensor]) -> None:
        """Per-dimension mean and std of the training frames (each (T, D))."""
        x = torch.cat(list(feats)).double()
        self.feat_mean.copy_(x.mean(0).float())
        self.feat_std.copy_(x.std(0).clamp_min(1e-5).float())

    def forward(self, feats: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[2] != self.config.input_dim:
            raise ValueError(f"Vocoder: expected (B, T, {self.config.input_dim}) features, got {tuple(feats.shape)}")
        x = ((feats - self.feat_mean) / self.feat_std).transpose(1, 2)
        x = self.conv_pre(x)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in mrf) / len(mrf)
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x).squeeze(1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------ loss
STFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (256, 64, 256))  # (n_fft, hop, window)


def _magnitude(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, win, window, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def stft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Multi-resolution STFT loss of (B, N) waveforms, per utterance (B,): the mean over
    :data:`STFT_RESOLUTIONS` of spectral convergence + L1 of log magnitudes."""
    losses = []
    for n_fft, hop, win in STFT_RESOLUTIONS:
        p, t = _magnitude(pred, n_fft, hop, win), _magnitude(target, n_fft, hop, win)
        sc = torch.linalg.norm((t - p).flatten(1), dim=1) / torch.linalg.norm(t.flatten(1), dim=1)
        mag = (t.log() - p.log()).abs().flatten(1).mean(1)
        losses.append(sc + mag)
    return torch.stack(losses).mean(0)


def compute_loss(model: nn.Module, batch: Tuple[Tensor, Tensor], is_training: bool) -> Tuple[Tensor, MetricsTracker]:
    """Trainer's ``compute_loss``: batch = (feats (B, T, D), wav (B, T*hop)); the loss is summed
    over the batch's utterances (``frames`` counts utterances, so logs show it per segment)."""
    feats, wav = batch
    device = next(model.parameters()).device
    pred = model(feats.to(device))
    loss = stft_loss(pred, wav.to(device)).sum()
    info = MetricsTracker({"frames": feats.shape[0], "loss": loss.detach().item(),
                           "seconds": wav.numel() / 16000})
    return loss, info


# ------------------------------------------------------------------------------ data
class VocoderData(torch.utils.data.Dataset):
    """Random ``segment_frames``-frame crops of (features, waveform) pairs.

    Args:
      feats: (T_i, D) per utterance (prematched for kNN-VC); waves: (N_i,) 16 kHz per utterance,
        cut or zero-padded to ``T_i * hop_length``. The crop offset is drawn from torch's RNG,
        which the trainer seeds and checkpoints (exact resume with ``num_workers=0``).
    """

    def __init__(self, feats: Sequence[Tensor], waves: Sequence[Tensor], hop_length: int, segment_frames: int = 32):
        if len(feats) != len(waves) or not feats:
            raise ValueError(f"VocoderData: {len(feats)} feature sequences and {len(waves)} waveforms")
        self.hop_length = hop_length
        self.segment_frames = segment_frames
        self.feats = [f.float() for f in feats]
        self.waves = [F.pad(w.float(), (0, max(0, f.shape[0] * hop_length - w.shape[0])))[: f.shape[0] * hop_length]
                      for f, w in zip(feats, waves)]

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> Tuple[Tensor, Tensor]:
        f, w, n = self.feats[i], self.waves[i], self.segment_frames
        if f.shape[0] < n:
            f = F.pad(f, (0, 0, 0, n - f.shape[0]))
            w = F.pad(w, (0, n * self.hop_length - w.shape[0]))
        start = int(torch.randint(0, f.shape[0] - n + 1, ()))
        return f[start: start + n], w[start * self.hop_length: (start + n) * self.hop_length]


# ------------------------------------------------------------------------------ training
def train_vocoder(params: AttributeDict, data: VocoderData, loss_fn=compute_loss,
                  device: Union[str, torch.device] = "cpu"):
    """Train a :class:`Vocoder` of ``params.vocoder_config`` (a dict) on ``data`` with the shared
    trainer (AdamW, betas (0.8, 0.99) as HiFi-GAN, exponential lr decay per batch); resumes as
    every recipe does. ``params`` also holds the trainer's options (exp_dir, num_epochs, ...),
    ``base_lr``, ``lr_decay``, ``batch_size`` and what the features are (``features``,
    ``layer``), which :func:`load_vocoder` gives back. Batches stay on the CPU until
    :func:`compute_loss` moves them to the model's ``device``. Returns the finished Trainer."""
    from icefall.trainer import Trainer

    torch.manual_seed(params.get("seed", 42))
    model = Vocoder(VocoderConfig.from_dict(params.vocoder_config))
    model.set_normalization(data.feats)
    logging.info(f"Vocoder: {model.num_params()} parameters, upsampling {model.config.upsample_rates}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.base_lr, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=params.get("lr_decay", 0.9995))
    dl = torch.utils.data.DataLoader(data, batch_size=params.batch_size, shuffle=True, drop_last=True)
    params.setdefault("scan_oom", False)
    trainer = Trainer(params, model, optimizer, scheduler, loss_fn, dl, device=torch.device(device))
    trainer.train()
    return trainer


def load_vocoder(path: Union[str, Path], device: str = "cpu", averaged: bool = False) -> Tuple[Vocoder, Dict[str, Any]]:
    """A trained vocoder (eval mode) and its checkpoint's params (``features``, ``layer``, ...)."""
    from icefall.checkpoint import load_file

    ckpt = load_file(path)
    params = ckpt.get("params") if isinstance(ckpt, dict) else None
    if not isinstance(params, dict) or "vocoder_config" not in params:
        raise ValueError(f"{path}: not a vocoder checkpoint (train_vocoder.py writes them): no params.vocoder_config")
    model = Vocoder(VocoderConfig.from_dict(params["vocoder_config"]))
    state = ckpt["model_avg"] if averaged and ckpt.get("model_avg") is not None else ckpt["model"]
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), params
