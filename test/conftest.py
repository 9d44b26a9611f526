import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests use tiny models: a second intra-op thread only adds synchronisation (and thrashes on
# a busy 2-core machine). ICEFALL_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("ICEFALL_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def write_random_fbank_cuts(out_dir: Path, texts, frames, splits=("test",)) -> Path:
    """``<out_dir>/t_cuts_<split>.jsonl.gz`` for each split: cut ``c<i>`` has text ``texts[i]``
    and ``frames[i]`` frames of seeded random 80-dim fbank (stored once, shared by the splits)."""
    import numpy as np
    from lhotse import CutSet, Features, MonoCut, SupervisionSegment
    from lhotse.features.io import NumpyFilesWriter

    rng = np.random.default_rng(0)
    cuts = []
    with NumpyFilesWriter(out_dir / "feats") as writer:
        for i, (text, n) in enumerate(zip(texts, frames)):
            key = writer.write(f"c{i}", rng.standard_normal((n, 80)).astype(np.float32))
            feats = Features(type="fbank", num_frames=n, num_features=80, frame_shift=0.01,
                             sampling_rate=16000, start=0.0, duration=n / 100, storage_type=writer.name,
                             storage_path=str(writer.storage_path), storage_key=key, recording_id=f"r{i}")
            sup = SupervisionSegment(id=f"c{i}", recording_id=f"r{i}", start=0.0, duration=n / 100, text=text)
            cuts.append(MonoCut(id=f"c{i}", start=0.0, duration=n / 100, channel=0,
                                supervisions=[sup], features=feats))
    for split in splits:
        CutSet.from_cuts(cuts).to_file(out_dir / f"t_cuts_{split}.jsonl.gz")
    return out_dir
