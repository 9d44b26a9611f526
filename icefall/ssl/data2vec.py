"""data2vec (speech): masked regression of the mean of the teacher's top K layer outputs.

    source ─ front end ─ x ─┬─ mask ─ student encoder ─ final_proj ─ prediction  (masked frames)
                            └─────── teacher encoder (EMA) ─ top K layers ─ instance norm ─ mean = target

- The **student** is the front end and encoder; masked frames (HuBERT's span masking) get a
  learned mask embedding.
- The **teacher** (:class:`~icefall.ssl.ema.EmaTeacherModel`) is an EMA of the student encoder
  and reads the student's *unmasked* front-end output (fairseq ``ema_transformer_only``); the
  positional convolution is copied, not averaged (fairseq ``ema_layers_only``). Its decay goes
  linearly from 0.999 to 0.9999 over 30k updates (fairseq ``ema_anneal_end_step``), constant after.
- **Target** of frame t: the mean over the top K = min(8, L) teacher layers of each layer's
  output instance-normalised over the utterance's valid frames (per utterance, per channel;
  fairseq ``instance_norm_target_layer``). A "layer output" (``layer_tap``) is, for the
  Transformer, the feed-forward output before dropout, the final residual and LayerNorm (``ffn``,
  fairseq's ``layer_result``); for the Zipformer, whose layers differ in width and share their
  leading channels (it zero-pads / truncates between stacks), the entry of its hidden list
  (``block``), and target channel c is the mean over the top-K layers that have channel c.
- **Loss**: a linear head maps the student's final output to the target width; at masked valid
  frames only, ``sum_d smooth_l1(pred, target; beta)`` (beta = 0: squared error), summed over
  frames and scaled by ``1/sqrt(target dim)`` (fairseq's default ``loss_scale``).
- **Collapse indicators** (fairseq's ``pred_var`` / ``target_var``, which are standard
  deviations): the mean over channels of the standard deviation over the batch's masked frames
  of the predictions (``pred_std``) and of the targets (``target_std``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import Objective
from icefall.nn.configs import _Config
from icefall.nn.masking import compute_mask
from icefall.ssl.ema import (
    EmaTeacherModel,
    ema_after_step,
    layer_dims,
    layer_outputs,
    linear_decay,
    masked_instance_norm,
    resolve_tap,
    tapped_layer_features,
)
from icefall.utils import make_pad_mask


def _opt(default, help: str):
    """A field that is also a ``pretrain.py`` option of the same name."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Data2vecConfig(_Config):
    """data2vec (fairseq ``data2vec_audio`` names in the comments)."""

    average_top_k_layers: int = _opt(8, "data2vec: teacher layers averaged into the target (clamped to the encoder's)")
    layer_tap: str = "auto"  # "ffn" | "block" | "auto" (ffn for the Transformer, else block)
    loss_beta: float = _opt(0.0, "data2vec: smooth-L1 beta (0: squared error)")  # fairseq loss_beta
    loss_scale: Optional[float] = None  # None: 1/sqrt(target dim) (fairseq loss_scale)
    mask_prob: float = _opt(0.65, "fraction of frames that start a masked span")  # fairseq mask_prob
    mask_length: int = _opt(10, "masked span length (frames)")  # fairseq mask_length
    min_masks: int = 2
    ema_start_decay: float = 0.999  # fairseq ema_decay
    ema_end_decay: float = 0.9999  # fairseq ema_end_decay
    ema_anneal_end_step: int = 30000  # fairseq ema_anneal_end_step
    ema_copy_params: Tuple[str, ...] = ("pos_conv",)  # teacher params copied, not averaged


def layer_average(layers: List[torch.Tensor], lens: torch.Tensor) -> torch.Tensor:
    """The data2vec target from K teacher layer outputs (B,T,D_k): each instance-normalised over
    the valid frames of its utterance, then averaged; channel c over the layers that have it
    (widths may differ: the Zipformer's). Returns (B,T,max D_k) float32, zero at padding."""
    width = max(h.shape[-1] for h in layers)
    total = layers[0].new_zeros(*layers[0].shape[:2], width, dtype=torch.float32)
    count = torch.zeros(width, device=total.device)
    for h in layers:
        d = h.shape[-1]
        total[..., :d] += masked_instance_norm(h, lens)
        count[:d] += 1
    return total / count


def channel_std(x: torch.Tensor) -> float:
    """Mean over channels of the standard deviation over rows, x (N, D) (fairseq compute_var)."""
    if x.shape[0] < 2:
        return 0.0
    return float(torch.sqrt(x.float().var(dim=0) + 1e-6).mean())


class Data2vecModel(EmaTeacherModel):
    """data2vec over any front end and encoder.

    Args:
      frontend: ``(source, source_lens) -> (x (B,T,D_in), lens)`` with ``output_dim`` = D_in.
      encoder: ``(x (B,T,D_in), lens) -> (out (B,T,D_out), lens)``; with ``return_hidden=True``
        also the per-layer outputs (B,T,D_l).  Must keep the frame rate.
      cfg: Data2vecConfig.

    Submodules: ``frontend``, ``encoder`` (the student), ``mask_emb``, ``final_proj`` (D_out ->
    target width), ``teacher`` (EMA copy of ``encoder``); buffer ``num_updates``.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, cfg: Data2vecConfig = Data2vecConfig()):
        super().__init__()
        self.cfg = cfg
        self.tap = resolve_tap(cfg.layer_tap, encoder)
        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(frontend.output_dim).uniform_())
        dims = layer_dims(encoder, frontend.output_dim, self.tap)
        if cfg.average_top_k_layers < 1:
            raise ValueError(f"average_top_k_layers={cfg.average_top_k_layers} must be >= 1")
        L, K = len(dims), min(cfg.average_top_k_layers, len(dims))
        #: 1-based teacher layers averaged into the target: L-K+1 .. L
        self.target_layers: List[int] = list(range(L - K + 1, L + 1))
        self.target_dim = max(dims[k - 1] for k in self.target_layers)
        self.final_proj = nn.Linear(encoder.output_dim, self.target_dim)
        self.init_teacher(cfg.ema_copy_params)

    def teacher_decay(self, step: int) -> float:
        c = self.cfg
        return linear_decay(step, c.ema_start_decay, c.ema_end_decay, c.ema_anneal_end_step, None)

    @torch.no_grad()
    def targets(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Teacher on unmasked features x (B,T,D_in) -> (B,T,target_dim) float32 targets."""
        _, out_lens, hidden = layer_outputs(self.teacher, x.detach(), lens, self.tap)
        return layer_average([hidden[k - 1] for k in self.target_layers], out_lens)

    def forward(
        self, source: torch.Tensor, source_lens: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Masked regression of the teacher's layer average.

        Args:
          source: (B, N) waveform or (B, T, 80) fbank, as the front end expects.
          source_lens: (B,) valid samples/frames.
          mask: optional (B, T) bool frames to mask (default: span masks from the config).
        Returns:
          loss: scalar, the scaled regression loss summed over masked valid frames.
          stats: python floats ``loss_m`` (= loss), ``count_m`` (masked valid frames),
            ``pred_std`` / ``target_std`` (collapse indicators, per batch), ``teacher_decay``.
        """
        x, lens = self.frontend(source, source_lens)
        B, T, _ = x.shape
        if mask is None:
            mask = compute_mask((B, T), lens, self.cfg.mask_prob, self.cfg.mask_length, self.cfg.min_masks)
        mask = mask.to(x.device)
        x_masked = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        out, _ = self.encoder(x_masked, lens)
        if out.shape[1] != T:
            raise ValueError("the encoder must keep the front end's frame rate")
        sel = mask & ~make_pad_mask(lens, T)  # scored frames: masked and valid
        y = self.targets(x, lens)[sel]
        pred = self.final_proj(out[sel]).float()
        if self.cfg.loss_beta == 0:
            per_frame = (pred - y).pow(2).sum(-1)
        else:
            per_frame = F.smooth_l1_loss(pred, y, reduction="none", beta=self.cfg.loss_beta).sum(-1)
        scale = self.cfg.loss_scale if self.cfg.loss_scale is not None else 1.0 / math.sqrt(self.target_dim)
        loss = per_frame.sum() * scale
        stats = {
            "loss_m": loss.detach().item(),
            "count_m": float(sel.sum().item()),
            "pred_std": channel_std(pred.detach()),
            "target_std": channel_std(y),
            "teacher_decay": self.teacher_decay(int(self.num_updates)),
        }
        return loss, stats

    @torch.no_grad()
    def extract_features(
        self, source: torch.Tensor, source_lens: torch.Tensor, layers: Optional[List[int]] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Unmasked student features: the front-end output (index 0) and each encoder layer's
        output as the targets read it (``layer_tap``; indices 1..L), restricted to ``layers``
        when given, each (B,T,D_l) zero at padding; and lens (B,)."""
        x, lens = self.frontend(source, source_lens)
        return tapped_layer_features(self.encoder, x, lens, self.tap, layers)


def _build_data2vec(speech: nn.Module, cfg: Data2vecConfig) -> Data2vecModel:
    return Data2vecModel(speech.frontend, speech.encoder, cfg)


#: The ``--method data2vec`` registration (icefall.models.OBJECTIVES).
DATA2VEC = Objective("data2vec", Data2vecConfig, _build_data2vec, after_step=ema_after_step)
