"""egs/mini/SSL/prepare.sh --tiny end to end: outputs, stage selection, idempotence."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icefall.data.corpus import SIZES

PREPARE = Path(__file__).resolve().parents[1] / "egs" / "mini" / "SSL" / "prepare.sh"


def _run(cwd, *args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(PREPARE), "--tiny", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_prepare_tiny(tmp_path, monkeypatch):
    from lhotse import load_manifest
    from icefall.data.tokenizer import load_tokenizer, read_tokens

    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    monkeypatch.chdir(tmp_path)  # manifests hold paths relative to the recipe directory
    for stage in ("Stage 1", "Stage 2", "Stage 3", "Stage 4"):
        assert stage in r.stdout
    for split, n in SIZES["tiny"].items():
        cuts = load_manifest(tmp_path / "data" / "fbank" / f"mini_cuts_{split}.jsonl.gz")
        assert len(cuts) == n
        c = cuts[0]
        assert c.id == c.recording.id == c.supervisions[0].id
        assert c.has_features and c.load_features().shape[1] == 80
        assert c.features.storage_type == "lilcom_chunky"
        assert (tmp_path / c.recording.sources[0].source).is_file()  # relative to egs dir
    for lang in ("lang_bpe_64", "lang_char"):
        assert read_tokens(tmp_path / "data" / lang / "tokens.txt")["<blk>"] == 0
        tok = load_tokenizer(tmp_path / "data" / lang)
        assert tok.decode(tok.encode(["ALICE SAW THE DOG"])[0]) == "ALICE SAW THE DOG"

    # Idempotent: a second run changes nothing.
    before = _digest(tmp_path)
    r = _run(tmp_path)
    assert r.returncode == 0 and "done before" in r.stdout
    assert _digest(tmp_path) == before

    # --stage/--stop-stage run just the stages asked for.
    (tmp_path / "data" / "lang_char" / "tokens.txt").unlink()
    r = _run(tmp_path, "--stage", "4", "--stop-stage", "4")
    assert r.returncode == 0 and "Stage 1" not in r.stdout and "Stage 4" in r.stdout
    assert _digest(tmp_path) == before

    # Refuses to mix sizes in one directory.
    r = subprocess.run(["bash", str(PREPARE), "--stop-stage", "1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode != 0 and "holds the tiny corpus" in r.stdout
