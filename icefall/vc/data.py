"""Utterances of a corpus for kNN-VC, and the vocoder's prematched training data.

    utts = read_utterances("data/fbank/mini_cuts_train-unlabeled.jsonl.gz", max_per_speaker=20)
    data = vocoder_training_data(FeatureExtractor("fbank"), utts, k=4)   # a VocoderData
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from icefall.vc.knn import prematch
from icefall.vc.vocoder import VocoderData

SAMPLE_RATE = 16000


@dataclass
class Utterance:
    """One utterance: ``wav`` (N,) float32 at 16 kHz."""

    id: str
    speaker: str
    text: str
    wav: Tensor


def read_utterances(cuts_path: Union[str, Path], max_per_speaker: Optional[int] = None,
                    speakers: Optional[Sequence[str]] = None) -> List[Utterance]:
    """The cuts of a lhotse manifest with their audio (paths as the manifest has them: run from
    the recipe directory), the first ``max_per_speaker`` of each speaker in manifest order."""
    from lhotse import load_manifest_lazy

    cuts_path = Path(cuts_path)
    if not cuts_path.is_file():
        raise FileNotFoundError(f"{cuts_path}: no such cut manifest (run prepare.sh, or give --manifest-dir)")
    count: Dict[str, int] = defaultdict(int)
    out = []
    for cut in load_manifest_lazy(cuts_path):
        sup = cut.supervisions[0] if cut.supervisions else None
        spk = (sup.speaker if sup is not None and sup.speaker else cut.id.split("-")[0])
        if (speakers is not None and spk not in speakers) or (max_per_speaker is not None and count[spk] >= max_per_speaker):
            continue
        if cut.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{cuts_path}: cut {cut.id} is at {cut.sampling_rate} Hz, not {SAMPLE_RATE}")
        count[spk] += 1
        wav = torch.as_tensor(cut.load_audio()[0], dtype=torch.float32)
        out.append(Utterance(cut.id, spk, sup.text if sup is not None else "", wav))
    if not out:
        raise ValueError(f"{cuts_path}: no utterances (speakers {speakers})")
    return out


def by_speaker(utts: Sequence[Utterance]) -> Dict[str, List[Utterance]]:
    """Utterances grouped by speaker, speakers sorted, manifest order kept within each."""
    groups: Dict[str, List[Utterance]] = defaultdict(list)
    for u in utts:
        groups[u.speaker].append(u)
    return dict(sorted(groups.items()))


def vocoder_training_data(extractor, utts: Sequence[Utterance], k: int = 4,
                          segment_seconds: float = 0.32) -> VocoderData:
    """Features of ``utts`` by ``extractor`` (a :class:`~icefall.vc.features.FeatureExtractor`),
    prematched with ``k`` neighbours among each speaker's other utterances (``k=0``: the plain
    features), paired with the waveforms, in ``segment_seconds`` crops."""
    feats = [extractor(u.wav) for u in utts]
    if k > 0:
        feats = prematch(feats, [u.speaker for u in utts], k)
    frames = max(1, int(round(segment_seconds * SAMPLE_RATE / extractor.hop_length)))
    logging.info(f"vocoder data: {len(utts)} utterances, {sum(f.shape[0] for f in feats)} frames of "
                 f"{extractor.name} (prematched k={k}), {frames}-frame segments")
    return VocoderData(feats, [u.wav for u in utts], extractor.hop_length, frames)
