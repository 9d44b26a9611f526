"""AsrModel: an encoder with a CTC head and/or a pruned-RNN-T transducer head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from icefall.asr.ctc import CtcHead, ctc_loss
from icefall.asr.decoder import Decoder
from icefall.asr.joiner import Joiner
from icefall.asr.rnnt_loss import rnnt_backend
from icefall.models import ModelConfig, SslEncoder
from icefall.nn.configs import _Config


class AsrLosses(NamedTuple):
    """Losses summed over the utterances of a batch; None for an absent head."""

    simple: Optional[Tensor]
    pruned: Optional[Tensor]
    ctc: Optional[Tensor]


def transducer_loss_scales(
    batch_idx: int, warm_step: int = 2000, simple_loss_scale: float = 0.5
) -> Tuple[float, float]:
    """Weights of (simple, pruned) transducer losses at a training batch.

    As in icefall/k2SSL: the simple loss starts at weight 1.0 and falls
    linearly to ``simple_loss_scale`` at ``warm_step``; the pruned loss
    rises linearly from 0.1 to 1.0 (its ranges are poor early in training).
    """
    if batch_idx >= warm_step:
        return simple_loss_scale, 1.0
    frac = batch_idx / warm_step
    return 1.0 - frac * (1.0 - simple_loss_scale), 0.1 + 0.9 * frac


def combine_losses(
    losses: AsrLosses,
    batch_idx: int,
    warm_step: int = 2000,
    simple_loss_scale: float = 0.5,
    ctc_loss_scale: float = 0.2,
) -> Tensor:
    """The training objective: warmed-up transducer losses plus scaled CTC.

    With only a CTC head the CTC loss is returned unscaled.
    """
    if losses.simple is None:
        assert losses.ctc is not None, "the model has no head"
        return losses.ctc
    s, p = transducer_loss_scales(batch_idx, warm_step, simple_loss_scale)
    loss = s * losses.simple + p * losses.pruned
    if losses.ctc is not None:
        loss = loss + ctc_loss_scale * losses.ctc
    return loss


class AsrModel(nn.Module):
    """Encoder (front end included) + CTC and/or stateless transducer heads.

    Args:
      encoder: maps ``(x, x_lens) -> (encoder_out (B, T, D), encoder_out_lens)``.
      vocab_size: tokens including blank (id ``blank_id``, 0 by convention).
      encoder_dim: D; defaults to ``encoder.output_dim``.
      use_k2: None/True/False, see :func:`icefall.asr.rnnt_loss.rnnt_backend`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int,
        encoder_dim: Optional[int] = None,
        decoder_dim: int = 512,
        joiner_dim: int = 512,
        context_size: int = 2,
        blank_id: int = 0,
        use_transducer: bool = True,
        use_ctc: bool = False,
        use_k2: Optional[bool] = None,
    ) -> None:
        super().__init__()
        assert use_transducer or use_ctc, "need at least one head"
        encoder_dim = encoder_dim or encoder.output_dim
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.use_transducer = use_transducer
        self.use_ctc = use_ctc
        self.use_k2 = use_k2
        if use_transducer:
            self.decoder = Decoder(vocab_size, decoder_dim, blank_id, context_size)
            self.joiner = Joiner(encoder_dim, decoder_dim, joiner_dim, vocab_size)
            # The simple loss uses its own linear projections to the vocabulary.
            self.simple_am_proj = nn.Linear(encoder_dim, vocab_size)
            self.simple_lm_proj = nn.Linear(decoder_dim, vocab_size)
        if use_ctc:
            self.ctc_output = CtcHead(encoder_dim, vocab_size)

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, T, C) features or (B, N) waveform -> ((B, T', D), (B,))."""
        return self.encoder(x, x_lens)

    def forward_transducer(
        self,
        encoder_out: Tensor,
        encoder_out_lens: Tensor,
        targets: Sequence[Sequence[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        delay_penalty: float = 0.0,
    ) -> Tuple[Tensor, Tensor]:
        """Simple (smoothed) and pruned RNN-T losses, each summed over the batch."""
        rnnt = rnnt_backend(self.use_k2)
        B, device = encoder_out.shape[0], encoder_out.device
        y_lens = torch.tensor([len(t) for t in targets], device=device)
        S = int(y_lens.max()) if B else 0
        # Targets padded with blank; decoder input is blank + targets.
        symbols = torch.full((B, S), self.blank_id, dtype=torch.int64)
        for b, t in enumerate(targets):
            symbols[b, : len(t)] = torch.as_tensor(list(t), dtype=torch.int64)
        symbols = symbols.to(device)
        sos_symbols = torch.cat([symbols.new_full((B, 1), self.blank_id), symbols], dim=1)
        decoder_out = self.decoder(sos_symbols)  # (B, S+1, decoder_dim)

        boundary = torch.zeros(B, 4, dtype=torch.int64, device=device)
        boundary[:, 2] = y_lens
        boundary[:, 3] = encoder_out_lens
        lm = self.simple_lm_proj(decoder_out)
        am = self.simple_am_proj(encoder_out)
        # The lattice recursions are run in float32 even under autocast.
        with torch.autocast(device_type=device.type, enabled=False):
            simple_loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
                lm=lm.float(), am=am.float(), symbols=symbols, termination_symbol=self.blank_id,
                lm_only_scale=lm_scale, am_only_scale=am_scale, boundary=boundary,
                delay_penalty=delay_penalty, reduction="sum", return_grad=True,
            )
        ranges = rnnt.get_rnnt_prune_ranges(
            px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range
        )
        am_pruned, lm_pruned = rnnt.do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out),
            lm=self.joiner.decoder_proj(decoder_out),
            ranges=ranges,
        )
        logits = self.joiner(am_pruned, lm_pruned, project_input=False)  # (B, T, R, V)
        with torch.autocast(device_type=device.type, enabled=False):
            pruned_loss = rnnt.rnnt_loss_pruned(
                logits=logits.float(), symbols=symbols, ranges=ranges,
                termination_symbol=self.blank_id, boundary=boundary,
                delay_penalty=delay_penalty, reduction="sum",
            )
        return simple_loss, pruned_loss

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        targets: Sequence[Sequence[int]],
        prune_range: int = 5,
        am_scale: float = 0.0,
        lm_scale: float = 0.25,
        delay_penalty: float = 0.0,
    ) -> AsrLosses:
        """
        Args:
          x, x_lens: encoder input and its lengths.
          targets: B lists of token ids (no blank).
          prune_range, am_scale, lm_scale: pruned RNN-T settings (icefall's
            defaults 5, 0.0, 0.25).
        Returns: :class:`AsrLosses` summed over utterances (normalise by frames
          in the recipe).
        """
        assert len(targets) == x.shape[0], (len(targets), x.shape)
        encoder_out, encoder_out_lens = self.forward_encoder(x, x_lens)
        simple = pruned = ctc = None
        if self.use_transducer:
            simple, pruned = self.forward_transducer(
                encoder_out, encoder_out_lens, targets, prune_range, am_scale, lm_scale, delay_penalty
            )
        if self.use_ctc:
            ctc = ctc_loss(self.ctc_output(encoder_out), encoder_out_lens, targets, self.blank_id)
        return AsrLosses(simple, pruned, ctc)


@dataclass(frozen=True)
class AsrConfig(_Config):
    """The heads of a fine-tuned AsrModel and its encoder's fine-tuning masking (icefall names)."""

    vocab_size: int
    blank_id: int = 0
    decoder_dim: int = 512
    joiner_dim: int = 512
    context_size: int = 2
    use_transducer: bool = True
    use_ctc: bool = False
    mask_prob: float = 0.65  # SslEncoder span masking while fine-tuning (fairseq mask_prob)
    mask_length: int = 10  # fairseq mask_length

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "AsrConfig":
        """From a run's params (``finetune.py`` options plus ``vocab_size``/``blank_id``)."""
        return cls.from_dict({k: params[k] for k in cls.field_names() if k in params})


def build_asr_from_config(config: "ModelConfig", freeze_steps: int = 0) -> AsrModel:
    """A fresh AsrModel over an SslEncoder of ``config.encoder`` (``config.kind == "asr"``)."""
    head = AsrConfig.from_dict(config.head)
    speech = config.encoder.build()
    encoder = SslEncoder(speech.frontend, speech.encoder, None, head.mask_prob, head.mask_length, freeze_steps,
                         config=config.encoder)
    return asr_model_over(encoder, head)


def asr_model_over(encoder: nn.Module, head: AsrConfig) -> AsrModel:
    """An AsrModel with fresh heads of ``head`` over ``encoder``."""
    return AsrModel(encoder, vocab_size=head.vocab_size, decoder_dim=head.decoder_dim,
                    joiner_dim=head.joiner_dim, context_size=head.context_size, blank_id=head.blank_id,
                    use_transducer=head.use_transducer, use_ctc=head.use_ctc)
