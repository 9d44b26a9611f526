"""SUPERB-style probing (icefall.probe): the featurizer, metrics, task splits, training with the
shared trainer (planted label, exact resume), and the HEAR / s3prl upstream contracts."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icefall.probe.metrics import (
    average_precision,
    equal_error_rate,
    error_rate,
    maximum_twv,
    subsequence_dtw,
    twv_beta,
)
from icefall.probe.model import Probe, UtteranceHead, WeightedSum
from icefall.probe.tasks import Example, Task, build_task, check_splits, rate_class
from icefall.probe.train import ExampleLoader, score_probe, train_probe
from icefall.utils import AttributeDict


# ------------------------------------------------------------------------------ featurizer
def test_weighted_sum_equals_hand_computation():
    layers = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)  # (L, B, T, D)
    ws = WeightedSum(2)
    assert torch.equal(ws.weights.detach(), torch.zeros(2))  # starts as the plain mean
    torch.testing.assert_close(ws(layers), (layers[0] + layers[1]) / 2)
    with torch.no_grad():
        ws.weights.copy_(torch.tensor([0.0, math.log(3.0)]))  # softmax -> 1/4, 3/4
    torch.testing.assert_close(ws(layers), 0.25 * layers[0] + 0.75 * layers[1])

    ln = WeightedSum(2, layer_norm=True)
    x = layers[1, 0, 0]  # (3,): 6, 7, 8 -> mean 7, var 2/3
    expected = (x - 7.0) / math.sqrt(2.0 / 3.0 + 1e-5)
    torch.testing.assert_close(ln(layers)[0, 0], expected)  # both layers normalise to the same


# ------------------------------------------------------------------------------ metrics
def test_eer_hand_computed():
    # targets .9 .8 .3, non-targets .7 .2 .1: at a threshold in (.3, .7] one of each is wrong
    assert equal_error_rate([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx(1 / 3)
    assert equal_error_rate([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0  # separable
    # targets .9 .6, non-targets .8 .1: FAR 1/2 and FRR 1/2 at a threshold in (.6, .8]
    assert equal_error_rate([0.9, 0.6, 0.8, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    # a target and a non-target tie at .5: (FAR, FRR) jumps from (1/2, 0) to (0, 1/2), the
    # crossing interpolated halfway
    assert equal_error_rate([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="both"):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_eer_threshold_hand_computed():
    from icefall.probe.metrics import eer_and_threshold

    # the crossing is at .7 itself: accepting >= .7 takes targets .9 .8 and non-target .7
    assert eer_and_threshold([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx((1 / 3, 0.7))
    # halfway between the tie at .5 and .9, with the rates
    assert eer_and_threshold([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx((0.25, 0.7))
    assert eer_and_threshold([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == pytest.approx((0.0, 0.8))  # separable


def test_twv_and_map_hand_computed():
    scores = [[0.9, 0.8, 0.3, 0.1], [0.7, 0.6, 0.2, 0.05], [0.5, 0.4, 0.3, 0.2]]
    relevant = [[True, False, True, False], [False, True, False, False], [False] * 4]  # 3rd: left out
    # beta 1; at theta .3: query 1 misses 0, 1 false alarm of 2; query 2 misses 0, 1 of 3 -> TWV 7/12
    mtwv, theta = maximum_twv(scores, relevant, beta=1.0)
    assert mtwv == pytest.approx(7 / 12) and theta == 0.3
    # a heavy false-alarm cost: only theta .9 (no false alarm) pays, TWV 1 - (1/2 + 1) / 2
    assert maximum_twv(scores, relevant, beta=100.0) == (pytest.approx(0.25), 0.9)
    assert twv_beta(0.0008, 100.0, 1.0) == pytest.approx(12.49)
    assert average_precision(scores[0], relevant[0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores[1], relevant[1]) == pytest.approx(1 / 2)


def _naive_subsequence_dtw(q, d):
    cost = 1 - torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            if i == 0:
                acc[i, j] = cost[i, j]
                continue
            best = acc[i - 1, j]
            if j > 0:
                best = min(best, acc[i - 1, j - 1], acc[i, j - 1])
            acc[i, j] = cost[i, j] + best
    return acc[-1].min() / n


def test_subsequence_dtw_matches_the_textbook_recursion_and_finds_the_query():
    g = torch.Generator().manual_seed(0)
    docs = [torch.randn(n, 4, generator=g) for n in (9, 5, 13)]
    query = torch.randn(4, 4, generator=g)
    got = subsequence_dtw(query, docs)
    want = torch.tensor([_naive_subsequence_dtw(query, d) for d in docs], dtype=got.dtype)
    torch.testing.assert_close(got, want)
    inside = subsequence_dtw(docs[2][3:7], docs)  # a slice of doc 2 matches it exactly
    assert inside[2].item() == pytest.approx(0.0, abs=1e-6) and inside.argmin().item() == 2


def test_error_rate_counts_edits():
    assert error_rate([["a", "b", "c", "d"]], [["a", "x", "c"]]) == pytest.approx(50.0)


# ------------------------------------------------------------------------------ tasks and splits
def _cut(cut_id, speaker, words, word_dur=0.3):
    """A cut with a supervision, a text and tiling phone / word alignments (no audio)."""
    from lhotse import MonoCut, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    t, wa, pa = 0.2, [], [AlignmentItem("sil", 0.0, 0.2)]
    for w in words:
        wa.append(AlignmentItem(w, t, word_dur))
        half = word_dur / 2
        pa += [AlignmentItem(w[0].lower(), t, half), AlignmentItem(w[-1].lower(), t + half, half)]
        t += word_dur
    pa.append(AlignmentItem("sil", t, 0.2))
    dur = round(t + 0.2, 4)
    sup = SupervisionSegment(cut_id, cut_id, 0.0, dur, text=" ".join(words), speaker=speaker,
                             alignment={"word": wa, "phone": pa})
    return MonoCut(cut_id, 0.0, dur, 0, supervisions=[sup])


WORDS = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA", "JULIET",
         "KILO", "LIMA", "MIKE", "NOVEMBER", "OSCAR"]


def _split(prefix, speakers, n_per_speaker, seed):
    rng = np.random.default_rng(seed)
    return [_cut(f"{spk}-{prefix}{i:03d}", spk, list(rng.choice(WORDS, 5)))
            for spk in speakers for i in range(n_per_speaker)]


@pytest.fixture(scope="module")
def corpus():
    seen, unseen = ["en101", "en102", "en103"], ["en901", "en902"]
    return {"train-labeled": _split("l", seen, 4, 0), "dev": _split("d", seen, 3, 1),
            "test": _split("t", unseen, 3, 2)}


SPEAKERS = {"en101": {"rate": "150"}, "en102": {"rate": "170"}, "en103": {"rate": "190"},
            "en901": {"rate": "199"}, "en902": {"rate": "141"}}


def test_tasks_have_splits_that_leak_nothing(corpus):
    from icefall.probe.tasks import TASK_SPLITS

    tasks = {}
    for name, (train, test) in TASK_SPLITS.items():
        tasks[name] = t = build_task(name, corpus[train], corpus[test], SPEAKERS, max_queries=4)
        assert not {e.cut_id for e in t.train} & {e.cut_id for e in t.test} or name == "qbe"
    for name in ("pr", "asr", "asv", "ks", "rate"):  # unseen test speakers
        assert not {e.speaker for e in tasks[name].train} & {e.speaker for e in tasks[name].test}, name
    assert {e.speaker for e in tasks["sid"].test} <= {e.speaker for e in tasks["sid"].train}
    assert min(e.target for e in tasks["sid"].test) >= 0
    qbe = tasks["qbe"]
    assert qbe.train and qbe.test and not {q.ref[0] for q in qbe.train} & {q.ref[0] for q in qbe.test}
    assert all(q.cut_id in qbe.docs["test"] for q in qbe.test)
    asv = tasks["asv"]
    assert len(asv.trials) == 6 * 5 // 2 and sum(t for t, _, _ in asv.trials) == 2 * 3
    ks = tasks["ks"]
    assert len(ks.symbols) == 12 and ks.symbols[-2:] == ["<unknown>", "<silence>"]
    assert {e.target for e in ks.train} >= {10, 11}
    pr = tasks["pr"]
    assert pr.symbols[0] == "<blk>" and all(pr.symbols[i] != "sil" for e in pr.train for i in e.target)
    asr = tasks["asr"]
    first = corpus["train-labeled"][0]
    assert "".join(asr.symbols[i] for i in asr.train[0].target) == first.supervisions[0].text.replace(" ", "|")
    assert [e.target for e in tasks["rate"].test[:4]] == [2, 2, 2, 0]  # en901 fast, en902 slow
    assert [rate_class(r) for r in (140, 159, 160, 179, 180)] == [0, 0, 1, 1, 2]


def test_check_splits_refuses_leaks(corpus):
    with pytest.raises(ValueError, match="in both"):
        build_task("sid", corpus["train-labeled"], corpus["train-labeled"][:2])
    with pytest.raises(ValueError, match="test speakers"):
        build_task("asv", corpus["train-labeled"], corpus["dev"])  # dev speakers are training speakers
    with pytest.raises(ValueError, match="no training utterances"):
        build_task("sid", corpus["train-labeled"], corpus["test"])
    q = Example("x", "s", -1, 0.0, 1.0, ("ALPHA",))
    with pytest.raises(ValueError, match="also dev queries"):
        check_splits(Task("qbe", "qbe", [q], [q], [], unseen_test_speakers=False))


# ------------------------------------------------------------------------------ training
def _planted(n, seed, layers=2, dim=80):
    """Random 'fbank' (L, T, 80) per utterance; class 1 shifts feature 5 of the last layer by +1,
    class 0 by -1: linearly separable after mean pooling."""
    g = torch.Generator().manual_seed(seed)
    feats, examples = {}, []
    for i in range(n):
        label = i % 2
        x = torch.randn(layers, int(torch.randint(20, 40, (1,), generator=g)), dim, generator=g)
        x[-1, :, 5] += 1.0 if label else -1.0
        feats[f"u{seed}-{i}"] = x
        examples.append(Example(f"u{seed}-{i}", f"s{i % 3}", label))
    return feats, examples


def _params(exp_dir, **kw):
    params = dict(exp_dir=Path(exp_dir), num_epochs=4, base_lr=0.01, seed=1, head="mean", hidden=16,
                  layer_norm=False, batch_size=8, tensorboard=False, log_interval=1000, save_every_n=100000,
                  average_period=5)
    return AttributeDict({**params, **kw})


def test_probe_on_planted_label_reaches_100_percent(tmp_path):
    train_feats, train = _planted(256, 0)
    test_feats, test = _planted(32, 1)
    task = Task("planted", "class", train, test, ["neg", "pos"], unseen_test_speakers=False)
    model = train_probe(task, train_feats, 100.0, _params(tmp_path / "exp", num_epochs=6))
    assert (tmp_path / "exp" / "epoch-6.pt").is_file()
    assert score_probe(task, model, test_feats, 100.0)["acc%"] == 100.0
    # the label lives in the last layer only: the weighted sum moved towards it
    w = model.layer_weights()
    assert w[1] > w[0]


def test_probe_resume_is_exact(tmp_path):
    feats, train = _planted(40, 0)
    task = Task("planted", "class", train, [], ["neg", "pos"], unseen_test_speakers=False)
    whole = train_probe(task, feats, 100.0, _params(tmp_path / "whole", num_epochs=2))
    # the same run, interrupted after batch 3 of epoch 1 (5 batches an epoch), then resumed
    train_probe(task, feats, 100.0, _params(tmp_path / "cut", num_epochs=2, save_every_n=3))
    for f in (tmp_path / "cut").glob("*.pt"):
        if f.name != "checkpoint-3.pt":
            f.unlink()
    resumed = train_probe(task, feats, 100.0, _params(tmp_path / "cut", num_epochs=2, save_every_n=3))
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_example_loader_state_continues_mid_epoch():
    feats, examples = _planted(10, 0)
    loader = ExampleLoader(examples, feats, 100.0, batch_size=3)
    loader.set_epoch(2)
    full = [[e.cut_id for e in b["examples"]] for b in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    other = ExampleLoader(examples, feats, 100.0, batch_size=3)
    other.set_epoch(0)
    other.load_state_dict(state)
    assert [[e.cut_id for e in b["examples"]] for b in other] == full[2:]
    batch = next(iter(loader))
    assert batch["layers"].shape[:2] == (2, 3) and batch["layers"].shape[2] == int(batch["lens"].max())


def test_xvector_head_embeds_and_classifies():
    head = UtteranceHead(8, 3, "xvector", hidden=4)
    probe = Probe(2, head)
    layers, lens = torch.randn(2, 5, 7, 8), torch.tensor([7, 3, 5, 1, 2])
    assert probe(layers, lens).shape == (5, 3) and probe.embed(layers, lens).shape == (5, 4)
    # padding frames do not change an utterance's embedding
    torch.testing.assert_close(probe.embed(layers[:, 1:2, :3], lens[1:2])[0], probe.embed(layers, lens)[1])


# ------------------------------------------------------------------------------ upstream interfaces
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from icefall.checkpoint import save_checkpoint
    from icefall.models import build_model, pretrain_config

    cfg = pretrain_config("hubert", "hubert-tiny", "fbank", overrides="dropout=0.0")
    path = tmp_path_factory.mktemp("probe-ckpt") / "epoch-1.pt"
    save_checkpoint(path, build_model(cfg), params={"model_config": cfg.to_dict()})
    return path


@pytest.mark.parametrize("spec", ["fbank", "checkpoint"])
def test_hear_api_contract(spec, tiny_checkpoint):
    from icefall.probe import hear

    model = hear.load_model(str(tiny_checkpoint) if spec == "checkpoint" else "fbank")
    assert model.sample_rate == 16000
    audio = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[0] == 3 and emb.shape[2] == model.timestamp_embedding_size
    assert ts.shape == emb.shape[:2]
    hop = 10.0 if spec == "fbank" else 20.0  # ms per frame
    torch.testing.assert_close(ts[0, :2], torch.tensor([hop / 2, 1.5 * hop]))
    assert abs(emb.shape[1] * hop - 1000.0) <= 5 * hop  # the frames cover the second of audio
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size)
    torch.testing.assert_close(scene, emb.mean(1))
    with pytest.raises(ValueError, match="n_sounds"):
        hear.get_timestamp_embeddings(audio[0], model)


@pytest.mark.parametrize("spec", ["fbank", "checkpoint"])
def test_s3prl_upstream_contract(spec, tiny_checkpoint):
    from icefall.probe.s3prl import Upstream

    up = Upstream(str(tiny_checkpoint) if spec == "checkpoint" else "fbank")
    g = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(n, generator=g) for n in (16000, 11000)]
    out = up(wavs)
    hidden = out["hidden_states"]
    assert isinstance(hidden, list) and len(hidden) >= 1
    assert all(h.dim() == 3 and h.shape == hidden[0].shape for h in hidden)  # stackable
    assert hidden[0].shape[0] == 2
    rate = up.get_downsample_rates("hidden_states")
    assert rate == (160 if spec == "fbank" else 320)
    # s3prl cuts utterance i at round(len_i / rate) frames and tolerates a difference of 5
    assert abs(hidden[0].shape[1] - round(16000 / rate)) <= 5
    torch.testing.assert_close(out["last_hidden_state"], hidden[-1])
    if spec == "fbank":  # padding does not change the shorter utterance's features
        alone = up([wavs[1]])["hidden_states"][0][0]
        n = alone.shape[0]
        torch.testing.assert_close(hidden[0][1, :n], alone)


# ------------------------------------------------------------------------------ ASV as a waveform embedding
def _voice_cuts(root, split, speakers, n):
    """Cuts of ``n`` one-second harmonic 'utterances' per speaker (its own f0 and noise), audio
    only (no stored features)."""
    import soundfile
    from lhotse import MonoCut, Recording, SupervisionSegment

    cuts = []
    for si, spk in enumerate(speakers):
        for i in range(n):
            g = torch.Generator().manual_seed(100 * si + i)
            t = torch.arange(16000) / 16000
            f0 = 90.0 + 40 * si + 5 * i
            wav = sum(torch.sin(2 * math.pi * f0 * h * t) / h ** (1 + 0.3 * si) for h in range(1, 15))
            wav = 0.3 * wav / wav.abs().max() + 0.01 * torch.randn(t.shape, generator=g)
            path = root / split / f"{spk}-{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), wav.numpy(), 16000)
            rec = Recording.from_file(path, recording_id=f"{spk}-{i}")
            cuts.append(MonoCut(rec.id, 0.0, rec.duration, 0, recording=rec, supervisions=[
                SupervisionSegment(rec.id, rec.id, 0.0, rec.duration, text="A", speaker=spk)]))
    return cuts


@pytest.mark.parametrize("upstream", ["fbank", "model"])
def test_speaker_embedder_is_the_probes_asv_embedding(tmp_path, upstream, tiny_checkpoint):
    from lhotse import CutSet

    from icefall.probe.asv import SpeakerEmbedder
    from icefall.probe.train import predict
    from icefall.probe.upstream import split_features

    CutSet.from_cuts(_voice_cuts(tmp_path, "train", ["en101", "en102", "en103"], 3)).to_file(
        tmp_path / "mini_cuts_train-labeled.jsonl.gz")
    test_cuts = _voice_cuts(tmp_path, "test", ["en901", "en902"], 2)
    spec = "fbank" if upstream == "fbank" else str(tiny_checkpoint)
    emb = SpeakerEmbedder.train(spec, tmp_path / "exp", tmp_path, cache_dir=tmp_path / "cache",
                                extra_args=["--num-epochs", "3"])
    assert emb.speakers == ["en101", "en102", "en103"] and (tmp_path / "exp" / "epoch-3.pt").is_file()
    got = torch.stack([emb.embed(torch.as_tensor(c.load_audio()[0])) for c in test_cuts])
    assert got.shape == (4, 256) and torch.allclose(got.norm(dim=1), torch.ones(4))
    # the probe's own scoring path: cached split features, batched (padded) embeddings, cosine
    feats = split_features(emb.upstream, test_cuts)
    examples = [Example(c.id, c.supervisions[0].speaker, -1) for c in test_cuts]
    want = torch.nn.functional.normalize(torch.stack(predict(emb.probe, examples, feats, emb.upstream.frame_rate, "embed")), dim=1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # a finished probe is loaded, not retrained
    again = SpeakerEmbedder.train(spec, tmp_path / "exp", tmp_path, cache_dir=tmp_path / "cache",
                                  extra_args=["--num-epochs", "3"])
    torch.testing.assert_close(again.embed(torch.as_tensor(test_cuts[0].load_audio()[0])), got[0])


# ------------------------------------------------------------------------------ end to end
def _with_fbank(cuts, writer, seed):
    """The cuts with seeded random 80-dim 'fbank' at 100 Hz stored by ``writer``."""
    from lhotse import Features

    rng = np.random.default_rng(seed)
    out = []
    for c in cuts:
        n = int(round(c.duration * 100))
        key = writer.write(c.id, rng.standard_normal((n, 80)).astype(np.float32))
        out.append(type(c)(c.id, c.start, c.duration, c.channel, supervisions=c.supervisions,
                           features=Features(type="fbank", num_frames=n, num_features=80, frame_shift=0.01,
                                             sampling_rate=16000, start=0.0, duration=c.duration,
                                             storage_type=writer.name, storage_path=str(writer.storage_path),
                                             storage_key=key, recording_id=c.id)))
    return out


def test_probe_command_end_to_end(tmp_path, corpus):
    import json

    from lhotse import CutSet
    from lhotse.features.io import NumpyFilesWriter

    from icefall.probe.train import main

    with NumpyFilesWriter(tmp_path / "feats") as writer:
        for i, (split, cuts) in enumerate(corpus.items()):
            CutSet.from_cuts(_with_fbank(cuts, writer, i)).to_file(tmp_path / f"mini_cuts_{split}.jsonl.gz")
    common = ["--upstream", "fbank", "--manifest-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    sid = main(common + ["--task", "sid", "--exp-dir", str(tmp_path / "exp/sid"), "--num-epochs", "2"])
    assert sid["metric"] == "acc%" and 0 <= sid["value"] <= 100 and sid["layer_weights"] == [1.0]
    assert sid["splits"] == {"train": "train-labeled", "test": "dev"} and sid["test_examples"] == 9
    assert (tmp_path / "cache" / "dev.pt").is_file() and (tmp_path / "exp/sid/epoch-2.pt").is_file()
    again = main(common + ["--task", "sid", "--exp-dir", str(tmp_path / "exp/sid"), "--num-epochs", "2"])
    assert again["value"] == sid["value"]  # a finished probe is rescored, not retrained
    assert json.loads((tmp_path / "exp/sid/results.json").read_text())["value"] == sid["value"]
    asv = main(common + ["--task", "asv", "--exp-dir", str(tmp_path / "exp/asv"), "--num-epochs", "1"])
    assert asv["metric"] == "EER%" and len((tmp_path / "exp/asv/trials-test.txt").read_text().splitlines()) == 15
    qbe = main(common + ["--task", "qbe", "--exp-dir", str(tmp_path / "exp/qbe"), "--max-queries", "3"])
    assert qbe["metric"] == "MAP%" and qbe["layer"] == 0 and len(qbe["dev_map_per_layer"]) == 1
    assert -1e9 < qbe["MTWV"] <= 1


def test_report_table_and_weights_plot(tmp_path):
    import json

    from icefall.probe.report import plot_layer_weights, read_results, results_table

    rows = {("hubert", "pr"): {"task": "pr", "value": 40.0, "layer_weights": [0.2, 0.8]},
            ("fbank", "pr"): {"task": "pr", "value": 75.5, "layer_weights": [1.0]},
            ("fbank", "asr"): {"task": "asr", "value": 100.0, "CER%": 90.0, "layer_weights": [1.0]}}
    for (name, task), r in rows.items():
        (tmp_path / name / task).mkdir(parents=True)
        (tmp_path / name / task / "results.json").write_text(json.dumps(r))
    results = read_results(tmp_path)
    assert list(results) == ["fbank", "hubert"]  # the reference row first
    assert results_table(results).splitlines() == [
        "| upstream | PR PER% ↓ | ASR WER% (CER%) ↓ |", "|---|---|---|",
        "| fbank | 75.50 | 100.00 (90.00) |", "| hubert | 40.00 | - |"]
    png = plot_layer_weights(results, tmp_path / "w.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_feature_cache_is_reused_only_for_the_same_upstream_and_cuts(tmp_path, corpus):
    from lhotse.features.io import NumpyFilesWriter

    from icefall.probe.upstream import Upstream, load_upstream, split_features

    with NumpyFilesWriter(tmp_path / "feats") as writer:
        cuts = _with_fbank(corpus["dev"][:3], writer, 0)
    cache = tmp_path / "cache" / "dev.pt"
    feats = split_features(load_upstream("fbank"), cuts, cache)
    assert set(feats) == {c.id for c in cuts} and feats[cuts[0].id].shape == (1, cuts[0].features.num_frames, 80)
    torch.testing.assert_close(feats[cuts[1].id][0], torch.as_tensor(cuts[1].load_features()))
    stored = torch.load(cache, weights_only=True)
    assert stored["upstream"] == "fbank" and stored["ids"] == [c.id for c in cuts]
    assert not list(cache.parent.glob(".tmp*"))  # written atomically
    stamp = cache.stat().st_mtime_ns
    split_features(load_upstream("fbank"), cuts, cache)
    assert cache.stat().st_mtime_ns == stamp  # reused
    other = Upstream("other-fbank")
    split_features(other, cuts[:2], cache)  # another upstream / other cuts: recomputed
    assert torch.load(cache, weights_only=True)["upstream"] == "other-fbank"
    with pytest.raises(FileNotFoundError, match="no-such.pt"):
        load_upstream(str(tmp_path / "no-such.pt"))
