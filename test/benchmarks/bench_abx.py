#!/usr/bin/env python3
"""Phone ABX speed: ours against fastabx (the ZeroSpeech reference) on the same items and features.

fastabx needs Python >= 3.12, so it runs in its own interpreter (``--fastabx-python``, or the
FASTABX_PYTHON environment variable; skipped when neither is given). Both sides run with one
thread, within and across speaker as separate calls (fastabx computes one task per call).

    # the mini dev set (run from egs/mini/SSL after prepare.sh), fbank and a 768-d projection
    python ../../../test/benchmarks/bench_abx.py --cuts data/fbank/mini_cuts_dev.jsonl.gz \\
        --fastabx-python /tmp/fx/bin/python
    python ../../../test/benchmarks/bench_abx.py --cuts data/fbank/mini_cuts_dev.jsonl.gz --dim 768 ...
    # synthetic items (no data needed)
    python test/benchmarks/bench_abx.py --items 3000 --dim 768

A fastabx environment: ``python3.12 -m venv /tmp/fx && /tmp/fx/bin/pip install fastabx``.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench_unit_eval import synthetic_items
from icefall.eval.abx import abx_score, read_item_file, write_item_file

FASTABX_SNIPPET = """
import json, sys, time, torch
torch.set_num_threads(1)
from fastabx import zerospeech_abx
item, root, rate = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
for speaker in ("within", "across"):
    t = time.perf_counter()
    score = zerospeech_abx(item, root, max_size_group=10, max_x_across=5, speaker=speaker,
                           frequency=rate, feature_maker=torch.load, extension=".pt", seed=0, progress=False)
    out[speaker] = (time.perf_counter() - t, float(score))
print(json.dumps(out))
"""


def write_cut_features(cuts_path: str, dim: int, out: Path) -> float:
    """The cuts' fbank (projected to ``dim`` by a seeded random matrix when dim != 80) as
    <out>/<cut id>.pt, and their phone items as <out>/items.item. Returns the frame rate."""
    import lhotse

    from icefall.eval.layers import cut_alignments
    from icefall.eval.abx import items_from_alignments

    cuts = list(lhotse.load_manifest_lazy(cuts_path))
    phones, _, speakers = cut_alignments(cuts)
    write_item_file(items_from_alignments(phones, speakers), out / "items.item")
    proj = torch.randn(80, dim, generator=torch.Generator().manual_seed(0)) if dim != 80 else None
    for c in cuts:
        x = torch.from_numpy(c.load_features())
        torch.save((x if proj is None else x @ proj).contiguous(), out / f"{c.id}.pt")
    return 1.0 / cuts[0].frame_shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", help="lhotse cuts with fbank and phone alignments (e.g. the mini dev set)")
    ap.add_argument("--items", type=int, default=3000, help="synthetic items when --cuts is not given")
    ap.add_argument("--dim", type=int, default=80)
    ap.add_argument("--fastabx-python", default=os.environ.get("FASTABX_PYTHON"),
                    help="a Python >= 3.12 with fastabx installed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.cuts:
            rate = write_cut_features(args.cuts, args.dim, root)
            source = f"{args.cuts} D={args.dim}"
        else:
            rate = 50.0
            feats, items = synthetic_items(args.items, args.dim, rate)
            for utt, x in feats.items():
                torch.save(x, root / f"{utt}.pt")
            write_item_file(items, root / "items.item")
            source = f"synthetic D={args.dim}"
        items = read_item_file(root / "items.item")
        feats = {p.stem: torch.load(p) for p in root.glob("*.pt")}
        ours = {}
        for mode in ("within", "across"):
            t = time.perf_counter()
            err = abx_score(feats, items, rate, modes=(mode,))[mode]
            ours[mode] = (time.perf_counter() - t, err)
        t = time.perf_counter()
        both = abx_score(feats, items, rate)
        t_both = time.perf_counter() - t
        ref = None
        if args.fastabx_python:
            run = subprocess.run([args.fastabx_python, "-c", FASTABX_SNIPPET, str(root / "items.item"), str(root),
                                  str(int(rate))], capture_output=True, text=True, check=True)
            ref = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nABX, {len(items)} items, {source}, 1 thread\n")
    print("| task | ours s | fastabx s | ours/fastabx | ours error | fastabx error |")
    print("|---|---|---|---|---|---|")
    for mode in ("within", "across"):
        t, err = ours[mode]
        rt, rerr = ref[mode] if ref else (float("nan"), float("nan"))
        print(f"| {mode} | {t:.2f} | {rt:.2f} | **{t / rt:.2f}** | {err:.6f} | {rerr:.6f} |")
    rt = ref["within"][0] + ref["across"][0] if ref else float("nan")
    print(f"| both (ours: one call) | {t_both:.2f} | {rt:.2f} | **{t_both / rt:.2f}** | | |")


if __name__ == "__main__":
    main()
