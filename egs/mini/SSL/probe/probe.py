#!/usr/bin/env python3
"""One SUPERB-style probe: one task on one frozen upstream (docs/probing.md).

    cd egs/mini/SSL
    ./probe/probe.py --upstream fbank --task pr --exp-dir probe/exp/fbank/pr --cache-dir probe/cache/fbank
    ./probe/probe.py --upstream zipformer/exp-pretrain/epoch-2.pt --task sid \\
        --exp-dir probe/exp/hubert/sid --cache-dir probe/cache/hubert

Tasks: pr asr sid asv ks rate qbe; the budget, head and lr of each are fixed by
icefall.probe.train.PROTOCOL (override with --num-epochs, --head, --base-lr).
"""
from icefall.probe.train import main

if __name__ == "__main__":
    main()
