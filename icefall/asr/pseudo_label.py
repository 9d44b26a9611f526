"""Pseudo-labels with confidence filtering, for VietASR-style iterative training.

A fine-tuned model with a CTC head transcribes unlabeled cuts (greedy CTC). Each emitted token
gets a confidence: the highest posterior of that token over the frames of its run in the
best path. An utterance's confidence is the mean (or the minimum) of its tokens' confidences;
utterances with no token score 0. Those at or above ``--threshold`` (with at least
``--min-tokens`` tokens) are kept, with the hypothesis as their supervision text and
``supervision.custom["confidence"]``, so that the next iteration can fine-tune on them::

    python -m icefall.asr.pseudo_label --exp-dir zipformer/exp-ft-iter1 --epoch 30 --avg 5 \\
        --lang-dir data/lang_bpe_2000 --manifest-dir data/fbank --cuts-prefix vietnamese \\
        --split gigaspeech2-train --threshold 0.9 --out data/fbank/vietnamese_cuts_pl-iter1.jsonl.gz
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

REDUCTIONS = ("mean", "min")


def ctc_greedy_confidence(log_probs: Tensor, blank: int = 0) -> Tuple[List[int], List[float]]:
    """Greedy CTC tokens of one utterance and each token's confidence.

    Args:
      log_probs: (T, V) log posteriors of the valid frames.
    Returns:
      tokens: the best path with repeats collapsed and blanks removed;
      confidences: for each token, the maximum posterior (probability) over the consecutive
        frames of the best path that emit it.
    """
    assert log_probs.ndim == 2, log_probs.shape
    best, ids = log_probs.float().max(dim=-1)
    probs = best.exp().tolist()
    tokens: List[int] = []
    conf: List[float] = []
    prev = blank
    for p, t in zip(probs, ids.tolist()):
        if t != blank:
            if t != prev:
                tokens.append(t)
                conf.append(p)
            else:
                conf[-1] = max(conf[-1], p)
        prev = t
    return tokens, conf


def utterance_confidence(token_confidences: Sequence[float], reduce: str = "mean") -> float:
    """The mean (``reduce="mean"``) or minimum (``"min"``) token confidence; 0 without tokens."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if not token_confidences:
        return 0.0
    if reduce == "min":
        return float(min(token_confidences))
    return float(sum(token_confidences) / len(token_confidences))


def keep(tokens: Sequence[int], confidence: float, threshold: float, min_tokens: int = 1) -> bool:
    """Whether a hypothesis is a usable pseudo-label."""
    return len(tokens) >= min_tokens and confidence >= threshold


def _batches(cuts: Iterable, input_type: str, max_frames: int) -> Iterator[Tuple[list, Tensor, Tensor]]:
    """(cuts, padded inputs (B, T, 80) fbank or (B, N) waveform, lengths (B,)) in corpus order,
    at most ``max_frames`` input frames (or samples / 160) per batch."""
    group: list = []
    items: List[Tensor] = []
    total = 0
    for cut in cuts:
        if input_type == "fbank":
            x = torch.as_tensor(cut.load_features(), dtype=torch.float32)
            n = x.shape[0]
        else:
            x = torch.as_tensor(cut.load_audio()[0], dtype=torch.float32)
            n = x.shape[0] // 160
        if group and total + n > max_frames:
            yield group, *_pad(items)
            group, items, total = [], [], 0
        group.append(cut)
        items.append(x)
        total += n
    if group:
        yield group, *_pad(items)


def _pad(items: List[Tensor]) -> Tuple[Tensor, Tensor]:
    lens = torch.tensor([x.shape[0] for x in items])
    out = items[0].new_zeros((len(items), int(lens.max())) + tuple(items[0].shape[1:]))
    for i, x in enumerate(items):
        out[i, : x.shape[0]] = x
    return out, lens


@torch.no_grad()
def pseudo_label_cuts(model, cuts: Iterable, tokenizer, input_type: str, threshold: float,
                      reduce: str = "mean", min_tokens: int = 1, max_frames: int = 20000,
                      device: torch.device = torch.device("cpu")) -> Tuple[list, Dict[str, float]]:
    """Transcribes ``cuts`` with ``model`` (an ``AsrModel`` with a CTC head, eval mode) and
    returns (the kept cuts, each with one supervision holding the hypothesis and its
    confidence, in corpus order; statistics {"cuts", "kept", "mean_confidence"})."""
    from lhotse import SupervisionSegment
    from lhotse.utils import fastcopy

    if not getattr(model, "use_ctc", False):
        raise ValueError("pseudo-labels need a CTC head: fine-tune with --use-ctc true")
    kept, seen, conf_sum = [], 0, 0.0
    for group, x, x_lens in _batches(cuts, input_type, max_frames):
        enc, enc_lens = model.forward_encoder(x.to(device), x_lens.to(device))
        log_probs = model.ctc_output(enc)
        for b, cut in enumerate(group):
            tokens, tok_conf = ctc_greedy_confidence(log_probs[b, : int(enc_lens[b])], model.blank_id)
            c = utterance_confidence(tok_conf, reduce)
            seen += 1
            conf_sum += c
            if not keep(tokens, c, threshold, min_tokens):
                continue
            old = cut.supervisions[0] if cut.supervisions else None
            custom = dict(old.custom or {}) if old is not None else {}
            custom["confidence"] = round(c, 6)
            sup = SupervisionSegment(
                id=cut.id, recording_id=cut.recording_id, start=0.0, duration=cut.duration,
                channel=0, text=tokenizer.decode(tokens),
                language=old.language if old is not None else None,
                speaker=old.speaker if old is not None else None, custom=custom)
            kept.append(fastcopy(cut, supervisions=[sup]))
    stats = {"cuts": seen, "kept": len(kept), "mean_confidence": conf_sum / max(seen, 1)}
    return kept, stats


def get_parser() -> argparse.ArgumentParser:
    from icefall.asr.decode import add_model_arguments

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    g = p.add_argument_group("pseudo-labels")
    g.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    g.add_argument("--cuts-prefix", default=None, help="corpus name: <prefix>_cuts_<split>.jsonl.gz (required)")
    g.add_argument("--split", default=None, help="label <manifest-dir>/<prefix>_cuts_<split>.jsonl.gz (required)")
    g.add_argument("--out", type=Path, required=True, help="the kept cuts (.jsonl.gz)")
    g.add_argument("--merge-with", default=None,
                   help="a labeled split written to --out first; kept cuts with the same ids are left out")
    g.add_argument("--threshold", type=float, default=0.9, help="keep utterances whose confidence is at least this")
    g.add_argument("--reduce", choices=REDUCTIONS, default="mean", help="token confidences -> utterance confidence")
    g.add_argument("--min-tokens", type=int, default=1)
    g.add_argument("--max-frames", type=int, default=20000, help="input frames per batch")
    return p


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, float]:
    from lhotse import CutSet, load_manifest_lazy

    from icefall.asr.decode import input_type, load_model
    from icefall.data.tokenizer import load_tokenizer
    from icefall.utils import atomic_write_path

    parser = get_parser()
    args = args if args is not None else parser.parse_args()
    if args.split is None or args.cuts_prefix is None:
        parser.error("--split and --cuts-prefix are required")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    model, params = load_model(args, device, purpose="pseudo_label.py")
    tokenizer = load_tokenizer(args.lang_dir)
    if tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"{args.lang_dir} has {tokenizer.vocab_size} tokens, the model {model.vocab_size}")
    cuts_path = lambda split: args.manifest_dir / f"{args.cuts_prefix}_cuts_{split}.jsonl.gz"  # noqa: E731
    src = cuts_path(args.split)
    kept, stats = pseudo_label_cuts(
        model, load_manifest_lazy(src), tokenizer, input_type(params), args.threshold,
        args.reduce, args.min_tokens, args.max_frames, device)
    out = []
    if args.merge_with:
        out = list(load_manifest_lazy(cuts_path(args.merge_with)))
        labeled = {c.id for c in out}
        kept = [c for c in kept if c.id not in labeled]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(args.out)
    CutSet.from_cuts(out + kept).to_file(tmp)
    tmp.replace(args.out)
    logging.info(f"{src}: kept {stats['kept']} of {stats['cuts']} cuts (threshold {args.threshold}, "
                 f"{args.reduce}; mean confidence {stats['mean_confidence']:.3f}); wrote "
                 f"{len(out)} labeled + {len(kept)} pseudo-labeled cuts to {args.out}")
    return stats


if __name__ == "__main__":
    main()
