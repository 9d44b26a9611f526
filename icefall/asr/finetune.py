"""Fine-tuning a pretrained SSL encoder with CTC and/or pruned RNN-T, shared by the recipes.

The encoder is the pretrained HuBERT-style model's front end + encoder (its prediction head is
dropped), wrapped in :class:`SslEncoder`, which applies span masking during fine-tuning (as
fairseq's ``apply_mask``) and can keep the encoder frozen for the first ``--freeze-steps``.

    --init-ckpt exp/epoch-20.pt          our pretrain.py checkpoint (``model_avg`` if present)
    --init-ckpt fairseq:hubert_base.pt   a fairseq HuBERT checkpoint (icefall.ssl.fairseq_import)
    --init-ckpt none                     the same architecture from scratch
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn as nn

from icefall.asr.model import AsrModel, combine_losses
from icefall.data.datamodule import DataModule
from icefall.data.tokenizer import load_tokenizer
from icefall.dist import cleanup_dist, launch
from icefall.ssl.hubert import HubertModel
from icefall.trainer import (
    Trainer,
    make_optimizer,
    set_schedule_count,
    setup_run,
    training_parser,
)
from icefall.utils import AttributeDict, MetricsTracker, num_params, str2bool

FRAME_RATE = 50.0  # encoder output frames per second (SSL encoders keep 50 Hz)


class SslEncoder(nn.Module):
    """``(x, x_lens) -> (out (B,T,D), lens)`` over a HuBERT-style model's front end + encoder.

    Args:
      ssl: the pretrained model (its head is unused).
      mask_prob, mask_length: span masking in training (0 disables it).
      freeze_steps: the encoder runs without gradients while ``num_updates < freeze_steps``.
    """

    def __init__(self, ssl: HubertModel, mask_prob: float = 0.65, mask_length: int = 10, freeze_steps: int = 0):
        super().__init__()
        self.frontend = ssl.frontend
        self.encoder = ssl.encoder
        self.mask_emb = ssl.mask_emb
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.freeze_steps = freeze_steps
        self.num_updates = 0
        self.output_dim = ssl.encoder.output_dim
        self._ssl = [ssl]  # not a submodule: its head must not be saved or trained

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        frozen = self.training and self.num_updates < self.freeze_steps
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            enc = HubertModel.encode(
                self._ssl[0], x, x_lens,
                mask=self.training and self.mask_prob > 0,
                mask_prob=self.mask_prob, mask_length=self.mask_length,
            )
        return enc["out"], enc["lens"]


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--init-ckpt", default="none", help="pretrain.py checkpoint, fairseq:<path>, or none (from scratch)")
    g.add_argument("--encoder", default="zipformer-ssl-base", help="named encoder (used with --init-ckpt none)")
    g.add_argument("--frontend", default="cnn", choices=["cnn", "fbank"])
    g.add_argument("--encoder-overrides", default="", help="k=v overrides of the named encoder (with --init-ckpt none)")
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


def load_ssl_model(params: AttributeDict) -> HubertModel:
    """The pretrained model named by ``params.init_ckpt`` (or a fresh one for ``none``).

    Sets ``params.encoder``/``params.frontend`` from the checkpoint, so the fine-tuned
    checkpoint records the architecture (``build_asr_model`` rebuilds it for decoding).
    """
    from icefall.ssl.pretrain import build_model, merge_overrides

    spec = str(params.init_ckpt)
    if spec.startswith("fairseq:"):
        from icefall.ssl.fairseq_import import load_pretrained_hubert

        model, fs_params = load_pretrained_hubert(spec[len("fairseq:"):])
        params.ssl_params = fs_params
        params.encoder, params.frontend = fs_params["encoder"], "cnn"
        return model
    if spec != "none":
        from icefall.checkpoint import load_file

        ckpt = load_file(spec)
        pre = AttributeDict(ckpt["params"])
        for k in ("encoder", "frontend", "num_classes", "label_rate", "head", "final_dim", "logit_temp",
                  "feature_pen_weight", "pred_nomask_weight", "mask_prob", "mask_length"):
            if k in pre:
                params.setdefault("ssl_" + k, pre[k])
        params.encoder, params.frontend = pre.encoder, pre.frontend
        # The pretrained architecture, with this run's overrides on top (e.g. ``dropout=0.0``).
        # (_ssl_params and decoding read params.encoder_overrides, which the checkpoint records.)
        params.encoder_overrides = merge_overrides(pre.get("encoder_overrides", ""), params.get("encoder_overrides", ""))
        model = build_model(_ssl_params(params))
        weights = ckpt["model_avg"] if ckpt.get("model_avg") is not None else ckpt["model"]
        model.load_state_dict(weights)
        logging.info(f"Initialised the encoder from {spec} ({'averaged' if ckpt.get('model_avg') is not None else 'last'} model)")
        return model
    return build_model(_ssl_params(params))


def _ssl_params(params: AttributeDict) -> AttributeDict:
    """Params of the SSL model inside a fine-tuned model (pretraining's, or defaults)."""
    p = AttributeDict(
        encoder=params.encoder, frontend=params.frontend,
        encoder_overrides=params.get("encoder_overrides", ""), num_classes=2, label_rate=50.0,
        head="linear", final_dim=16, logit_temp=0.1, feature_pen_weight=0.0,
        pred_nomask_weight=0.0, mask_prob=params.mask_prob, mask_length=params.mask_length,
    )
    for k in list(p):
        if "ssl_" + k in params:
            p[k] = params["ssl_" + k]
    return p


def build_asr_model(params: AttributeDict, ssl: HubertModel = None) -> AsrModel:
    """AsrModel over an SslEncoder; ``ssl`` None rebuilds the architecture from ``params``."""
    if ssl is None:
        if params.get("ssl_params") is not None:  # fairseq-initialised
            from icefall.ssl.fairseq_import import build_hubert_from_params

            ssl = build_hubert_from_params(params.ssl_params)
        else:
            from icefall.ssl.pretrain import build_model

            ssl = build_model(_ssl_params(params))
    encoder = SslEncoder(ssl, params.mask_prob, params.mask_length, params.get("freeze_steps", 0))
    return AsrModel(
        encoder,
        vocab_size=params.vocab_size,
        decoder_dim=params.decoder_dim,
        joiner_dim=params.joiner_dim,
        context_size=params.context_size,
        blank_id=params.blank_id,
        use_transducer=params.use_transducer,
        use_ctc=params.use_ctc,
    )


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
    logging.info(f"ASR model: {num_params(model) / 1e6:.2f}M parameters "
                 f"(ctc={params.use_ctc}, transducer={params.use_transducer}, init={params.init_ckpt})")
    if hooks is not None:
        hooks.setup_model(model, params)
    optimizer, scheduler = (hooks.make_optimizer if hooks is not None else make_optimizer)(model, params)

    args.input_type = "wav" if params.frontend == "cnn" else "fbank"
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
    cleanup_dist()


def main(args: argparse.Namespace, hooks=None) -> None:
    launch(run if hooks is None else functools.partial(run, hooks=hooks), args)
