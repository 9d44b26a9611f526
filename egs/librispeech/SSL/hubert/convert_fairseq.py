#!/usr/bin/env python3
"""Convert a fairseq HuBERT checkpoint to our format ``{"model": state_dict, "params": {...}}``.

    ./hubert/convert_fairseq.py --in hubert_base_ls960.pt --out exp/hubert-base-fairseq.pt

Then fine-tune from it with ``./zipformer/finetune.py --init-ckpt exp/hubert-base-fairseq.pt``, or
continue pretraining with ``./hubert/pretrain.py --init-ckpt exp/hubert-base-fairseq.pt``
(``--init-ckpt fairseq:<path>`` skips this step; both give the same model).  See docs/fairseq.md.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # run from a checkout

from icefall.ssl.fairseq_import import convert_fairseq_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="src", required=True, help="fairseq checkpoint (.pt)")
    parser.add_argument("--out", dest="dst", required=True, help="our checkpoint to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    params = convert_fairseq_checkpoint(args.src, args.dst)
    logging.info(f"wrote {args.dst}\n{json.dumps(params, indent=2, default=str)}")


if __name__ == "__main__":
    main()
