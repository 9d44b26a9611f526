"""run_slm.sh end to end on a tiny corpus: benchmarks, fbank k-means units, unit quality, a
unit LM, its zero-shot scores and the table."""
import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("english_words")
pytest.importorskip("transformers")

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini" / "SSL"


def test_run_slm_tiny(tmp_path, monkeypatch):
    from icefall.data.corpus import SIZES, synthesize_corpus
    from icefall.data.features import compute_fbank_split

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(SIZES, "tiny", {"train-unlabeled": 12, "train-labeled": 1, "dev": 6, "test": 1})
    synthesize_corpus(Path("download"), Path("data/manifests"), size="tiny", seed=0, num_workers=1)
    for split in ("train-unlabeled", "dev"):
        compute_fbank_split(Path("data/manifests"), Path("data/fbank"), split, "mini", num_jobs=1)
    env = dict(os.environ, PYTHONPATH=str(RECIPE.parents[2]))
    cmd = ["bash", str(RECIPE / "slm" / "run_slm.sh"), "--work-dir", str(tmp_path), "--vocab-sizes", "8",
           "--lm-units", "fbank-km8", "--num-pairs", "4", "--epochs", "1",
           "--lm-opts", "--num-layers 1 --dim 32 --num-heads 2 --ffn-dim 64 --max-tokens 2048 --warmup-batches 2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    quality = json.loads((tmp_path / "data/slm/fbank-km8/quality-dev.json").read_text())
    # (6 short dev utterances of 6 speakers hold no ABX cell: ABX is NaN here; test_slm_unit_quality
    # checks its values)
    assert {"abx_within", "abx_across"} <= set(quality) and 0 < quality["pnmi"] <= 1
    assert quality["dedup_units_per_s"] < quality["units_per_s"] == pytest.approx(100, rel=0.01)
    scores = json.loads((tmp_path / "slm/exp-fbank-km8/zero-shot-epoch-1.json").read_text())["results"]
    for kind in ("summed", "normalized"):
        assert {scores[kind][t]["n"] for t in ("lexical", "syntactic", "story")} == {4}
    table = (tmp_path / "slm/results.md").read_text()
    assert "| fbank-km8 |" in table
