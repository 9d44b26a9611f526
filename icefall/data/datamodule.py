"""Data loaders for recipes: lazy cut manifests, ``DynamicBucketingSampler``, DDP sharding.

A recipe does::

    parser = argparse.ArgumentParser(); DataModule.add_arguments(parser)
    args = parser.parse_args(); dm = DataModule(args)
    cuts = dm.load_cuts("train-unlabeled")            # lazy: start-up cost independent of size
    cuts = cuts.filter(dm.cut_filter(label_rate=50))  # drop (count, log) bad cuts
    train_dl = dm.train_dataloader(cuts, dm.ssl_dataset(train=True),
                                   sampler_state_dict=checkpoint.get("sampler"))
    ...
    checkpoint["sampler"] = train_dl.sampler.state_dict()   # exact resume

Batches are dicts from :mod:`icefall.data.dataset`, or None when every cut of a batch was
unreadable (the trainer skips those). ``docs/data.md`` lists the options.
"""
from __future__ import annotations

import argparse
import logging
from itertools import islice
from pathlib import Path
from typing import Optional

from torch.utils.data import DataLoader

from icefall.data.dataset import AsrDataset, CutFilter, SslDataset
from icefall.utils import str2bool


def _shar_stream(cuts):
    """The lhotse Shar reader under a lazy CutSet's filters and maps, or None."""
    it = cuts
    while it is not None and not hasattr(it, "stateful_shuffle"):
        # CutSet -> .data; lhotse's LazyFilter/LazyMapper -> .iterator
        it = getattr(it, "data", None) if hasattr(it, "data") else getattr(it, "iterator", None)
    return it


class DataModule:
    """Builds datasets, samplers and data loaders from parsed ``args`` (see add_arguments)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("Data", "data loading (icefall.data.datamodule)")
        g.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"),
                       help="directory holding <prefix>_cuts_<split>.jsonl.gz")
        g.add_argument("--cuts-prefix", type=str, default=None,
                       help="corpus name prefix (mini, librispeech, ...); each recipe script sets it")
        g.add_argument("--shar-dir", type=Path, default=None,
                       help="stream the training split from the Lhotse Shar shards under this "
                            "directory (every cuts.*.jsonl.gz below it, with its field tars; "
                            "shard order reshuffled each epoch) instead of its jsonl manifest")
        g.add_argument("--max-duration", type=float, default=200.0,
                       help="maximum seconds of audio in a batch")
        g.add_argument("--bucketing-sampler", type=str2bool, default=True,
                       help="DynamicBucketingSampler (true) or DynamicCutSampler (false)")
        g.add_argument("--num-buckets", type=int, default=30)
        g.add_argument("--sampler-buffer-size", type=int, default=1000,
                       help="cuts held by the bucketing sampler; bounds start-up time")
        g.add_argument("--shuffle", type=str2bool, default=True)
        g.add_argument("--drop-last", type=str2bool, default=False,
                       help="drop incomplete batches of each bucket in training")
        g.add_argument("--num-workers", type=int, default=2, help="data loader processes")
        g.add_argument("--input-type", choices=["wav", "fbank"], default="fbank",
                       help="model input: 16 kHz waveform or 80-dim fbank at 100 Hz")
        g.add_argument("--on-the-fly-feats", type=str2bool, default=False,
                       help="compute fbank while loading instead of reading stored features")
        g.add_argument("--min-utt-duration", type=float, default=1.0,
                       help="drop shorter cuts (the encoder's minimum input)")
        g.add_argument("--max-utt-duration", type=float, default=30.0,
                       help="drop longer cuts")
        g.add_argument("--label-rate", type=float, default=50.0,
                       help="k-means label rate in Hz (cut.custom['kmeans'])")
        g.add_argument("--max-sample-duration", type=float, default=None,
                       help="SSL: randomly crop longer utterances to this many seconds")
        g.add_argument("--crop-to-shortest", type=str2bool, default=False,
                       help="SSL: crop each batch to its shortest item (no padding)")
        g.add_argument("--enable-spec-aug", type=str2bool, default=True,
                       help="ASR: SpecAugment on fbank in training")
        g.add_argument("--spec-aug-time-warp-factor", type=int, default=80,
                       help="ASR: SpecAugment time warp; < 1 disables it")
        g.add_argument("--vtlp", type=float, default=0.0,
                       help="ASR: vocal tract length perturbation of fbank in training, the "
                            "warp factor drawn per utterance from [1 - x, 1 + x] (0: off)")
        g.add_argument("--data-seed", type=int, default=42,
                       help="seed of the sampler shuffling and data loader workers")

    # ------------------------------------------------------------------ manifests
    def cuts_path(self, split: str) -> Path:
        a = self.args
        if not a.cuts_prefix:
            raise ValueError(f"--cuts-prefix is not set: which corpus are the cuts of split {split!r} in "
                             f"{a.manifest_dir}? (the recipe scripts set it: mini, librispeech, vietnamese, ...)")
        return Path(a.manifest_dir) / f"{a.cuts_prefix}_cuts_{split}.jsonl.gz"

    def load_cuts(self, split: str):
        """The split's cuts, read lazily (nothing is loaded until iterated); the training split
        from Shar shards when ``--shar-dir`` is given."""
        from lhotse import load_manifest_lazy

        a = self.args
        if getattr(a, "shar_dir", None) and split == getattr(a, "train_split", None):
            return self.shar_cuts()
        path = self.cuts_path(split)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run prepare.sh first")
        return load_manifest_lazy(path)

    def shar_cuts(self):
        """Cuts streamed from the Shar shards under ``--shar-dir`` (any depth, e.g. one folder
        per Libri-Light subset). Every shard holds its cuts and one tar per field (features,
        recording, ...); every rank reads all shards and its sampler keeps its own batches."""
        from lhotse import CutSet

        root = Path(self.args.shar_dir)
        cuts = sorted(root.rglob("cuts.*.jsonl.gz"))
        if not cuts:
            raise FileNotFoundError(f"{root}: no Shar shards (cuts.*.jsonl.gz) found")
        fields = {"cuts": cuts}
        for c in cuts:
            index = c.name[len("cuts."):-len(".jsonl.gz")]
            for tar in sorted(c.parent.glob(f"*.{index}.tar")):
                fields.setdefault(tar.name.split(".")[0], []).append(tar)
        for name, paths in fields.items():
            if len(paths) != len(cuts):
                raise ValueError(f"{root}: field {name!r} has {len(paths)} shards for {len(cuts)} cut shards")
        return CutSet.from_shar(fields=fields, shuffle_shards=True, stateful_shuffle=True,
                                seed=self.args.data_seed)

    def cut_filter(self, tokenizer=None, output_frame_rate: float = 25.0,
                   label_rate: Optional[float] = None) -> CutFilter:
        """A counting CutFilter with the duration limits of ``args``; with ``label_rate`` (SSL
        labels) also the label range ``[0, args.num_classes)`` when ``args`` has it."""
        num_classes = getattr(self.args, "num_classes", None) if label_rate is not None else None
        return CutFilter(min_duration=self.args.min_utt_duration,
                         max_duration=self.args.max_utt_duration, tokenizer=tokenizer,
                         output_frame_rate=output_frame_rate, label_rate=label_rate,
                         num_classes=num_classes)

    # ------------------------------------------------------------------ datasets
    def _extractor(self):
        if self.args.input_type == "fbank" and self.args.on_the_fly_feats:
            from icefall.data.features import make_fbank_extractor
            return make_fbank_extractor()
        return None

    def _maybe_drop_features(self, cuts):
        # On-the-fly fbank ignores stored features: drop them so the loader computes anew.
        if self.args.input_type == "fbank" and self.args.on_the_fly_feats:
            return cuts.drop_features()
        return cuts

    def ssl_dataset(self, train: bool = True, with_labels: bool = True) -> SslDataset:
        a = self.args
        return SslDataset(input_type=a.input_type, with_labels=with_labels,
                          label_rate=a.label_rate,
                          max_duration_s=a.max_sample_duration,
                          crop_to_shortest=a.crop_to_shortest and train,
                          random_crop=train, extractor=self._extractor())

    def asr_dataset(self, tokenizer, train: bool = True) -> AsrDataset:
        a = self.args
        spec_augment = None
        if train and a.enable_spec_aug and a.input_type == "fbank":
            from lhotse.dataset import SpecAugment
            spec_augment = SpecAugment(time_warp_factor=a.spec_aug_time_warp_factor,
                                       num_frame_masks=10, features_mask_size=27,
                                       num_feature_masks=2, frames_mask_size=100)
        perturb = None
        if train and a.input_type == "fbank" and a.vtlp > 0:
            from icefall.data.perturb import Vtlp
            perturb = Vtlp(a.vtlp)
        return AsrDataset(tokenizer, input_type=a.input_type, spec_augment=spec_augment,
                          extractor=self._extractor(), perturb=perturb)

    # ------------------------------------------------------------------ samplers, loaders
    def make_sampler(self, cuts, train: bool, world_size: Optional[int] = None,
                     rank: Optional[int] = None):
        """DynamicBucketingSampler over lazy ``cuts``; ``world_size``/``rank`` default to the
        torch.distributed group when initialised (each rank gets a disjoint share)."""
        from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

        a = self.args
        common = dict(max_duration=a.max_duration, shuffle=a.shuffle and train,
                      drop_last=a.drop_last and train, world_size=world_size, rank=rank,
                      seed=a.data_seed)
        if a.bucketing_sampler:
            # Bucket bins from a bounded prefix (lhotse would assert on a corpus smaller than
            # --num-buckets, and reading a prefix keeps start-up independent of corpus size).
            from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets

            prefix = list(islice(cuts, min(a.sampler_buffer_size, 10000)))
            if not prefix:
                raise ValueError("no cuts to sample from (all filtered out?)")
            bins = estimate_duration_buckets(prefix, min(a.num_buckets, len(prefix)))
            return DynamicBucketingSampler(
                cuts, duration_bins=bins, num_buckets=len(bins) + 1,
                buffer_size=a.sampler_buffer_size, **common)
        return DynamicCutSampler(cuts, shuffle_buffer_size=a.sampler_buffer_size, **common)

    def _loader(self, cuts, dataset, sampler) -> DataLoader:
        from lhotse.dataset.dataloading import make_worker_init_fn

        a = self.args
        worker_init_fn = make_worker_init_fn(seed=a.data_seed) if a.num_workers > 0 else None
        return DataLoader(dataset, sampler=sampler, batch_size=None,
                          num_workers=a.num_workers, persistent_workers=False,
                          worker_init_fn=worker_init_fn)

    def train_dataloader(self, cuts, dataset, sampler_state_dict: Optional[dict] = None,
                         world_size: Optional[int] = None,
                         rank: Optional[int] = None) -> DataLoader:
        """Shuffled, bucketed batches; ``sampler_state_dict`` (from
        ``dl.sampler.state_dict()``) resumes mid-epoch exactly where it stopped."""
        shar = _shar_stream(cuts)
        cuts = self._maybe_drop_features(cuts)
        sampler = self.make_sampler(cuts, train=True, world_size=world_size, rank=rank)
        if shar is not None:
            # A Shar stream counts its own passes to reshuffle shards; tie that count to the
            # trainer's epoch so a run resumed at epoch N reads the shards in epoch N's order.
            sampler_set_epoch = sampler.set_epoch

            def set_epoch(epoch: int) -> None:
                shar.epoch = epoch
                sampler_set_epoch(epoch)

            sampler.set_epoch = set_epoch
        if sampler_state_dict is not None:
            logging.info("Loading sampler state dict")
            sampler.load_state_dict(sampler_state_dict)
        return self._loader(cuts, dataset, sampler)

    def valid_dataloader(self, cuts, dataset, world_size: Optional[int] = None,
                         rank: Optional[int] = None) -> DataLoader:
        """Unshuffled, nothing dropped."""
        cuts = self._maybe_drop_features(cuts)
        return self._loader(cuts, dataset, self.make_sampler(cuts, train=False,
                                                             world_size=world_size, rank=rank))

    test_dataloader = valid_dataloader

