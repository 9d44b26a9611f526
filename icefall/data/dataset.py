"""Map-style lhotse datasets (``dataset[cuts] -> batch``) for SSL pre-training and ASR.

Both read waveform (16 kHz) or 80-dim fbank (100 Hz; precomputed in the cut, or computed on
the fly) and return batch-first tensors with lengths:

- :class:`SslDataset`: inputs + k-means labels from ``cut.custom["kmeans"]`` (ints at
  ``label_rate``), padded with -100, with their lengths; optional random crop to a maximum
  length and crop-to-shortest batches (no padding at all).
- :class:`AsrDataset`: inputs + token ids from a tokenizer; SpecAugment when training.

Bad input never crashes an epoch: :class:`CutFilter` drops what metadata can reveal before
batching (counted and logged by reason), and the datasets drop a cut whose audio or features
cannot be read, with a warning naming it. ``docs/data.md`` has the whole policy.
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

SAMPLE_RATE = 16000
FBANK_RATE = 100  # frames per second
IGNORE_ID = -100  # label padding (torch's cross-entropy ignore_index)


class BadCutError(ValueError):
    """A cut that cannot be used; the message names the cut and the reason."""


def parse_labels(cut) -> torch.Tensor:
    """``cut.custom["kmeans"]`` ("3 3 17 ...") -> LongTensor (L,)."""
    custom = cut.custom or {}
    if "kmeans" not in custom:
        raise BadCutError(f"cut {cut.id}: no k-means labels (cut.custom['kmeans'])")
    try:
        return torch.tensor([int(x) for x in custom["kmeans"].split()], dtype=torch.long)
    except ValueError as e:
        raise BadCutError(f"cut {cut.id}: malformed k-means labels: {e}") from None


def check_num_labels(cut_id: str, num_labels: int, duration: float, label_rate: float,
                     tolerance: float) -> None:
    """Raises BadCutError unless ``num_labels`` matches ``duration`` within ``tolerance`` s."""
    if abs(num_labels / label_rate - duration) > tolerance:
        raise BadCutError(
            f"cut {cut_id}: {num_labels} labels at {label_rate} Hz cover "
            f"{num_labels / label_rate:.2f} s but the cut lasts {duration:.2f} s")


def load_inputs(cut, input_type: str, extractor=None) -> torch.Tensor:
    """One cut's model input: waveform (N,) float32 at 16 kHz, or fbank (T, 80) at 100 Hz.

    Fbank comes from the cut's stored features, else from ``extractor`` (on the fly).
    Raises BadCutError (naming the cut) for a wrong sampling rate or empty/non-finite input;
    I/O and decoding errors propagate as they are.
    """
    if input_type == "wav" or not cut.has_features:
        if cut.sampling_rate != SAMPLE_RATE:
            raise BadCutError(f"cut {cut.id}: sampling rate {cut.sampling_rate}, "
                              f"expected {SAMPLE_RATE}")
    if input_type == "wav":
        x = torch.from_numpy(cut.load_audio()[0])
    elif input_type == "fbank":
        if cut.has_features:
            x = torch.from_numpy(cut.load_features())
        else:
            if extractor is None:
                from icefall.data.features import make_fbank_extractor
                extractor = make_fbank_extractor()
            x = torch.from_numpy(cut.compute_features(extractor))
    else:
        raise ValueError(f"input_type must be 'wav' or 'fbank', not {input_type!r}")
    if x.shape[0] == 0 or not torch.isfinite(x).all():
        raise BadCutError(f"cut {cut.id}: empty or non-finite {input_type} input")
    return x.float()


def pad_batch(xs: Sequence[torch.Tensor], value: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pads (T_i, ...) tensors to (B, T_max, ...); returns (padded, lengths (B,))."""
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    out = xs[0].new_full((len(xs), int(lengths.max()), *xs[0].shape[1:]), value)
    for i, x in enumerate(xs):
        out[i, : x.shape[0]] = x
    return out, lengths


class CutFilter:
    """Predicate for ``CutSet.filter`` that drops unusable cuts before batching and counts
    them by reason (``self.dropped``); each drop is logged with the cut id (at WARNING for the
    first ``log_first`` of each reason, DEBUG after that).

    Checks: sampling rate; duration in [min_duration, max_duration] (min_duration: the
    encoder's minimum input); audio/feature files exist (``check_files``); for ASR
    (``tokenizer`` given) a non-empty transcript with no more tokens than encoder frames
    (duration * ``output_frame_rate``); for SSL (``label_rate`` given) labels present, integers
    in ``[0, num_classes)`` (when ``num_classes`` is given) and their count matching the
    duration within ``label_tolerance`` seconds.
    """

    def __init__(self, min_duration: float = 1.0, max_duration: float = 30.0,
                 sampling_rate: int = SAMPLE_RATE, check_files: bool = True, tokenizer=None,
                 output_frame_rate: float = 25.0, label_rate: Optional[float] = None,
                 label_tolerance: float = 0.1, log_first: int = 10,
                 num_classes: Optional[int] = None) -> None:
        self.min_duration, self.max_duration = min_duration, max_duration
        self.sampling_rate, self.check_files = sampling_rate, check_files
        self.tokenizer, self.output_frame_rate = tokenizer, output_frame_rate
        self.label_rate, self.label_tolerance = label_rate, label_tolerance
        self.num_classes = num_classes
        self.log_first = log_first
        self.dropped: Counter = Counter()  # reason -> number of distinct cuts
        self._seen: set = set()  # dropped ids: a cut read twice (bins estimate, epochs) counts once

    def reason(self, cut) -> Optional[str]:
        """Why ``cut`` must be dropped (a short key), or None to keep it."""
        if cut.sampling_rate != self.sampling_rate:
            return "sampling_rate"
        if cut.duration < self.min_duration:
            return "too_short"
        if cut.duration > self.max_duration:
            return "too_long"
        if self.check_files and not _files_exist(cut):
            return "missing_file"
        if self.tokenizer is not None:
            text = " ".join(s.text or "" for s in cut.supervisions).strip()
            if not text:
                return "empty_text"
            num_tokens = len(self.tokenizer.encode([text])[0])
            if num_tokens > cut.duration * self.output_frame_rate:
                return "text_too_long"
        if self.label_rate is not None:
            labels = (cut.custom or {}).get("kmeans")
            if not labels:
                return "no_labels"
            values = labels.split()
            if abs(len(values) / self.label_rate - cut.duration) > self.label_tolerance:
                return "label_mismatch"
            if self.num_classes is not None:
                try:
                    if not all(0 <= int(v) < self.num_classes for v in values):
                        return "label_out_of_range"
                except ValueError:
                    return "malformed_labels"
        return None

    def __call__(self, cut) -> bool:
        why = self.reason(cut)
        if why is None:
            return True
        if cut.id not in self._seen:
            self._seen.add(cut.id)
            self.dropped[why] += 1
            level = logging.WARNING if self.dropped[why] <= self.log_first else logging.DEBUG
            detail = f", --num-classes {self.num_classes}" if why == "label_out_of_range" else ""
            logging.log(level, f"CutFilter: dropping cut {cut.id} ({why}{detail}, "
                               f"duration {cut.duration:.2f} s)")
        return False

    def summary(self) -> str:
        return f"CutFilter dropped {sum(self.dropped.values())} cuts: {dict(self.dropped)}"


def _files_exist(cut) -> bool:
    """Whether the audio and feature files a cut points at exist (in-memory data: True)."""
    paths = []
    if cut.has_recording:
        paths += [s.source for s in cut.recording.sources if s.type == "file"]
    if cut.has_features:
        f = cut.features
        if f.storage_type.endswith("_files"):  # a directory with one file per array
            paths.append(os.path.join(f.storage_path, f.storage_key))
        elif not f.storage_type.startswith(("memory", "shar")):
            paths.append(f.storage_path)
    return all(os.path.exists(p) for p in paths)


class _CutLoader:
    """Shared by both datasets: loads each cut with ``load``, drops a failing one with a
    warning that names it (``num_dropped`` counts them), and keeps the rest."""

    def __init__(self) -> None:
        self.num_dropped = 0

    def load_all(self, cuts, load: Callable):
        kept, items = [], []
        for cut in cuts:
            try:
                items.append(load(cut))
            except Exception as e:  # noqa: BLE001 - any unreadable cut is dropped, not fatal
                self.num_dropped += 1
                logging.warning(f"dropping cut {cut.id} from the batch: "
                                f"{type(e).__name__}: {e}")
                continue
            kept.append(cut)
        return kept, items


class SslDataset(torch.utils.data.Dataset):
    """Batches for masked prediction (HuBERT/k2SSL) or self-distillation (SpidR/DinoSR).

    Returns a dict:

    - ``inputs``: (B, N) float waveform at 16 kHz, or (B, T, 80) fbank at 100 Hz, zero-padded
    - ``lengths``: (B,) long, valid samples/frames per item
    - ``labels``: (B, L) long, padded with -100 (only with ``with_labels``)
    - ``label_lengths``: (B,) long
    - ``cut_ids``: list of B cut ids; ``seconds``: float, audio seconds in the batch

    Label i covers input units ``[i * step, (i + 1) * step)`` with ``step = input rate /
    label_rate``; crops start at a multiple of ``step`` so that this stays true. Labels are
    not trimmed to the model's frame count (which depends on the front end): the loss uses
    ``min(frames, label_lengths)``, as fairseq's HuBERT does. ``max_duration_s`` crops longer
    items (randomly when ``random_crop``, else from the start); ``crop_to_shortest`` crops
    every item to the shortest one in the batch, so there is no padding.

    Returns None if no cut of the batch could be loaded (every drop is logged).
    """

    def __init__(self, input_type: str = "wav", with_labels: bool = True,
                 label_rate: float = 50.0, label_tolerance: float = 0.1,
                 max_duration_s: Optional[float] = None, crop_to_shortest: bool = False,
                 random_crop: bool = True, extractor=None) -> None:
        self.input_type, self.with_labels = input_type, with_labels
        self.label_rate, self.label_tolerance = label_rate, label_tolerance
        self.unit_rate = SAMPLE_RATE if input_type == "wav" else FBANK_RATE
        step = self.unit_rate / label_rate
        if with_labels and step != int(step):
            raise ValueError(f"input rate {self.unit_rate} is not a multiple of label rate "
                             f"{label_rate}")
        self.step = int(step) if with_labels else 1
        self.max_units = None if max_duration_s is None else int(max_duration_s * self.unit_rate)
        self.crop_to_shortest, self.random_crop = crop_to_shortest, random_crop
        self.extractor = extractor
        self._loader = _CutLoader()

    @property
    def num_dropped(self) -> int:
        return self._loader.num_dropped

    def _load(self, cut) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = load_inputs(cut, self.input_type, self.extractor)
        y = None
        if self.with_labels:
            y = parse_labels(cut)
            check_num_labels(cut.id, len(y), cut.duration, self.label_rate,
                             self.label_tolerance)
        return x, y

    def _crop(self, x: torch.Tensor, y: Optional[torch.Tensor], size: int):
        """Crops x to ``size`` units (a multiple of step) at a step-aligned offset."""
        size = size - size % self.step if size >= self.step else size
        if x.shape[0] <= size:
            return x, y
        num_starts = (x.shape[0] - size) // self.step + 1
        k = random.randrange(num_starts) if self.random_crop else 0
        start = k * self.step
        x = x[start: start + size]
        if y is not None:
            y = y[k: k + size // self.step]
        return x, y

    def __getitem__(self, cuts) -> Optional[Dict]:
        kept, items = self._loader.load_all(cuts, self._load)
        if not kept:
            return None
        xs = [x for x, _ in items]
        ys = [y for _, y in items]
        if self.crop_to_shortest:
            size = min(x.shape[0] for x in xs)
            if self.max_units is not None:
                size = min(size, self.max_units)
            pairs = [self._crop(x, y, size) for x, y in zip(xs, ys)]
            # Items already shorter than a step multiple keep their length: trim to equal.
            size = min(p[0].shape[0] for p in pairs)
            pairs = [(x[:size], y) for x, y in pairs]
        elif self.max_units is not None:
            pairs = [self._crop(x, y, self.max_units) for x, y in zip(xs, ys)]
        else:
            pairs = list(zip(xs, ys))
        inputs, lengths = pad_batch([x for x, _ in pairs])
        batch = {
            "inputs": inputs,
            "lengths": lengths,
            "cut_ids": [c.id for c in kept],
            "seconds": float(lengths.sum()) / self.unit_rate,
        }
        if self.with_labels:
            batch["labels"], batch["label_lengths"] = pad_batch([y for _, y in pairs], IGNORE_ID)
        return batch


class AsrDataset(torch.utils.data.Dataset):
    """Batches for CTC / transducer fine-tuning and decoding.

    Returns a dict:

    - ``inputs``: (B, T, 80) fbank (zero-padded) or (B, N) waveform; ``lengths``: (B,) long
    - ``tokens``: list of B lists of token ids (``tokenizer.encode`` of the transcript)
    - ``texts``: list of B transcripts; ``cut_ids``: list of B ids; ``seconds``: float

    ``perturb`` (a (T, F) -> (T, F) map applied to each utterance, e.g.
    :class:`icefall.data.perturb.Vtlp`) and ``spec_augment`` (e.g.
    ``lhotse.dataset.SpecAugment()``, on the padded batch) apply to fbank only; pass them for
    training and None for validation/decoding. Returns None if no cut of the
    batch could be loaded.
    """

    def __init__(self, tokenizer, input_type: str = "fbank", spec_augment=None,
                 extractor=None, perturb=None) -> None:
        self.tokenizer, self.input_type = tokenizer, input_type
        self.spec_augment, self.extractor = spec_augment, extractor
        self.perturb = perturb if input_type == "fbank" else None
        self.unit_rate = SAMPLE_RATE if input_type == "wav" else FBANK_RATE
        self._loader = _CutLoader()

    @property
    def num_dropped(self) -> int:
        return self._loader.num_dropped

    def _load(self, cut) -> Tuple[torch.Tensor, str]:
        text = " ".join(s.text or "" for s in cut.supervisions).strip()
        if not text:
            raise BadCutError(f"cut {cut.id}: empty transcript")
        return load_inputs(cut, self.input_type, self.extractor), text

    def __getitem__(self, cuts) -> Optional[Dict]:
        kept, items = self._loader.load_all(cuts, self._load)
        if not kept:
            return None
        feats = [x for x, _ in items]
        if self.perturb is not None:
            feats = [self.perturb(x) for x in feats]
        inputs, lengths = pad_batch(feats)
        if self.spec_augment is not None and self.input_type == "fbank":
            segments = torch.stack([torch.arange(len(lengths)), torch.zeros_like(lengths),
                                    lengths], dim=1).int()
            inputs = self.spec_augment(inputs, segments)
        texts = [t for _, t in items]
        return {
            "inputs": inputs,
            "lengths": lengths,
            "tokens": self.tokenizer.encode(texts),
            "texts": texts,
            "cut_ids": [c.id for c in kept],
            "seconds": float(lengths.sum()) / self.unit_rate,
        }
