"""A decoder-only unit language model: ``transformers``' OPT scaled down, over discrete units.

SpidR (section 4.3) trains OPT-125M on deduplicated units; here the same architecture comes in
any size (:class:`UnitLMConfig`, default 4 layers of 256 dims, which trains on a CPU). Token ids:
units ``0..num_units-1`` are themselves, then ``PAD``, ``BOS`` and ``EOS``. A sequence is
``BOS u1 .. un EOS``; its score is ``log p(u1 .. un EOS | BOS)``, the sum over its ``n + 1``
predicted tokens (:meth:`UnitLM.score`).

Units come deduplicated (``icefall.ssl.units.deduplicate``), from unit files
(``extract_units.py``'s ``units_<split>.txt``: ``<utt id> <unit> <unit> ...`` lines) or from the
cut manifests the extractors write (``cut.custom["kmeans"]`` or ``["units"]``): :func:`load_units`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

Units = Sequence[int]


@dataclass(frozen=True)
class UnitLMConfig:
    """OPT hyper-parameters (``OPTConfig`` names in brackets)."""

    num_units: int  # unit vocabulary; PAD, BOS, EOS come after it (vocab_size = num_units + 3)
    num_layers: int = 4  # num_hidden_layers (OPT-125M: 12)
    dim: int = 256  # hidden_size and word_embed_proj_dim (OPT-125M: 768)
    num_heads: int = 4  # num_attention_heads (OPT-125M: 12)
    ffn_dim: int = 1024  # ffn_dim (OPT-125M: 3072)
    max_len: int = 1024  # max_position_embeddings: tokens per sequence, BOS and EOS included
    dropout: float = 0.1  # dropout (attention_dropout stays 0, as in OPT)

    @property
    def pad_id(self) -> int:
        return self.num_units

    @property
    def bos_id(self) -> int:
        return self.num_units + 1

    @property
    def eos_id(self) -> int:
        return self.num_units + 2

    @property
    def vocab_size(self) -> int:
        return self.num_units + 3

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "UnitLMConfig":
        return cls(**d)

    def opt_config(self):
        from transformers import OPTConfig

        return OPTConfig(
            vocab_size=self.vocab_size, hidden_size=self.dim, word_embed_proj_dim=self.dim,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            ffn_dim=self.ffn_dim, max_position_embeddings=self.max_len, dropout=self.dropout,
            attention_dropout=0.0, do_layer_norm_before=True, pad_token_id=self.pad_id,
            bos_token_id=self.bos_id, eos_token_id=self.eos_id,
        )


def encode_batch(seqs: Sequence[Units], config: UnitLMConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """``BOS u.. EOS`` per sequence, right-padded with PAD.

    Returns:
      (tokens (B, T) int64, lengths (B,) int64 counting BOS and EOS).
    Raises ValueError for a unit outside ``[0, num_units)`` or a sequence longer than
    ``max_len - 2`` units (the LM has no position for it)."""
    lengths = [len(s) + 2 for s in seqs]
    if not seqs:
        raise ValueError("no sequences")
    tokens = torch.full((len(seqs), max(lengths)), config.pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        u = torch.as_tensor(np.asarray(s, dtype=np.int64))
        if u.numel() and (u.min() < 0 or u.max() >= config.num_units):
            raise ValueError(f"sequence {i}: units must lie in [0, {config.num_units}), got "
                             f"[{int(u.min())}, {int(u.max())}]")
        if lengths[i] > config.max_len:
            raise ValueError(f"sequence {i}: {len(s)} units, the LM takes at most {config.max_len - 2}")
        tokens[i, 0] = config.bos_id
        tokens[i, 1: lengths[i] - 1] = u
        tokens[i, lengths[i] - 1] = config.eos_id
    return tokens, torch.tensor(lengths, dtype=torch.long)


class UnitLM(nn.Module):
    """``OPTForCausalLM`` over units (see the module docstring)."""

    def __init__(self, config: UnitLMConfig):
        super().__init__()
        from transformers import OPTForCausalLM

        self.config = config
        self.opt = OPTForCausalLM(config.opt_config())

    def token_logprobs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log p(tokens[:, t] | tokens[:, :t]) for t = 1..T-1: (B, T-1), 0 past each length.

        Args:
          tokens: (B, T) from :func:`encode_batch`; lengths: (B,)."""
        t = tokens.shape[1]
        mask = torch.arange(t, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
        # OPT derives positions from the attention mask, so right padding leaves them unchanged.
        logits = self.opt(input_ids=tokens, attention_mask=mask.long()).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        return picked.masked_fill(~mask[:, 1:], 0.0)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, int]:
        """(summed negative log-likelihood of the predicted tokens (scalar), their number)."""
        nll = -self.token_logprobs(tokens, lengths).sum()
        return nll, int((lengths - 1).sum())

    @torch.no_grad()
    def score(self, seqs: Sequence[Units], batch_size: int = 32,
              normalize: bool = False) -> torch.Tensor:
        """log p(u1 .. un EOS | BOS) of each unit sequence, (N,) float64, in eval mode;
        ``normalize``: divided by the n + 1 predicted tokens (a per-token log-probability).
        Sequences are batched by length; the result does not depend on ``batch_size`` beyond
        float rounding."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = torch.empty(len(seqs), dtype=torch.float64)
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            tokens, lengths = encode_batch([seqs[i] for i in idx], self.config)
            lp = self.token_logprobs(tokens.to(device), lengths.to(device)).double().sum(1).cpu()
            if normalize:
                lp = lp / (lengths - 1).double()
            out[idx] = lp
        self.train(was_training)
        return out


def read_unit_file(path: Union[str, Path]) -> Dict[str, List[int]]:
    """``<utt id> <unit> ...`` lines -> {utt id: units}; a bad line raises ValueError naming
    the file and line."""
    out: Dict[str, List[int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                units = [int(u) for u in fields[1:]]
            except ValueError:
                raise ValueError(f"{path}:{n}: units must be integers: {line.strip()[:80]!r}") from None
            if fields[0] in out:
                raise ValueError(f"{path}:{n}: duplicate utterance id {fields[0]!r}")
            out[fields[0]] = units
    if not out:
        raise ValueError(f"{path}: no utterances")
    return out


def collapse(units: Sequence[int]) -> np.ndarray:
    """Repeats collapsed (``icefall.ssl.units.deduplicate``) into an int32 array: 4 bytes a
    unit, so that hundreds of millions of units fit in memory."""
    a = np.asarray(units, dtype=np.int64)
    if a.size > 1:
        a = a[np.concatenate([[True], a[1:] != a[:-1]])]
    return a.astype(np.int32)


def load_units(path: Union[str, Path], key: str = "kmeans") -> Dict[str, np.ndarray]:
    """Deduplicated units per utterance as int32 arrays, from a unit file
    (:func:`read_unit_file`, already deduplicated by its writer) or from a cut manifest
    (``*.jsonl.gz``, units in ``cut.custom[key]``, collapsed here), streamed."""
    if not str(path).endswith(".jsonl.gz"):
        return {utt: np.asarray(u, dtype=np.int32) for utt, u in read_unit_file(path).items()}
    from lhotse import load_manifest_lazy

    out = {}
    for cut in load_manifest_lazy(path):
        if key not in (cut.custom or {}):
            raise ValueError(f"{path}: cut {cut.id} has no custom[{key!r}] units")
        out[cut.id] = collapse(np.array(cut.custom[key].split(), dtype=np.int64))
    if not out:
        raise ValueError(f"{path}: no cuts")
    return out


def load_unit_lm(path: Union[str, Path], averaged: bool = True,
                 device: Union[str, torch.device] = "cpu") -> UnitLM:
    """A :class:`UnitLM` from a training checkpoint (``model_avg`` when ``averaged``, the
    running average over the whole run) or from an exported ``{"model", "model_config"}``."""
    from icefall.checkpoint import load_file

    ckpt = load_file(path)
    cfg = ckpt.get("model_config") or ckpt.get("params", {}).get("model_config")
    if cfg is None:
        raise ValueError(f"{path}: no model_config: not a unit-LM checkpoint")
    model = UnitLM(UnitLMConfig.from_dict(cfg))
    state = ckpt["model_avg"] if averaged and ckpt.get("model_avg") is not None else ckpt["model"]
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


def write_config_json(exp_dir: Union[str, Path], config: UnitLMConfig) -> None:
    """``exp_dir/config.json`` beside the checkpoints, as the other recipes write."""
    from icefall.utils import atomic_write_path

    path = Path(exp_dir) / "config.json"
    tmp = atomic_write_path(path)
    tmp.write_text(json.dumps({"unit_lm": config.to_dict()}, indent=2) + "\n")
    tmp.replace(path)
