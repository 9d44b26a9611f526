"""80-dim log-mel filter banks at 100 Hz, computed once and stored compressed (lilcom).

Usage (``prepare.sh`` stage 3)::

    python -m icefall.data.features --manifest-dir data/manifests --fbank-dir data/fbank \\
        --prefix mini --splits train-unlabeled train-labeled dev test [--num-jobs 2]

For each split it reads ``<prefix>_{recordings,supervisions}_<split>.jsonl.gz``, writes the
features under ``<fbank-dir>/<prefix>_feats_<split>/`` (``LilcomChunkyWriter``) and the cuts
that point at them as ``<fbank-dir>/<prefix>_cuts_<split>.jsonl.gz``.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import torch

NUM_MEL_BINS = 80


def kaldifeat_available() -> bool:
    try:
        import kaldifeat  # noqa: F401
    except ImportError:
        return False
    return True


def make_fbank_extractor(num_mel_bins: int = NUM_MEL_BINS, device: str = "cpu",
                         use_kaldifeat: Optional[bool] = None):
    """A lhotse feature extractor: kaldifeat's fbank when installed (faster, GPU capable),
    otherwise lhotse's torch Fbank. Both: 25 ms window, 10 ms shift (100 Hz), 16 kHz input.
    ``extract(samples (N,), 16000)`` returns a (T, num_mel_bins) array."""
    from lhotse import Fbank, FbankConfig

    if use_kaldifeat is None:
        use_kaldifeat = kaldifeat_available()
    if use_kaldifeat:
        from lhotse import KaldifeatFbank, KaldifeatFbankConfig
        from lhotse.features.kaldifeat import KaldifeatMelOptions

        return KaldifeatFbank(KaldifeatFbankConfig(
            device=device, mel_opts=KaldifeatMelOptions(num_bins=num_mel_bins)))
    return Fbank(FbankConfig(num_mel_bins=num_mel_bins, device=device))


def compute_fbank_split(manifest_dir: Path, fbank_dir: Path, split: str, prefix: str,
                        num_jobs: int = 1) -> Path:
    """Fbank for one split; returns the written cut manifest. Skips an existing one.

    lhotse leaves out a cut whose audio cannot be read (missing, corrupt) after a warning of its
    own; those cuts are counted and named in one WARNING at the end (docs/data.md, "Bad input").
    """
    from lhotse import CutSet, LilcomChunkyWriter, load_manifest
    from lhotse.utils import fastcopy

    fbank_dir = Path(fbank_dir)
    out = fbank_dir / f"{prefix}_cuts_{split}.jsonl.gz"
    if out.is_file():
        logging.info(f"{out} exists, skipping")
        return out
    fbank_dir.mkdir(parents=True, exist_ok=True)
    # Eager: from_manifests looks up each recording's supervisions, a scan per lookup when
    # lazy (quadratic). Recording/supervision manifests of a split fit in memory.
    recs = load_manifest(Path(manifest_dir) / f"{prefix}_recordings_{split}.jsonl.gz")
    sups = load_manifest(Path(manifest_dir) / f"{prefix}_supervisions_{split}.jsonl.gz")
    # One cut per recording; keep its id equal to the recording/supervision id (lhotse
    # appends the channel) so cuts, supervisions and mini_phones_<split>.txt share keys.
    cuts = CutSet.from_cuts(fastcopy(c, id=c.recording_id)
                            for c in CutSet.from_manifests(recordings=recs, supervisions=sups))
    # One thread per job: the machines here have 2 cores, and jobs already run in parallel.
    torch.set_num_threads(1)
    # Worker processes cost ~10 s to start (imports): only worth it for big splits.
    if num_jobs > 1 and len(recs) < 500:
        num_jobs = 1
    executor = None
    if num_jobs > 1:
        # lhotse's default pool leaves torch's intra-op threads at the core count in each
        # worker: with 2 cores that oversubscribes (and spins). One thread per worker.
        executor = ProcessPoolExecutor(num_jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=torch.set_num_threads, initargs=(1,))
    wanted = [c.id for c in cuts]
    try:
        cuts = cuts.compute_and_store_features(
            extractor=make_fbank_extractor(),
            storage_path=fbank_dir / f"{prefix}_feats_{split}",
            num_jobs=num_jobs,
            executor=executor,
            storage_type=LilcomChunkyWriter,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    got = {c.id for c in cuts}
    skipped = [i for i in wanted if i not in got]
    if skipped:
        logging.warning(
            f"{split}: skipped {len(skipped)} of {len(wanted)} cuts whose audio could not be "
            f"read: {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}"
        )
    tmp = out.with_name(out.name.replace(".jsonl.gz", ".tmp.jsonl.gz"))
    cuts.to_file(tmp)
    tmp.replace(out)  # atomic: a crash never leaves a half-written manifest behind
    logging.info(f"wrote {out}: {len(got)} cuts, {len(skipped)} skipped (unreadable audio)")
    return out


def main(argv: Optional[Iterable[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", type=Path, required=True)
    p.add_argument("--fbank-dir", type=Path, required=True)
    p.add_argument("--prefix", required=True, help="corpus name: <prefix>_{recordings,supervisions}_<split>")
    p.add_argument("--splits", nargs="+", required=True)
    p.add_argument("--num-jobs", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    for split in args.splits:
        compute_fbank_split(args.manifest_dir, args.fbank_dir, split, args.prefix, args.num_jobs)


if __name__ == "__main__":
    main()
