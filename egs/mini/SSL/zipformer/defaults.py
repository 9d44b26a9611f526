"""The mini recipe's fine-tuning defaults, shared by finetune.py and prune.py (which adds its
pruning options on top): one place to change them."""

FINETUNE = dict(
    encoder="zipformer-tiny",
    frontend="fbank",
    # A light Conv2d front end for CPU, and no dropout: a 1M model on 2 h underfits.
    encoder_overrides="frontend_layer3_channels=32,dropout=0.0",
    # Zipformer's schedules (layer drop, bypass, balancers, ...) span ~20k batches of 600 s;
    # counting each second of audio as a batch fits them into a run of a few hundred batches.
    ref_duration=1.0,
    cuts_prefix="mini",
    lang_dir="data/lang_char",
    use_ctc=True,
    use_transducer=False,
    decoder_dim=128,
    joiner_dim=128,
    exp_dir="zipformer/exp-ft",
    num_epochs=20,
    # Small batches (more updates) and little corruption: 10 minutes of speech, a 1M model.
    max_duration=20.0,
    enable_spec_aug=False,
    base_lr=0.045,
    lr_batches=1000,
    lr_epochs=20,
    warmup_batches=100,
    warm_step=200,
    mask_prob=0.1,
    num_workers=0,
    save_every_n=1000,
    valid_interval=1000,
    log_interval=20,
    average_period=10,
)
