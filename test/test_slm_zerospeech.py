"""ZeroSpeech 2021 gold.csv -> benchmark pairs and manifests; submission files."""
import json

import numpy as np
import pytest

from icefall.slm.benchmarks import read_pairs
from icefall.slm.zerospeech import main, prepare, read_gold


def write_task(root, rows):
    import soundfile as sf

    d = root / "lexical" / "dev"
    d.mkdir(parents=True)
    (d / "gold.csv").write_text("filename,type,voice,frequency,word,id,correct\n"
                                + "".join(",".join(map(str, r)) + "\n" for r in rows))
    for r in rows:
        sf.write(d / f"{r[0]}.wav", np.zeros(1600 + 160 * len(r[4]), dtype=np.float32), 16000)
    return d


ROWS = [("aaa", "lexical", "Alex", 5, "house", 1, 1), ("aab", "lexical", "Alex", 5, "hoube", 1, 0),
        ("aac", "lexical", "Bea", 5, "house", 1, 1), ("aad", "lexical", "Bea", 5, "hoube", 1, 0),
        ("aae", "lexical", "Alex", 2, "dog", 2, 1), ("aaf", "lexical", "Alex", 2, "dag", 2, 0),
        ("aag", "lexical", "Alex", 2, "dog", 2, 0)]


def test_gold_rows_become_pairs_per_id_voice_and_foil(tmp_path):
    d = write_task(tmp_path, ROWS[:6] + [("aag", "lexical", "Alex", 2, "dug", 2, 0)])
    pairs, files = read_gold(d / "gold.csv", "lexical")
    assert [(p.good, p.bad, p.speaker) for p in pairs] == [
        ("house", "hoube", "Alex"), ("house", "hoube", "Bea"), ("dog", "dag", "Alex"), ("dog", "dug", "Alex")]
    assert files[pairs[3].member_id("bad")] == "aag" and files[pairs[3].member_id("good")] == "aae"


def test_prepare_writes_bench_manifests_and_submission(tmp_path):
    from lhotse import load_manifest

    write_task(tmp_path / "zr", ROWS[:6])
    out = tmp_path / "out"
    pairs = read_pairs(prepare(tmp_path / "zr", "lexical", "dev", out))
    recs = load_manifest(out / "mini_recordings_bench.jsonl.gz")
    assert sorted(recs.ids) == sorted(p.member_id(m) for p in pairs for m in ("good", "bad"))
    assert recs[pairs[0].member_id("bad")].duration == pytest.approx((1600 + 160 * 5) / 16000)
    scores = tmp_path / "scores.txt"
    scores.write_text("".join(f"{p.member_id(m)} {-i - (m == 'bad')}\n" for i, p in enumerate(pairs) for m in ("good", "bad")))
    main(["--root", str(tmp_path / "zr"), "--task", "lexical", "--out-dir", str(out), "--scores", str(scores),
          "--submission", str(tmp_path / "sub" / "lexical" / "dev.txt")])
    lines = (tmp_path / "sub" / "lexical" / "dev.txt").read_text().split("\n")
    assert lines[:2] == ["aaa 0.000000", "aab -1.000000"] and len([x for x in lines if x]) == 6
    assert json.loads((out / "files.json").read_text())[pairs[0].member_id("good")] == "aaa"


def test_bad_gold_is_named(tmp_path):
    d = write_task(tmp_path, [("aaa", "lexical", "Alex", 5, "house", 1, 1), ("aab", "lexical", "Alex", 5, "hoube", 1, 1)])
    with pytest.raises(ValueError, match="gold.csv: pair id '1' voice 'Alex' has 2 correct rows"):
        read_gold(d / "gold.csv", "lexical")
