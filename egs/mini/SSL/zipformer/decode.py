#!/usr/bin/env python3
"""Decode the mini fine-tuned Zipformer (CTC on letters by default).

    cd egs/mini/SSL
    ./zipformer/decode.py --epoch 20 --avg 5 --decoding-method ctc-greedy-search --test-splits test dev
    ./zipformer/decode.py --exp-dir zipformer/exp-rnnt --lang-dir data/lang_bpe_256 \\
        --epoch 20 --avg 5 --decoding-method modified_beam_search
    ./zipformer/decode.py --checkpoint zipformer/exp-ft/pretrained.pt --decoding-method ctc-greedy-search
    ./zipformer/decode.py --epoch 20 --avg 5 --decoding-method ctc-lexicon-lm \\
        --lm data/lm/3gram.arpa --lm-weight 0.5 --word-score 1   # tune them with tune_lm.py

Results: ``<exp-dir>/<decoding-method>/{recogs,errs,wer-summary}-<split>-<key>.txt``. Every
option: ``--help``; the logic is in ``icefall.asr.decode``.
"""
from icefall.asr.decode import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        exp_dir="zipformer/exp-ft",
        cuts_prefix="mini",
        lang_dir="data/lang_char",
        decoding_method="ctc-greedy-search",
        test_splits=["test", "dev"],
        max_duration=200.0,
        num_workers=0,
    )
    main(parser.parse_args())
