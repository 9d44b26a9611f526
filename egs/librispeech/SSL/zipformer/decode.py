#!/usr/bin/env python3
"""Decode a fine-tuned LibriSpeech model on test-clean and test-other (and any other split).

    cd egs/librispeech/SSL
    ./zipformer/decode.py --exp-dir zipformer/exp-ft100h --epoch 50 --avg 10 --use-averaged-model true \\
        --decoding-method modified_beam_search
    ./zipformer/decode.py --exp-dir zipformer/exp-ft10h-ctc --lang-dir data/lang_char \\
        --epoch 50 --avg 10 --decoding-method ctc-prefix-beam-search --test-splits dev-clean dev-other

Methods: greedy_search, modified_beam_search (transducer), ctc-greedy-search,
ctc-prefix-beam-search (CTC). Results: ``<exp-dir>/<decoding-method>/{recogs,errs,wer-summary}-
<split>-<key>.txt``. Every option: ``--help``; the logic is in ``icefall.asr.decode``.
"""
from icefall.asr.decode import get_parser, main

if __name__ == "__main__":
    parser = get_parser(cuts_prefix="librispeech", manifest_dir="data/fbank", lang_dir="data/lang_bpe_500",
                        exp_dir="zipformer/exp-ft100h", test_splits=["test-clean", "test-other"])
    main(parser.parse_args())
