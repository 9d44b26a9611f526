"""Tune the word score (and LM weight) of lexicon decoding on a dev split, then decode with the
best: ``ctc-lexicon`` and/or ``ctc-lexicon-lm`` (``--methods``).

The model runs once over the tuning split and ``--test-splits`` (the encoder is most of the
cost); every setting of the grid then re-decodes the stored CTC log-probs. For each method the
table goes to ``<exp-dir>/<method>/tune-<split>-*.txt`` (``--res-dir D``: ``D/<method>/``), the
best pair is printed with the decode.py options that use it, and the test splits decoded with it
are written as decode.py writes them (same keys, same files).

    ./zipformer/tune_lm.py --epoch 20 --avg 5 --methods ctc-lexicon ctc-lexicon-lm \\
        --lm data/lm/3gram.arpa --lm-weights 0.25 0.5 1 --word-scores -1 0 1 2 \\
        --tune-split dev --test-splits dev test
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from icefall.asr.decode import LEXICON_METHODS, beam_size_of, decoding_key
from icefall.asr.decode import get_parser as get_decode_parser
from icefall.asr.decode import input_type, lexicon_decoder, load_model, model_suffix, split_dataloaders
from icefall.asr.lm_decode import tune_weights
from icefall.data.tokenizer import load_tokenizer
from icefall.eval.wer import save_results
from icefall.utils import atomic_write_path, setup_logger

Utterance = Tuple[str, Tensor, List[str]]  # cut id, (T, V) CTC log-probs, reference words


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = get_decode_parser()
    parser.description = "Tune lexicon (+ LM) decoding on a dev split, then decode with the best"
    g = parser.add_argument_group("tuning")
    g.add_argument("--methods", nargs="+", choices=LEXICON_METHODS, default=["ctc-lexicon-lm"])
    g.add_argument("--tune-split", default="dev")
    g.add_argument("--lm-weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
                   help="ctc-lexicon-lm only (ctc-lexicon has no LM to weigh)")
    g.add_argument("--word-scores", type=float, nargs="+", default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    for action in parser._actions:
        if action.dest == "res_dir":
            action.help = "results of method M go to <res-dir>/M (default <exp-dir>/M)"
    parser.set_defaults(test_splits=[])
    parser.set_defaults(**defaults)
    return parser


@torch.no_grad()
def ctc_log_probs(args: argparse.Namespace, splits: Sequence[str]) -> Dict[str, List[Utterance]]:
    """The CTC log-probs of every cut of ``splits``, one encoder pass each."""
    model, model_params = load_model(args)
    args.input_type = input_type(model_params)
    out: Dict[str, List[Utterance]] = {}
    for split, dl in split_dataloaders(args, load_tokenizer(args.lang_dir), splits):
        out[split] = []
        for batch in dl:
            if batch is None:  # every cut of the batch was unreadable (already logged)
                continue
            enc, enc_lens = model.forward_encoder(batch["inputs"], batch["lengths"])
            log_probs = model.ctc_output(enc)
            for cut_id, lp, n, text in zip(batch["cut_ids"], log_probs, enc_lens.tolist(), batch["texts"]):
                out[split].append((cut_id, lp[:n].clone(), text.split()))
        logging.info(f"{split}: CTC log-probs of {len(out[split])} utterances")
    return out


def tune(args: argparse.Namespace) -> Dict[str, List[Tuple[float, float, float]]]:
    """Tunes each of ``args.methods`` on ``args.tune_split`` and decodes ``args.test_splits``
    with its best setting; returns {method: rows of :func:`icefall.asr.lm_decode.tune_weights`,
    best first}."""
    res_root = Path(args.res_dir or args.exp_dir)
    setup_logger(res_root / f"log-tune-lm-{model_suffix(args)}")
    splits = [args.tune_split] + [s for s in args.test_splits if s != args.tune_split]
    data = ctc_log_probs(args, splits)
    out = {}
    for method in args.methods:
        margs = copy.copy(args)
        margs.decoding_method = method
        res_dir = res_root / method
        decoder = lexicon_decoder(margs)
        lm_weights = args.lm_weights if method == "ctc-lexicon-lm" else [0.0]
        rows = tune_weights(decoder, [(lp, ref) for _, lp, ref in data[args.tune_split]],
                            lm_weights, args.word_scores)
        table = res_dir / f"tune-{args.tune_split}-beam-size-{beam_size_of(margs)}-{model_suffix(args)}.txt"
        table.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic_write_path(table)
        tmp.write_text("lm_weight\tword_score\tWER\n"
                       + "".join(f"{w:g}\t{s:g}\t{e:.2f}\n" for w, s, e in rows))
        os.replace(tmp, table)
        margs.lm_weight, margs.word_score, best = rows[0]
        options = f"--word-score {margs.word_score:g}"
        if method == "ctc-lexicon-lm":
            options = f"--lm-weight {margs.lm_weight:g} " + options
        print(f"{method}: best on {args.tune_split}: WER {best:.2f}% with {options} (table: {table})")
        key = decoding_key(margs)
        for split in args.test_splits:  # the decoder is left at the best setting
            results = [(cut_id, ref, decoder.decode_one(lp)) for cut_id, lp, ref in data[split]]
            wer = save_results(res_dir, split, {key: results})[key]
            print(f"{split}\t{key}\tWER {wer:.2f}%")
        out[method] = rows
    return out


def main(args: Optional[argparse.Namespace] = None) -> Dict[str, List[Tuple[float, float, float]]]:
    return tune(args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
