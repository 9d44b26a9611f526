"""CTC fine-tuning with pruning: the glue between ``icefall.asr.finetune`` and ``icefall.prune``.

``get_parser`` is the fine-tuning parser plus the pruning options; ``main`` runs the shared
fine-tuning loop with :class:`PruneHooks`, which

- prepares the model (``--method``): ``gates`` puts a self-pinching gate on every selected
  linear layer; ``uniform`` (UMP) and ``mixed`` load a fine-tuned dense model (``--dense-ckpt``)
  and fix magnitude masks (one sparsity everywhere / the per-layer sparsities of a gated run's
  ``sparsity.json``); ``nas`` searches channel widths of every Transformer block (NAS-CP,
  ``icefall.prune.nas``); ``none`` fine-tunes without pruning (the dense baseline);
- gives the thresholds (NAS-CP: the architecture logits) their own ScaledAdam group (an Adam step of about ``--threshold-lr``,
  decayed by the same Eden schedule), adds ``eta * frames * R`` to the summed CTC loss and
  runs the :class:`~icefall.prune.gates.GateController` before each batch;
- after training writes to ``--exp-dir``: ``sparsity.{md,png,json}`` (per-layer report),
  ``pruned.pt`` (masks folded in, a ``{"model", "params"}`` checkpoint that
  ``decode.py --checkpoint`` reads unchanged), ``compact.pt`` (sparse storage, see
  ``icefall.prune.export``; NAS-CP: the pruned channels removed, narrower linears that
  ``load_compact`` rebuilds) and ``prune-summary.json`` (sparsities, sizes on disk).

The final model is the last one (not the running average): averaging weights of different
masks would undo the pruning.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from icefall.asr import finetune
from icefall.checkpoint import atomic_torch_save, load_file, to_plain, unwrap_model
from icefall.models import check_kind, model_config_of
from icefall.prune.baselines import mixed_sparsity_prune, uniform_magnitude_prune
from icefall.prune.export import export_compact, folded_state_dict, linear_shapes
from icefall.prune.gates import (
    GATE_KINDS,
    TRANSFORMER_PATTERNS,
    ZIPFORMER_PATTERNS,
    GateController,
    add_gates,
    current_sparsity,
    gate_parameters,
    gate_regularizer,
    masked_layers,
)
from icefall.prune.nas import (
    PAPER_PRUNE_FRACTIONS,
    add_nas_channels,
    compact_channels,
    arch_parameters,
    extra_parameter_counts,
    nas_owners,
    nas_regularizer,
    nas_summary,
    resample_gumbel,
)
from icefall.prune.report import write_sparsity_report
from icefall.trainer import Trainer, make_optimizer
from icefall.utils import AttributeDict

METHODS = ("none", "gates", "uniform", "mixed", "nas")
SEARCHED = ("gates", "nas")  # methods whose masks are learnt with eta * R and the controller
CONTROLLERS = ("paper", "hold", "band")
PRESETS = {"zipformer": ZIPFORMER_PATTERNS, "transformer": TRANSFORMER_PATTERNS}


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pruning")
    g.add_argument("--method", default="gates", choices=METHODS,
                   help="gates: one-pass self-pinching gates (start from --init-ckpt); uniform: UMP of "
                        "--dense-ckpt; mixed: magnitude pruning of --dense-ckpt to the per-layer "
                        "sparsities of --sparsity-from; none: no pruning (dense baseline)")
    g.add_argument("--gate-scale", default="absolute", choices=sorted(GATE_KINDS),
                   help="gates: absolute = keep |W| >= t (the paper); rms = keep |W| >= t * rms(W), a "
                        "threshold relative to each layer's weight scale")
    g.add_argument("--nas-fractions", type=float, nargs="+", default=list(PAPER_PRUNE_FRACTIONS),
                   help="nas: fractions of the channels each candidate prunes (the paper's 7)")
    g.add_argument("--target-sparsity", type=float, default=0.7, help="overall sparsity of the pruned layers")
    g.add_argument("--patterns", nargs="+", default=["zipformer"],
                   help="layers to prune: a preset (zipformer, transformer) or regexes of module names")
    g.add_argument("--eta", type=float, default=1.0, help="weight of the normalised soft-L0 regulariser")
    g.add_argument("--tau-start", type=float, default=0.5, help="gates: tau; nas: the Gumbel temperature T")
    g.add_argument("--tau-end", type=float, default=0.01)
    g.add_argument("--threshold-init", type=float, default=1e-5)
    g.add_argument("--threshold-lr", type=float, default=2e-4,
                   help="base lr of the thresholds' own ScaledAdam group (Adam-like steps, Eden-decayed)")
    g.add_argument("--arch-lr", type=float, default=0.05,
                   help="nas: lr of the architecture logits' group (they must cross O(1) gaps, thresholds O(|W|))")
    g.add_argument("--controller", default="band", choices=CONTROLLERS,
                   help="gates: paper = eta 0 while the target is met (the task loss still moves the "
                        "thresholds); hold = also freeze the thresholds then; band = hold, and pull "
                        "back (eta negated) above target + --band (docs/pruning.md)")
    g.add_argument("--band", type=float, default=0.005, help="band controller: tolerated excess sparsity")
    g.add_argument("--dense-ckpt", type=Path, default=None,
                   help="uniform/mixed: the fine-tuned dense model (pruned.pt or epoch-N.pt; its 'model'); "
                        "gates/nas/none: optional, start from it (e.g. an icefall.prune.hf_ctc conversion)")
    g.add_argument("--sparsity-from", type=Path, default=None,
                   help="mixed: sparsity.json written by a gated run (per-layer sparsities)")


def get_parser(**defaults) -> argparse.ArgumentParser:
    """The fine-tuning parser (``icefall.asr.finetune.get_parser``) plus the pruning options."""
    parser = finetune.get_parser()
    parser.description = "Fine-tune an SSL encoder with CTC and prune it (docs/pruning.md)"
    add_prune_arguments(parser)
    parser.set_defaults(**defaults)
    return parser


def resolve_patterns(patterns: List[str]) -> List[str]:
    """Preset names expanded to their regexes; other entries are regexes already."""
    out: List[str] = []
    for p in patterns:
        out += list(PRESETS.get(p, [p]))
    return out


def count_batches(dataloader: Any) -> Optional[int]:
    """Batches in the first epoch of a loader whose lhotse sampler has not started iterating
    (iterates a deep copy of the sampler, over metadata only); None without a sampler."""
    # torch batches through batch_sampler; lhotse samplers yield whole batches (batch_size=None)
    sampler = getattr(dataloader, "batch_sampler", None)
    if sampler is None:
        sampler = getattr(dataloader, "sampler", None)
    if sampler is None:
        return None
    s = copy.deepcopy(sampler)
    if hasattr(s, "set_epoch"):
        s.set_epoch(0)
    return sum(1 for _ in s)


@torch.no_grad()
def zero_fraction(state_dict: Dict[str, torch.Tensor], names) -> float:
    """Fraction of exact zeros over the entries of ``state_dict[name]`` for ``names``."""
    zeros = sum(int((state_dict[n] == 0).sum()) for n in names)
    total = sum(state_dict[n].numel() for n in names)
    return zeros / max(total, 1)


def controlled_eta(ctrl: GateController, model: nn.Module, step: int, sparsity: float,
                   mode: str = "paper", band: float = 0.005) -> float:
    """This step's eta (and tau, set on the gates by ``ctrl``) under a controller ``mode``:

    - ``paper``: ``ctrl``'s eta (0 while the target is met);
    - ``hold``: the same, and the thresholds get no gradient while eta is 0, so the optimizer
      skips them, momentum included (the task gradient, Adam-normalised, would otherwise keep
      moving them by about one lr per step);
    - ``band``: as ``hold``, and ``-eta`` (the regulariser lowers the thresholds) while the
      sparsity exceeds the target by more than ``band``: weights drifting below frozen
      thresholds keep raising the sparsity otherwise.
    """
    if mode not in CONTROLLERS:
        raise ValueError(f"controller must be one of {CONTROLLERS}, got {mode!r}")
    eta = ctrl.update(model, step, sparsity)
    if mode == "band" and sparsity > ctrl.target_sparsity + band:
        eta = -ctrl.eta
    if mode != "paper":
        for t in search_parameters(model):
            t.requires_grad_(eta != 0)
    return eta


def search_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The parameters the regulariser trains: gate thresholds or NAS-CP architecture logits."""
    return gate_parameters(model) + arch_parameters(model)


def regularizer(model: nn.Module) -> torch.Tensor:
    """The normalised size term R of the model's searched masks (gates or NAS-CP)."""
    return nas_regularizer(model) if nas_owners(model) else gate_regularizer(model)


class PruneHooks:
    """The hooks ``icefall.asr.finetune.run`` calls (see the module docstring)."""

    def __init__(self) -> None:
        self.ctrl: Optional[GateController] = None
        self.batches_per_epoch: Optional[int] = None
        self.eta = 0.0  # this step's regulariser weight

    # --------------------------------------------------------------- before training
    def setup_model(self, model: nn.Module, params: AttributeDict) -> None:
        method = params.method
        if method in ("uniform", "mixed") and params.dense_ckpt is None:
            raise ValueError(f"--method {method} needs --dense-ckpt (a fine-tuned dense model)")
        if params.get("dense_ckpt") is not None:  # gates / nas: start from a fine-tuned model, head included
            ckpt = load_file(params.dense_ckpt)
            if ckpt.get("params"):  # ours: a pretraining checkpoint is refused by name, not by missing keys
                check_kind(model_config_of(ckpt, params.dense_ckpt), "asr", params.dense_ckpt, "--dense-ckpt")
            model.load_state_dict(ckpt["model"])
            logging.info(f"Loaded the dense model from {params.dense_ckpt}")
        patterns = resolve_patterns(params.patterns)
        if method == "gates":
            names = add_gates(model, patterns, threshold_init=params.threshold_init, tau=params.tau_start,
                              scale=params.get("gate_scale", "absolute"))
        elif method == "nas":  # the 6 linears of every Transformer block; --patterns does not apply
            names = add_nas_channels(model, params.nas_fractions, tau=params.tau_start)
            logging.info(f"NAS-CP extra parameters: {extra_parameter_counts(model)}")
        elif method == "uniform":
            names = uniform_magnitude_prune(model, patterns, params.target_sparsity)
        elif method == "mixed":
            if params.sparsity_from is None:
                raise ValueError("--method mixed needs --sparsity-from (sparsity.json of a gated run)")
            path = Path(params.sparsity_from)
            if not path.is_file():
                raise FileNotFoundError(f"--sparsity-from: {path} does not exist")
            names = mixed_sparsity_prune(model, json.loads(path.read_text())["layers"])
        else:
            names = []
        if names:
            overall, _ = current_sparsity(model)
            logging.info(f"{method}: {len(names)} masked layers, "
                         f"{sum(m.weight.numel() for m in masked_layers(model).values())} weights, "
                         f"sparsity now {100 * overall:.2f}%")

    def make_optimizer(self, model: nn.Module, params: AttributeDict):
        """ScaledAdam + Eden as in fine-tuning; with gates (NAS-CP), the thresholds (architecture
        logits) form a second group (Adam-like steps of ``threshold_lr``, no clipping)."""
        if params.method not in SEARCHED:
            return make_optimizer(model, params)
        from icefall.optim import Eden, ScaledAdam

        searched = search_parameters(model)
        ids = {id(t) for t in searched}
        main = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = [
            {"params": main},
            {"params": searched, "lr": params.get("arch_lr", 0.05) if params.method == "nas" else params.threshold_lr,
             "scalar_lr_scale": 1.0,
             "clipping_scale": None},
        ]
        optimizer = ScaledAdam(groups, lr=params.base_lr, clipping_scale=params.get("clipping_scale", 2.0))
        scheduler = Eden(optimizer, lr_batches=params.lr_batches, lr_epochs=params.lr_epochs,
                         warmup_batches=params.warmup_batches)
        return optimizer, scheduler

    # --------------------------------------------------------------- while training
    def wrap_compute_loss(self, compute_loss, train_dl=None):
        """Adds ``eta * frames * R`` to the (frame-summed) training loss of a gated model;
        ``train_dl`` (not yet iterated) gives the number of steps tau is annealed over."""
        self.batches_per_epoch = count_batches(train_dl) if train_dl is not None else None

        def loss_fn(model: nn.Module, batch: Dict, is_training: bool):
            loss, info = compute_loss(model, batch, is_training)
            if is_training and self.eta != 0:
                loss = loss + self.eta * info["frames"] * regularizer(unwrap_model(model))
            return loss, info

        return loss_fn

    def before_batch(self, trainer: Trainer) -> None:
        p = trainer.params
        model = unwrap_model(trainer.model)
        if not masked_layers(model):
            return
        if p.method in SEARCHED:
            if p.method == "nas":
                resample_gumbel(model)  # one draw per step, shared by a group's layers
            if self.ctrl is None:
                per_epoch = self.batches_per_epoch or 1
                total = max(1, per_epoch * p.num_epochs // p.accum_grad)
                self.ctrl = GateController(p.target_sparsity, p.eta, total, p.tau_start, p.tau_end)
                logging.info(f"Gates: tau annealed over {total} steps ({per_epoch} batches per epoch)")
            step = p.batch_idx_train // p.accum_grad
            sparsity, _ = current_sparsity(model)
            self.eta = controlled_eta(self.ctrl, model, step, sparsity, p.get("controller", "paper"),
                                      p.get("band", 0.005))
        if p.batch_idx_train % p.log_interval == 0:
            sparsity, _ = current_sparsity(model)
            msg = f"batch {p.batch_idx_train}: sparsity {100 * sparsity:.2f}%"
            if self.ctrl is not None:
                msg += f", eta {self.eta:g}, tau {self.ctrl.current_tau:.3g}"
            logging.info(msg)
            if trainer.tb_writer is not None:
                trainer.tb_writer.add_scalar("train/sparsity", sparsity, p.batch_idx_train)

    # --------------------------------------------------------------- after training
    def finish(self, trainer: Trainer) -> Dict[str, Any]:
        """Report, ``pruned.pt``, ``compact.pt`` and ``prune-summary.json`` (rank 0 only)."""
        if trainer.rank != 0:
            return {}
        return finish_pruning(unwrap_model(trainer.model), trainer.params)


def finish_pruning(model: nn.Module, params: AttributeDict) -> Dict[str, Any]:
    """Write the outputs of a pruning run into ``params.exp_dir`` (see the module docstring);
    returns the summary (also written as ``prune-summary.json``)."""
    exp_dir = Path(params.exp_dir)
    gated, per_layer = current_sparsity(model)
    summary: Dict[str, Any] = {"method": params.method, "target_sparsity": params.target_sparsity}
    if per_layer:
        title = f"{params.method}, target {100 * params.target_sparsity:.0f}%"
        write_sparsity_report(model, exp_dir, "sparsity", title)
        _write_json(exp_dir / "sparsity.json", {"overall": gated, "layers": per_layer})
    if nas_owners(model):
        summary["nas_kept_fraction"] = nas_summary(model)
        summary.update(extra_parameter_counts(model))
    folded = folded_state_dict(model)
    weights = [n for n, _ in model.named_parameters() if n in folded]  # thresholds are not weights
    keep = {k: v.clone() for k, v in folded.items()}
    atomic_torch_save({"model": keep, "params": to_plain(dict(params))}, exp_dir / "pruned.pt")
    if nas_owners(model):  # the compact file of NAS-CP has the chosen channels only
        narrow = copy.deepcopy(model)
        shapes = linear_shapes(narrow)
        summary["nas_channels"] = compact_channels(narrow)
        report = export_compact(narrow, exp_dir / "compact.pt", dense_shapes=shapes)
    else:
        report = export_compact(model, exp_dir / "compact.pt")
    summary.update(
        sparsity_pruned_layers=gated,
        sparsity_model=zero_fraction(folded, weights),
        num_masked_layers=len(per_layer),
        compact_bytes=report["compact_bytes"],
        dense_bytes=report["dense_bytes"],
        ratio=report["ratio"],
    )
    _write_json(exp_dir / "prune-summary.json", summary)
    logging.info(f"Pruning summary: {summary}")
    return summary


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def main(args: argparse.Namespace) -> None:
    if args.method in ("uniform", "mixed") and args.dense_ckpt is None:
        raise SystemExit(f"--method {args.method} needs --dense-ckpt")
    if args.method == "mixed" and args.sparsity_from is None:
        raise SystemExit("--method mixed needs --sparsity-from")
    finetune.main(args, hooks=PruneHooks())
