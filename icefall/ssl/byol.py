"""BYOL-S: utterance-level bootstrap (BYOL for speech, the HEAR-style baseline).

    utterance ─┬─ view 1 ─ online: front end ─ encoder ─ mean+max pool ─ projector ─ predictor ─ q1
               │         └ target (EMA): front end ─ encoder ─ pool ─ projector ─────────────── z1
               └─ view 2 ─ (the same two networks) ─────────────────────────────────────────── q2, z2

    loss = (2 - 2 cos(q1, z2)) + (2 - 2 cos(q2, z1))      (summed over utterances; z without gradient)

- **Views** (:func:`make_views`): each view is an independent random crop of ``view_seconds``
  (1 s, as BYOL-A/BYOL-S segments) of the valid part of the utterance, then BYOL-A's mixup with
  another utterance of the batch (log-mixup-exp on log-mel: ``log((1-a) e^x + a e^y)``, a ~
  U(0, ``mixup_ratio`` = 0.4); BYOL-A mixes with a memory bank of past inputs, the batch is our
  stand-in), a random gain (±``gain_db``, an added constant on log-mel), and a small time mask
  (up to ``time_mask_seconds``) and frequency mask (up to ``freq_mask_bins`` bins, fbank only)
  filled with the view's mean. On waveforms the same crop, linear mixup, gain and time mask
  (zeros). Independent crops stand in for BYOL-A's random-resize-crop.
- **Online network**: the front end and encoder, temporal mean + max pooling of the last output
  (BYOL-A), a projector MLP (``Linear - BatchNorm - ReLU - Linear``: 4096 -> 256, BYOL's sizes)
  and a predictor MLP of the same shape.
- **Target network** (:class:`~icefall.ssl.ema.EmaTeacherModel`): an EMA copy of front end +
  encoder + projector, no gradients, eval mode. Decay fixed at 0.99 (BYOL-A) by default, or
  BYOL's cosine ramp from ``ema_start_decay`` to 1 over ``ema_anneal_end_step`` updates
  (``teacher_schedule=cosine``).
- The MLPs' BatchNorm (:class:`BatchStatNorm`) always normalises with the statistics of the
  batch, in the online and the target network, in training and in validation (BYOL runs its
  target network in training mode): it keeps no running statistics. It matters: at
  initialisation the pooled encoder outputs of different utterances are nearly parallel (cosine
  0.9975 on the mini corpus), and normalising each channel over the batch is what spreads the
  projections apart (``projector_norm=layer`` keeps them together). A one-utterance batch
  normalises to zero (the projection is the bias).

No labels and no masks: the mask embedding exists (fine-tuning masks with it) but is not
trained here. ``extract_features`` gives the per-layer frame features of the whole utterance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import Objective, layer_features
from icefall.nn.configs import _Config
from icefall.ssl.data2vec import channel_std
from icefall.ssl.ema import EmaTeacherModel, cosine_decay, ema_after_step
from icefall.utils import make_pad_mask

#: Input rates: fbank frames (B, T, F) at 100 Hz, waveforms (B, N) at 16 kHz.
FBANK_RATE, WAVE_RATE = 100, 16000


def _opt(default, help: str):
    """A field that is also a ``pretrain.py`` option of the same name."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ByolConfig(_Config):
    """BYOL-S (BYOL-A's settings in the comments)."""

    view_seconds: float = _opt(1.0, "byol: length of each random crop (view)")  # BYOL-A unit_sec 0.95
    mixup_ratio: float = _opt(0.4, "byol: mixup weight drawn from U(0, this)")  # BYOL-A mixup ratio
    gain_db: float = 6.0  # random gain in [-gain_db, gain_db] dB per view
    time_mask_seconds: float = 0.1  # one time mask of up to this length per view
    freq_mask_bins: int = 8  # one frequency mask of up to this many bins per view (fbank)
    projector_hidden_dim: int = 4096  # BYOL-A proj_dim
    projector_dim: int = 256  # BYOL-A proj_size
    projector_norm: str = "batch"  # "batch" (BYOL: batch statistics) | "layer" (LayerNorm)
    teacher_schedule: str = "constant"  # "constant" (BYOL-A) | "cosine" (BYOL)
    ema_start_decay: float = 0.99  # BYOL-A ema_decay (BYOL: 0.996 with the cosine ramp)
    ema_anneal_end_step: int = 30000  # cosine: updates to reach decay 1


# ---------------------------------------------------------------------- views
def random_crop(source: torch.Tensor, lens: torch.Tensor, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A random window of ``length`` steps (frames or samples) inside each utterance's valid part
    (the whole utterance when shorter). source (B, T[, F]), lens (B,) -> (B, T'[, F]), (B,),
    zero past each new length."""
    out_lens = lens.clamp(max=length)
    starts = (torch.rand(lens.shape) * (lens - out_lens + 1).cpu()).long().to(lens.device)
    t = torch.arange(int(out_lens.max()), device=source.device)
    idx = (starts[:, None] + t[None]).clamp(max=source.shape[1] - 1)  # (B, T')
    gathered = source.gather(1, idx.view(*idx.shape, *([1] * (source.dim() - 2))).expand(-1, -1, *source.shape[2:]))
    return _zero_pad(gathered, out_lens), out_lens


def _zero_pad(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    pad = make_pad_mask(lens, x.shape[1]).view(*x.shape[:2], *([1] * (x.dim() - 2)))
    return x.masked_fill(pad, 0.0)


def log_mixup_exp(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Mix log-mel x and y in the linear domain: ``log((1 - a) e^x + a e^y)``, a broadcastable."""
    return torch.logaddexp(x + torch.log1p(-a), y + torch.log(a.clamp(min=1e-30)))


def augment(view: torch.Tensor, lens: torch.Tensor, cfg: ByolConfig) -> torch.Tensor:
    """Mixup with another utterance of the batch, random gain, one time and (fbank) one
    frequency mask; ``view`` (B, T, F) log-mel or (B, N) waveform, zero past ``lens``."""
    fbank = view.dim() == 3
    B, T = view.shape[:2]
    shape = (B, 1, 1) if fbank else (B, 1)
    rate = FBANK_RATE if fbank else WAVE_RATE
    valid = (~make_pad_mask(lens, T)).view(B, T, *([1] * (view.dim() - 2)))

    # mixup: the partner's valid part only (its padding is not silence)
    perm = torch.randperm(B).to(view.device)
    a = (torch.rand(B) * cfg.mixup_ratio).to(view).view(shape)
    partner, partner_valid = view[perm], valid[perm]
    mixed = log_mixup_exp(view, partner, a) if fbank else (1 - a) * view + a * partner
    view = torch.where(partner_valid, mixed, view)

    gain = ((torch.rand(B) * 2 - 1) * cfg.gain_db).to(view).view(shape)
    view = view + gain * math.log(10.0) / 10.0 if fbank else view * 10.0 ** (gain / 20.0)

    if fbank:  # masks are filled with the view's mean over its valid part
        fill = (view * valid).sum(dim=(1, 2), keepdim=True) / (valid.sum(dim=(1, 2), keepdim=True).clamp(min=1) * view.shape[2])
    else:  # silence
        fill = 0.0
    t = torch.arange(T, device=view.device)
    width = (torch.rand(B) * (round(cfg.time_mask_seconds * rate) + 1)).long().to(view.device)
    start = (torch.rand(B).to(view.device) * (lens - width).clamp(min=0).add(1)).long()
    tmask = (t[None] >= start[:, None]) & (t[None] < (start + width)[:, None])
    view = torch.where(tmask.view(B, T, *([1] * (view.dim() - 2))), fill, view)
    if fbank and cfg.freq_mask_bins > 0:
        Fdim = view.shape[2]
        fw = (torch.rand(B) * (cfg.freq_mask_bins + 1)).long().clamp(max=Fdim).to(view.device)
        fs = (torch.rand(B).to(view.device) * (Fdim - fw + 1)).long()
        f = torch.arange(Fdim, device=view.device)
        fmask = (f[None] >= fs[:, None]) & (f[None] < (fs + fw)[:, None])
        view = torch.where(fmask[:, None, :], fill, view)
    return _zero_pad(view, lens)


def make_views(source: torch.Tensor, lens: torch.Tensor, cfg: ByolConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """One augmented view per utterance: :func:`random_crop` of ``view_seconds`` then
    :func:`augment`. source (B, T, F) fbank or (B, N) waveform. Every draw comes from torch's
    CPU generator (whose state checkpoints restore: resume is exact on any device)."""
    rate = FBANK_RATE if source.dim() == 3 else WAVE_RATE
    view, view_lens = random_crop(source, lens, round(cfg.view_seconds * rate))
    return augment(view, view_lens, cfg), view_lens


# ---------------------------------------------------------------------- networks
class BatchStatNorm(nn.Module):
    """BatchNorm over the batch dimension of (B, D) with the batch's own statistics in training
    and in eval mode (no running statistics; biased variance), then a per-channel affine map."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(0, keepdim=True)
        var = x.var(0, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def mlp(in_dim: int, hidden_dim: int, out_dim: int, norm: str = "batch") -> nn.Sequential:
    """``Linear - norm - ReLU - Linear`` (BYOL's projector / predictor shape); ``norm``:
    "batch" (:class:`BatchStatNorm`) or "layer" (LayerNorm)."""
    if norm not in ("batch", "layer"):
        raise ValueError(f"projector_norm must be 'batch' or 'layer', not {norm!r}")
    layer = BatchStatNorm(hidden_dim) if norm == "batch" else nn.LayerNorm(hidden_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), layer, nn.ReLU(), nn.Linear(hidden_dim, out_dim))


def mean_max_pool(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Temporal mean + max over each utterance's valid frames: x (B, T, D) -> (B, D)."""
    pad = make_pad_mask(lens, x.shape[1]).unsqueeze(-1)
    mean = x.masked_fill(pad, 0.0).sum(1) / lens.clamp(min=1).unsqueeze(-1).to(x.dtype)
    return mean + x.masked_fill(pad, float("-inf")).amax(1)


class ByolModel(EmaTeacherModel):
    """BYOL-S over any front end and encoder.

    Args:
      frontend: ``(source, source_lens) -> (x (B,T,D_in), lens)`` with ``output_dim`` = D_in.
      encoder: ``(x, lens[, return_hidden]) -> (out (B,T,D), lens[, hidden])``.
      cfg: ByolConfig.

    Submodules: ``frontend``, ``encoder``, ``projector``, ``predictor`` (online), ``mask_emb``
    (for fine-tuning; frozen here), ``teacher`` (ModuleDict ``frontend``/``encoder``/
    ``projector``: the EMA target network); buffer ``num_updates``.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, cfg: ByolConfig = ByolConfig()):
        super().__init__()
        if cfg.teacher_schedule not in ("constant", "cosine"):
            raise ValueError(f"teacher_schedule must be 'constant' or 'cosine', not {cfg.teacher_schedule!r}")
        self.cfg = cfg
        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(frontend.output_dim).uniform_(), requires_grad=False)
        self.projector = mlp(encoder.output_dim, cfg.projector_hidden_dim, cfg.projector_dim, cfg.projector_norm)
        self.predictor = mlp(cfg.projector_dim, cfg.projector_hidden_dim, cfg.projector_dim, cfg.projector_norm)
        self.init_teacher()

    def ema_student(self) -> nn.Module:
        return nn.ModuleDict({"frontend": self.frontend, "encoder": self.encoder, "projector": self.projector})

    def teacher_decay(self, step: int) -> float:
        c = self.cfg
        if c.teacher_schedule == "constant":
            return c.ema_start_decay
        return cosine_decay(step, c.ema_start_decay, 1.0, c.ema_anneal_end_step)

    @staticmethod
    def project(net: nn.ModuleDict, view: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``net``'s front end, encoder, mean+max pooling and projector: (B, projector_dim)."""
        x, x_lens = net["frontend"](view, lens)
        out, out_lens = net["encoder"](x, x_lens)
        return net["projector"](mean_max_pool(out, out_lens))

    def forward(self, source: torch.Tensor, source_lens: torch.Tensor,
                views: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Symmetrised BYOL loss of two augmented views of each utterance.

        Args:
          source: (B, N) waveform or (B, T, 80) fbank, as the front end expects.
          source_lens: (B,) valid samples/frames.
          views: optional two ``(view, lens)`` pairs to use instead of :func:`make_views`.
        Returns:
          loss: scalar, summed over utterances (each in [0, 8]).
          stats: python floats ``loss_m`` (= loss), ``count_m`` (utterances), ``pred_std`` /
            ``target_std`` (mean over channels of the std over the batch of the l2-normalised
            predictions / targets: 0 at a collapse), ``teacher_decay``.
        """
        if views is None:
            views = [make_views(source, source_lens, self.cfg) for _ in range(2)]
        online = self.ema_student()
        q = [self.predictor(self.project(online, v, l)) for v, l in views]
        with torch.no_grad():
            z = [self.project(self.teacher, v, l) for v, l in views]
        q = [F.normalize(p.float(), dim=-1) for p in q]
        z = [F.normalize(t.float(), dim=-1) for t in z]
        per_utt = (2 - 2 * (q[0] * z[1]).sum(-1)) + (2 - 2 * (q[1] * z[0]).sum(-1))
        loss = per_utt.sum()
        stats = {
            "loss_m": loss.detach().item(),
            "count_m": float(per_utt.numel()),
            "pred_std": channel_std(q[0].detach()),
            "target_std": channel_std(z[0]),
            "teacher_decay": self.teacher_decay(int(self.num_updates)),
        }
        return loss, stats

    @torch.no_grad()
    def extract_features(
        self, source: torch.Tensor, source_lens: torch.Tensor, layers: Optional[List[int]] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Per-layer frame features of the whole (unaugmented) utterance: the front-end output
        (index 0) and each encoder layer (1..L), restricted to ``layers`` when given, each
        (B,T,D_l); and lens (B,)."""
        x, lens = self.frontend(source, source_lens)
        return layer_features(self.encoder, x, lens, layers)


def _build_byol(speech: nn.Module, cfg: ByolConfig) -> ByolModel:
    return ByolModel(speech.frontend, speech.encoder, cfg)


#: The ``--method byol`` registration (icefall.models.OBJECTIVES).
BYOL = Objective("byol", ByolConfig, _build_byol, after_step=ema_after_step)
