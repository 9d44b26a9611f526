"""Tune the LM weight and word score of ``ctc-lexicon-lm`` decoding on a dev split.

The model runs once over the split; every (lm weight, word score) pair of the grid then
re-decodes the stored CTC log-probs. The table goes to
``<exp-dir>/<method>/tune-<split>-<model>.txt``; the best pair is printed with the decode.py
options that use it, and ``--test-splits`` are then decoded with it (as decode.py would).
``--decoding-method ctc-lexicon`` tunes the word score of lexicon-only decoding.

    ./zipformer/tune_lm.py --epoch 20 --avg 5 --lm data/lm/3gram.arpa --tune-split dev \\
        --lm-weights 0 0.25 0.5 1 --word-scores -1 0 1 2 --test-splits dev test
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from icefall.asr.decode import LEXICON_METHODS, beam_size_of, decode_splits
from icefall.asr.decode import get_parser as get_decode_parser
from icefall.asr.decode import input_type, lexicon_decoder, load_model, model_suffix, split_dataloaders
from icefall.asr.lm_decode import tune_weights
from icefall.data.tokenizer import load_tokenizer
from icefall.utils import atomic_write_path, setup_logger


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = get_decode_parser()
    parser.description = "Tune --lm-weight and --word-score of ctc-lexicon-lm on a dev split"
    g = parser.add_argument_group("tuning")
    g.add_argument("--tune-split", default="dev")
    g.add_argument("--lm-weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    g.add_argument("--word-scores", type=float, nargs="+", default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    parser.set_defaults(decoding_method="ctc-lexicon-lm", test_splits=[])
    parser.set_defaults(**defaults)
    return parser


@torch.no_grad()
def tune(args: argparse.Namespace) -> List[Tuple[float, float, float]]:
    """Decodes ``args.tune_split`` with every pair of the grid; returns the rows of
    :func:`icefall.asr.lm_decode.tune_weights` (best first) and writes them to a table."""
    if args.decoding_method not in LEXICON_METHODS:
        raise ValueError(f"tune_lm tunes {LEXICON_METHODS}, not {args.decoding_method}")
    if args.decoding_method == "ctc-lexicon":
        args.lm_weights = [0.0]  # no LM to weigh
    res_dir = Path(args.res_dir or Path(args.exp_dir) / args.decoding_method)
    name = f"tune-{args.tune_split}-beam-size-{beam_size_of(args)}-{model_suffix(args)}"
    setup_logger(res_dir / f"log-{name}")
    model, model_params = load_model(args)
    args.input_type = input_type(model_params)
    tokenizer = load_tokenizer(args.lang_dir)
    decoder = lexicon_decoder(args)
    utterances = []
    for _, dl in split_dataloaders(args, tokenizer, [args.tune_split]):
        for batch in dl:
            if batch is None:
                continue
            out, out_lens = model.forward_encoder(batch["inputs"], batch["lengths"])
            log_probs = model.ctc_output(out)
            for lp, n, text in zip(log_probs, out_lens.tolist(), batch["texts"]):
                utterances.append((lp[:n].clone(), text.split()))
    logging.info(f"{len(utterances)} utterances of {args.tune_split}; "
                 f"{len(args.lm_weights) * len(args.word_scores)} settings")
    rows = tune_weights(decoder, utterances, args.lm_weights, args.word_scores)
    table = res_dir / f"{name}.txt"
    tmp = atomic_write_path(table)
    tmp.write_text("lm_weight\tword_score\tWER\n"
                   + "".join(f"{w:g}\t{s:g}\t{e:.2f}\n" for w, s, e in rows))
    os.replace(tmp, table)
    best = rows[0]
    print(f"best on {args.tune_split}: WER {best[2]:.2f}% with --lm-weight {best[0]:g} "
          f"--word-score {best[1]:g} (table: {table})")
    return rows


def main(args: Optional[argparse.Namespace] = None) -> List[Tuple[float, float, float]]:
    args = args if args is not None else get_parser().parse_args()
    rows = tune(args)
    if args.test_splits:  # decode them with the best pair
        args.lm_weight, args.word_score = rows[0][:2]
        decode_splits(args)
    return rows


if __name__ == "__main__":
    main()
