"""Per-layer evaluation glue (icefall.eval.layers) and the mini recipe's spidr/evaluate.py.

References: features built so that the answer is known (one-hot phones: ABX 0 and PNMI 1;
one-hot words: MAP@R 1; noise: ABX about 1/2), abx_score called by hand, a padded batch
through the model, and the codebook head applied by hand."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icefall.eval.abx import abx_score, items_from_alignments
from icefall.eval.layers import (cut_alignments, evaluate_layers, model_codebook_units,
                                 model_layer_features)
from icefall.eval.report import layer_table

ROOT = Path(__file__).resolve().parents[1]
RATE = 50.0

# ----------------------------------------------------------------------------- a toy corpus
# minimal pairs: the same triphone context with two central phones
WORDS = {"cab": "c a b", "ceb": "c e b", "dad": "d a d", "ded": "d e d", "bad": "b a d", "bed": "b e d"}


def toy_corpus(num_speakers=4, utts_per_speaker=6, seed=0):
    """Phone/word alignments on the 50 Hz frame grid (phones 2-5 frames, silence between
    words) -> (phones, words, speakers, per-frame phone names, per-frame words)."""
    rng = random.Random(seed)
    phones, words, speakers, frame_phone, frame_word = {}, {}, {}, {}, {}
    for s in range(num_speakers):
        for u in range(utts_per_speaker):
            utt = f"s{s}-u{u}"
            t, ph_ali, w_ali, fp, fw = 0, [], [], [], []

            def add(label, n, word):
                nonlocal t
                ph_ali.append((t / RATE, (t + n) / RATE, label))
                fp.extend([label] * n)
                fw.extend([word] * n)
                t += n

            add("sil", 3, "sil")
            for _ in range(5):
                w = rng.choice(sorted(WORDS))
                start = t
                for p in WORDS[w].split():
                    add(p, rng.randint(2, 5), w)
                w_ali.append((start / RATE, t / RATE, w))
                add("sil", 2, "sil")
            phones[utt], words[utt], speakers[utt] = ph_ali, w_ali, f"spk{s}"
            frame_phone[utt], frame_word[utt] = fp, fw
    return phones, words, speakers, frame_phone, frame_word


def one_hot(labels, vocab, noise, g):
    ids = torch.tensor([vocab.index(x) for x in labels])
    x = torch.nn.functional.one_hot(ids, len(vocab)).float()
    return x + noise * torch.randn(x.shape, generator=g)


def test_evaluate_layers_on_features_with_known_answers():
    phones, words, speakers, fp, fw = toy_corpus()
    g = torch.Generator().manual_seed(0)
    phone_vocab, word_vocab = ["sil", "a", "b", "c", "d", "e"], ["sil"] + sorted(WORDS)
    feats = {
        "phone": {u: one_hot(fp[u], phone_vocab, 1e-3, g) for u in fp},
        "word": {u: one_hot(fw[u], word_vocab, 1e-3, g) for u in fw},
        "noise": {u: torch.randn(len(fp[u]), 16, generator=g) for u in fp},
    }
    res = evaluate_layers(feats, {k: RATE for k in feats}, phones, words, speakers,
                          num_clusters=len(phone_vocab), seed=0)
    assert set(res) == {"phone", "word", "noise"}
    # phone identity alone: every A/X pair is closer than every B/X pair; k-means with one
    # cluster per phone (and silence) recovers the phones.
    assert res["phone"]["abx_within"] == 0.0 and res["phone"]["abx_across"] == 0.0
    assert res["phone"]["pnmi"] == pytest.approx(1.0, abs=1e-6)
    # word identity alone: every token's R nearest tokens are its own word's.
    assert res["word"]["mapr"] == pytest.approx(1.0)
    # noise: chance ABX, almost no information about phones
    assert 0.3 < res["noise"]["abx_within"] < 0.7 and 0.35 < res["noise"]["abx_across"] < 0.65
    assert res["noise"]["pnmi"] < 0.1 and res["noise"]["mapr"] < 0.5
    # the ABX numbers are those of abx_score over the corpus' items
    by_hand = abx_score(feats["noise"], items_from_alignments(phones, speakers), RATE, seed=0)
    assert res["noise"]["abx_within"] == by_hand["within"]
    assert res["noise"]["abx_across"] == by_hand["across"]
    assert res["noise"]["abx_items"] == by_hand["n_items"] > 100


def test_codebook_pnmi_column():
    phones, words, speakers, fp, _ = toy_corpus(2, 3)
    vocab = ["sil", "a", "b", "c", "d", "e"]
    # units that equal the phones except that "e" shares a unit with "d": I(y; z) = H(y) - p(d or e) H(d/e split)
    units = {u: torch.tensor([min(vocab.index(p), 4) for p in fp[u]]) for u in fp}
    feats = {1: {u: torch.randn(len(fp[u]), 4) for u in fp}}
    res = evaluate_layers(feats, {1: RATE}, phones, words, speakers, codebook_units={1: units}, num_clusters=3)
    y = np.array([vocab.index(p) for u in fp for p in fp[u] if p != "sil"])
    p = np.bincount(y)[1:] / len(y)
    h_y = -(p * np.log(p)).sum()
    pd, pe = p[3], p[4]
    h_split = -(pd * np.log(pd / (pd + pe)) + pe * np.log(pe / (pd + pe)))
    assert res[1]["pnmi_codebook"] == pytest.approx((h_y - h_split) / h_y)
    table = layer_table(res)
    assert table.splitlines()[0].endswith("| MAP@R (%) | PNMI codebook |")
    assert "PNMI codebook" not in layer_table({1: {"pnmi": 0.5}})


def test_cut_alignments_relative_to_the_cut():
    from lhotse import MonoCut, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    sup = SupervisionSegment("u1", "r1", start=0.0, duration=1.0, speaker="spk", alignment={
        "phone": [AlignmentItem("sil", 0.0, 0.2), AlignmentItem("a", 0.2, 0.3)],
        "word": [AlignmentItem("A", 0.2, 0.3)]})
    cut = MonoCut("u1", start=0.0, duration=1.0, channel=0, supervisions=[sup])
    phones, words, speakers = cut_alignments([cut])
    assert phones == {"u1": [(0.0, 0.2, "sil"), (0.2, 0.5, "a")]}
    assert words == {"u1": [(0.2, 0.5, "A")]} and speakers == {"u1": "spk"}
    bad = MonoCut("u2", start=0.0, duration=1.0, channel=0, supervisions=[
        SupervisionSegment("u2", "r1", 0.0, 1.0, alignment={"word": []})])
    with pytest.raises(ValueError, match="u2.*'phone'"):
        cut_alignments([bad])


class _Cut:
    def __init__(self, id, wav):
        self.id, self.wav = id, wav


def test_model_features_and_units_match_a_padded_batch():
    from icefall.ssl.spidr import build_spidr

    torch.manual_seed(0)
    model = build_spidr("hubert-tiny", "spidr", num_codebooks=2, codebook_size=8).eval()
    g = torch.Generator().manual_seed(1)
    cuts = [_Cut(f"c{i}", 0.1 * torch.randn(n, generator=g)) for i, n in enumerate((4000, 6400, 5000))]
    feats = model_layer_features(model, cuts, lambda c: c.wav)
    units = model_codebook_units(model, cuts, lambda c: c.wav)
    assert sorted(feats) == [0, 1, 2] and sorted(units) == model.target_layers == [1, 2]

    lens = torch.tensor([c.wav.numel() for c in cuts])
    batch = torch.nn.utils.rnn.pad_sequence([c.wav for c in cuts], batch_first=True)
    ref, out_lens = model.extract_features(batch, lens)
    for i, c in enumerate(cuts):
        n = int(out_lens[i])
        for layer in range(3):
            assert feats[layer][c.id].shape == (n, ref[layer].shape[-1])
            torch.testing.assert_close(feats[layer][c.id], ref[layer][i, :n], atol=1e-4, rtol=1e-4)
        for k, layer in enumerate(model.target_layers):  # SpidR: head k reads layer k
            by_hand = model.heads[k](ref[layer][i, :n]).argmax(-1)
            assert (units[layer][c.id] == by_hand).float().mean() > 0.99


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_dev(tmp_path_factory):
    """12 synthesized dev utterances with fbank and alignments."""
    from icefall.data.corpus import SIZES, synthesize_corpus
    from icefall.data.features import compute_fbank_split

    root = tmp_path_factory.mktemp("mini_eval")
    old = dict(SIZES["tiny"])
    SIZES["tiny"].update({"train-unlabeled": 1, "train-labeled": 1, "dev": 12, "test": 1})
    try:
        synthesize_corpus(root / "audio", root / "manifests", size="tiny", seed=2, num_workers=1)
    finally:
        SIZES["tiny"].update(old)
    compute_fbank_split(root / "manifests", root / "fbank", "dev", "mini", num_jobs=1)
    return root


def _untrained_checkpoint(path: Path, **model_opts) -> Path:
    """A pretrain.py-style checkpoint (params + model) of a freshly initialised model."""
    from icefall.ssl.pretrain import build_model, get_parser
    from icefall.utils import AttributeDict

    params = AttributeDict(vars(get_parser(**model_opts).parse_args([])))
    torch.manual_seed(0)
    torch.save({"params": dict(params), "model": build_model(params).state_dict()}, path)
    return path


def test_evaluate_script_on_a_tiny_corpus(tiny_dev, tmp_path):
    ckpt = _untrained_checkpoint(tmp_path / "epoch-0.pt", method="spidr", encoder="hubert-tiny",
                                 num_codebooks=2, codebook_size=16)
    out = tmp_path / "eval"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "egs/mini/SSL/spidr/evaluate.py"), "--checkpoint", str(ckpt),
                    "--manifest-dir", str(tiny_dev / "fbank"), "--out-dir", str(out), "--num-clusters", "8"],
                   check=True, cwd=tiny_dev, env=env, capture_output=True)
    rows = [line.split(" | ")[0].strip("| ") for line in (out / "layers.md").read_text().splitlines()[4:]]
    assert rows == ["0", "1", "2", "fbank"]  # front end, 2 encoder layers, the reference
    assert (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "layers.json").read_text())["results"]
    for layer, r in res.items():
        assert 0 < r["pnmi"] <= 1 and 0 <= r["mapr"] <= 1 and r["abx_items"] > 100, (layer, r)
        # 12 short utterances hold (almost) no triphone context with two central phones from
        # one speaker: ABX may be undefined (nan) here; the toy-corpus test checks its values.
        for mode in ("abx_within", "abx_across"):
            assert np.isnan(r[mode]) or 0 <= r[mode] <= 1, (layer, r)
        assert ("pnmi_codebook" in r) == (layer in ("1", "2"))


def test_extract_units_script(tiny_dev, tmp_path, monkeypatch):
    """spidr/extract_units.py: codebook units equal the head argmax computed here; the text file
    holds them with repeats collapsed; k-means units are in range."""
    from lhotse import load_manifest

    from icefall.ssl.labels import load_pretrained
    from icefall.ssl.units import cut_waveform

    ckpt = _untrained_checkpoint(tmp_path / "epoch-0.pt", method="spidr", encoder="hubert-tiny",
                                 num_codebooks=2, codebook_size=16)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    script = str(ROOT / "egs/mini/SSL/spidr/extract_units.py")
    common = ["--checkpoint", str(ckpt), "--manifest-dir", str(tiny_dev / "fbank"), "--splits", "dev"]
    subprocess.run([sys.executable, script, *common, "--layer", "2", "--out-dir", str(tmp_path / "cb")],
                   check=True, cwd=tiny_dev, env=env, capture_output=True)
    subprocess.run([sys.executable, script, *common, "--layer", "1", "--units", "kmeans", "--num-clusters", "4",
                    "--fit-split", "dev", "--out-dir", str(tmp_path / "km")],
                   check=True, cwd=tiny_dev, env=env, capture_output=True)

    model, _ = load_pretrained(ckpt)
    monkeypatch.chdir(tiny_dev)  # the cuts' audio paths are relative to the recipe directory
    cuts = load_manifest(tmp_path / "cb/mini_cuts_dev.jsonl.gz")
    lines = (tmp_path / "cb/units_dev.txt").read_text().splitlines()
    assert len(lines) == len(cuts) == 12
    for cut, line in zip(cuts, lines):
        wav = cut_waveform(cut)[None]
        x, lens = model.frontend(wav, torch.tensor([wav.shape[1]]))
        h = model.head_inputs(x, lens)[1]  # layer 2 = the second target layer
        by_hand = model.heads[1](h)[0].argmax(-1).tolist()
        units = [int(u) for u in cut.custom["units"].split()]
        assert units == by_hand
        collapsed = [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]
        assert line.split() == [cut.id] + [str(u) for u in collapsed]
    for line in (tmp_path / "km/units_dev.txt").read_text().splitlines():
        units = [int(u) for u in line.split()[1:]]
        assert units and all(0 <= u < 4 for u in units) and all(a != b for a, b in zip(units, units[1:]))


def test_spidr_table_reads_perplexities_from_a_log(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("spidr_table", ROOT / "egs/mini/SSL/local/spidr_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    log = tmp_path / "log-pretrain-x"
    log.write_text(
        "2026-12-02 20:29:30,1 INFO [trainer.py:444] Epoch 1, batch 20, global 20: frames=31846, loss=4.073, "
        "codebook_ppl=17.62, pred_ppl=63.5, utterances=394, seconds=1148, lr 0.012, 13.8 audio s/s\n"
        "2026-12-02 20:31:00,1 INFO [trainer.py:430] Validation at batch 59: frames=17007, loss=2.879, "
        "codebook_ppl=14.15, pred_ppl=18.25, utterances=200; best valid loss 2.879\n"
        "2026-12-02 20:32:00,1 INFO [trainer.py:444] Epoch 2, batch 20, global 79: frames=31918, loss=2.897, "
        "codebook_ppl=16.1, pred_ppl=18.06, utterances=393\n"
        "2026-12-02 20:33:00,1 INFO [trainer.py:329] Epoch 2 done: frames=67443, codebook_ppl=19.27, pred_ppl=21.17\n")
    train, valid = mod.perplexities(log)
    assert train == [(20, 17.62, 63.5), (79, 16.1, 18.06)]
    assert valid == [(59, 14.15, 18.25)]
