#!/usr/bin/env python3
"""Fine-tune (or train from scratch: ``--init-ckpt none``) the Vietnamese Zipformer on the
labeled GigaSpeech 2 subset: pruned RNN-T on BPE 2000 plus a CTC head (its posteriors give the
pseudo-label confidences).

    cd egs/vietnamese/SSL
    ./zipformer/finetune.py --world-size 8 --use-fp16 true \\
        --init-ckpt zipformer/exp-pretrain-iter1/epoch-20.pt --exp-dir zipformer/exp-ft-iter1

Every option: ``--help``; the logic is in ``icefall.asr.finetune``.
"""
from icefall.asr.finetune import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-ssl-base",
        frontend="fbank",
        cuts_prefix="vietnamese",
        manifest_dir="data/fbank",
        train_split="train-50h",
        valid_split="gigaspeech2-dev",
        lang_dir="data/lang_bpe_2000",
        use_transducer=True,
        use_ctc=True,
        exp_dir="zipformer/exp-ft-iter1",
        num_epochs=60,
        max_duration=1000.0,
        base_lr=0.002,  # from a pretrained encoder; iterate.sh uses 0.045 from scratch
        lr_batches=5000,
        lr_epochs=3.5,
        warmup_batches=500,
        warm_step=2000,
        mask_prob=0.65,
        num_workers=4,
    )
    main(parser.parse_args())
