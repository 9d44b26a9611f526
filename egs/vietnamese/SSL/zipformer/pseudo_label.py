#!/usr/bin/env python3
"""Pseudo-label the unlabeled GigaSpeech 2 audio with a fine-tuned model's CTC head, keep the
confident utterances, and append them to the labeled set for the next iteration.

    cd egs/vietnamese/SSL
    ./zipformer/pseudo_label.py --exp-dir zipformer/exp-ft-iter1 --epoch 60 --avg 10 \\
        --threshold 0.9 --merge-with train-50h --out data/fbank/vietnamese_cuts_train-50h-pl1.jsonl.gz

Every option: ``--help``; the logic is in ``icefall.asr.pseudo_label``.
"""
from icefall.asr.pseudo_label import get_parser, main

if __name__ == "__main__":
    parser = get_parser()
    parser.set_defaults(lang_dir="data/lang_bpe_2000", manifest_dir="data/fbank",
                        cuts_prefix="vietnamese", split="gigaspeech2-train")
    main(parser.parse_args())
