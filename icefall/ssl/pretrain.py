"""SSL pretraining shared by every recipe's ``pretrain.py``: HuBERT-style masked prediction of
k-means labels (k2SSL, ``--method hubert``) or self-distillation (``--method spidr|dinosr``).

A recipe script builds a parser with ``get_parser(**recipe_defaults)`` and calls ``main(args)``.
Data: lhotse cuts ``<manifest-dir>/<prefix>_cuts_<split>.jsonl.gz``; for HuBERT their
``custom["kmeans"]`` holds the labels (``prepare.sh`` writes them). The encoder is a named
configuration of ``icefall.nn.configs``.
"""
from __future__ import annotations

import argparse
import ast
import logging
import re
from typing import Dict, Tuple

import torch
import torch.nn as nn

from icefall.data.datamodule import DataModule
from icefall.dist import cleanup_dist, launch
from icefall.nn.configs import build_encoder, list_encoders
from icefall.ssl.hubert import HubertConfig, HubertModel
from icefall.trainer import (
    Trainer,
    make_optimizer,
    set_schedule_count,
    setup_run,
    training_parser,
)
from icefall.utils import AttributeDict, MetricsTracker, num_params


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--method", default="hubert", choices=["hubert", "spidr", "dinosr"], help="masked prediction of k-means labels, or self-distillation")
    g.add_argument("--num-codebooks", type=int, default=8, help="spidr/dinosr: codebooks on the top K layers")
    g.add_argument("--codebook-size", type=int, default=256, help="spidr/dinosr: codewords per codebook")
    g.add_argument("--ema-timescale", type=float, default=10000.0, help="spidr: teacher decay time constant (optimizer steps)")
    g.add_argument("--encoder", default="zipformer-ssl-base", choices=list_encoders(), help="named encoder configuration")
    g.add_argument("--frontend", default="cnn", choices=["cnn", "fbank"], help="wav2vec2 CNN over waveform, or Conv2d over fbank")
    g.add_argument("--encoder-overrides", default="", help="comma-separated k=v overrides of the named encoder, e.g. 'frontend_layer3_channels=32,num_encoder_layers=(1,1,1,1)' (see icefall.nn.configs)")
    g.add_argument("--num-classes", type=int, default=500, help="k-means clusters of the labels")
    g.add_argument("--mask-prob", type=float, default=0.8)
    g.add_argument("--mask-length", type=int, default=10)
    g.add_argument("--head", default="cosine", choices=["cosine", "linear"])
    g.add_argument("--final-dim", type=int, default=256)
    g.add_argument("--logit-temp", type=float, default=0.1)
    g.add_argument("--feature-pen-weight", type=float, default=10.0)
    g.add_argument("--pred-nomask-weight", type=float, default=0.0)
    g.add_argument("--train-split", default="train-unlabeled")
    g.add_argument("--valid-split", default="dev")


def get_parser(**defaults) -> argparse.ArgumentParser:
    """Parser with every option; ``defaults`` are the recipe's own (e.g. ``encoder=...``)."""
    return training_parser(
        "Self-supervised pretraining: HuBERT-style masked prediction (k2SSL), SpidR or DinoSR",
        add_model_arguments, **defaults,
    )


def parse_overrides(text: str) -> Dict[str, object]:
    """'a=1,b=(1,2),c=x' -> {'a': 1, 'b': (1, 2), 'c': 'x'} (Python literals where they parse)."""
    out: Dict[str, object] = {}
    for item in re.split(r",(?![^()]*\))", text or ""):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--encoder-overrides: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def merge_overrides(base: str, extra: str) -> str:
    """``base`` overrides with ``extra``'s on top (``extra`` wins), as one override string."""
    merged = {**parse_overrides(base), **parse_overrides(extra)}
    return ",".join(f"{k}={v!r}" for k, v in merged.items())


def build_model(params: AttributeDict) -> nn.Module:
    """The model ``params.method`` names: HubertModel, or SpidrModel for spidr/dinosr."""
    overrides = parse_overrides(params.get("encoder_overrides", ""))
    if params.get("method", "hubert") != "hubert":
        from icefall.ssl.spidr import build_spidr

        return build_spidr(
            params.encoder, variant=params.method, frontend=params.frontend,
            num_codebooks=params.num_codebooks, codebook_size=params.codebook_size,
            ema_timescale=params.ema_timescale, mask_prob=params.mask_prob,
            mask_length=params.mask_length, **overrides,
        )
    enc = build_encoder(params.encoder, frontend=params.frontend, **overrides)
    cfg = HubertConfig(
        num_classes=params.num_classes,
        label_rate=params.label_rate,
        frame_rate=50.0,
        mask_prob=params.mask_prob,
        mask_length=params.mask_length,
        head=params.head,
        final_dim=params.final_dim,
        logit_temp=params.logit_temp,
        feature_pen_weight=params.feature_pen_weight,
        pred_nomask_weight=params.pred_nomask_weight,
    )
    return HubertModel(enc.frontend, enc.encoder, cfg)


def compute_loss(model: nn.Module, batch: Dict, is_training: bool) -> Tuple[torch.Tensor, MetricsTracker]:
    """Loss of one SslDataset batch; ``frames`` = masked frames scored.

    Labels are passed only when the batch has them (HuBERT); SpidR/DinoSR make their own
    targets. Per-batch perplexities are stored times the frame count, so that the tracker's
    division by frames gives their frame-weighted mean.
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
    info["ce_masked"] = stats["loss_m"]
    info["acc_masked"] = stats["correct_m"]  # logged as accuracy: divided by frames
    for key in ("codebook_ppl", "pred_ppl"):
        if key in stats:
            info[key] = stats[key] * n
    info["utterances"] = len(batch["cut_ids"])
    info["seconds"] = batch["seconds"]
    return loss, info


def run(rank: int, world_size: int, args: argparse.Namespace) -> None:
    params = AttributeDict(vars(args))
    device = setup_run(params, rank, world_size, "pretrain")
    model = build_model(params)
    logging.info(f"{params.method} model over {params.encoder}: {num_params(model) / 1e6:.2f}M parameters")
    optimizer, scheduler = make_optimizer(model, params)

    with_labels = params.method == "hubert"
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
    after_step = None
    if not with_labels:
        from icefall.ssl.spidr import spidr_after_step

        after_step = spidr_after_step
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
    cleanup_dist()


def main(args: argparse.Namespace) -> None:
    args.input_type = "wav" if args.frontend == "cnn" else "fbank"
    launch(run, args)
