"""wav2vec 2.0: contrastive prediction of quantized front-end features at masked frames.

    source ─ front end ─┬─ raw CNN features ── feature penalty
                        ├─ LayerNorm'd features ─ dropout ─ Gumbel quantizer ─ project_q ─ q   (targets)
                        └─ projected ─ mask ─ encoder ─ final_proj ─ c                            (context)

At every masked frame t the context c_t must pick its own quantized target q_t among
``num_negatives`` distractors q_j, drawn uniformly from the *other* masked frames of the same
utterance: logits are cosine similarities divided by ``logit_temp`` (0.1), the loss is the
cross-entropy of the positive, summed over masked frames. A distractor equal to the positive
(the same code) gets logit -inf, as in fairseq.

**Quantizer** (fairseq ``GumbelVectorQuantizer``): a linear map of the (LayerNorm'd, unprojected)
CNN features to G groups x V logits; in training each group picks one entry with the hard
straight-through Gumbel-softmax at temperature tau (forward: one-hot of
``argmax((logits + g) / tau)``, gradient: that of the softmax), in eval the argmax of the logits;
the chosen entries (each ``latent_dim / G`` wide) are concatenated. tau decays from 2 to 0.5 by
0.999995 per optimizer step (``num_updates``, a buffer: it travels in checkpoints).

**Diversity loss** (weight 0.1): ``(G V - sum_g exp(H(pbar_g))) / (G V)``, pbar_g the softmax of
group g's logits (no Gumbel noise, no temperature) averaged over the batch's masked frames.
**Feature penalty** (weight 10): mean square of the raw CNN features. Both are scaled by the
number of masked frames, as fairseq's criterion does with its summed loss.

With the fbank front end (no separate CNN output) the quantizer and penalty read the front end's
output, and by default (``target_grad="auto"``) the quantizer's input is detached: trained
through its own targets, that front end makes every frame's code the same within ~10 steps on
the mini corpus (a distractor equal to the positive costs nothing, so a collapsed codebook has
zero contrastive loss), while the CNN front end, as in fairseq, keeps the gradient.

Parameter names follow fairseq's ``Wav2Vec2Model`` (``quantizer.vars``,
``quantizer.weight_proj``, ``project_q``, ``final_proj``, ``mask_emb``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import Objective, layer_features
from icefall.nn.configs import _Config
from icefall.nn.masking import compute_mask
from icefall.utils import make_pad_mask


def _opt(default, help: str):
    """A field that is also a ``pretrain.py`` option of the same name."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Wav2Vec2Config(_Config):
    """wav2vec 2.0 pretraining (fairseq ``wav2vec2`` model / criterion names)."""

    mask_prob: float = _opt(0.65, "fraction of frames that start a masked span")  # fairseq mask_prob
    mask_length: int = _opt(10, "masked span length (frames)")  # fairseq mask_length
    min_masks: int = 2
    final_dim: int = _opt(256, "cosine head projection size")  # fairseq final_dim
    logit_temp: float = _opt(0.1, "cosine head temperature")  # fairseq logit_temp
    latent_groups: int = _opt(2, "wav2vec2: quantizer codebook groups G")  # fairseq latent_groups
    latent_vars: int = _opt(320, "wav2vec2: entries per quantizer group V")  # fairseq latent_vars
    latent_dim: int = 0  # fairseq latent_dim: width of a quantized vector; 0 = final_dim
    latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)  # (start, end, decay per step)
    num_negatives: int = _opt(100, "wav2vec2: distractors per masked frame")  # fairseq num_negatives
    diversity_weight: float = _opt(0.1, "wav2vec2: weight of the codebook diversity loss")  # loss_weights[0]
    feature_pen_weight: float = _opt(10.0, "weight of the CNN feature penalty")  # loss_weights[1]
    dropout_features: float = 0.1  # fairseq dropout_features (on the quantizer's input)
    # Gradient from the quantizer into the front end: "on" (fairseq), "off", or "auto" = on for
    # the CNN front end, off for the fbank one (see the module docstring).
    target_grad: str = "auto"


# ---------------------------------------------------------------------- quantizer
def gumbel_softmax_st(logits: torch.Tensor, tau: float, gumbels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hard straight-through Gumbel-softmax over the last dim.

    Forward: one-hot of ``argmax((logits + g) / tau)``; backward: the gradient of
    ``softmax((logits + g) / tau)``. ``gumbels``: the noise g (same shape), standard Gumbel
    samples when None.
    """
    if gumbels is None:
        gumbels = -torch.empty_like(logits).exponential_().log()
    soft = ((logits + gumbels) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def group_perplexity(probs: torch.Tensor) -> torch.Tensor:
    """``sum_g exp(H(mean_n probs[n, g]))`` for probs (N, G, V) (fairseq's ``prob_perplexity``
    and, on one-hot codes, ``code_perplexity``): G V when every entry is used equally."""
    mean = probs.float().mean(0)
    return torch.exp(-(mean * torch.log(mean + 1e-7)).sum(-1)).sum()


def diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """wav2vec 2.0's diversity loss ``(G V - perplexity) / (G V)`` of logits (N, G, V): the
    perplexity of the batch's mean softmax per group."""
    G, V = logits.shape[1:]
    return (G * V - group_perplexity(logits.float().softmax(-1))) / (G * V)


class GumbelQuantizer(nn.Module):
    """Product quantizer: (N, dim) -> (N, latent_dim), G groups of V learned codevectors each
    ``latent_dim / G`` wide (fairseq ``GumbelVectorQuantizer``, ``combine_groups=False``)."""

    def __init__(self, dim: int, groups: int, num_vars: int, latent_dim: int):
        super().__init__()
        if latent_dim % groups:
            raise ValueError(f"latent_dim {latent_dim} is not a multiple of latent_groups {groups}")
        self.groups, self.num_vars = groups, num_vars
        self.vars = nn.Parameter(torch.empty(1, groups * num_vars, latent_dim // groups).uniform_())
        self.weight_proj = nn.Linear(dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N, G, V) float32."""
        return self.weight_proj(x).float().view(x.shape[0], self.groups, self.num_vars)

    def forward(self, x: torch.Tensor, tau: float) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """x (N, dim) -> (quantized (N, latent_dim), stats): in training Gumbel-sampled codes at
        temperature ``tau``, in eval the argmax. Stats: ``logits`` (N, G, V), ``codes`` (N, G)
        the chosen entries, ``code_ppl`` (perplexity of the chosen codes)."""
        logits = self.logits(x)
        if self.training:
            onehot = gumbel_softmax_st(logits, tau)
        else:
            onehot = F.one_hot(logits.argmax(-1), self.num_vars).float()
        codes = onehot.argmax(-1)
        vars = self.vars.view(self.groups, self.num_vars, -1).float()  # (G, V, d)
        q = torch.einsum("ngv,gvd->ngd", onehot, vars).reshape(x.shape[0], -1)
        with torch.no_grad():
            code_ppl = group_perplexity(F.one_hot(codes, self.num_vars))
        return q.to(x.dtype), {"logits": logits, "codes": codes, "code_ppl": code_ppl}


# ---------------------------------------------------------------------- contrastive loss
def sample_distractors(counts: torch.Tensor, num: int,
                       generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distractor indices for the masked frames of a batch, flattened utterance by utterance.

    Args:
      counts: (B,) masked frames per utterance; the N = counts.sum() frames are numbered
        utterance after utterance.
      num: distractors per frame.
    Returns:
      idx (N, num) int64: for frame i of utterance b, indices of *other* frames of utterance b,
      uniform among them (with replacement); valid (N, num) bool, False where the utterance has
      a single masked frame (nothing to draw: such a distractor must be ignored).
    """
    counts = counts.to(torch.long)
    device = counts.device
    starts = torch.cumsum(counts, 0) - counts
    utt = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)  # (N,)
    own = torch.arange(utt.numel(), device=device) - starts[utt]  # position within the utterance
    n = counts[utt].unsqueeze(1)  # (N, 1)
    u = torch.rand((utt.numel(), num), generator=generator, device=device)
    r = (u * (n - 1)).long().clamp(max=(n - 2).clamp(min=0))  # uniform in [0, n - 2]
    r = r + (r >= own.unsqueeze(1)).long()  # skip the frame itself
    valid = (n >= 2).expand(-1, num)
    idx = torch.where(valid, starts[utt].unsqueeze(1) + r, own.unsqueeze(1) + starts[utt].unsqueeze(1))
    return idx, valid


def contrastive_logits(context: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor,
                       valid: torch.Tensor, temp: float) -> torch.Tensor:
    """Logits (N, 1 + K) float32: column 0 the positive ``cos(c_i, q_i) / temp``, then
    ``cos(c_i, q_idx[i,k]) / temp`` for the distractors; -inf where a distractor is not valid
    or equals the positive.

    Args: context (N, D), targets (N, D), idx and valid (N, K) from :func:`sample_distractors`.
    """
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    q = targets.float()
    negs = q[idx]  # (N, K, D)
    pos = (c * F.normalize(q, dim=-1, eps=1e-8)).sum(-1, keepdim=True)
    neg = torch.einsum("nd,nkd->nk", c, F.normalize(negs, dim=-1, eps=1e-8))
    same = (negs == q.unsqueeze(1)).all(-1)
    neg = neg.masked_fill(same | ~valid, float("-inf"))
    return torch.cat([pos, neg], dim=1) / temp


# ---------------------------------------------------------------------- model
class Wav2Vec2Model(nn.Module):
    """wav2vec 2.0 pretraining over any front end and encoder.

    Args:
      frontend: ``(source, lens) -> (x (B,T,D_in), lens)`` with ``output_dim``; a front end
        with ``cnn_features`` / ``normalized`` / ``project`` (the wav2vec2 CNN) gives the
        quantizer its LayerNorm'd CNN features and the penalty its raw ones.
      encoder: ``(x, lens[, return_hidden]) -> (out (B,T,D), lens[, hidden])``, keeping the
        frame rate.
      cfg: Wav2Vec2Config.

    Buffer ``num_updates``: optimizer steps so far (the temperature schedule), set by
    :meth:`set_num_updates` after each step.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, cfg: Wav2Vec2Config = Wav2Vec2Config()):
        super().__init__()
        self.cfg = cfg
        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(frontend.output_dim).uniform_())
        has_cnn = hasattr(frontend, "cnn_features")
        feat_dim = frontend.feature_extractor.output_dim if has_cnn else frontend.output_dim
        latent_dim = cfg.latent_dim or cfg.final_dim
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        self.quantizer = GumbelQuantizer(feat_dim, cfg.latent_groups, cfg.latent_vars, latent_dim)
        self.project_q = nn.Linear(latent_dim, cfg.final_dim)
        self.final_proj = nn.Linear(encoder.output_dim, cfg.final_dim)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        if cfg.target_grad not in ("auto", "on", "off"):
            raise ValueError(f"target_grad must be 'auto', 'on' or 'off', not {cfg.target_grad!r}")
        self.target_grad = cfg.target_grad == "on" or (cfg.target_grad == "auto" and has_cnn)

    def set_num_updates(self, step: int) -> None:
        self.num_updates.fill_(step)

    @property
    def temperature(self) -> float:
        """Gumbel temperature ``max(start * decay ** num_updates, end)``."""
        start, end, decay = self.cfg.latent_temp
        return max(start * decay ** int(self.num_updates), end)

    def frontend_features(self, source: torch.Tensor, source_lens: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (B,T,D_in) encoder input, quantizer input (B,T,C), lens (B,), feature penalty)."""
        if hasattr(self.frontend, "cnn_features"):
            raw, lens = self.frontend.cnn_features(source, source_lens)
            normed = self.frontend.normalized(raw)
            x = self.frontend.project(raw, normed)
        else:
            x, lens = self.frontend(source, source_lens)
            raw = normed = x
        valid = ~make_pad_mask(lens, raw.shape[1])
        pen = raw[valid].float().pow(2).mean()
        return x, normed, lens, pen

    def forward(self, source: torch.Tensor, source_lens: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Contrastive + diversity + feature-penalty loss, summed over masked frames.

        Args: source (B, N) waveform or (B, T, 80) fbank; source_lens (B,).
        Returns: loss (scalar) and python-float stats: ``loss_m`` (contrastive), ``correct_m``
          (frames whose positive has the largest logit), ``count_m`` (masked frames),
          ``diversity``, ``feature_pen``, ``codebook_ppl`` (of the chosen codes), ``prob_ppl``
          (of the mean softmax), ``temperature``.
        """
        cfg = self.cfg
        x, normed, lens, pen = self.frontend_features(source, source_lens)
        T = x.shape[1]
        mask = compute_mask((x.shape[0], T), lens, cfg.mask_prob, cfg.mask_length, cfg.min_masks).to(x.device)
        mask &= ~make_pad_mask(lens, T)
        out, _ = self.encoder(torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x), lens)
        if out.shape[1] != T:
            raise ValueError("the encoder must keep the front end's frame rate")
        y = normed[mask] if self.target_grad else normed[mask].detach()
        q, qstats = self.quantizer(self.dropout_features(y), self.temperature)
        targets = self.project_q(q)
        context = self.final_proj(out[mask])
        idx, valid = sample_distractors(mask.sum(1), cfg.num_negatives)
        logits = contrastive_logits(context, targets, idx, valid, cfg.logit_temp)
        n = float(context.shape[0])
        ce = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device),
                             reduction="sum")
        div = diversity_loss(qstats["logits"]) if n else logits.new_zeros(())
        loss = ce + cfg.diversity_weight * div * n + cfg.feature_pen_weight * pen * n
        with torch.no_grad():
            correct = (logits.argmax(-1) == 0).sum().item() if n else 0.0
            prob_ppl = group_perplexity(qstats["logits"].softmax(-1)).item() if n else 0.0
        stats = {"loss_m": ce.detach().item(), "correct_m": float(correct), "count_m": n,
                 "diversity": div.detach().item(), "feature_pen": pen.detach().item(),
                 "codebook_ppl": qstats["code_ppl"].item() if n else 0.0, "prob_ppl": prob_ppl,
                 "temperature": self.temperature}
        return loss, stats

    @torch.no_grad()
    def quantize(self, source: torch.Tensor, source_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The quantizer's codes of every frame (eval: argmax): (B, T, G) int64, -1 at padding;
        and lens (B,)."""
        _, normed, lens, _ = self.frontend_features(source, source_lens)
        B, T, C = normed.shape
        codes = self.quantizer.logits(normed.reshape(B * T, C)).argmax(-1).view(B, T, -1)
        return codes.masked_fill(make_pad_mask(lens, T).unsqueeze(-1), -1), lens

    @torch.no_grad()
    def extract_features(self, source: torch.Tensor, source_lens: torch.Tensor,
                         layers: Optional[List[int]] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Unmasked per-layer outputs: index 0 the front end, 1..L the encoder layers (restricted
        to ``layers`` when given), each (B,T,D_l); and lens (B,)."""
        x, _, lens, _ = self.frontend_features(source, source_lens)
        return layer_features(self.encoder, x, lens, layers)


def wav2vec2_after_step(trainer: Any) -> None:
    """``Trainer(after_step=...)`` callback: the temperature schedule's step count (optimizer
    steps, ``batch_idx_train // accum_grad``)."""
    model = getattr(trainer.model, "module", trainer.model)  # unwrap DDP
    p = trainer.params
    model.set_num_updates(p.batch_idx_train // p.get("accum_grad", 1))


def _build_wav2vec2(speech: nn.Module, cfg: Wav2Vec2Config) -> Wav2Vec2Model:
    return Wav2Vec2Model(speech.frontend, speech.encoder, cfg)


#: The ``--method wav2vec2`` registration (icefall.models.OBJECTIVES).
WAV2VEC2 = Objective("wav2vec2", Wav2Vec2Config, _build_wav2vec2, after_step=wav2vec2_after_step)
