"""SSL pretraining shared by every recipe's ``pretrain.py``: HuBERT-style masked prediction of
k-means labels (k2SSL, ``--method hubert``; WavLM's utterance mixing on top, ``--method wavlm``),
self-distillation (``--method spidr|dinosr``), masked regression of teacher layers
(``--method data2vec``) or utterance-level bootstrap (``--method byol``).

A recipe script builds a parser with ``get_parser(**recipe_defaults)`` and calls ``main(args)``.
Data: lhotse cuts ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz``; for HuBERT their
``custom["kmeans"]`` holds the labels (``prepare.sh`` writes them). The model is a registered
objective (``icefall.models.OBJECTIVES``) over a named encoder configuration of
``icefall.nn.configs``; its typed config goes to ``<exp-dir>/config.json`` and into every
checkpoint (``params["model_config"]``).
"""
from __future__ import annotations

import argparse
import logging
from typing import Dict, Tuple

import torch
import torch.nn as nn

from icefall.data.datamodule import DataModule
from icefall.dist import launch
from icefall.models import (
    ModelConfig,
    ModelConfigError,
    check_kind,
    check_options_agree,
    get_objective,
    list_objectives,
    load_weights,
    objective_options,
    option_defaults,
    pretrain_config,
    read_checkpoint,
    write_config_json,
)
from icefall.models import build_model as build_from_config
from icefall.nn.configs import list_encoders
from icefall.trainer import (
    Trainer,
    make_optimizer,
    set_schedule_count,
    setup_run,
    training_parser,
)
from icefall.utils import AttributeDict, MetricsTracker, StoreGiven, num_params


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method``, the encoder, and one option per command-line field of the registered
    objectives' configs (``HubertConfig``, ``SpidrConfig``, ...: declared there, once)."""
    g = parser.add_argument_group("model")
    g.add_argument("--method", default="hubert", choices=list_objectives(),
                   help="hubert: masked prediction of k-means labels; spidr/dinosr: self-distillation; "
                        "wavlm: hubert plus utterance mixing (and gated relative position bias); "
                        "wav2vec2: contrastive prediction of quantized features; "
                        "data2vec: masked regression of teacher layers; byol: utterance-level bootstrap (BYOL-S)")
    g.add_argument("--encoder", default="zipformer-ssl-base", choices=list_encoders(), action=StoreGiven,
                   help="named encoder configuration (with --init-ckpt: the checkpoint's)")
    g.add_argument("--frontend", default="cnn", choices=["cnn", "fbank"], action=StoreGiven,
                   help="wav2vec2 CNN over waveform, or Conv2d over fbank (with --init-ckpt: the checkpoint's)")
    g.add_argument("--init-ckpt", default="none",
                   help="start from these weights (not a resume): a pretraining checkpoint of the same --method, "
                        "convert_fairseq.py output or fairseq:<path>; the architecture is the checkpoint's")
    g.add_argument("--encoder-overrides", default="",
                   help="comma-separated k=v overrides of the named encoder or of the objective's config, e.g. "
                        "'frontend_layer3_channels=32,num_encoder_layers=(1,1,1,1)' (see icefall.nn.configs)")
    for _, f in objective_options():
        kw = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        defaults = option_defaults(f.name)
        default, help = f.default, f.metadata["help"]
        if len(set(defaults.values())) > 1:  # each objective's own unless given
            default = None
            help += " (default: " + ", ".join(f"{m} {v}" for m, v in defaults.items()) + ")"
        g.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=default, help=help, **kw)
    g.add_argument("--train-split", default="train-unlabeled")
    g.add_argument("--valid-split", default="dev")


def get_parser(**defaults) -> argparse.ArgumentParser:
    """Parser with every option; ``defaults`` are the recipe's own (e.g. ``encoder=...``)."""
    return training_parser(
        "Self-supervised pretraining: HuBERT-style masked prediction (k2SSL), SpidR, DinoSR, data2vec or BYOL-S",
        add_model_arguments, **defaults,
    )


def model_config(params: AttributeDict) -> ModelConfig:
    """The run's typed model config from its options (``--method``, ``--encoder``,
    ``--frontend``, ``--encoder-overrides`` and the objective's options); with ``--init-ckpt``
    the encoder is the checkpoint's (see :func:`init_weights`)."""
    method = params.get("method", "hubert")
    if str(params.get("init_ckpt", "none")) == "none":
        return pretrain_config(method, params.encoder, params.frontend, params.get("encoder_overrides", ""), params)
    held = read_checkpoint(params.init_ckpt)[1]
    check_kind(held, "pretrain", params.init_ckpt, "pretrain.py --init-ckpt")
    check_options_agree(params, held, params.init_ckpt, always={"--method": (method, held.objective)})
    return pretrain_config(method, held.encoder, overrides=params.get("encoder_overrides", ""), values=params)


def init_weights(model: nn.Module, spec: str, config: ModelConfig) -> None:
    """Copy the weights of ``spec`` (see :func:`model_config`) into ``model`` (of ``config``).

    The objective's ``resizable`` parameters start afresh when this run changes their shape
    (HuBERT's label embeddings for a new number of k-means classes), with a log line; any other
    shape change is an error naming the options that differ from the checkpoint's.
    """
    state, held = read_checkpoint(spec, averaged=True)
    own = model.state_dict()
    changed = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    fresh = [k for k in changed if k in get_objective(config.objective).resizable]
    if len(fresh) < len(changed):
        a, b = held.objective_config, config.objective_config
        diff = {f: (getattr(a, f), getattr(b, f)) for f in a.field_names() if getattr(a, f) != getattr(b, f)}
        raise ModelConfigError(
            f"--init-ckpt {spec}: {sorted(set(changed) - set(fresh))} would change shape; the objective "
            f"options that differ from the checkpoint's are (checkpoint, this run): {diff}")
    load_weights(model, {k: v for k, v in state.items() if k not in fresh}, spec, held, optional=fresh)
    logging.info(f"Initialised from {spec} ({held.describe()})" + (f"; {fresh} start afresh" if fresh else ""))


def build_model(params: AttributeDict) -> nn.Module:
    """The model of the run's options (the ``--method`` objective's model)."""
    return build_from_config(model_config(params))


def compute_loss(model: nn.Module, batch: Dict, is_training: bool) -> Tuple[torch.Tensor, MetricsTracker]:
    """Loss of one SslDataset batch; ``frames`` = the objective's ``count_m`` (masked frames
    scored; utterances for BYOL).

    Labels are passed only when the batch has them (HuBERT, WavLM); the other objectives make
    their own targets. Per-batch statistics (perplexities, collapse indicators) are stored times
    the frame count, so that the tracker's division by frames gives their frame-weighted mean;
    WavLM's mixing counts as they are.
    """
    device = next(model.parameters()).device
    inputs = [batch["inputs"].to(device), batch["lengths"].to(device)]
    if "labels" in batch:
        inputs.append(batch["labels"].to(device))
    with torch.set_grad_enabled(is_training):
        loss, stats = model(*inputs)
    n = stats["count_m"]
    info = MetricsTracker()
    info["frames"] = n
    info["loss"] = loss.detach().item()
    if "correct_m" in stats:  # classification objectives (the regression ones log their loss only)
        info["ce_masked"] = stats["loss_m"]
        info["acc_masked"] = stats["correct_m"]  # logged as accuracy: divided by frames
    for key in ("codebook_ppl", "pred_ppl", "prob_ppl", "temperature", "pred_std", "target_std"):
        if key in stats:
            info[key] = stats[key] * n
    for key in ("mixed", "mix_db"):  # WavLM: logged as fraction mixed, mean ratio (MetricsTracker.RATIO_KEYS)
        if key in stats:
            info[key] = stats[key]
    info["utterances"] = len(batch["cut_ids"])
    info["seconds"] = batch["seconds"]
    return loss, info


def run(rank: int, world_size: int, args: argparse.Namespace) -> None:
    params = AttributeDict(vars(args))
    config = model_config(params)  # errors in the options before anything is set up
    device = setup_run(params, rank, world_size, "pretrain")
    params.model_config = config.to_dict()  # stored in every checkpoint
    if rank == 0:
        write_config_json(params.exp_dir, config)
    model = build_from_config(config)
    if str(params.get("init_ckpt", "none")) != "none":
        init_weights(model, str(params.init_ckpt), config)  # a resume (--start-epoch/--start-batch) then overwrites them
    logging.info(f"{params.method} model over {params.encoder}: {num_params(model) / 1e6:.2f}M parameters")
    optimizer, scheduler = make_optimizer(model, params)

    objective = get_objective(params.method)
    with_labels = objective.needs_labels
    data = DataModule(args)
    cut_filter = data.cut_filter(label_rate=params.label_rate if with_labels else None)
    train_cuts = data.load_cuts(params.train_split).filter(cut_filter)
    train_dl = data.train_dataloader(
        train_cuts, data.ssl_dataset(train=True, with_labels=with_labels), world_size=world_size, rank=rank
    )
    valid_dl = data.valid_dataloader(
        data.load_cuts(params.valid_split).filter(cut_filter),
        data.ssl_dataset(train=False, with_labels=with_labels),
        world_size=world_size, rank=rank,
    )
    after_step = objective.after_step
    # Zipformer layer skipping (and, for SpidR, layers that feed no head) leave some parameters
    # without gradients in a step; DDP must be told.
    params.find_unused_parameters = True
    trainer = Trainer(
        params, model, optimizer, scheduler, compute_loss, train_dl, valid_dl,
        device=device, rank=rank, world_size=world_size, before_batch=set_schedule_count,
        after_step=after_step,
    )
    trainer.train()
    logging.info(f"Cut filter: {cut_filter.summary()}")


def main(args: argparse.Namespace) -> None:
    args.input_type = model_config(AttributeDict(vars(args))).input_type
    launch(run, args)
