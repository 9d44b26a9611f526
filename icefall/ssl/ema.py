"""The EMA teacher shared by SpidR, DinoSR, data2vec and BYOL-S.

A teacher is a frozen copy of a student module (no gradients, always in eval mode) that follows
it after every optimizer step by ``θ_teacher <- β_t θ_teacher + (1 - β_t) θ_student``. Parameters
whose names start with one of ``copy_prefixes`` (the Transformer's positional convolution, as
fairseq's data2vec and DinoSR skip it in the EMA) are copied instead of averaged; buffers are
copied. β_t comes from a schedule:

- :func:`exponential_decay` (SpidR): ``1 - (1 - β0) exp(-t / T)``;
- :func:`linear_decay` (data2vec, DinoSR): β0 -> β_end linearly over ``anneal_end_step`` steps,
  constant after, 1 (teacher frozen) from ``freeze_step``;
- :func:`cosine_decay` (BYOL): ``β_end - (β_end - β0) (cos(π t / K) + 1) / 2``, constant after K.

A model with a teacher subclasses :class:`EmaTeacherModel`: it calls :meth:`~EmaTeacherModel.
init_teacher` in its constructor and defines :meth:`~EmaTeacherModel.teacher_decay`; the
trainer calls ``model.update_teacher(step)`` after each optimizer step (``Trainer(after_step=
ema_after_step)``). The teacher is registered as ``teacher`` (checkpoint keys ``teacher.*``) and
the step counter as the buffer ``num_updates``, so checkpoints resume exactly.

Also here, because every teacher target is built from them: per-layer outputs of an encoder
(:func:`layer_outputs`, with the data2vec/DinoSR feed-forward tap) and their per-utterance
instance normalisation (:func:`masked_instance_norm`).
"""
from __future__ import annotations

import copy
import math
from functools import partial
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from icefall.models import select_layers
from icefall.nn.transformer import TransformerEncoder
from icefall.utils import make_pad_mask


# ---------------------------------------------------------------------- decay schedules
def exponential_decay(step: int, beta0: float = 0.999, timescale: float = 10000.0) -> float:
    """SpidR: ``beta_t = 1 - (1 - beta0) exp(-t / T)`` (rises smoothly from beta0 towards 1)."""
    return 1.0 - (1.0 - beta0) * math.exp(-step / timescale)


def linear_decay(step: int, beta0: float = 0.999, beta_end: float = 0.9999, anneal_end_step: int = 30000,
                 freeze_step: Optional[int] = 200000) -> float:
    """data2vec / DinoSR: linear from beta0 to beta_end over ``anneal_end_step`` steps, then
    constant; 1.0 (teacher frozen) from ``freeze_step`` on (None: never)."""
    if freeze_step is not None and step >= freeze_step:
        return 1.0
    if step >= anneal_end_step:
        return beta_end
    return beta0 + (beta_end - beta0) * step / anneal_end_step


def cosine_decay(step: int, beta0: float = 0.996, beta_end: float = 1.0, anneal_end_step: int = 30000) -> float:
    """BYOL: ``beta_end - (beta_end - beta0) (cos(pi t / K) + 1) / 2`` for t < K, beta_end after."""
    if step >= anneal_end_step:
        return beta_end
    return beta_end - (beta_end - beta0) * (math.cos(math.pi * step / anneal_end_step) + 1.0) / 2.0


# ---------------------------------------------------------------------- copy and update
def frozen_copy(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with ``requires_grad=False`` everywhere, in eval mode."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


def copied_names(teacher: nn.Module, copy_prefixes: Sequence[str]) -> List[str]:
    """Names of the parameters of ``teacher`` that start with one of ``copy_prefixes``."""
    return [n for n, _ in teacher.named_parameters() if n.startswith(tuple(copy_prefixes))]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, copied: Collection[str] = ()) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student`` parameter by parameter (same names),
    the parameters named in ``copied`` and every buffer copied from the student."""
    copied = set(copied)
    student_params = dict(student.named_parameters())
    for name, p in teacher.named_parameters():
        if name in copied:
            p.copy_(student_params[name])
        else:
            p.lerp_(student_params[name].to(p.dtype), 1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


class EmaTeacherModel(nn.Module):
    """Base of a model trained against an EMA teacher of part of itself.

    A subclass calls :meth:`init_teacher` once its student modules exist, and defines
    :meth:`teacher_decay` (and :meth:`ema_student` when the teacher follows more than
    ``self.encoder``). It then has ``teacher`` (the frozen copy), ``copied_params`` (teacher
    parameter names copied, not averaged) and the buffer ``num_updates`` (the last step given to
    :meth:`update_teacher`).
    """

    def init_teacher(self, copy_prefixes: Sequence[str] = ()) -> None:
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.teacher = frozen_copy(self.ema_student())
        #: teacher parameter names copied from the student instead of averaged
        self.copied_params = copied_names(self.teacher, copy_prefixes)

    def ema_student(self) -> nn.Module:
        """The module the teacher copies and follows (parameter names as the teacher's)."""
        return self.encoder

    def teacher_decay(self, step: int) -> float:
        """beta_t after optimizer step ``step``."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "EmaTeacherModel":
        super().train(mode)
        self.teacher.eval()  # the teacher never uses dropout or layer drop
        return self

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """After optimizer step ``step`` (1-based): ``teacher <- beta_t teacher + (1 - beta_t)
        student`` (nothing when beta_t >= 1: a frozen teacher). Returns beta_t."""
        self.num_updates.fill_(step)
        beta = self.teacher_decay(step)
        if beta < 1.0:
            ema_update(self.teacher, self.ema_student(), beta, self.copied_params)
        return beta


def ema_after_step(trainer: Any) -> None:
    """``Trainer(after_step=...)`` callback: ``model.update_teacher(step)`` after each optimizer
    step (step = optimizer steps so far, ``batch_idx_train // accum_grad``)."""
    model = trainer.model
    model = getattr(model, "module", model)  # unwrap DDP
    p = trainer.params
    model.update_teacher(p.batch_idx_train // p.get("accum_grad", 1))


# ---------------------------------------------------------------------- teacher layer outputs
def masked_instance_norm(x: torch.Tensor, lens: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of each utterance over its valid frames (zero mean, unit variance,
    biased variance as ``F.instance_norm``), in float32.

    Args: x (B, T, D), lens (B,).  Returns (B, T, D) float32, zero at padded frames.
    """
    valid = (~make_pad_mask(lens, x.shape[1])).unsqueeze(-1).float()  # (B, T, 1)
    n = valid.sum(1, keepdim=True).clamp(min=1.0)
    x = x.float() * valid
    mean = x.sum(1, keepdim=True) / n
    var = ((x - mean) ** 2 * valid).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * valid


def resolve_tap(tap: str, encoder: nn.Module) -> str:
    """``auto`` -> ``ffn`` for the Transformer, ``block`` for any other encoder."""
    if tap == "auto":
        tap = "ffn" if isinstance(encoder, TransformerEncoder) else "block"
    if tap not in ("ffn", "block"):
        raise ValueError(f"layer_tap must be 'ffn', 'block' or 'auto', not {tap!r}")
    return tap


def layer_outputs(
    encoder: nn.Module, x: torch.Tensor, lens: torch.Tensor, tap: str
) -> Tuple[torch.Tensor, torch.Tensor, List[Optional[torch.Tensor]]]:
    """Run ``encoder`` and return ``(out, out_lens, per-layer outputs)``.

    ``tap="block"``: the encoder's hidden list.  ``tap="ffn"`` (Transformer): each layer's
    feed-forward output (``fc2``) before dropout, residual and LayerNorm, captured by forward
    hooks; None for a layer skipped by layer drop.
    """
    if tap == "block":
        return encoder(x, lens, return_hidden=True)
    captured: Dict[int, torch.Tensor] = {}

    def keep(i: int, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured[i] = output

    hooks = [layer.fc2.register_forward_hook(partial(keep, i)) for i, layer in enumerate(encoder.layers)]
    try:
        out, out_lens = encoder(x, lens)
    finally:
        for h in hooks:
            h.remove()
    return out, out_lens, [captured.get(i) for i in range(len(encoder.layers))]


def tapped_layer_features(
    encoder: nn.Module, x: torch.Tensor, lens: torch.Tensor, tap: str, layers: Optional[List[int]] = None
) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """As :func:`icefall.models.layer_features`, with each layer read at ``tap``
    (:func:`layer_outputs`) and zeroed at padding: the features the teacher's targets read."""
    _, out_lens, hidden = layer_outputs(encoder, x, lens, tap)
    pad = make_pad_mask(out_lens, x.shape[1]).unsqueeze(-1)
    return select_layers([x] + [h.masked_fill(pad, 0.0) for h in hidden], layers), out_lens


@torch.no_grad()
def layer_dims(encoder: nn.Module, in_dim: int, tap: str) -> List[int]:
    """Width of each layer output, from one short dummy forward pass in eval mode."""
    was_training = encoder.training
    encoder.eval()
    T = 64
    device = next(encoder.parameters()).device
    x, lens = torch.zeros(1, T, in_dim, device=device), torch.tensor([T], device=device)
    _, _, hidden = layer_outputs(encoder, x, lens, tap)
    encoder.train(was_training)
    return [h.shape[-1] for h in hidden]
