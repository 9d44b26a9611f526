#!/usr/bin/env python3
"""Fine-tune the k2SSL Zipformer on LibriSpeech 100 h (train-clean-100) or Libri-light's
train-10h / train-1h / train-10min with pruned RNN-T (BPE 500) or CTC (letters); then
decode.py and export.py.

    cd egs/librispeech/SSL
    ./zipformer/finetune.py --world-size 8 --use-fp16 true \\
        --init-ckpt zipformer/exp-pretrain/epoch-45.pt --exp-dir zipformer/exp-ft100h
    ./zipformer/finetune.py ... --train-split train-10h --exp-dir zipformer/exp-ft10h
    ./zipformer/finetune.py ... --use-transducer false --use-ctc true --lang-dir data/lang_char

The hubert/ and spidr/ pretraining checkpoints fine-tune with this script too (the architecture
comes from the checkpoint): ``--init-ckpt hubert/exp-pretrain/epoch-45.pt``.

A converted or original fairseq HuBERT works too: ``--init-ckpt fairseq:hubert_base_ls960.pt``.
"""
from icefall.asr.finetune import get_parser, main

if __name__ == "__main__":
    parser = get_parser(
        encoder="zipformer-ssl-base",
        frontend="cnn",
        cuts_prefix="librispeech",
        manifest_dir="data/fbank",
        train_split="train-clean-100",
        valid_split="dev-clean",
        lang_dir="data/lang_bpe_500",
        use_transducer=True,
        use_ctc=False,
        exp_dir="zipformer/exp-ft100h",
        num_epochs=50,
        max_duration=600.0,
        base_lr=0.002,  # k2SSL fine-tuning uses a much smaller lr than pretraining
        lr_batches=5000,
        lr_epochs=3.5,
        warmup_batches=500,
        warm_step=2000,
        mask_prob=0.65,
        freeze_steps=0,
        num_workers=4,
    )
    main(parser.parse_args())
