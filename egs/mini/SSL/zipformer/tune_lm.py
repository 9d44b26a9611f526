#!/usr/bin/env python3
"""Tune lexicon-only and lexicon + LM decoding on dev (word score; LM weight), then decode
with the best: one encoder pass per split.

    cd egs/mini/SSL
    ./zipformer/tune_lm.py --epoch 20 --avg 5 --methods ctc-lexicon ctc-lexicon-lm \\
        --tune-split dev --test-splits dev test

Tables: ``<exp-dir>/<method>/tune-dev-*.txt``; results as decode.py writes them. The logic is
in ``icefall.asr.tune_lm``; data/lm/ and the lexicons come from prepare.sh stage 6.
"""
from icefall.asr.tune_lm import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        exp_dir="zipformer/exp-ft",
        cuts_prefix="mini",
        lang_dir="data/lang_char",
        lm="data/lm/3gram.arpa",
        lm_weights=[0.25, 0.5, 0.75, 1.0],
        word_scores=[-1.0, 0.0, 1.0, 2.0],
        max_duration=200.0,
        num_workers=0,
    )
    main(parser.parse_args())
