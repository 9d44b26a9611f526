"""HuBERT-style masked prediction (k2SSL) over any front end and encoder.

    source ─ front end (CNN ─ feature penalty ─ LayerNorm ─ proj ─ dropout) ─ mask ─ encoder ─ head
                                                 masked frames <- learned mask embedding

The head scores only the frames that count: the encoder output of masked frames (and of
unmasked ones when ``pred_nomask_weight > 0``) is gathered *before* the projection, so a batch
never materialises a (B, T, num_classes) logit tensor. Two heads:

- ``cosine`` (fairseq HuBERT): cosine similarity between ``final_proj(x)`` and one learned
  embedding per class, divided by ``logit_temp`` (0.1);
- ``linear``: a plain linear classifier.

Labels come at ``label_rate`` Hz (50 for layer k-means, 100 for MFCC k-means of iteration 1)
and are subsampled to the encoder's frame rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import Objective, layer_features
from icefall.nn.configs import _Config
from icefall.nn.masking import compute_mask
from icefall.utils import make_pad_mask

IGNORE_ID = -100


def _opt(default, help: str, **kw):
    """A field that is also a ``pretrain.py`` option of the same name."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class HubertConfig(_Config):
    """HuBERT-style masked prediction (fairseq ``hubert`` model/criterion names)."""

    num_classes: int = _opt(500, "k-means clusters of the labels")  # fairseq: len(dictionary)
    label_rate: float = 50.0  # fairseq label_rate (pretrain.py: --label-rate of the data options)
    frame_rate: float = 50.0  # encoder frames per second (fairseq: 16000 / prod(conv strides))
    mask_prob: float = _opt(0.8, "fraction of frames that start a masked span")  # fairseq mask_prob
    mask_length: int = _opt(10, "masked span length (frames)")  # fairseq mask_length
    min_masks: int = 2  # fairseq apply_mask's min_masks
    head: str = _opt("cosine", "prediction head", choices=["cosine", "linear"])  # cosine = fairseq's
    final_dim: int = _opt(256, "cosine head projection size")  # fairseq final_dim
    logit_temp: float = _opt(0.1, "cosine head temperature")  # fairseq logit_temp
    feature_pen_weight: float = _opt(10.0, "weight of the CNN feature penalty")  # fairseq loss_weights[0]
    pred_masked_weight: float = 1.0  # fairseq pred_masked_weight
    pred_nomask_weight: float = _opt(0.0, "weight of the unmasked frames' loss")  # fairseq pred_nomask_weight


class HubertModel(nn.Module):
    """Masked prediction of discrete labels.

    Args:
      frontend: ``(source, source_lens) -> (x (B,T,D_in), lens)`` with ``output_dim`` = D_in, the
        encoder's input width (``icefall.nn.frontend``: the wav2vec2 CNN with its LayerNorm and
        projection, or fbank Conv2d subsampling). A front end with ``cnn_features``/``project``
        gets the feature penalty on its raw CNN output, as fairseq does.
      encoder: ``(x (B,T,D_in), lens) -> (out (B,T,encoder.output_dim), lens)``, with
        ``return_hidden=True`` adding per-layer outputs. Must keep the frame rate (SSL).
      cfg: HubertConfig.

    Parameter names follow fairseq HuBERT where they exist (``mask_emb``, ``final_proj``,
    ``label_embs_concat``), so that its checkpoints map onto this model.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, cfg: HubertConfig = HubertConfig()):
        super().__init__()
        self.cfg = cfg
        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(frontend.output_dim).uniform_())
        out_dim = encoder.output_dim
        if cfg.head == "cosine":
            self.final_proj = nn.Linear(out_dim, cfg.final_dim)
            self.label_embs_concat = nn.Parameter(
                torch.empty(cfg.num_classes, cfg.final_dim).uniform_()
            )
        elif cfg.head == "linear":
            self.final_proj = nn.Linear(out_dim, cfg.num_classes)
            self.label_embs_concat = None
        else:
            raise ValueError(f"Unknown head {cfg.head!r}; use 'cosine' or 'linear'")

    # ------------------------------------------------------------------ features
    def frontend_features(
        self, source: torch.Tensor, source_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Front end output and the feature penalty.

        Returns:
          x (B,T,D_in), lens (B,), feature penalty (mean square of the valid raw features).
        """
        if hasattr(self.frontend, "cnn_features"):
            raw, lens = self.frontend.cnn_features(source, source_lens)
            x = self.frontend.project(raw)
        else:
            x, lens = self.frontend(source, source_lens)
            raw = x
        valid = ~make_pad_mask(lens, raw.shape[1])
        pen = raw[valid].float().pow(2).mean()
        return x, lens, pen

    def encode(
        self,
        source: torch.Tensor,
        source_lens: torch.Tensor,
        mask: bool = False,
        return_hidden: bool = False,
        mask_prob: Optional[float] = None,
        mask_length: Optional[int] = None,
    ) -> Dict[str, torch.Tensor]:
        """Encoder output, optionally with span masking (training) and per-layer outputs.

        Returns a dict with ``out`` (B,T,D), ``lens`` (B,), ``mask`` (B,T) bool or None,
        ``feature_pen`` (scalar) and, with ``return_hidden``, ``hidden`` (list of (B,T,D_l)).
        """
        x, lens, pen = self.frontend_features(source, source_lens)
        time_mask = None
        if mask:
            time_mask = compute_mask(
                x.shape[:2],
                lens,
                mask_prob if mask_prob is not None else self.cfg.mask_prob,
                mask_length if mask_length is not None else self.cfg.mask_length,
                self.cfg.min_masks,
            ).to(x.device)
            x = torch.where(time_mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        if return_hidden:
            out, out_lens, hidden = self.encoder(x, lens, return_hidden=True)
        else:
            out, out_lens = self.encoder(x, lens)
            hidden = None
        result = {"out": out, "lens": out_lens, "mask": time_mask, "feature_pen": pen}
        if hidden is not None:
            result["hidden"] = hidden
        return result

    # ------------------------------------------------------------------ loss
    def align_labels(self, labels: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Labels (B, T_label) at label_rate -> (B, num_frames) at frame_rate (IGNORE_ID pads)."""
        ratio = self.cfg.label_rate / self.cfg.frame_rate
        if ratio != 1.0:
            idx = (torch.arange(num_frames, device=labels.device) * ratio).long()
            idx = idx[idx < labels.shape[1]]
            labels = labels[:, idx]
        if labels.shape[1] < num_frames:
            labels = F.pad(labels, (0, num_frames - labels.shape[1]), value=IGNORE_ID)
        return labels[:, :num_frames]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) encoder frames -> (N, num_classes) logits."""
        proj = self.final_proj(x)
        if self.label_embs_concat is None:
            return proj
        # cosine similarity to each class embedding, scaled by 1/temperature
        proj = F.normalize(proj.float(), dim=-1)
        embs = F.normalize(self.label_embs_concat.float(), dim=-1)
        return proj @ embs.t() / self.cfg.logit_temp

    def forward(
        self, source: torch.Tensor, source_lens: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Masked-prediction loss.

        Args:
          source: (B, N) waveform or (B, T, 80) fbank, as the front end expects.
          source_lens: (B,) valid samples/frames.
          labels: (B, T_label) int64 at ``label_rate``, IGNORE_ID (-100) at padding.
        Returns:
          loss: scalar, summed over scored frames (cross-entropy) plus the feature penalty
            scaled by the number of masked frames (as fairseq does).
          stats: python floats ``loss_m``, ``correct_m``, ``count_m`` (masked frames),
            ``loss_u``/``correct_u``/``count_u`` (unmasked, when scored), ``feature_pen``.
        """
        enc = self.encode(source, source_lens, mask=True)
        out, lens, time_mask = enc["out"], enc["lens"], enc["mask"]
        T = out.shape[1]
        targets = self.align_labels(labels, T)
        valid = (~make_pad_mask(lens, T)) & (targets != IGNORE_ID)
        stats: Dict[str, float] = {}
        loss = out.new_zeros((), dtype=torch.float32)
        for name, weight, sel in (
            ("m", self.cfg.pred_masked_weight, valid & time_mask),
            ("u", self.cfg.pred_nomask_weight, valid & ~time_mask),
        ):
            if weight <= 0:
                continue  # frames with weight 0 cost nothing: no gather, no logits
            logits = self.logits(out[sel])
            tgt = targets[sel]
            ce = F.cross_entropy(logits.float(), tgt, reduction="sum")
            loss = loss + weight * ce
            stats[f"loss_{name}"] = ce.detach().item()
            stats[f"correct_{name}"] = (logits.argmax(-1) == tgt).sum().item()
            stats[f"count_{name}"] = float(tgt.numel())
        num_masked = stats.get("count_m", float((valid & time_mask).sum().item()))
        if self.cfg.feature_pen_weight > 0:
            loss = loss + self.cfg.feature_pen_weight * enc["feature_pen"] * num_masked
        stats["feature_pen"] = enc["feature_pen"].detach().item()
        return loss, stats

    @torch.no_grad()
    def extract_features(
        self, source: torch.Tensor, source_lens: torch.Tensor, layers: Optional[List[int]] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Unmasked per-layer outputs for k-means, units or probing.

        Returns:
          a list with the front-end output (index 0) followed by each encoder layer output
          (indices 1..L), restricted to ``layers`` when given; and lens (B,).
        """
        x, lens, _ = self.frontend_features(source, source_lens)
        return layer_features(self.encoder, x, lens, layers)


def _build_hubert(speech: nn.Module, cfg: HubertConfig) -> HubertModel:
    return HubertModel(speech.frontend, speech.encoder, cfg)


#: The ``--method hubert`` registration (icefall.models.OBJECTIVES).
HUBERT = Objective("hubert", HubertConfig, _build_hubert, needs_labels=True, resizable=("label_embs_concat",))
