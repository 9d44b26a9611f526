"""Fine-tuning a pretrained SSL encoder with CTC and/or pruned RNN-T, shared by the recipes.

The encoder is the pretrained model's front end + encoder (its prediction heads, teacher or
codebooks are dropped), wrapped in :class:`icefall.models.SslEncoder`, which applies span
masking during fine-tuning (as fairseq's ``apply_mask``) and can keep the encoder frozen for the
first ``--freeze-steps``. ``--init-ckpt`` takes any checkpoint :func:`icefall.models.load_model`
reads:

    --init-ckpt exp/epoch-20.pt               pretrain.py, any --method (``model_avg`` if present)
    --init-ckpt exp/hubert-base-fairseq.pt    hubert/convert_fairseq.py output
    --init-ckpt fairseq:hubert_base.pt        a raw fairseq HuBERT checkpoint
    --init-ckpt exp-ft/epoch-10.pt            a fine-tuned model: its encoder, fresh heads
    --init-ckpt none                          --encoder/--frontend/--encoder-overrides from scratch

With a checkpoint, the architecture is the checkpoint's: ``--encoder``/``--frontend``, when
given on the command line, must agree with it (an error says what it holds and what was asked;
a recipe's defaults for them only serve ``--init-ckpt none``), and ``--encoder-overrides``
applies on top (e.g. ``dropout=0.0``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from icefall.asr.model import AsrConfig, AsrModel, asr_model_over, combine_losses
from icefall.data.datamodule import DataModule
from icefall.data.tokenizer import load_tokenizer
from icefall.dist import launch
from icefall.models import (
    ModelConfig,
    ModelConfigError,
    SslEncoder,
    build_model,
    check_options_agree,
    load_weights,
    model_config_of,
    read_checkpoint,
    write_config_json,
)
from icefall.nn.configs import ConfigError, encoder_config, list_encoders, parse_overrides
from icefall.trainer import (
    Trainer,
    make_optimizer,
    set_schedule_count,
    setup_run,
    training_parser,
)
from icefall.utils import AttributeDict, MetricsTracker, StoreGiven, num_params, str2bool

FRAME_RATE = 50.0  # encoder output frames per second (SSL encoders keep 50 Hz)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--init-ckpt", default="none",
                   help="pretrain.py or finetune.py checkpoint, convert_fairseq.py output, fairseq:<path>, "
                        "or none (from scratch)")
    g.add_argument("--encoder", default="zipformer-ssl-base", choices=list_encoders(), action=StoreGiven,
                   help="named encoder for --init-ckpt none; with a checkpoint the architecture is the "
                        "checkpoint's, and this option, when given, must agree with it")
    g.add_argument("--frontend", default="cnn", choices=["cnn", "fbank"], action=StoreGiven,
                   help="front end for --init-ckpt none; with a checkpoint, when given, it must agree with it")
    g.add_argument("--encoder-overrides", default="",
                   help="k=v overrides of the encoder (on top of the checkpoint's, e.g. dropout=0.0)")
    g.add_argument("--lang-dir", type=Path, default=Path("data/lang_bpe_500"), help="tokens.txt (+ bpe.model)")
    g.add_argument("--use-ctc", type=str2bool, default=False)
    g.add_argument("--use-transducer", type=str2bool, default=True)
    g.add_argument("--ctc-loss-scale", type=float, default=0.2, help="with a transducer head as well")
    g.add_argument("--simple-loss-scale", type=float, default=0.5)
    g.add_argument("--prune-range", type=int, default=5)
    g.add_argument("--lm-scale", type=float, default=0.25)
    g.add_argument("--am-scale", type=float, default=0.0)
    g.add_argument("--warm-step", type=int, default=2000, help="transducer loss warm-up batches")
    g.add_argument("--decoder-dim", type=int, default=512)
    g.add_argument("--joiner-dim", type=int, default=512)
    g.add_argument("--context-size", type=int, default=2)
    g.add_argument("--mask-prob", type=float, default=0.65, help="span masking during fine-tuning")
    g.add_argument("--mask-length", type=int, default=10)
    g.add_argument("--freeze-steps", type=int, default=0, help="keep the pretrained encoder frozen this many updates")
    g.add_argument("--train-split", default="train-labeled")
    g.add_argument("--valid-split", default="dev")


def get_parser(**defaults) -> argparse.ArgumentParser:
    return training_parser(
        "Fine-tune an SSL encoder with CTC and/or pruned RNN-T", add_finetune_arguments, **defaults
    )


def load_ssl_model(params: AttributeDict) -> SslEncoder:
    """The encoder to fine-tune: the one of ``params.init_ckpt`` (any checkpoint kind), or a
    fresh one of ``--encoder/--frontend/--encoder-overrides`` for ``none``.

    Sets ``params.encoder``/``params.frontend`` to what the model is and
    ``params.init_objective`` to the objective it was pretrained with (None from scratch); the
    returned encoder's ``config`` is its typed EncoderConfig.
    """
    spec = str(params.init_ckpt)
    if spec != "none":  # read first: a bad file is reported before anything else
        state, held = read_checkpoint(spec, averaged=True)
    overrides = parse_overrides(params.get("encoder_overrides", ""))
    kw = dict(mask_prob=params.mask_prob, mask_length=params.mask_length, freeze_steps=params.get("freeze_steps", 0))
    if spec == "none":
        if overrides.get("frontend", params.frontend) != params.frontend:
            raise ConfigError(f"--frontend {params.frontend} and --encoder-overrides frontend={overrides['frontend']} disagree")
        enc_cfg = encoder_config(params.encoder, frontend=params.frontend, **{k: v for k, v in overrides.items() if k != "frontend"})
        speech = enc_cfg.build()
        ssl, objective = SslEncoder(speech.frontend, speech.encoder, None, **kw), None
    else:
        check_options_agree(params, held, spec)
        try:
            enc_cfg = held.encoder.with_overrides(**overrides)
        except ConfigError as e:
            raise ConfigError(f"--encoder-overrides on --init-ckpt {spec}: {e}") from e
        config = dataclasses.replace(held, encoder=enc_cfg)
        model = build_model(config)
        changed = held.encoder.differences(enc_cfg)
        try:
            load_weights(model, state, spec, held)
        except ModelConfigError as e:
            raise ModelConfigError(f"{e}\n(--encoder-overrides changed {sorted(changed)})" if changed else str(e)) from e
        ssl, objective = SslEncoder.from_model(model, **kw), held.objective
        logging.info(f"Initialised the encoder from {spec}: {held.describe()}"
                     + (f", overrides {changed}" if changed else ""))
    ssl.config = enc_cfg
    params.encoder, params.frontend, params.init_objective = enc_cfg.name, enc_cfg.frontend_type, objective
    return ssl


def asr_config(params: AttributeDict, ssl: Optional[SslEncoder] = None) -> ModelConfig:
    """The fine-tuned model's config: ``ssl``'s encoder (or the one ``params`` record) and
    the heads of ``params`` (``vocab_size``/``blank_id`` included)."""
    if ssl is None:
        return model_config_of({"params": dict(params)})
    return ModelConfig("asr", ssl.config, objective=params.get("init_objective"),
                       head=AsrConfig.from_params(params).to_dict())


def build_asr_model(params: Union[AttributeDict, ModelConfig], ssl: Optional[SslEncoder] = None) -> AsrModel:
    """An AsrModel over ``ssl`` (from :func:`load_ssl_model`), or rebuilt fresh from a
    ModelConfig or a run's params (``params["model_config"]``, or older checkpoints' params).
    With ``ssl``, sets ``params.model_config`` (what checkpoints record)."""
    if isinstance(params, ModelConfig):
        return build_model(params)
    config = asr_config(params, ssl)
    if ssl is None:
        model = build_model(config)
        model.encoder.freeze_steps = params.get("freeze_steps", 0)
        return model
    params.model_config = config.to_dict()
    return asr_model_over(ssl, AsrConfig.from_dict(config.head))


def make_compute_loss(params: AttributeDict):
    def compute_loss(model: nn.Module, batch: Dict, is_training: bool) -> Tuple[torch.Tensor, MetricsTracker]:
        device = next(model.parameters()).device
        x, x_lens = batch["inputs"].to(device), batch["lengths"].to(device)
        with torch.set_grad_enabled(is_training):
            losses = model(x, x_lens, batch["tokens"], prune_range=params.prune_range,
                           am_scale=params.am_scale, lm_scale=params.lm_scale)
            # validation uses the warmed-up weights so that its numbers are comparable
            step = params.batch_idx_train if is_training else params.warm_step
            loss = combine_losses(losses, step, params.warm_step, params.simple_loss_scale, params.ctc_loss_scale)
        info = MetricsTracker()
        info["frames"] = round(batch["seconds"] * FRAME_RATE)  # encoder frames (50 Hz)
        info["loss"] = loss.detach().item()
        for name in ("simple", "pruned", "ctc"):
            value = getattr(losses, name)
            if value is not None:
                info[f"{name}_loss"] = value.detach().item()
        info["utterances"] = len(batch["cut_ids"])
        info["seconds"] = batch["seconds"]
        return loss, info

    return compute_loss


def run(rank: int, world_size: int, args: argparse.Namespace, hooks=None) -> None:
    """Fine-tune in one process. ``hooks`` (optional, e.g. ``icefall.prune.finetune.PruneHooks``)
    extends the run: ``setup_model(model, params)`` (in place, before the optimizer),
    ``make_optimizer(model, params)``, ``wrap_compute_loss(fn, train_dl)``, ``before_batch(trainer)`` and
    ``finish(trainer)`` (after training)."""
    params = AttributeDict(vars(args))
    device = setup_run(params, rank, world_size, "finetune")
    tokenizer = load_tokenizer(params.lang_dir)
    params.vocab_size, params.blank_id = tokenizer.vocab_size, tokenizer.blank_id
    # On resume (--start-epoch/--start-batch) the trainer then overwrites these weights.
    model = build_asr_model(params, load_ssl_model(params))
    if rank == 0:
        write_config_json(params.exp_dir, ModelConfig.from_dict(params.model_config), init_ckpt=str(params.init_ckpt))
    logging.info(f"ASR model: {num_params(model) / 1e6:.2f}M parameters "
                 f"(ctc={params.use_ctc}, transducer={params.use_transducer}, init={params.init_ckpt})")
    if hooks is not None:
        hooks.setup_model(model, params)
    optimizer, scheduler = (hooks.make_optimizer if hooks is not None else make_optimizer)(model, params)

    args.input_type = model.encoder.config.input_type
    data = DataModule(args)
    cut_filter = data.cut_filter(tokenizer=tokenizer, output_frame_rate=FRAME_RATE)
    train_cuts = data.load_cuts(params.train_split).filter(cut_filter)
    train_dl = data.train_dataloader(train_cuts, data.asr_dataset(tokenizer, train=True), world_size=world_size, rank=rank)
    valid_dl = data.valid_dataloader(data.load_cuts(params.valid_split), data.asr_dataset(tokenizer, train=False),
                                     world_size=world_size, rank=rank)

    def before_batch(trainer: Trainer) -> None:
        set_schedule_count(trainer)
        encoder = trainer.model.module.encoder if hasattr(trainer.model, "module") else trainer.model.encoder
        encoder.num_updates = trainer.params.batch_idx_train // trainer.params.accum_grad
        if hooks is not None:
            hooks.before_batch(trainer)

    params.find_unused_parameters = True  # Zipformer layer skipping; frozen encoder steps
    compute_loss = make_compute_loss(params)
    if hooks is not None:
        compute_loss = hooks.wrap_compute_loss(compute_loss, train_dl)
    trainer = Trainer(params, model, optimizer, scheduler, compute_loss, train_dl, valid_dl,
                      device=device, rank=rank, world_size=world_size, before_batch=before_batch)
    trainer.train()
    if hooks is not None:
        hooks.finish(trainer)
    logging.info(f"Cut filter: {cut_filter.summary()}")


def main(args: argparse.Namespace, hooks=None) -> None:
    launch(run if hooks is None else functools.partial(run, hooks=hooks), args)
