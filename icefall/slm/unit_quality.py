"""Quality of discrete units beside the unit LM's scores: ABX on one-hot units, PNMI, unit rates.

    python -m icefall.slm.unit_quality --cuts data/units/km100/mini_cuts_dev.jsonl.gz \\
        --key kmeans --num-units 100 --frame-rate 100 --out data/units/km100/quality-dev.json

The cuts carry units in ``cut.custom[key]`` (``icefall.ssl.labels``, ``extract_units.py``) and
phone alignments with speakers (the mini corpus's cuts do). ABX (``icefall.eval.abx``, angular
distance, within/across speaker) runs on one-hot vectors of the units, as ZeroSpeech does for
discrete codes: two frames are at distance 0 when they share a unit, else at the maximum. PNMI
and purities come from ``icefall.eval.pnmi``. Rates: units per second of audio before and after
collapsing repeats (what the LM sees), the mean run length in frames, and the units in use.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, Mapping, Sequence, Union

import torch

from icefall.eval.abx import abx_score, items_from_alignments
from icefall.eval.layers import cut_alignments
from icefall.eval.pnmi import pnmi_from_alignments
from icefall.ssl.units import deduplicate

UnitMap = Mapping[str, Union[torch.Tensor, Sequence[int]]]  # utt -> (T,) unit ids


def cut_units(cuts, key: str) -> Dict[str, torch.Tensor]:
    """utt -> (T,) int64 units from ``cut.custom[key]``; a cut without them raises ValueError."""
    out = {}
    for cut in cuts:
        if key not in (cut.custom or {}):
            raise ValueError(f"cut {cut.id} has no custom[{key!r}] units")
        out[cut.id] = torch.tensor([int(u) for u in cut.custom[key].split()], dtype=torch.long)
    return out


def one_hot(units: UnitMap, num_units: int) -> Dict[str, torch.Tensor]:
    """utt -> (T, num_units) float32 one-hot rows."""
    out = {}
    for utt, u in units.items():
        u = torch.as_tensor(u, dtype=torch.long)
        if u.numel() and (u.min() < 0 or u.max() >= num_units):
            raise ValueError(f"{utt}: units must lie in [0, {num_units}), got [{int(u.min())}, {int(u.max())}]")
        out[utt] = torch.nn.functional.one_hot(u, num_units).float()
    return out


def unit_rates(units: UnitMap, frame_rate: float) -> Dict[str, float]:
    """{"units_per_s", "dedup_units_per_s", "mean_run_frames", "units_used"} over all utterances."""
    frames = runs = 0
    used = set()
    for u in units.values():
        u = [int(x) for x in torch.as_tensor(u).tolist()]
        frames += len(u)
        runs += len(deduplicate(u))
        used.update(u)
    seconds = frames / frame_rate
    return {"units_per_s": frames / seconds if seconds else float("nan"),
            "dedup_units_per_s": runs / seconds if seconds else float("nan"),
            "mean_run_frames": frames / runs if runs else float("nan"),
            "units_used": len(used)}


def unit_quality(units: UnitMap, num_units: int, frame_rate: float, cuts: Sequence,
                 seed: int = 0) -> Dict[str, float]:
    """ABX (within, across) on one-hot units, PNMI and purities, and :func:`unit_rates` of
    ``units`` (at ``frame_rate`` Hz) against the phone alignments of ``cuts``."""
    phones, _, speakers = cut_alignments(cuts)
    units = {c.id: units[c.id] for c in cuts}
    abx = abx_score(one_hot(units, num_units), items_from_alignments(phones, speakers), frame_rate, seed=seed)
    q = pnmi_from_alignments(units, phones, frame_rate)
    return {"abx_within": abx["within"], "abx_across": abx["across"], "abx_items": abx["n_items"],
            "pnmi": q["pnmi"], "phone_purity": q["phone_purity"], "cluster_purity": q["cluster_purity"],
            **unit_rates(units, frame_rate)}


def main(argv=None) -> None:
    from lhotse import load_manifest

    from icefall.utils import atomic_write_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=Path, required=True, help="cuts with units and phone alignments")
    p.add_argument("--key", default="kmeans", help="cut.custom key of the units (kmeans | units)")
    p.add_argument("--num-units", type=int, required=True)
    p.add_argument("--frame-rate", type=float, required=True, help="units per second before dedup (fbank 100, models 50)")
    p.add_argument("--max-cuts", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    cuts = load_manifest(args.cuts)
    cuts = list(cuts.subset(first=args.max_cuts) if args.max_cuts else cuts)
    result = unit_quality(cut_units(cuts, args.key), args.num_units, args.frame_rate, cuts, args.seed)
    result.update(cuts=str(args.cuts), num_cuts=len(cuts), num_units=args.num_units)
    tmp = atomic_write_path(args.out)
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    logging.info(f"{args.cuts}: {result}")


if __name__ == "__main__":
    main()
