"""The knn_vc recipe end to end on a few espeak-ng utterances: train_vocoder (2 epochs, tiny),
a resumed run, evaluate (table, wavs, spectrograms), convert.py and tts.py."""
import json
import os
from pathlib import Path

import pytest
import soundfile
import torch

from icefall.data.synth import synthesize
from icefall.data.corpus import make_speakers

TEXTS = ["THE RED CAT", "A SMALL DOG RAN", "ISABEL SAW TEN BIRDS", "WE WALKED HOME"]


def write_cuts(root: Path, split: str, speakers, n: int) -> None:
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    cuts = []
    for spk in speakers:
        for i in range(n):
            audio = synthesize(TEXTS[i % len(TEXTS)], spk, 0.05, 0.05).audio
            path = root / "download" / split / f"{spk.id}-{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), audio, 16000)
            rec = Recording.from_file(path, recording_id=f"{spk.id}-{i}")
            sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration,
                                     text=TEXTS[i % len(TEXTS)], speaker=spk.id)
            cuts.append(MonoCut(id=rec.id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup]))
    (root / "data" / "fbank").mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(root / "data" / "fbank" / f"mini_cuts_{split}.jsonl.gz")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("knnvc")
    train, test = make_speakers()
    write_cuts(root, "train-unlabeled", train[:2], 3)
    write_cuts(root, "train-labeled", train[2:4], 2)
    write_cuts(root, "test", test[:3], 3)
    return root


def test_recipe_end_to_end(corpus, monkeypatch):
    from icefall.vc import convert, evaluate, train

    monkeypatch.chdir(corpus)
    opts = ["--features", "fbank", "--exp-dir", "knn_vc/exp", "--channels", "8", "--batch-size", "2",
            "--max-per-speaker", "3", "--tensorboard", "false", "--save-every-n", "2"]
    train.main(train.get_parser().parse_args(opts + ["--num-epochs", "1"]))
    assert (corpus / "knn_vc/exp/epoch-1.pt").is_file()
    train.main(train.get_parser().parse_args(opts + ["--num-epochs", "2"]))  # resumes from epoch-1.pt
    ckpt = torch.load(corpus / "knn_vc/exp/epoch-2.pt", weights_only=False)
    assert ckpt["params"]["batch_idx_train"] == 6 and ckpt["params"]["features"] == "fbank"

    rows = evaluate.main(evaluate.get_parser().parse_args(
        ["--vocoders", "knn_vc/exp/epoch-2.pt", "knn_vc/exp/epoch-1.pt", "--ks", "1", "2", "--tts-lams", "1.0", "--n-eval", "1",
         "--out-dir", "knn_vc/eval", "--asv-epochs", "2"]))
    names = [r.system for r in rows]
    assert names[:3] == ["source (no conversion)", "target speaker, real held-out utterance",
                         "espeak-ng base voice (en-us), TTS input"]
    assert "fbank: kNN-VC k=2" in names and "fbank: kNN-TTS k=4 lambda=1.0" in names
    assert "fbank (exp): kNN-VC k=2" in names and len(set(names)) == len(names)  # a second fbank vocoder
    result = json.loads((corpus / "knn_vc/eval/results.json").read_text())
    assert len(result["pairs"]) == 3 and all(u.split("-")[0] != t for u, t in result["pairs"])
    assert set(result["speaker_measures"]) == {"asv", "mel"} and (corpus / "knn_vc/eval/asv-probe/epoch-2.pt").is_file()
    assert set(result["rows"][0]["speaker"]["asv"]) == {"cos_target", "cos_source", "accept_target", "accept_source",
                                                        "nearest_target", "nearest_source"}
    table = (corpus / "knn_vc/eval/results.md").read_text().splitlines()
    assert table[0].startswith("| system | ASV cos to target |") and len(table) == 2 + len(rows)
    assert (corpus / "knn_vc/eval/images/knn-vc.png").stat().st_size > 1000
    assert len(os.listdir(corpus / "knn_vc/eval/wavs")) >= 6

    refs = [str(p) for p in sorted((corpus / "download/test").glob("en902-*.wav"))]
    out = convert.main(convert.get_convert_parser().parse_args(
        ["--vocoder", "knn_vc/exp/epoch-2.pt", "--source", "download/test/en901-0.wav", "--reference", *refs,
         "--k", "2", "--output", "out/vc.wav"]))
    wav, sr = soundfile.read(out)
    src, _ = soundfile.read(corpus / "download/test/en901-0.wav")
    assert sr == 16000 and abs(len(wav) - len(src)) <= 160
    out = convert.main(convert.get_tts_parser().parse_args(
        ["--vocoder", "knn_vc/exp/epoch-2.pt", "--text", "THE RED CAT", "--reference", *refs, "--output", "out/tts.wav"]))
    assert soundfile.info(str(out)).duration > 0.3
