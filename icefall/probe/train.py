"""Train one probe (a task on one frozen upstream) with the shared trainer, then score it.

    python -m icefall.probe.train --upstream zipformer/exp-pretrain/epoch-2.pt --task pr \\
        --manifest-dir data/fbank --cache-dir probe/cache/hubert --exp-dir probe/exp/hubert/pr

The upstream's layers of each split are computed once and cached (``--cache-dir``); the probe
(weighted layer sum + head, :mod:`icefall.probe.model`) trains for the task's fixed budget
(:data:`PROTOCOL`), with the trainer's checkpoints, exact resume and running-average model, and
the last model is scored on the task's test set. ``<exp-dir>/results.json`` holds the score, the
learned layer weights and the settings. A rerun of a finished probe only scores it again.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from icefall.probe.metrics import (
    average_precision,
    ctc_greedy,
    equal_error_rate,
    error_rate,
    maximum_twv,
    subsequence_dtw,
    twv_beta,
)
from icefall.probe.model import FrameHead, Probe, UtteranceHead
from icefall.probe.tasks import TASK_SPLITS, TASKS, WORD_SEP, Example, Task, build_task, qbe_relevance
from icefall.utils import AttributeDict, MetricsTracker, str2bool

#: The fixed protocol of each task: head, epochs over its training examples, Adam learning rate,
#: the reported metric (and whether higher is better). Batch size 16 everywhere.
PROTOCOL: Dict[str, Dict[str, Any]] = {
    "pr": dict(head="mlp", epochs=40, lr=2e-3, metric="PER%", higher=False),
    "asr": dict(head="mlp", epochs=40, lr=2e-3, metric="WER%", higher=False),
    "sid": dict(head="mean", epochs=40, lr=2e-3, metric="acc%", higher=True),
    "asv": dict(head="xvector", epochs=40, lr=2e-3, metric="EER%", higher=False),
    "ks": dict(head="mean", epochs=40, lr=2e-3, metric="acc%", higher=True),
    "rate": dict(head="xvector", epochs=40, lr=2e-3, metric="acc%", higher=True),
    "qbe": dict(head=None, epochs=0, lr=0.0, metric="MAP%", higher=True),
}
BATCH_SIZE = 16
HIDDEN = 256


# ------------------------------------------------------------------------------ data
def example_frames(ex: Example, feats: Tensor, rate: float) -> Tensor:
    """The (L, T, D) frames of ``ex`` out of its cut's features (at least one frame)."""
    total = feats.shape[1]
    start = min(int(math.floor(ex.start * rate)), total - 1)
    end = total if ex.end is None else min(max(int(math.ceil(ex.end * rate)), start + 1), total)
    return feats[:, start:end]


def collate(examples: Sequence[Example], features: Dict[str, Tensor], rate: float) -> Dict[str, Any]:
    """A batch: ``layers`` (L, B, T, D) zero-padded, ``lens`` (B,), ``targets`` (class indices
    (B,), or CTC ids concatenated with ``target_lens``)."""
    xs = [example_frames(e, features[e.cut_id], rate) for e in examples]
    lens = torch.tensor([x.shape[1] for x in xs])
    layers = torch.zeros(xs[0].shape[0], len(xs), int(lens.max()), xs[0].shape[2])
    for i, x in enumerate(xs):
        layers[:, i, : x.shape[1]] = x
    batch = {"layers": layers, "lens": lens, "examples": list(examples)}
    if isinstance(examples[0].target, tuple):
        batch["targets"] = torch.tensor([t for e in examples for t in e.target], dtype=torch.long)
        batch["target_lens"] = torch.tensor([len(e.target) for e in examples])
    else:
        batch["targets"] = torch.tensor([e.target for e in examples], dtype=torch.long)
    return batch


class ExampleLoader:
    """Batches of examples, reshuffled each epoch with ``seed + epoch``; it is its own sampler
    (``set_epoch``, ``state_dict``/``load_state_dict``: the position in the epoch), so that the
    trainer's mid-epoch resume continues exactly."""

    def __init__(self, examples: Sequence[Example], features: Dict[str, Tensor], rate: float,
                 batch_size: int = BATCH_SIZE, shuffle: bool = True, seed: int = 0):
        if not examples:
            raise ValueError("no examples to train on")
        self.examples, self.features, self.rate = list(examples), features, rate
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = self.position = self._resume_at = 0

    @property
    def sampler(self) -> "ExampleLoader":
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self._resume_at = state["epoch"], state["position"]

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def __iter__(self):
        n = len(self.examples)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
                 if self.shuffle else list(range(n)))
        start, self._resume_at = self._resume_at, 0
        for b in range(start, len(self)):
            self.position = b + 1
            yield collate([self.examples[i] for i in order[b * self.batch_size:(b + 1) * self.batch_size]],
                          self.features, self.rate)


# ------------------------------------------------------------------------------ model and loss
def make_probe(task: Task, num_layers: int, dim: int, head: str, hidden: int = HIDDEN, layer_norm: bool = False) -> Probe:
    """The probe of ``task`` over ``num_layers`` layers of width ``dim``; ``head``: "linear" or
    "mlp" (frame level, CTC over the task's symbols), "mean" or "xvector" (utterance level)."""
    if task.kind == "ctc":
        if head not in ("linear", "mlp"):
            raise ValueError(f"task {task.name} is frame level: --head linear or mlp, not {head!r}")
        return Probe(num_layers, FrameHead(dim, len(task.symbols), 0 if head == "linear" else hidden), layer_norm)
    if head not in ("mean", "xvector"):
        raise ValueError(f"task {task.name} is utterance level: --head mean or xvector, not {head!r}")
    return Probe(num_layers, UtteranceHead(dim, len(task.symbols), head, hidden), layer_norm)


def compute_loss(model: Probe, batch: Dict[str, Any], is_training: bool) -> Tuple[Tensor, MetricsTracker]:
    """CTC loss summed over utterances (normalised by frames), or cross entropy summed over
    examples (normalised by examples)."""
    out = model(batch["layers"], batch["lens"])
    info = MetricsTracker()
    if "target_lens" in batch:
        log_probs = out.log_softmax(-1).transpose(0, 1)  # (T, B, V)
        loss = F.ctc_loss(log_probs, batch["targets"], batch["lens"], batch["target_lens"], blank=0,
                          reduction="sum", zero_infinity=True)
        info["frames"] = int(batch["lens"].sum())
    else:
        loss = F.cross_entropy(out, batch["targets"], reduction="sum")
        info["frames"] = len(batch["targets"])
        info["errors"] = int((out.argmax(-1) != batch["targets"]).sum())
    info["loss"] = loss.detach().item()
    return loss, info


def train_probe(task: Task, features: Dict[str, Tensor], rate: float, params: AttributeDict) -> Probe:
    """Train the probe of ``task`` on ``features`` with :class:`icefall.trainer.Trainer` (resuming
    from ``params.exp_dir`` when it holds checkpoints); returns the last model (or the running
    average with ``params.use_averaged_model``), in eval mode."""
    from icefall.trainer import Trainer

    first = next(iter(features.values()))
    torch.manual_seed(params.seed)
    model = make_probe(task, first.shape[0], first.shape[2], params.head, params.hidden, params.layer_norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.base_lr)
    loader = ExampleLoader(task.train, features, rate, params.batch_size, seed=params.seed)
    trainer = Trainer(params, model, optimizer, None, compute_loss, loader)
    trainer.train()
    if params.get("use_averaged_model"):
        model.load_state_dict({k: v.to(torch.float32) for k, v in trainer.model_avg.state_dict().items()})
    return model.eval()


# ------------------------------------------------------------------------------ scoring
@torch.no_grad()
def predict(model: Probe, examples: Sequence[Example], features: Dict[str, Tensor], rate: float,
            what: str = "forward") -> List[Any]:
    """Per example: CTC token ids, a class index, or (``what="embed"``) an embedding."""
    out: List[Any] = []
    loader = ExampleLoader(examples, features, rate, BATCH_SIZE, shuffle=False)
    for batch in loader:
        if what == "embed":
            out.extend(model.embed(batch["layers"], batch["lens"]))
            continue
        y = model(batch["layers"], batch["lens"])
        out.extend(ctc_greedy(y, batch["lens"]) if y.dim() == 3 else y.argmax(-1).tolist())
    return out


def score_probe(task: Task, model: Probe, features: Dict[str, Tensor], rate: float) -> Dict[str, float]:
    """The task's metric on its test examples (percentages)."""
    if task.kind == "ctc":
        hyps = [[task.symbols[i] for i in ids] for ids in predict(model, task.test, features, rate)]
        if task.name == "pr":
            return {"PER%": error_rate([e.ref for e in task.test], hyps)}
        words = ["".join(h).replace(WORD_SEP, " ").split() for h in hyps]
        return {"WER%": error_rate([e.ref for e in task.test], words),
                "CER%": error_rate([list(WORD_SEP.join(e.ref)) for e in task.test], [list(WORD_SEP.join(w)) for w in words])}
    if task.kind == "class":
        pred = predict(model, task.test, features, rate)
        return {"acc%": 100.0 * float(np.mean([p == e.target for p, e in zip(pred, task.test)]))}
    emb = dict(zip([e.cut_id for e in task.test], predict(model, task.test, features, rate, "embed")))
    scores = [float(F.cosine_similarity(emb[a], emb[b], dim=0)) for _, a, b in task.trials]
    return {"EER%": 100.0 * equal_error_rate(scores, [t for t, _, _ in task.trials])}


def qbe_layer_scores(queries: Sequence[Example], cuts: Sequence, features: Dict[str, Tensor], rate: float,
                     layer: int, beta: float) -> Dict[str, float]:
    """MAP and MTWV of ``queries`` searched by subsequence DTW in every cut of ``cuts`` but the
    query's own, on one layer."""
    docs = [features[c.id][layer] for c in cuts]
    all_scores, all_rel = [], []
    for q in queries:
        keep = [i for i, c in enumerate(cuts) if c.id != q.cut_id]
        query = example_frames(q, features[q.cut_id], rate)[layer]
        scores = (-subsequence_dtw(query, [docs[i] for i in keep])).numpy()
        rel = qbe_relevance(q, [cuts[i] for i in keep])
        all_scores.append(scores)
        all_rel.append(rel)
    aps = [average_precision(s, r) for s, r in zip(all_scores, all_rel) if any(r)]
    mtwv, _ = maximum_twv(all_scores, all_rel, beta)
    return {"MAP%": 100.0 * float(np.mean(aps)), "MTWV": mtwv}


def score_qbe(task: Task, cuts: Dict[str, Sequence], features: Dict[str, Dict[str, Tensor]], rate: float,
              beta: float) -> Dict[str, Any]:
    """QbE: the layer with the best dev MAP, and test MAP/MTWV on that layer."""
    num_layers = next(iter(features["train"].values())).shape[0]
    dev = [qbe_layer_scores(task.train, cuts["train"], features["train"], rate, l, beta)["MAP%"]
           for l in range(num_layers)]
    best = int(np.argmax(dev))
    test = qbe_layer_scores(task.test, cuts["test"], features["test"], rate, best, beta)
    return {**test, "layer": best, "dev_map_per_layer": dev}


# ------------------------------------------------------------------------------ command line
def get_parser(**defaults) -> argparse.ArgumentParser:
    from icefall.trainer import add_training_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    g = parser.add_argument_group("probe")
    g.add_argument("--upstream", required=True, help="'fbank', or any checkpoint icefall.models.load_model reads")
    g.add_argument("--task", required=True, choices=TASKS)
    g.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    g.add_argument("--prefix", default="mini", help="cuts are <manifest-dir>/<prefix>_cuts_<split>.jsonl.gz")
    g.add_argument("--speakers", type=Path, default=Path("data/manifests/mini_speakers.tsv"), help="speaker table (task rate)")
    g.add_argument("--cache-dir", type=Path, default=None, help="cache the upstream's features here (one file per split)")
    g.add_argument("--max-cuts", type=int, default=None, help="use the first N cuts of each split (quick runs)")
    g.add_argument("--head", default=None, help="linear|mlp (pr, asr), mean|xvector (others); default: PROTOCOL")
    g.add_argument("--hidden", type=int, default=HIDDEN)
    g.add_argument("--layer-norm", type=str2bool, default=False, help="layer-normalise each layer before the weighted sum")
    g.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    g.add_argument("--use-averaged-model", type=str2bool, default=False, help="score the running-average model")
    g.add_argument("--max-queries", type=int, default=20, help="QbE queries per split")
    g.add_argument("--twv-p-target", type=float, default=0.0008)
    g.add_argument("--twv-c-miss", type=float, default=100.0)
    g.add_argument("--twv-c-fa", type=float, default=1.0)
    g.add_argument("--device", default="cpu")
    # the budget comes from PROTOCOL unless given
    parser.set_defaults(num_epochs=None, base_lr=None, tensorboard=False, log_interval=20, save_every_n=100000,
                        average_period=10, **defaults)
    return parser


def write_trials(trials: Sequence[Tuple[int, str, str]], path: Path) -> None:
    """A Kaldi-style trials file: ``<cut a> <cut b> target|nontarget`` per line (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    tmp.write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n" for t, a, b in trials))
    os.replace(tmp, path)


def load_cuts(manifest_dir: Path, prefix: str, split: str, max_cuts: Optional[int] = None) -> List:
    from lhotse import load_manifest

    path = manifest_dir / f"{prefix}_cuts_{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest (check --manifest-dir and --prefix)")
    cuts = list(load_manifest(path))
    return cuts[:max_cuts] if max_cuts else cuts


def apply_protocol(args: argparse.Namespace) -> Dict[str, Any]:
    """Fill the head, epochs and learning rate that ``args`` leaves unset from the task's
    :data:`PROTOCOL` entry (in place); returns that entry."""
    proto = PROTOCOL[args.task]
    args.head = args.head or proto["head"]
    args.num_epochs = args.num_epochs or proto["epochs"]
    args.base_lr = args.base_lr or proto["lr"]
    return proto


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Build the task, train (or resume) its probe, score it, write ``results.json``."""
    from icefall.probe.tasks import read_speaker_table
    from icefall.probe.upstream import load_upstream, split_features

    proto = apply_protocol(args)
    splits = dict(zip(("train", "test"), TASK_SPLITS[args.task]))
    cuts = {k: load_cuts(args.manifest_dir, args.prefix, s, args.max_cuts) for k, s in splits.items()}
    speakers = read_speaker_table(args.speakers) if args.task == "rate" else None
    task = build_task(args.task, cuts["train"], cuts["test"], speakers, seed=args.seed, max_queries=args.max_queries)
    upstream = load_upstream(args.upstream, args.device)
    feats = {k: split_features(upstream, cuts[k], args.cache_dir / f"{s}.pt" if args.cache_dir else None)
             for k, s in splits.items()}
    result: Dict[str, Any] = {"task": args.task, "upstream": str(args.upstream), "splits": splits,
                              "train_examples": len(task.train), "test_examples": len(task.test)}
    if task.kind == "qbe":
        beta = twv_beta(args.twv_p_target, args.twv_c_miss, args.twv_c_fa)
        result.update(score_qbe(task, cuts, feats, upstream.frame_rate, beta), beta=beta)
    else:
        params = AttributeDict(vars(args))
        params.exp_dir = Path(args.exp_dir)
        model = train_probe(task, feats["train"], upstream.frame_rate, params)
        result.update(score_probe(task, model, feats["test"], upstream.frame_rate))
        result["layer_weights"] = model.layer_weights().tolist()
        result.update(head=args.head, epochs=args.num_epochs, lr=args.base_lr, batch_size=args.batch_size)
        if task.kind != "ctc":
            result["labels"] = task.symbols
    if task.trials:
        write_trials(task.trials, Path(args.exp_dir) / "trials-test.txt")
    result["metric"] = proto["metric"]
    result["value"] = result[proto["metric"]]
    out = Path(args.exp_dir) / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp{os.getpid()}.results.json")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    logging.info(f"{args.task} on {args.upstream}: {proto['metric']} {result['value']:.2f} -> {out}")
    return result


def main(argv: Optional[Sequence[str]] = None, **defaults) -> Dict[str, Any]:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    return run(get_parser(**defaults).parse_args(argv))


if __name__ == "__main__":
    main()
