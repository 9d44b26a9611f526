"""Quality of discrete units against frame-level phone labels (HuBERT paper, section IV-G).

With the joint distribution p(y, z) of phone y and unit z estimated from aligned frames:

* phone purity   = E_z[max_y p(y | z)] = sum_z max_y p(y, z)  (how pure a unit is)
* cluster purity = E_y[max_z p(z | y)] = sum_y max_z p(y, z)  (how concentrated a phone is)
* PNMI           = I(y; z) / H(y)                              (phone-normalised MI, in [0, 1])
"""
from typing import Dict, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from icefall.eval.abx import SILENCES, Alignment, segment_frames


def frame_phone_labels(
    segments: Sequence, num_frames: int, frame_rate: float, phone_ids: Mapping[str, int]
) -> np.ndarray:
    """Phone id per frame (the segment holding the frame centre), -1 where none: (num_frames,).

    Args:
      segments: [(start_s, end_s, phone)]; phones missing from ``phone_ids`` stay -1.
    """
    out = np.full(num_frames, -1, dtype=np.int64)
    for on, off, ph in segments:
        if ph in phone_ids:
            s, e = segment_frames(on, off, frame_rate)
            out[max(s, 0) : min(e, num_frames)] = phone_ids[ph]
    return out


def unit_quality(phones: np.ndarray, units: np.ndarray) -> Dict[str, float]:
    """Purities and PNMI from paired frame labels.

    Args:
      phones: (N,) int phone ids; units: (N,) int unit ids; entries < 0 in either are ignored.
    Returns:
      {"phone_purity", "cluster_purity", "pnmi", "frames"}.
    """
    phones, units = np.asarray(phones).ravel(), np.asarray(units).ravel()
    keep = (phones >= 0) & (units >= 0)
    phones, units = phones[keep], units[keep]
    if phones.size == 0:
        raise ValueError("no labelled frames")
    _, y = np.unique(phones, return_inverse=True)
    _, z = np.unique(units, return_inverse=True)
    joint = np.zeros((y.max() + 1, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= joint.sum()
    py, pz = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(py, pz)[nz])))
    h_y = float(-np.sum(py * np.log(py)))
    return {
        "phone_purity": float(joint.max(0).sum()),
        "cluster_purity": float(joint.max(1).sum()),
        "pnmi": mi / h_y if h_y > 0 else float("nan"),
        "frames": int(phones.size),
    }


def pnmi_from_alignments(
    units: Mapping[str, Union[np.ndarray, torch.Tensor, Sequence[int]]],
    alignments: Alignment,
    frame_rate: float,
    ignore: Iterable[str] = SILENCES,
) -> Dict[str, float]:
    """Unit quality over a corpus.

    Args:
      units: utt -> (T,) unit ids at ``frame_rate`` Hz (k-means labels or codebook argmax).
      alignments: utt -> [(start_s, end_s, phone)]; phones in ``ignore`` (silences) and
        frames outside every segment are left out.
    """
    ignore = set(ignore)
    phone_ids: Dict[str, int] = {}
    for segs in alignments.values():
        for _, _, ph in segs:
            if ph not in ignore:
                phone_ids.setdefault(ph, len(phone_ids))
    all_y, all_z = [], []
    for utt, segs in alignments.items():
        z = np.asarray(torch.as_tensor(units[utt]).cpu()).ravel()
        all_y.append(frame_phone_labels(segs, len(z), frame_rate, phone_ids))
        all_z.append(z)
    return unit_quality(np.concatenate(all_y), np.concatenate(all_z))
