"""SpidR and DinoSR: self-distillation with online clustering (one codebook per upper layer).

    source ─ front end ─ x ─┬─ mask ─ student encoder ─ heads ─ log p(v | frame)   (masked frames)
                            └─────── teacher encoder (EMA) ─ instance norm ─ nearest codeword = target

- The **student** is the front end and encoder; masked frames get a learned mask embedding.
- The **teacher** is an exponential moving average of the student *encoder* (as in data2vec,
  DinoSR and SpidR, the front end is shared: the teacher reads the student's unmasked front-end
  output).  It runs in eval mode, without gradients.  Parameters named by ``ema_copy_params``
  (the positional convolution) are copied from the student rather than averaged.
- For each of the top K layers (L-K+1 .. L) a **codebook** of V codewords ``C_v = s_v / n_v``
  follows the teacher's instance-normalised layer outputs z (SpidR eq. 4): for every codeword
  hit in a step, ``s_v <- tau s_v + (1 - tau) sum_{i -> v} z_i`` and
  ``n_v <- tau n_v + (1 - tau) |{i -> v}|``; codewords hit by no frame do not move.  The sums
  and counts are all-reduced across ranks.  The target of frame i at layer k is its nearest
  codeword.
- **Heads**: one linear map + softmax per codebook.  SpidR: head k reads student layer k.
  DinoSR: every head reads the student's last output.
- **Loss**: cross-entropy on masked frames, averaged over the K heads, summed over frames
  (``loss / count_m`` is SpidR's eq. 3).
- **Teacher decay** beta_t: SpidR ``1 - (1 - beta_0) exp(-t / T)``; DinoSR a linear ramp from
  ``beta_0`` to ``beta_end`` over ``anneal_end_step`` steps, constant after, 1 (frozen teacher)
  from ``teacher_freeze_step``.

A "layer output" (``layer_tap``) is, for the Transformer, the feed-forward output *before* the
residual and LayerNorm (``ffn``, as in data2vec/DinoSR/SpidR); for any other encoder (Zipformer)
it is the entry of the encoder's hidden list (``block``), whose widths may differ per layer.

The teacher, its schedules and its update are :class:`icefall.ssl.ema.EmaTeacherModel`'s (shared
with data2vec and BYOL-S); this module adds the codebooks and heads.

Training loop: ``loss, stats = model(source, lens)`` then, after each optimizer step,
``model.update_teacher(step)`` (codebooks, then teacher); with the shared Trainer pass
``after_step=spidr_after_step`` (= :func:`icefall.ssl.ema.ema_after_step`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import Objective, build_model, pretrain_config
from icefall.nn.configs import EncoderConfig, _Config
from icefall.nn.masking import compute_mask
from icefall.ssl.ema import (
    EmaTeacherModel,
    ema_after_step,
    exponential_decay,
    layer_dims,
    layer_outputs,
    linear_decay,
    masked_instance_norm,
    resolve_tap,
    tapped_layer_features,
)
from icefall.utils import make_pad_mask


# The schedules under their method names (the shared EMA teacher lives in icefall.ssl.ema).
spidr_teacher_decay = exponential_decay
dinosr_teacher_decay = linear_decay


def perplexity(p: torch.Tensor) -> float:
    """``2 ** H(mean_i p_i)`` for p (N, V) one-hot assignments or probabilities: V when all
    classes are used equally, 1 when a single one is used."""
    mean = p.float().mean(0)
    return float(torch.exp2(-(mean * torch.log2(mean + 1e-12)).sum()))


# ---------------------------------------------------------------------- codebook
class Codebook(nn.Module):
    """V codewords ``C_v = sums[v] / counts[v]`` updated by EMA of the frames assigned to them.

    ``assign`` gives the nearest codeword; ``accumulate`` adds a batch's per-codeword sums and
    counts (training forward passes); ``update`` all-reduces them (when torch.distributed is
    initialised), applies the EMA to the codewords that were hit and clears them.  The pending
    statistics are plain attributes, not buffers, so that DDP's buffer broadcast leaves each
    rank's own statistics alone.
    """

    def __init__(self, dim: int, size: int = 256, decay: float = 0.9):
        super().__init__()
        self.decay = decay
        init = torch.randn(size, dim)
        # per-channel zero mean / unit variance over codewords, like the instance-normalised targets
        init = (init - init.mean(0)) / init.std(0)
        self.register_buffer("sums", init)
        self.register_buffer("counts", torch.ones(size))
        self._batch_sums: Optional[torch.Tensor] = None
        self._batch_counts: Optional[torch.Tensor] = None

    @property
    def size(self) -> int:
        return self.counts.shape[0]

    def codewords(self) -> torch.Tensor:
        """(V, D) float32."""
        return self.sums / self.counts.unsqueeze(1)

    @torch.no_grad()
    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> (N,) int64 index of the nearest codeword (Euclidean)."""
        c = self.codewords()
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; ||z||^2 is the same for every codeword
        return ((c * c).sum(1) - 2.0 * z.float() @ c.t()).argmin(1)

    @torch.no_grad()
    def accumulate(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the frames z (N, D) assigned to ``labels`` (N,) to the pending statistics."""
        if self._batch_sums is None:
            self._batch_sums = torch.zeros_like(self.sums)
            self._batch_counts = torch.zeros_like(self.counts)
        self._batch_sums.index_add_(0, labels, z.float())
        self._batch_counts += torch.bincount(labels, minlength=self.size).float()

    @torch.no_grad()
    def update(self) -> None:
        """EMA step with the pending statistics (every rank must call it: it all-reduces)."""
        if self._batch_sums is None:
            sums, counts = torch.zeros_like(self.sums), torch.zeros_like(self.counts)
        else:
            sums, counts = self._batch_sums, self._batch_counts
        self._batch_sums = self._batch_counts = None
        if dist.is_available() and dist.is_initialized():
            stats = torch.cat([sums, counts.unsqueeze(1)], dim=1)
            dist.all_reduce(stats)
            sums, counts = stats[:, :-1], stats[:, -1]
        # codewords hit by no frame keep decay 1: they do not move
        alpha = torch.where(counts > 0, torch.full_like(counts, self.decay), torch.ones_like(counts))
        self.sums.mul_(alpha.unsqueeze(1)).add_((1 - alpha).unsqueeze(1) * sums)
        self.counts.mul_(alpha).add_((1 - alpha) * counts)


# ---------------------------------------------------------------------- model
def _opt(default, help: str):
    """A field that is also a ``pretrain.py`` option of the same name."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SpidrConfig(_Config):
    """SpidR / DinoSR (SpidR paper symbols and fairseq DinoSR names in the comments)."""

    variant: str = "spidr"  # "spidr": head k reads student layer k; "dinosr": all read the last
    num_codebooks: int = _opt(8, "spidr/dinosr: codebooks on the top K layers")  # K
    codebook_size: int = _opt(256, "spidr/dinosr: codewords per codebook")  # V (DinoSR codebook_size)
    codebook_decay: float = 0.9  # tau (DinoSR codebook_decay)
    layer_tap: str = "auto"  # "ffn" | "block" | "auto" (ffn for the Transformer, else block)
    mask_prob: float = _opt(0.8, "fraction of frames that start a masked span")  # fairseq convention
    mask_length: int = _opt(10, "masked span length (frames)")
    min_masks: int = 2
    teacher_schedule: str = "auto"  # "exp" (SpidR) | "linear" (DinoSR) | "auto" (by variant)
    ema_start_decay: float = 0.999  # beta_0 (DinoSR ema_decay)
    ema_timescale: float = _opt(10000.0, "spidr: teacher decay time constant (optimizer steps)")  # T
    ema_end_decay: float = 0.9999  # linear schedule (DinoSR ema_end_decay)
    ema_anneal_end_step: int = 30000  # linear schedule (DinoSR ema_anneal_end_step)
    teacher_freeze_step: Optional[int] = 200000  # linear schedule: teacher frozen from here
    ema_copy_params: Tuple[str, ...] = ("pos_conv",)  # teacher params copied, not averaged
    freeze_frontend_step: Optional[int] = None  # stop training the front end (Table 5: 200k)


class SpidrModel(EmaTeacherModel):
    """SpidR / DinoSR self-distillation over any front end and encoder.

    Args:
      frontend: ``(source, source_lens) -> (x (B,T,D_in), lens)`` with ``output_dim`` = D_in.
      encoder: ``(x (B,T,D_in), lens) -> (out (B,T,D_out), lens)``; with ``return_hidden=True``
        also the per-layer outputs (B,T,D_l).  Must keep the frame rate.
      cfg: SpidrConfig.

    Submodules: ``frontend``, ``encoder`` (the student), ``mask_emb``, ``heads`` (K linear maps),
    ``teacher`` (an EMA copy of ``encoder``, no gradients), ``codebooks`` (K :class:`Codebook`);
    buffer ``num_updates`` (the last step passed to :meth:`update_teacher`).  Build the
    optimizer from the parameters with ``requires_grad`` (the teacher's are frozen).
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, cfg: SpidrConfig = SpidrConfig()):
        super().__init__()
        if cfg.variant not in ("spidr", "dinosr"):
            raise ValueError(f"variant must be 'spidr' or 'dinosr', not {cfg.variant!r}")
        tap = resolve_tap(cfg.layer_tap, encoder)
        schedule = cfg.teacher_schedule
        if schedule == "auto":
            schedule = "exp" if cfg.variant == "spidr" else "linear"
        if schedule not in ("exp", "linear"):
            raise ValueError(f"teacher_schedule must be 'exp', 'linear' or 'auto', not {schedule!r}")
        self.cfg, self.tap, self.schedule = cfg, tap, schedule
        if cfg.variant == "spidr" and tap == "ffn" and getattr(encoder, "layerdrop", 0.0) > 0:
            # a dropped layer has no feed-forward output for its head to read
            raise ValueError("SpidR with layer_tap='ffn' needs the encoder's layerdrop = 0")

        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(frontend.output_dim).uniform_())

        dims = layer_dims(encoder, frontend.output_dim, tap)
        L, K = len(dims), cfg.num_codebooks
        if not 1 <= K <= L:
            raise ValueError(f"num_codebooks={K} must be in [1, {L}] (the encoder's layers)")
        #: 1-based encoder layers with a codebook: L-K+1 .. L
        self.target_layers: List[int] = list(range(L - K + 1, L + 1))
        target_dims = [dims[k - 1] for k in self.target_layers]
        head_dims = target_dims if cfg.variant == "spidr" else [encoder.output_dim] * K
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size) for d in head_dims)
        self.codebooks = nn.ModuleList(
            Codebook(d, cfg.codebook_size, cfg.codebook_decay) for d in target_dims
        )
        self.init_teacher(cfg.ema_copy_params)  # num_updates, teacher, copied_params

        if cfg.variant == "spidr" and tap == "ffn":
            # Nothing after the last feed-forward output reaches a head; freeze it so that every
            # trainable parameter gets a gradient (DDP without find_unused_parameters).
            last = encoder.layer_norm if encoder.layer_norm_first else encoder.layers[-1].final_layer_norm
            last.requires_grad_(False)

    # ------------------------------------------------------------------ schedule
    def teacher_decay(self, step: int) -> float:
        """beta_t of the configured schedule."""
        c = self.cfg
        if self.schedule == "exp":
            return spidr_teacher_decay(step, c.ema_start_decay, c.ema_timescale)
        return dinosr_teacher_decay(
            step, c.ema_start_decay, c.ema_end_decay, c.ema_anneal_end_step, c.teacher_freeze_step
        )

    @property
    def frontend_frozen(self) -> bool:
        step = self.cfg.freeze_frontend_step
        return step is not None and int(self.num_updates) >= step

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """After optimizer step ``step`` (1-based): codebook EMA with the statistics gathered
        since the last call, then the teacher EMA (:meth:`EmaTeacherModel.update_teacher`:
        ``copied_params`` and buffers copied).  Every rank must call it.  Returns beta_t."""
        for codebook in self.codebooks:
            codebook.update()
        return super().update_teacher(step)

    # ------------------------------------------------------------------ pieces of forward
    def _frontend(self, source: torch.Tensor, source_lens: torch.Tensor):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frontend_frozen):
            return self.frontend(source, source_lens)

    def head_inputs(self, x: torch.Tensor, lens: torch.Tensor) -> List[torch.Tensor]:
        """Student encoder on (masked) features x (B,T,D_in) -> the K inputs of the heads."""
        out, _, hidden = layer_outputs(self.encoder, x, lens, self.tap)
        if self.cfg.variant == "dinosr":
            return [out] * len(self.heads)
        picked = [hidden[k - 1] for k in self.target_layers]
        if any(h is None for h in picked):
            raise RuntimeError("a target layer was skipped by layer drop")
        return picked

    @torch.no_grad()
    def teacher_targets(self, x: torch.Tensor, lens: torch.Tensor) -> List[torch.Tensor]:
        """Teacher on unmasked features x (B,T,D_in) -> K instance-normalised layer outputs
        (B,T,D_k) float32, zero at padding."""
        _, out_lens, hidden = layer_outputs(self.teacher, x.detach(), lens, self.tap)
        return [masked_instance_norm(hidden[k - 1], out_lens) for k in self.target_layers]

    # ------------------------------------------------------------------ loss
    def forward(
        self, source: torch.Tensor, source_lens: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Masked prediction of the teacher's codebook assignments.

        Args:
          source: (B, N) waveform or (B, T, 80) fbank, as the front end expects.
          source_lens: (B,) valid samples/frames.
          mask: optional (B, T) bool frames to mask (default: span masks from the config).
        Returns:
          loss: scalar, sum over masked frames of the cross-entropy averaged over the K heads.
          stats: python floats ``loss_m`` (= loss), ``correct_m`` (head accuracy, same
            weighting), ``count_m`` (masked frames), ``codebook_ppl`` / ``pred_ppl``
            (perplexity of the batch's codebook assignments / head posteriors on masked
            frames, averaged over heads: per batch, not sums), ``teacher_decay``.
        In training mode the codebook statistics are gathered for :meth:`update_teacher`.
        """
        x, lens = self._frontend(source, source_lens)
        B, T, _ = x.shape
        if mask is None:
            mask = compute_mask(
                (B, T), lens, self.cfg.mask_prob, self.cfg.mask_length, self.cfg.min_masks
            )
        mask = mask.to(x.device)
        x_masked = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        sel = mask & ~make_pad_mask(lens, T)  # scored frames: masked and valid

        inputs = self.head_inputs(x_masked, lens)
        if inputs[0].shape[1] != T:
            raise ValueError("the encoder must keep the front end's frame rate")
        targets = self.teacher_targets(x, lens)
        K = len(self.heads)
        loss = x.new_zeros((), dtype=torch.float32)
        correct = 0.0
        cb_ppl = pred_ppl = 0.0
        for head, codebook, h, z in zip(self.heads, self.codebooks, inputs, targets):
            z = z[sel]
            labels = codebook.assign(z)
            if self.training:
                codebook.accumulate(z, labels)
            logits = head(h[sel]).float()
            loss = loss + F.cross_entropy(logits, labels, reduction="sum") / K
            with torch.no_grad():
                correct += (logits.argmax(-1) == labels).sum().item() / K
                if labels.numel() > 0:
                    cb_ppl += perplexity(F.one_hot(labels, codebook.size)) / K
                    pred_ppl += perplexity(logits.softmax(-1)) / K
        stats = {
            "loss_m": loss.detach().item(),
            "correct_m": correct,
            "count_m": float(sel.sum().item()),
            "codebook_ppl": cb_ppl,
            "pred_ppl": pred_ppl,
            "teacher_decay": self.teacher_decay(int(self.num_updates)),
        }
        return loss, stats

    # ------------------------------------------------------------------ features and units
    @torch.no_grad()
    def extract_features(
        self, source: torch.Tensor, source_lens: torch.Tensor, layers: Optional[List[int]] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Unmasked student features for k-means, ABX or probing.

        Returns a list with the front-end output (index 0) and each encoder layer's output as
        the heads see it (``layer_tap``; indices 1..L), restricted to ``layers`` when given,
        each (B,T,D_l) zero at padding; and lens (B,).
        """
        x, lens = self.frontend(source, source_lens)
        return tapped_layer_features(self.encoder, x, lens, self.tap, layers)

    @torch.no_grad()
    def predict_units(
        self, source: torch.Tensor, source_lens: torch.Tensor, layer: int, return_probs: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Discrete units from the codebook predictions of encoder layer ``layer`` (1-based, one
        of ``target_layers``): argmax of its head on the unmasked input.

        Returns (units (B,T) int64, -1 at padding, or with ``return_probs`` the head
        posteriors (B,T,V)), lens (B,).
        """
        if layer not in self.target_layers:
            raise ValueError(f"layer {layer} has no codebook; choose from {self.target_layers}")
        i = self.target_layers.index(layer)
        x, lens = self.frontend(source, source_lens)
        h = self.head_inputs(x, lens)[i]
        probs = self.heads[i](h).float().softmax(-1)
        if return_probs:
            return probs, lens
        units = probs.argmax(-1).masked_fill(make_pad_mask(lens, probs.shape[1]), -1)
        return units, lens


# ---------------------------------------------------------------------- factory and trainer hook
#: SpidR Table 5 settings for the wav2vec2-style Transformer configs (no Q/K/V biases, LayerNorm
#: CNN without bias, no projection dropout, full gradient into the CNN, normalised waveforms).
TRANSFORMER_SPIDR_OVERRIDES: Dict[str, Any] = dict(
    qkv_bias=False,
    frontend_mode="layer",
    frontend_conv_bias=False,
    frontend_feature_grad_mult=1.0,
    frontend_dropout_input=0.0,
    frontend_normalize=True,
)


def spidr_encoder_defaults(enc: EncoderConfig, cfg: SpidrConfig) -> Dict[str, Any]:
    """Encoder overrides applied before the user's: :data:`TRANSFORMER_SPIDR_OVERRIDES` for a
    Transformer (the ``frontend_*`` ones with the CNN front end only), plus ``layerdrop=0`` for
    the SpidR variant (its heads read feed-forward outputs of every top layer)."""
    if enc.encoder.kind != "transformer":
        return {}
    out = {k: v for k, v in TRANSFORMER_SPIDR_OVERRIDES.items()
           if not k.startswith("frontend_") or enc.frontend_type == "cnn"}
    if cfg.variant == "spidr" and cfg.layer_tap in ("auto", "ffn"):
        out["layerdrop"] = 0.0
    return out


def build_spidr(encoder_name: str, variant: str = "spidr", **overrides: Any) -> SpidrModel:
    """A SpidR or DinoSR model over a named encoder (``icefall.nn.configs``).

    ``overrides`` that are :class:`SpidrConfig` fields configure the model; the rest are
    encoder overrides and win over :func:`spidr_encoder_defaults`.
    """
    return build_model(pretrain_config(variant, encoder_name, overrides=overrides))


def _build_spidr_model(speech: nn.Module, cfg: SpidrConfig) -> SpidrModel:
    return SpidrModel(speech.frontend, speech.encoder, cfg)


#: ``Trainer(after_step=...)`` callback: codebook and teacher updates after each optimizer step.
spidr_after_step = ema_after_step


#: The ``--method spidr`` and ``--method dinosr`` registrations (icefall.models.OBJECTIVES).
SPIDR = Objective("spidr", SpidrConfig, _build_spidr_model, fixed={"variant": "spidr"},
                  encoder_defaults=spidr_encoder_defaults, after_step=spidr_after_step)
DINOSR = Objective("dinosr", SpidrConfig, _build_spidr_model, fixed={"variant": "dinosr"},
                   encoder_defaults=spidr_encoder_defaults, after_step=spidr_after_step)
