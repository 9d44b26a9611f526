"""Hugging Face CTC checkpoints (``Wav2Vec2ForCTC`` / ``HubertForCTC`` ``save_pretrained``
directories, e.g. ``facebook/wav2vec2-base-100h``, the paper's starting point) -> our CTC
``AsrModel``, so a real fine-tuned model can be pruned.

The encoder comes through ``icefall.ssl.hf_import.read_hf_model`` (``hf:<dir>``); HF's
``lm_head`` becomes ``ctc_output.output`` and its ``pad_token_id`` the blank (HF's CTC blank is
the pad token). Our CTC head applies log-softmax, so our outputs are
``log_softmax(HF logits)``. HF's token list (``vocab.json``, id order) is returned alongside:
decoding with our recipes needs a lang dir with the same ids.

    python3 -m icefall.prune.hf_ctc /path/to/wav2vec2-base-100h exp/hf-dense.pt

writes a ``{"model", "params"}`` checkpoint (kind ``asr``) that ``prune.py --dense-ckpt`` reads
(UMP / mixed from it, or gates / NAS-CP starting from its weights, head included).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch

from icefall.asr.model import AsrConfig, AsrModel, asr_model_over
from icefall.checkpoint import atomic_torch_save
from icefall.models import ModelConfig, SslEncoder, build_model, load_weights
from icefall.ssl.hf_import import HfCheckpointError, read_hf_model, read_hf_state_dict

PathLike = Union[str, Path]


def load_hf_ctc(directory: PathLike) -> Tuple[AsrModel, ModelConfig, Optional[List[str]]]:
    """(our CTC AsrModel in eval mode, its ModelConfig (kind ``asr``), HF's tokens by id or None
    without ``vocab.json``).

    The model maps a waveform (B, N) with lengths (B,) to CTC log-probs
    ``model.ctc_output(model.encoder(wav, lens)[0])`` of shape (B, T, vocab_size).
    """
    directory = Path(directory)
    state, pre = read_hf_model(directory)  # checks config.json and the encoder's keys
    cfg = json.loads((directory / "config.json").read_text())
    raw = read_hf_state_dict(directory)
    head = {k: raw.get(f"lm_head.{k}") for k in ("weight", "bias")}
    if head["weight"] is None:
        raise HfCheckpointError(f"{directory}: no lm_head.weight (not a *ForCTC checkpoint; "
                                f"architectures={cfg.get('architectures')})")
    vocab_size = int(cfg.get("vocab_size", head["weight"].shape[0]))
    model = build_model(pre)
    load_weights(model, state, directory, pre)
    head_cfg = AsrConfig(vocab_size=vocab_size, blank_id=int(cfg.get("pad_token_id", 0)),
                         use_transducer=False, use_ctc=True,
                         mask_prob=float(cfg.get("mask_time_prob", 0.05)),
                         mask_length=int(cfg.get("mask_time_length", 10)))
    ssl = SslEncoder.from_model(model, mask_prob=head_cfg.mask_prob, mask_length=head_cfg.mask_length,
                                config=pre.encoder)
    asr = asr_model_over(ssl, head_cfg)
    if head["weight"].shape != asr.ctc_output.output.weight.shape:
        raise HfCheckpointError(f"{directory}: lm_head.weight {tuple(head['weight'].shape)} does not fit "
                                f"vocab_size x hidden_size {tuple(asr.ctc_output.output.weight.shape)}")
    with torch.no_grad():
        asr.ctc_output.output.weight.copy_(head["weight"])
        if head["bias"] is not None:
            asr.ctc_output.output.bias.copy_(head["bias"])
    config = ModelConfig("asr", pre.encoder, objective=pre.objective, head=head_cfg.to_dict(),
                         source=f"hf:{directory}")
    vocab_path = directory / "vocab.json"
    tokens = None
    if vocab_path.is_file():
        ids = json.loads(vocab_path.read_text())
        tokens = [t for t, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    return asr.eval(), config, tokens


def convert(directory: PathLike, out: PathLike) -> Path:
    """Write ``load_hf_ctc(directory)`` as our checkpoint ``{"model", "params"}`` (atomic)."""
    model, config, tokens = load_hf_ctc(directory)
    params = {"model_config": config.to_dict(), "vocab_size": config.head["vocab_size"],
              "blank_id": config.head["blank_id"], "use_ctc": True, "use_transducer": False,
              "hf_tokens": tokens}
    atomic_torch_save({"model": model.state_dict(), "params": params}, out)
    return Path(out)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Hugging Face *ForCTC directory -> our CTC checkpoint")
    p.add_argument("hf_dir", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    print(convert(a.hf_dir, a.out))


if __name__ == "__main__":
    main()
