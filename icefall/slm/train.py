"""Training a unit LM (``icefall.slm.lm``) with the shared trainer: checkpoints, exact resume
(``--start-epoch``/``--start-batch``/auto-resume) and the running-average model, like every other
recipe.

    python -m icefall.slm.train --train-units data/units-km100/units_train-unlabeled.txt \\
        --valid-units data/units-km100/units_dev.txt --num-units 100 --exp-dir slm/exp

Data: unit files (``<utt> <units...>``, deduplicated by ``extract_units.py``) or cut manifests
with units (deduplicated on reading; ``icefall.slm.lm.load_units``). Sequences longer
than ``--max-len`` tokens are cut into consecutive pieces. Batches hold at most ``--max-tokens``
tokens, padding included; their order is a seeded shuffle per epoch (``set_epoch``), so resuming
mid-epoch replays the same batches. Optimizer: AdamW with linear warm-up then inverse-sqrt decay
(fairseq's LM schedule).
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from icefall.dist import launch
from icefall.slm.lm import UnitLM, UnitLMConfig, encode_batch, load_units, write_config_json
from icefall.trainer import Trainer, add_training_arguments, setup_run
from icefall.utils import AttributeDict, MetricsTracker, num_params


def split_long(seqs: Sequence[Sequence[int]], max_units: int) -> List[np.ndarray]:
    """int32 arrays of at most ``max_units`` units: longer sequences are cut into consecutive
    pieces (views, no copies)."""
    out = []
    for s in seqs:
        s = np.asarray(s, dtype=np.int32)
        out += [s[i: i + max_units] for i in range(0, max(len(s), 1), max_units)]
    return out


class UnitDataset(torch.utils.data.Dataset):
    """Unit sequences; ``dataset[list of indices]`` is a batch ``{"tokens", "lengths"}``
    (:func:`icefall.slm.lm.encode_batch`), the sampler-gives-indices layout of lhotse."""

    def __init__(self, seqs: Sequence[Sequence[int]], config: UnitLMConfig):
        self.seqs = split_long(seqs, config.max_len - 2)
        self.config = config

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        tokens, lengths = encode_batch([self.seqs[i] for i in indices], self.config)
        return {"tokens": tokens, "lengths": lengths}


class TokenBatchSampler(torch.utils.data.Sampler):
    """Lists of indices with at most ``max_tokens`` tokens per batch (longest x count). With
    ``shuffle``, epoch e draws its order from ``seed + e`` (``set_epoch``); batches are packed
    from length-sorted pools of ``pool`` batches, so little is padding. Under DDP each rank takes
    every ``world_size``-th batch of the same list (the remainder is dropped: equal counts)."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, shuffle: bool = True,
                 seed: int = 0, pool: int = 50, rank: int = 0, world_size: int = 1):
        if max(lengths) > max_tokens:
            raise ValueError(f"--max-tokens {max_tokens} is smaller than the longest sequence "
                             f"({max(lengths)} tokens)")
        self.lengths, self.max_tokens = list(lengths), max_tokens
        self.shuffle, self.seed, self.pool, self.epoch = shuffle, seed, pool, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pack(self, order: List[int]) -> List[List[int]]:
        batches, cur, longest = [], [], 0
        for i in order:
            n = max(longest, self.lengths[i])
            if cur and n * (len(cur) + 1) > self.max_tokens:
                batches.append(cur)
                cur, n = [], self.lengths[i]
            cur.append(i)
            longest = n
        return batches + ([cur] if cur else [])

    def batches(self) -> List[List[int]]:
        """This rank's batches of the current epoch."""
        every = self._all_batches()
        if self.world_size > 1:
            every = every[: len(every) // self.world_size * self.world_size][self.rank:: self.world_size]
        return every

    def _all_batches(self) -> List[List[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            return self._pack(sorted(range(n), key=lambda i: self.lengths[i]))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g).tolist()
        size = max(1, self.pool * self.max_tokens // max(1, int(sum(self.lengths) / n)))
        batches = []
        for b in range(0, n, size):
            batches += self._pack(sorted(order[b: b + size], key=lambda i: self.lengths[i]))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def unit_dataloader(seqs: Sequence[Sequence[int]], config: UnitLMConfig, max_tokens: int,
                    shuffle: bool, seed: int = 0, rank: int = 0,
                    world_size: int = 1) -> torch.utils.data.DataLoader:
    ds = UnitDataset(seqs, config)
    sampler = TokenBatchSampler([len(s) + 2 for s in ds.seqs], max_tokens, shuffle, seed,
                                rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None, num_workers=0)


def compute_loss(model: UnitLM, batch: Dict[str, torch.Tensor], is_training: bool):
    """Summed NLL of a batch; ``frames`` = predicted tokens (so the logged loss is per token)."""
    device = next(model.parameters()).device
    with torch.set_grad_enabled(is_training):
        nll, count = model(batch["tokens"].to(device), batch["lengths"].to(device))
    info = MetricsTracker()
    info["frames"] = count
    info["loss"] = nll.detach().item()
    info["utterances"] = int(batch["lengths"].numel())
    return nll, info


def inverse_sqrt_schedule(warmup_batches: int):
    """lr factor: linear warm-up to 1 over ``warmup_batches``, then sqrt(warmup / step)."""
    def factor(step: int) -> float:
        step = step + 1
        return step / warmup_batches if step < warmup_batches else math.sqrt(warmup_batches / step)
    return factor


def make_optimizer(model: torch.nn.Module, params: AttributeDict):
    opt = torch.optim.AdamW(model.parameters(), lr=params.base_lr, betas=(0.9, 0.98),
                            weight_decay=params.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, inverse_sqrt_schedule(params.warmup_batches))


def model_config(params: AttributeDict) -> UnitLMConfig:
    return UnitLMConfig(num_units=params.num_units, num_layers=params.num_layers, dim=params.dim,
                        num_heads=params.num_heads, ffn_dim=params.ffn_dim, max_len=params.max_len,
                        dropout=params.dropout)


def check_units(seqs: Dict[str, np.ndarray], num_units: int, path: Path) -> None:
    top = max((int(s.max()) for s in seqs.values() if len(s)), default=-1)
    if top >= num_units:
        raise ValueError(f"{path}: unit {top} >= --num-units {num_units}")


def get_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser)
    g = parser.add_argument_group("unit LM")
    g.add_argument("--train-units", type=Path, required="train_units" not in defaults,
                   help="units to train on: units_<split>.txt, or cuts (.jsonl.gz) with custom[--units-key]")
    g.add_argument("--valid-units", type=Path, default=None, help="units to validate on (same kinds)")
    g.add_argument("--units-key", default="kmeans", help="cut.custom key of the units in a cut manifest (kmeans | units)")
    g.add_argument("--num-units", type=int, required="num_units" not in defaults, help="unit vocabulary (k-means clusters / codebook size)")
    g.add_argument("--num-layers", type=int, default=4)
    g.add_argument("--dim", type=int, default=256)
    g.add_argument("--num-heads", type=int, default=4)
    g.add_argument("--ffn-dim", type=int, default=1024)
    g.add_argument("--max-len", type=int, default=1024, help="tokens per sequence (BOS/EOS included); longer ones are cut")
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch, padding included")
    g.add_argument("--warmup-batches", type=int, default=500)
    g.add_argument("--weight-decay", type=float, default=0.01)
    parser.set_defaults(base_lr=5e-4, num_epochs=10, save_every_n=1000, valid_interval=1000,
                        average_period=10, log_interval=50)
    parser.set_defaults(**defaults)
    return parser


def run(rank: int, world_size: int, args: argparse.Namespace) -> None:
    params = AttributeDict(vars(args))
    config = model_config(params)
    train = load_units(params.train_units, params.units_key)
    check_units(train, config.num_units, params.train_units)
    device = setup_run(params, rank, world_size, "train-unit-lm")
    params.model_config = config.to_dict()  # in every checkpoint: load_unit_lm rebuilds from it
    if rank == 0:
        write_config_json(params.exp_dir, config)
    torch.manual_seed(params.seed)
    model = UnitLM(config)
    logging.info(f"Unit LM: {num_params(model) / 1e6:.2f}M parameters, {config}")
    optimizer, scheduler = make_optimizer(model, params)
    train_dl = unit_dataloader(list(train.values()), config, params.max_tokens, shuffle=True,
                               seed=params.seed, rank=rank, world_size=world_size)
    valid_dl = None
    if params.valid_units is not None:
        valid = load_units(params.valid_units, params.units_key)
        check_units(valid, config.num_units, params.valid_units)
        valid_dl = unit_dataloader(list(valid.values()), config, params.max_tokens,
                                   shuffle=False, rank=rank, world_size=world_size)
    trainer = Trainer(params, model, optimizer, scheduler, compute_loss, train_dl, valid_dl,
                      device=device, rank=rank, world_size=world_size)
    trainer.train()


def main(args: Optional[argparse.Namespace] = None) -> None:
    launch(run, args if args is not None else get_parser().parse_args())


if __name__ == "__main__":
    main()
