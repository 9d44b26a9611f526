import os
import shutil
import sys
from pathlib import Path
from typing import Iterable

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


# Disk: with pytest.ini's tmp_path_retention_policy = "failed", pytest deletes a passing test's
# tmp_path at once but the directories of tmp_path_factory (module-scoped fixtures) only at the
# end of the session, so a full run would hold every module's training runs at once (GBs of
# checkpoints). Module fixtures take their directory from scoped_tmp_dir instead, and tests drop
# the checkpoints they have read (drop_checkpoints).


def scoped_tmp_dir(request: pytest.FixtureRequest, name: str) -> Path:
    """``tmp_path_factory.mktemp(name)`` for a module- (or class-) scoped fixture, deleted when
    that fixture is torn down unless a test failed meanwhile (kept for inspection, as pytest
    keeps a failed test's ``tmp_path``) or the retention policy is not "failed"."""
    path = request.getfixturevalue("tmp_path_factory").mktemp(name)
    failed_before = request.session.testsfailed

    def remove_if_passed():
        if (request.config.getini("tmp_path_retention_policy") == "failed"
                and request.session.testsfailed == failed_before):
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(remove_if_passed)
    return path


def drop_checkpoints(exp_dir: Path, keep: Iterable[str] = ()) -> None:
    """Delete the ``*.pt`` files directly in ``exp_dir`` except those named in ``keep``: for a
    test to call once it no longer reads a training run's checkpoints."""
    keep = set(keep)
    for f in Path(exp_dir).glob("*.pt"):
        if f.name not in keep:
            f.unlink()


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
