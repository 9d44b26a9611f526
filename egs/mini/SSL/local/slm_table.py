#!/usr/bin/env python3
"""The run_slm.sh table: per unit set, unit quality on dev and, where a unit LM was trained,
its zero-shot accuracies with 95% intervals, log-probabilities normalised by the token count
(SpidR's choice) and, for lexical, also summed (run from egs/mini/SSL).

    ./local/slm_table.py --units fbank-km50 fbank-km100 --epoch 5
"""
import argparse
import json
from pathlib import Path


def cell(r):
    return f"{100 * r['accuracy']:.1f} ({100 * r['ci_low']:.0f}-{100 * r['ci_high']:.0f})" if r else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", nargs="+", required=True)
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--data-dir", type=Path, default=Path("data/slm"))
    p.add_argument("--exp-prefix", default="slm/exp-")
    args = p.parse_args()
    print("| units | ABX within % | ABX across % | PNMI | units/s | dedup units/s | lexical % | syntactic % | story % | lexical, summed % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for units in args.units:
        q = json.loads((args.data_dir / units / "quality-dev.json").read_text())
        zs = Path(f"{args.exp_prefix}{units}") / f"zero-shot-epoch-{args.epoch}.json"
        r = json.loads(zs.read_text())["results"] if zs.is_file() else {}
        n, s = r.get("normalized", {}), r.get("summed", {})
        print(f"| {units} | {100 * q['abx_within']:.1f} | {100 * q['abx_across']:.1f} | {q['pnmi']:.3f} | "
              f"{q['units_per_s']:.0f} | {q['dedup_units_per_s']:.1f} | {cell(n.get('lexical'))} | "
              f"{cell(n.get('syntactic'))} | {cell(n.get('story'))} | {cell(s.get('lexical'))} |")


if __name__ == "__main__":
    main()
