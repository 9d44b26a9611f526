"""Stateless transducer decoder (prediction network): embedding + context conv."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Decoder(nn.Module):
    """Embeds the last ``context_size`` tokens; no recurrence.

    Negative token ids (used to pad the context at the start of decoding) embed
    to zero, like icefall's stateless decoder.
    """

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int = 0, context_size: int = 2) -> None:
        super().__init__()
        assert context_size >= 1, context_size
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.blank_id = blank_id
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        # Depthwise-grouped conv over the context window (groups of 4 channels).
        self.conv = (
            nn.Conv1d(decoder_dim, decoder_dim, kernel_size=context_size,
                      groups=max(1, decoder_dim // 4), bias=False)
            if context_size > 1 else nn.Identity()
        )

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        """
        Args:
          y: (B, U) int64 token ids (training: blank followed by the targets).
          need_pad: left-pad with context_size-1 zero frames so the output has
            U frames (training); False expects U == context_size (decoding,
            one output frame).
        Returns: (B, U, decoder_dim) if need_pad, else (B, 1, decoder_dim).
        """
        y = y.to(torch.int64)
        emb = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1)
        if self.context_size > 1:
            emb = emb.transpose(1, 2)  # (B, D, U)
            if need_pad:
                emb = nn.functional.pad(emb, (self.context_size - 1, 0))
            else:
                assert emb.shape[-1] == self.context_size, emb.shape
            emb = self.conv(emb).transpose(1, 2)
        return torch.relu(emb)
