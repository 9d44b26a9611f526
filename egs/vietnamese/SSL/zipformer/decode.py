#!/usr/bin/env python3
"""Decode the Vietnamese models on the GigaSpeech 2, Common Voice and FLEURS test sets (WER on
normalised text: icefall.data.vietnamese.normalize_text was applied by prepare.sh).

    cd egs/vietnamese/SSL
    ./zipformer/decode.py --exp-dir zipformer/exp-ft-iter1 --epoch 60 --avg 10
    ./zipformer/decode.py ... --decoding-method ctc-greedy-search

Results: ``<exp-dir>/<decoding-method>/{recogs,errs,wer-summary}-<split>-<key>.txt``. Every
option: ``--help``; the logic is in ``icefall.asr.decode``.
"""
from icefall.asr.decode import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        exp_dir="zipformer/exp-ft-iter1",
        lang_dir="data/lang_bpe_2000",
        cuts_prefix="vietnamese",
        manifest_dir="data/fbank",
        decoding_method="greedy_search",
        test_splits=["gigaspeech2-test", "commonvoice-test", "fleurs-test"],
        max_duration=600.0,
        num_workers=2,
    )
    main(parser.parse_args())
