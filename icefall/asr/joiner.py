"""Transducer joiner: project encoder and decoder outputs, add, tanh, classify."""
from __future__ import annotations

from torch import Tensor, nn


class Joiner(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = True) -> Tensor:
        """
        Args:
          encoder_out: (..., encoder_dim), or (..., joiner_dim) if not project_input.
          decoder_out: (..., decoder_dim), likewise; broadcast against encoder_out
            (e.g. (B, T, 1, D) with (B, 1, U, D), or pruned (B, T, R, D) pairs).
          project_input: False when the inputs are already projected (the pruned
            loss projects once, before do_rnnt_pruning).
        Returns: logits (..., vocab_size).
        """
        if project_input:
            encoder_out = self.encoder_proj(encoder_out)
            decoder_out = self.decoder_proj(decoder_out)
        return self.output_linear((encoder_out + decoder_out).tanh())
