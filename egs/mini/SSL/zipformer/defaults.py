"""The mini recipe's model and fine-tuning defaults, shared by pretrain.py, finetune.py and
prune.py (which adds its pruning options on top): one place to change them."""

# zipformer-tiny widened twofold (dims 128..256, feed-forward 256..512): 3.6M parameters for
# ~1.55x the compute of the 1M model, which underfits its 10 labeled minutes (docs/mini.md has
# the measured curve). A light Conv2d front end for CPU, and no dropout (underfitting again).
ENCODER_OVERRIDES = (
    "frontend_layer3_channels=32,dropout=0.0,encoder_dim=(128,192,256,192),"
    "feedforward_dim=(256,384,512,384),encoder_unmasked_dim=(96,128,128,128)"
)

FINETUNE = dict(
    encoder="zipformer-tiny",
    frontend="fbank",
    # Fine-tuning a pretrain.py checkpoint merges these over the checkpoint's own overrides, so
    # they must describe the same architecture (they do for the recipe's pretrain.py).
    encoder_overrides=ENCODER_OVERRIDES,
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
    # Small batches (more updates) and little corruption: 10 minutes of speech, a small model.
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
