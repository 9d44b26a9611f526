"""Fbank, tokenizers, SSL/ASR datasets, the datamodule, and the bad-input policy."""
import argparse
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from icefall.data.corpus import SIZES, synthesize_corpus
from icefall.data.datamodule import DataModule
from icefall.data.dataset import IGNORE_ID, AsrDataset, CutFilter, SslDataset
from icefall.data.features import compute_fbank_split, make_fbank_extractor
from icefall.data.tokenizer import (CharTokenizer, load_tokenizer, make_char_lang, read_tokens,
                                    train_bpe)

SPLITS = {"train-unlabeled": 4, "train-labeled": 8, "dev": 4, "test": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few synthesized utterances with fbank and both token sets."""
    root = tmp_path_factory.mktemp("mini")
    old = dict(SIZES["tiny"])
    SIZES["tiny"].update(SPLITS)
    try:
        synthesize_corpus(root / "audio", root / "manifests", size="tiny", seed=1, num_workers=1)
    finally:
        SIZES["tiny"].update(old)
    for split in ("train-labeled", "dev"):
        compute_fbank_split(root / "manifests", root / "fbank", split, "mini", num_jobs=1)
    from lhotse import load_manifest
    cuts = load_manifest(root / "fbank" / "mini_cuts_train-labeled.jsonl.gz")
    texts = [c.supervisions[0].text for c in cuts]
    train_bpe(texts, root / "lang_bpe", vocab_size=40)
    make_char_lang(texts, root / "lang_char")
    return root


def _cuts(corpus, split="train-labeled"):
    from lhotse import load_manifest
    return load_manifest(corpus / "fbank" / f"mini_cuts_{split}.jsonl.gz")


def _args(corpus, *extra):
    p = argparse.ArgumentParser()
    DataModule.add_arguments(p)
    return p.parse_args(["--manifest-dir", str(corpus / "fbank"), "--cuts-prefix", "mini", "--num-workers", "0",
                         *extra])


def _with_labels(cut, rate=50, extra=0):
    from lhotse.utils import fastcopy
    n = int(round(cut.duration * rate)) + extra
    return fastcopy(cut, custom={"kmeans": " ".join(str(i % 13) for i in range(n))})


# ----------------------------------------------------------------------------------- fbank
def test_fbank_stage_counts_and_names_unreadable_audio(tmp_path, caplog):
    """lhotse silently leaves out cuts whose audio it cannot read; the stage says how many."""
    import soundfile as sf
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    recs, sups = [], []
    for i in range(3):
        wav = tmp_path / f"a{i}.wav"
        sf.write(str(wav), np.full(16000, 0.1, np.float32), 16000)
        recs.append(Recording.from_file(wav, recording_id=f"utt{i}"))
        sups.append(SupervisionSegment(id=f"utt{i}", recording_id=f"utt{i}", start=0.0, duration=1.0, text="A"))
    (tmp_path / "a1.wav").write_bytes(b"not audio" * 10)  # corrupt
    (tmp_path / "a2.wav").unlink()  # missing
    RecordingSet.from_recordings(recs).to_file(manifests / "mini_recordings_dev.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(manifests / "mini_supervisions_dev.jsonl.gz")
    with caplog.at_level(logging.INFO):
        out = compute_fbank_split(manifests, tmp_path / "fbank", "dev", "mini", num_jobs=1)
    assert [c.id for c in load_manifest(out)] == ["utt0"]
    assert "dev: skipped 2 of 3 cuts whose audio could not be read: utt1, utt2" in caplog.text
    assert "1 cuts, 2 skipped" in caplog.text


def test_fbank_frames_and_storage(corpus):
    from lhotse.utils import compute_num_frames
    extractor = make_fbank_extractor()
    for cut in _cuts(corpus, "dev"):
        stored = cut.load_features()
        assert stored.shape == (compute_num_frames(cut.duration, 0.01, 16000), 80)
        fresh = extractor.extract(cut.load_audio()[0], 16000)
        assert fresh.shape == stored.shape
        # lilcom is lossy but fine-grained (about 1/32 in log-energy).
        assert np.abs(fresh - stored).max() < 0.1


def test_kaldifeat_matches_torch_fbank_when_installed(corpus):
    pytest.importorskip("kaldifeat")
    cut = _cuts(corpus, "dev")[0]
    audio = cut.load_audio()[0]
    a = make_fbank_extractor(use_kaldifeat=True).extract(audio, 16000)
    b = make_fbank_extractor(use_kaldifeat=False).extract(audio, 16000)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-2


# ------------------------------------------------------------------------------ tokenizers
def test_char_tokenizer_matches_tokens_txt(corpus):
    tok = CharTokenizer(corpus / "lang_char")
    table = read_tokens(corpus / "lang_char" / "tokens.txt")
    assert table["<blk>"] == 0 and tok.blank_id == 0 and table["|"] == 3
    for cut in _cuts(corpus):
        text = cut.supervisions[0].text
        ids = tok.encode([text])[0]
        # Independent reference: look every character up in tokens.txt by hand.
        expected = [table["|" if c == " " else c] for c in text]
        assert ids == expected
        assert tok.decode(ids) == text
    assert tok.encode(["A#B"])[0][1] == table["<unk>"]


def test_bpe_tokenizer_roundtrip_and_layout(corpus):
    tok = load_tokenizer(corpus / "lang_bpe")
    table = read_tokens(corpus / "lang_bpe" / "tokens.txt")
    assert table["<blk>"] == 0 and table["<sos/eos>"] == 1 and table["<unk>"] == 2
    assert tok.vocab_size == len(table) and tok.blank_id == 0
    for cut in _cuts(corpus):
        text = cut.supervisions[0].text
        ids = tok.encode([text])[0]
        assert all(3 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        # The pieces, glued, spell the text.
        inv = {i: s for s, i in table.items()}
        assert "".join(inv[i] for i in ids).replace("\u2581", " ").strip() == text


# ---------------------------------------------------------------------------- SSL dataset
def _ramp_fbank_cuts(corpus, tmp_path):
    """Cuts whose fbank frame t is the constant t, with labels i = i at 50 Hz."""
    from lhotse import Features, NumpyFilesWriter
    from lhotse.utils import compute_num_frames, fastcopy
    out = []
    with NumpyFilesWriter(tmp_path / "ramp") as w:
        for cut in _cuts(corpus):
            t = compute_num_frames(cut.duration, 0.01, 16000)
            key = w.write(cut.id, np.repeat(np.arange(t, dtype=np.float32)[:, None], 80, 1))
            feats = Features(type="fbank", num_frames=t, num_features=80, frame_shift=0.01,
                             sampling_rate=16000, start=0, duration=cut.duration,
                             storage_type=w.name, storage_path=str(w.storage_path),
                             storage_key=key)
            labels = " ".join(str(i) for i in range(int(round(cut.duration * 50))))
            out.append(fastcopy(cut, features=feats, custom={"kmeans": labels}))
    return out


def _ramp_wav_cuts(corpus, tmp_path):
    """Cuts whose sample n is n * 2**-20 (exact in float32), labels i = i at 50 Hz."""
    from lhotse import Recording
    from lhotse.utils import fastcopy
    out = []
    for cut in _cuts(corpus)[:5]:
        n = cut.recording.num_samples
        path = tmp_path / f"{cut.id}.wav"
        sf.write(str(path), (np.arange(n) * 2.0**-20).astype(np.float32), 16000,
                 subtype="FLOAT")
        rec = Recording.from_file(path, recording_id=cut.recording_id)
        labels = " ".join(str(i) for i in range(int(round(cut.duration * 50))))
        out.append(fastcopy(cut.drop_features(), recording=rec, custom={"kmeans": labels}))
    return out


def _decode_ramp(x, input_type):
    return np.round(x * 2**20) if input_type == "wav" else x[..., 0]


@pytest.mark.parametrize("input_type", ["fbank", "wav"])
@pytest.mark.parametrize("mode", ["pad", "max_duration", "crop_to_shortest"])
def test_ssl_labels_stay_aligned_with_frames(corpus, tmp_path, input_type, mode):
    from lhotse import CutSet
    cuts = (_ramp_fbank_cuts if input_type == "fbank" else _ramp_wav_cuts)(corpus, tmp_path)
    step = 2 if input_type == "fbank" else 320
    kwargs = {"pad": {}, "max_duration": {"max_duration_s": 1.0},
              "crop_to_shortest": {"crop_to_shortest": True}}[mode]
    ds = SslDataset(input_type=input_type, label_rate=50, random_crop=True, **kwargs)
    torch.manual_seed(0)
    import random
    random.seed(0)
    batch = ds[CutSet.from_cuts(cuts)]
    x, lens, y, ylens = batch["inputs"], batch["lengths"], batch["labels"], batch["label_lengths"]
    B = len(cuts)
    assert x.shape[0] == y.shape[0] == B and lens.shape == ylens.shape == (B,)
    assert x.dim() == (3 if input_type == "fbank" else 2)
    if mode == "crop_to_shortest":
        assert (lens == lens[0]).all() and x.shape[1] == lens[0]  # no padding at all
    if mode == "max_duration":
        assert lens.max() <= (100 if input_type == "fbank" else 16000)
    offsets = []
    for b in range(B):
        v = _decode_ramp(x[b, : lens[b]].numpy(), input_type)
        assert np.all(np.diff(v) == 1)  # a contiguous (cropped) piece of the utterance
        labels = y[b, : ylens[b]].numpy()
        assert np.all(np.diff(labels) == 1)
        assert v[0] == labels[0] * step  # label i starts at input unit i * step
        # Labels cover the input, within one label.
        assert abs(len(labels) * step - lens[b].item()) <= step
        assert (y[b, ylens[b]:] == IGNORE_ID).all()
        assert (x[b, lens[b]:] == 0).all()
        offsets.append(labels[0])
    if mode != "pad":
        assert max(offsets) > 0  # random crops do move


def test_ssl_eval_crop_starts_at_zero_and_without_labels(corpus):
    from lhotse import CutSet
    cuts = CutSet.from_cuts(_with_labels(c) for c in _cuts(corpus))
    ds = SslDataset(input_type="fbank", max_duration_s=1.0, random_crop=False)
    b = ds[cuts]
    for i, c in enumerate(cuts):
        assert torch.equal(b["inputs"][i, :100], torch.from_numpy(c.load_features()[:100]))
        assert b["labels"][i, :50].tolist() == [int(t) for t in c.custom["kmeans"].split()[:50]]
    nolab = SslDataset(input_type="wav", with_labels=False)[cuts]
    assert "labels" not in nolab and nolab["inputs"].shape[0] == len(cuts)
    assert abs(nolab["seconds"] - sum(c.duration for c in cuts)) < 1e-3


# ---------------------------------------------------------------------------- ASR dataset
def test_asr_batches(corpus):
    from lhotse import CutSet
    from lhotse.dataset import SpecAugment
    tok = load_tokenizer(corpus / "lang_bpe")
    cuts = _cuts(corpus)
    b = AsrDataset(tok)[cuts]
    assert b["inputs"].shape == (len(cuts), max(c.num_frames for c in cuts), 80)
    for i, c in enumerate(cuts):
        assert b["lengths"][i] == c.num_frames
        assert torch.equal(b["inputs"][i, : c.num_frames], torch.from_numpy(c.load_features()))
        assert tok.decode(b["tokens"][i]) == c.supervisions[0].text == b["texts"][i]
    torch.manual_seed(0)
    aug = AsrDataset(tok, spec_augment=SpecAugment(p=1.0))[cuts]
    assert aug["inputs"].shape == b["inputs"].shape and not torch.equal(aug["inputs"], b["inputs"])
    assert aug["tokens"] == b["tokens"]
    wav = AsrDataset(tok, input_type="wav")[CutSet.from_cuts(cuts)]
    assert wav["inputs"].shape == (len(cuts), max(c.recording.num_samples for c in cuts))


# ------------------------------------------------------------------------------ datamodule
def test_options_parse_booleans(corpus):
    a = _args(corpus, "--shuffle", "0", "--crop-to-shortest", "true", "--bucketing-sampler",
              "false")
    assert a.shuffle is False and a.crop_to_shortest is True and a.bucketing_sampler is False
    with pytest.raises(SystemExit):
        _args(corpus, "--shuffle", "maybe")


def _ids(dl):
    return [tuple(b["cut_ids"]) for b in dl]


def test_sampler_resumes_exactly_and_shards_ranks(corpus):
    args = _args(corpus, "--max-duration", "6", "--num-buckets", "2")
    dm = DataModule(args)
    cuts = dm.load_cuts("train-labeled")
    ds = dm.ssl_dataset(with_labels=False)
    full = _ids(dm.train_dataloader(cuts, ds))
    durations = {c.id: c.duration for c in cuts}
    assert sorted(i for b in full for i in b) == sorted(durations)  # every cut, once
    assert all(sum(durations[i] for i in b) <= 6.0 for b in full)
    assert len(full) >= 3

    dl = dm.train_dataloader(cuts, ds)
    it = iter(dl)
    head = [tuple(next(it)["cut_ids"]) for _ in range(2)]
    state = dl.sampler.state_dict()
    resumed = _ids(dm.train_dataloader(cuts, ds, sampler_state_dict=state))
    assert head + resumed == full

    shards = [set(i for b in _ids(dm.train_dataloader(cuts, ds, world_size=2, rank=r))
                  for i in b) for r in (0, 1)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] <= set(durations)


def test_lazy_loading_and_missing_manifest(corpus):
    dm = DataModule(_args(corpus))
    from lhotse import CutSet
    cuts = dm.load_cuts("dev")
    assert isinstance(cuts, CutSet) and cuts.is_lazy
    with pytest.raises(FileNotFoundError, match="prepare.sh"):
        dm.load_cuts("no-such-split")


def test_training_split_streams_from_shar_shards(corpus, tmp_path):
    """--shar-dir: the training split comes from Shar shards in two subset folders (as
    Libri-Light's prepare.sh writes them); every cut once per epoch, with the same features,
    the shard order reshuffled between epochs; other splits still read their manifests."""
    cuts = _cuts(corpus).to_eager()
    halves = {"small": cuts.subset(first=4), "medium": cuts.subset(last=len(cuts) - 4)}
    for name, part in halves.items():
        (tmp_path / "shar" / name).mkdir(parents=True)
        part.to_shar(tmp_path / "shar" / name, fields={"features": "lilcom"}, shard_size=2,
                     warn_unused_fields=False)
    # A small sampler buffer, so that the shard order shows in the batch order.
    args = _args(corpus, "--shar-dir", str(tmp_path / "shar"), "--max-duration", "6",
                 "--sampler-buffer-size", "2", "--num-buckets", "2")
    args.train_split = "train-labeled"
    dm = DataModule(args)
    stream = dm.load_cuts("train-labeled")
    assert dm.load_cuts("dev").is_lazy and len(dm.load_cuts("dev")) == 4
    ref = {c.id: c.load_features() for c in cuts}
    for c in stream:
        assert np.array_equal(c.load_features(), ref[c.id])

    def epoch_ids(epoch, fresh=False):
        """The cut ids of one epoch in order; ``fresh``: a new process resuming at ``epoch``."""
        s = DataModule(args).load_cuts("train-labeled") if fresh else stream
        s = s.filter(bool)  # as the recipes pass it: behind a lazy filter
        dl = dm.train_dataloader(s, dm.ssl_dataset(with_labels=False))
        dl.sampler.set_epoch(epoch)
        return [i for b in _ids(dl) for i in b]

    first, second = epoch_ids(0), epoch_ids(1)
    assert sorted(first) == sorted(second) == sorted(ref)  # every cut once per epoch
    assert first != second
    assert epoch_ids(1, fresh=True) == second  # resuming at epoch 1 reads epoch 1's order
    (tmp_path / "shar" / "small" / "features.000001.tar").unlink()
    with pytest.raises(ValueError, match="'features' has 3 shards for 4"):
        DataModule(args).load_cuts("train-labeled")


# ------------------------------------------------------------------------------ bad input
def _bad_cuts(corpus, tmp_path):
    """One good cut and one of each kind of bad cut, all with labels unless noted."""
    from lhotse import Recording
    from lhotse.utils import fastcopy
    good = [_with_labels(c.drop_features()) for c in _cuts(corpus)[:2]]
    base = good[0]

    def with_rec(cut_id, path):
        rec = fastcopy(base.recording, id=cut_id,
                       sources=[fastcopy(base.recording.sources[0], source=str(path))])
        sups = [fastcopy(s, recording_id=cut_id) for s in base.supervisions]
        return fastcopy(base, id=cut_id, recording=rec, supervisions=sups)

    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00garbage" * 100)
    audio8k = tmp_path / "8k.flac"
    sf.write(str(audio8k), np.zeros(8000 * 2, np.float32) + 0.1, 8000)
    rec8k = Recording.from_file(audio8k, recording_id="rate8k")
    rate8k = fastcopy(base, id="rate8k", recording=rec8k, duration=rec8k.duration,
                      supervisions=[fastcopy(base.supervisions[0], recording_id="rate8k",
                                             duration=rec8k.duration)])
    sup = base.supervisions[0]
    bad = {
        "missing_file": with_rec("missing", tmp_path / "nowhere.flac"),
        "corrupt": with_rec("corrupt", corrupt),
        "sampling_rate": _with_labels(rate8k),
        "empty_text": fastcopy(base, id="emptytext", supervisions=[fastcopy(sup, text="")]),
        "text_too_long": fastcopy(base, id="longtext",
                                  supervisions=[fastcopy(sup, text=" ".join(["ALICE"] * 80))]),
        "too_short": _with_labels(fastcopy(base.truncate(duration=0.5), id="short")),
        "label_mismatch": fastcopy(_with_labels(base, extra=20), id="mismatch"),
        "no_labels": fastcopy(base, id="nolabels", custom={}),
        "malformed": fastcopy(base, id="malformed",  # right count, one non-integer
                              custom={"kmeans": "x " + base.custom["kmeans"].split(" ", 1)[1]}),
    }
    return good, bad


def test_filter_counts_and_logs_every_bad_kind(corpus, tmp_path, caplog):
    good, bad = _bad_cuts(corpus, tmp_path)
    tok = load_tokenizer(corpus / "lang_bpe")
    asr = CutFilter(min_duration=1.0, tokenizer=tok)
    ssl = CutFilter(min_duration=1.0, label_rate=50)
    with caplog.at_level(logging.WARNING):
        for f in (asr, ssl):
            assert all(f(c) for c in good)
    expected_asr = {"missing_file", "sampling_rate", "empty_text", "text_too_long", "too_short"}
    expected_ssl = {"missing_file", "sampling_rate", "too_short", "label_mismatch", "no_labels"}
    with caplog.at_level(logging.WARNING):
        for kind, cut in bad.items():
            assert asr(cut) == (kind not in expected_asr), kind
            assert ssl(cut) == (kind not in expected_ssl), kind
            asr(cut)  # seen twice (e.g. a bins-estimate pass): counted once
    assert asr.dropped == {k: 1 for k in expected_asr}
    assert ssl.dropped == {k: 1 for k in expected_ssl}
    for kind in expected_asr | expected_ssl:
        assert bad[kind].id in caplog.text
    assert CutFilter(max_duration=1.0).reason(good[0]) == "too_long"


def test_labels_outside_the_classes_are_dropped_by_name(corpus, tmp_path, caplog):
    """Before: ``IndexError: Target -1 is out of bounds`` mid-epoch, no cut named. Now the
    filter drops such cuts before batching, names each and counts them."""
    from lhotse.utils import fastcopy
    good, _ = _bad_cuts(corpus, tmp_path)
    values = good[0].custom["kmeans"].split()  # labels 0..12
    negative = fastcopy(good[0], id="negative", custom={"kmeans": " ".join(["-1"] + values[1:])})
    too_big = fastcopy(good[0], id="toobig", custom={"kmeans": " ".join(values[:-1] + ["13"])})
    args = _args(corpus)
    args.num_classes = 13  # as pretrain.py's --num-classes
    f = DataModule(args).cut_filter(label_rate=50)
    with caplog.at_level(logging.WARNING):
        assert [f(c) for c in (negative, too_big, *good)] == [False, False] + [True] * len(good)
    assert f.dropped == {"label_out_of_range": 2}
    assert "dropping cut negative (label_out_of_range, --num-classes 13" in caplog.text
    assert "dropping cut toobig" in caplog.text
    assert "label_out_of_range': 2" in f.summary()


def test_datasets_drop_unreadable_cuts_with_a_named_warning(corpus, tmp_path, caplog):
    from lhotse import CutSet
    good, bad = _bad_cuts(corpus, tmp_path)
    tok = load_tokenizer(corpus / "lang_bpe")
    cases = [
        (SslDataset(input_type="wav"), ["missing_file", "corrupt", "sampling_rate",
                                        "label_mismatch", "no_labels", "malformed"]),
        (SslDataset(input_type="fbank"), ["missing_file", "corrupt", "sampling_rate"]),
        (AsrDataset(tok), ["missing_file", "corrupt", "sampling_rate", "empty_text"]),
    ]
    for ds, kinds in cases:
        for kind in kinds:
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                batch = ds[CutSet.from_cuts([good[0], bad[kind], good[1]])]
            assert batch["cut_ids"] == [good[0].id, good[1].id], kind
            assert batch["inputs"].shape[0] == 2
            assert f"dropping cut {bad[kind].id}" in caplog.text, kind
        assert ds.num_dropped == len(kinds)
        assert ds[CutSet.from_cuts([bad["missing_file"]])] is None  # nothing left


def test_an_epoch_with_bad_cuts_completes(corpus, tmp_path):
    from lhotse import CutSet
    good, bad = _bad_cuts(corpus, tmp_path)
    dm = DataModule(_args(corpus, "--max-duration", "5", "--num-buckets", "2"))
    f = dm.cut_filter(label_rate=50)
    mixed = CutSet.from_cuts(list(bad.values()) + good).filter(f)
    ds = dm.ssl_dataset()
    seen = [i for b in dm.train_dataloader(mixed, ds) if b is not None for i in b["cut_ids"]]
    # The filter removes what metadata shows; the dataset drops the unreadable/malformed rest.
    # (Transcripts do not matter for SSL.)
    assert sorted(seen) == sorted([c.id for c in good] + ["emptytext", "longtext"])
    assert ds.num_dropped == 2  # corrupt audio, malformed labels
    assert f.dropped == {k: 1 for k in ("missing_file", "sampling_rate", "too_short",
                                        "label_mismatch", "no_labels")}


def test_the_corpus_has_no_library_default(tmp_path):
    """Library defaults name no corpus: without --cuts-prefix loading cuts says what is missing."""
    p = argparse.ArgumentParser()
    DataModule.add_arguments(p)
    args = p.parse_args(["--manifest-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--cuts-prefix is not set.*'dev'"):
        DataModule(args).load_cuts("dev")
    args.cuts_prefix = "librispeech"
    assert DataModule(args).cuts_path("dev") == tmp_path / "librispeech_cuts_dev.jsonl.gz"
