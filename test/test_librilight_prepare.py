"""egs/librilight/SSL/prepare.sh on a fixture tree laid out like Libri-Light (offline):
manifests, fixed-length segments in lazy pieces, fbank, k-means labels applied by parallel
jobs, Shar shards and the training manifest, idempotence, the offline download message; plus
icefall.data.librilight's segmenting rule, audio Shar shards and the SLURM launcher."""
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from icefall.data import librilight as ll

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "librilight" / "SSL"
FILES = {"small": 5, "medium": 2}  # files of ~40 s
SPEAKERS, SENTENCES = 3, 14
W, MIN, PIECE, SHARD, K, DEV = 10.0, 3.0, 6, 3, 10, 1
SR = 16000


def _run(cwd, *args, env=None):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **(env or {}),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        ["bash", str(RECIPE / "prepare.sh"), "--subsets", " ".join(FILES), "--num-jobs", "2",
         "--segment-seconds", str(W), "--min-segment-seconds", str(MIN),
         "--cuts-per-piece", str(PIECE), "--shard-size", str(SHARD), "--dev-files", str(DEV),
         "--num-clusters", str(K), "--frontend", "fbank", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _cuts(path: Path) -> list:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _expected_windows(num_samples: int) -> list:
    """(start, duration) in samples by the documented rule, counted naively."""
    w, out, start = int(W * SR), [], 0
    while start + w <= num_samples:
        out.append((start, w))
        start += w
    if num_samples - start >= int(MIN * SR) and num_samples > start:
        out.append((start, num_samples - start))
    return out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A Libri-Light fixture in <dir>/download/LibriLight/{small,medium} and prepare.sh
    stages 0-6."""
    root = tmp_path_factory.mktemp("librilight")
    ll.write_librilight_tree(root / "download", FILES, num_speakers=SPEAKERS,
                             sentences_per_file=SENTENCES, seed=0)
    r = _run(root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root, r.stdout + r.stderr


@pytest.fixture(scope="module")
def files(recipe):
    """{recording id: num_samples} read from the fixture's FLAC headers."""
    root, _ = recipe
    corpus = root / "download" / "LibriLight"
    return {p.relative_to(corpus).with_suffix("").as_posix(): sf.info(str(p)).frames
            for p in sorted(corpus.rglob("*.flac"))}


@pytest.mark.slow
def test_manifests_and_segments(recipe, files):
    root, out = recipe
    for stage in range(7):
        assert f"Stage {stage}:" in out
    assert len(files) == sum(FILES.values())
    man, corpus = root / "data" / "manifests", root / "download" / "LibriLight"
    seg = root / "data" / "segments"
    train = []
    for subset, n in FILES.items():
        recs = _cuts(man / f"librilight_recordings_{subset}.jsonl.gz")
        assert len(recs) == n and all(r["id"].startswith(f"{subset}/") for r in recs)
        assert {r["id"]: r["num_samples"] for r in recs} == {
            k: v for k, v in files.items() if k.startswith(f"{subset}/")}
        # one supervision per voice-activity interval of the JSON files
        vad = [len(json.loads(p.read_text())["voice_activity"])
               for p in (corpus / subset).rglob("*.json")]
        assert sum(vad) == SENTENCES * n
        assert len(_cuts(man / f"librilight_supervisions_{subset}.jsonl.gz")) == sum(vad)
        pieces = ll.piece_paths(seg, subset)
        cuts = [c for p in pieces for c in _cuts(p)]
        assert [len(_cuts(p)) for p in pieces] == [PIECE] * (len(cuts) // PIECE) + (
            [len(cuts) % PIECE] if len(cuts) % PIECE else [])
        assert all(c["recording"]["id"].startswith(f"{subset}/") for c in cuts)
        train += cuts
    dev = _cuts(seg / "librilight_cuts_dev.jsonl.gz")
    by_rec = {}
    for c in train + dev:
        by_rec.setdefault(c["recording"]["id"], []).append(
            (round(c["start"] * SR), round(c["duration"] * SR)))
    assert set(by_rec) == set(files)
    for rec_id, n in files.items():
        assert by_rec[rec_id] == _expected_windows(n), rec_id
    # dev: DEV whole files of the first subset, none of them in training
    dev_recs = {c["recording"]["id"] for c in dev}
    assert len(dev_recs) == DEV and not dev_recs & {c["recording"]["id"] for c in train}
    assert all(r.startswith("small/") for r in dev_recs)
    ids = [c["id"] for c in train + dev]
    assert len(ids) == len(set(ids)) and not any("/" in i for i in ids)
    assert all(c["supervisions"] == [] for c in train)
    # both tail rules occur in this fixture, so the test sees each
    tails = [n % int(W * SR) / SR for n in files.values()]
    assert any(t >= MIN for t in tails) and any(0 < t < MIN for t in tails), tails


def _labels(c) -> list:
    return [int(x) for x in c["custom"]["kmeans"].split()]


@pytest.mark.slow
def test_fbank_and_labels_for_every_segment(recipe):
    root, out = recipe
    seg, fbank = root / "data" / "segments", root / "data" / "fbank"
    km = root / "data" / f"kmeans-mfcc-{K}"
    names = [ll.split_name(p) for s in FILES for p in ll.piece_paths(seg, s)] + ["dev"]
    seen = set()
    for name in names:
        src = _cuts(ll.cuts_path(seg, name))
        feats = _cuts(ll.cuts_path(fbank, name))
        labelled = _cuts(ll.cuts_path(km, name))
        assert [c["id"] for c in feats] == [c["id"] for c in labelled] == [c["id"] for c in src]
        for c in feats:
            assert abs(c["features"]["num_frames"] - 100 * c["duration"]) <= 1
        for c in labelled:
            lab = _labels(c)
            assert abs(len(lab) - 100 * c["duration"]) <= 1, (c["id"], len(lab))  # MFCC, 10 ms
            assert min(lab) >= 0 and max(lab) < K
            seen |= set(lab)
    assert len(seen) == K
    # stage 5 ran as 2 jobs per subset, each labelling its share of the manifests, once
    assert out.count("Labelled") == len(names) + 1  # + the fit sample in stage 4


@pytest.mark.slow
def test_shar_covers_every_segment_once(recipe):
    from lhotse import CutSet

    root, _ = recipe
    km = root / "data" / f"kmeans-mfcc-{K}"
    for subset in FILES:
        pieces = ll.piece_paths(km, subset)
        ref = {c["id"]: c for p in pieces for c in _cuts(p)}
        ids = []
        for cut in CutSet.from_shar(in_dir=km / "shar" / subset):
            ids.append(cut.id)
            feats = cut.load_features()
            assert feats.shape == (ref[cut.id]["features"]["num_frames"], 80)
            assert cut.custom["kmeans"] == ref[cut.id]["custom"]["kmeans"]
        assert sorted(ids) == sorted(ref) and len(ids) == len(set(ids))
        n_shards = len(list((km / "shar" / subset).glob("cuts.*.jsonl.gz")))
        assert n_shards == sum(-(-len(_cuts(p)) // SHARD) for p in pieces)
    # the lazy training manifest: the labelled pieces of both subsets one after another
    train = [c["id"] for c in _cuts(km / "librilight_cuts_train.jsonl.gz")]
    assert train == [c["id"] for s in FILES for p in ll.piece_paths(km, s) for c in _cuts(p)]


@pytest.mark.slow
def test_pretraining_batches_from_the_manifest_and_the_shards(recipe, monkeypatch):
    """The training manifest and the Shar shards feed the SSL dataset: every segment arrives
    once, with one label per 10 ms frame, and a tiny model gives a finite loss."""
    import math

    import torch
    from lhotse import CutSet

    from icefall.data.datamodule import DataModule
    from icefall.ssl.pretrain import build_model, compute_loss, get_parser
    from icefall.utils import AttributeDict

    root, _ = recipe
    km = root / "data" / f"kmeans-mfcc-{K}"
    monkeypatch.chdir(root)  # feature paths are relative to the recipe directory
    args = get_parser(
        encoder="zipformer-tiny", frontend="fbank", encoder_overrides="frontend_layer3_channels=32",
        cuts_prefix="librilight", manifest_dir=str(km), num_classes=K, label_rate=100.0,
        max_duration=60.0, num_workers=0, shuffle=False).parse_args([])
    args.input_type = "fbank"
    data = DataModule(args)
    model = build_model(AttributeDict(vars(args)))
    ref = {c["id"]: len(_labels(c)) for c in _cuts(km / "librilight_cuts_train.jsonl.gz")}
    shar = CutSet.from_shar(fields={"cuts": sorted((km / "shar").glob("*/cuts.*.jsonl.gz")),
                                    "features": sorted((km / "shar").glob("*/features.*.tar"))})
    for cuts in (data.load_cuts("train"), shar):
        seen = []
        for batch in data.valid_dataloader(cuts, data.ssl_dataset(train=False)):
            seen += batch["cut_ids"]
            for i, cid in enumerate(batch["cut_ids"]):
                n = int((batch["labels"][i] >= 0).sum())
                assert abs(n - ref[cid]) <= 2, (cid, n, ref[cid])
            torch.manual_seed(0)
            loss, _ = compute_loss(model, batch, False)
            assert math.isfinite(loss.item())
        assert sorted(seen) == sorted(ref)


@pytest.mark.slow
def test_second_run_skips_finished_stages(recipe):
    root, _ = recipe
    before = _digest(root / "data")
    r = _run(root)
    assert r.returncode == 0, r.stderr[-3000:]
    # per subset: stages 1, 2, 3, 5, 6 (Shar); once: 4 and the training manifest
    assert r.stdout.count("done before") == 5 * len(FILES) + 2
    assert "Labelled" not in r.stderr and "wrote" not in r.stderr
    assert _digest(root / "data") == before


@pytest.mark.slow
def test_download_offline_fails_with_instructions(tmp_path):
    proxy = "http://127.0.0.1:9"  # unreachable: fails at once, as without internet
    r = _run(tmp_path, "--subsets", "small", "--stop-stage", "0", env={"http_proxy": proxy, "https_proxy": proxy,
                                                 "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy})
    assert r.returncode != 0
    assert "dl.fbaipublicfiles.com/librilight/data/small.tar" in r.stdout
    assert "tar xf small.tar -C download/LibriLight" in r.stdout


def _recording(n: int, rec_id: str = "small/1/b/f"):
    from lhotse import AudioSource, Recording

    return Recording(id=rec_id, sources=[AudioSource(type="file", channels=[0], source="x.flac")],
                     sampling_rate=SR, num_samples=n, duration=n / SR)


@pytest.mark.parametrize("seconds,count,last", [
    (35.0, 4, 5.0),    # 3 full windows + a 5 s tail (>= 3 s: kept)
    (31.5, 3, 10.0),   # 1.5 s tail dropped
    (30.0, 3, 10.0),   # no tail
    (5.0, 1, 5.0),     # shorter than a window, long enough: one segment
    (2.0, 0, None),    # too short for anything
])
def test_segment_rule_by_hand(seconds, count, last):
    cuts = ll.segment_recording(_recording(int(seconds * SR)), 10.0, 3.0)
    assert len(cuts) == count
    if count:
        assert cuts[-1].duration == last
        assert [c.start for c in cuts] == [10.0 * k for k in range(count)]
        assert cuts[0].id == "small_1_b_f_0000" and cuts[0].recording_id == "small/1/b/f"


def test_audio_shar_round_trip(tmp_path):
    """--frontend cnn stores audio (flac): the Shar cuts' samples equal the source windows'."""
    import numpy as np
    from lhotse import CutSet, Recording

    rng = np.random.default_rng(0)
    path = tmp_path / "f.flac"
    sf.write(str(path), (rng.standard_normal(SR * 25) * 3000).astype(np.int16), SR,
             subtype="PCM_16")
    rec = Recording.from_file(path, recording_id="small/1/b/f")
    cuts = CutSet.from_cuts(ll.segment_recording(rec, 10.0, 3.0))  # 10 + 10 + 5 s
    pieces = [ll.cuts_path(tmp_path, "small.000000"), ll.cuts_path(tmp_path, "small.000001")]
    CutSet.from_cuts(list(cuts)[:2]).to_file(pieces[0])
    CutSet.from_cuts(list(cuts)[2:]).to_file(pieces[1])
    for p in pieces:
        ll.write_shar_piece(p, tmp_path / "shar", {"recording": "flac"}, cuts_per_piece=2,
                            shard_size=1)
    assert ll.write_shar_piece(pieces[0], tmp_path / "shar", {"recording": "flac"}, 2, 1) == []
    back = list(CutSet.from_shar(in_dir=tmp_path / "shar"))
    assert [c.id for c in back] == [c.id for c in cuts]
    for a, b in zip(back, cuts):
        assert np.array_equal(a.load_audio(), b.load_audio())
    with pytest.raises(ValueError, match="multiple of the shard size"):
        ll.write_shar_piece(pieces[0], tmp_path / "shar2", {"recording": "flac"}, 3, 2)


def test_slurm_launcher_runs_the_librilight_script(tmp_path):
    """local/slurm_pretrain.sbatch is LibriSpeech's launcher: from this recipe it starts this
    recipe's zipformer/pretrain.py. Stand-ins for srun, scontrol and torchrun print the call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": 'while [[ $# -gt 0 && $1 == --* ]]; do shift; done\nexec "$@"',
                       "scontrol": "echo node1", "torchrun": 'echo "torchrun $*"'}.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node1",
               SLURM_NNODES="3", SLURM_JOB_ID="7")
    r = subprocess.run(["bash", "local/slurm_pretrain.sbatch", "--num-epochs", "1"], cwd=RECIPE,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--nnodes 3 --nproc-per-node 8" in r.stdout and "node1:29500" in r.stdout
    assert "./zipformer/pretrain.py --use-fp16 true --num-epochs 1" in r.stdout
    assert (RECIPE / "zipformer" / "pretrain.py").is_file()


def test_write_segments_pieces_and_dev_without_audio(tmp_path):
    """Counts by hand on recordings of known lengths (no audio is read)."""
    from lhotse import RecordingSet

    secs = [35.0, 31.5, 30.0, 5.0, 2.0, 12.0]  # 4 + 3 + 3 + 1 + 0 + 1 segments (W 10, MIN 3)
    recs = RecordingSet.from_recordings(
        _recording(int(x * SR), f"small/{i}/b/f") for i, x in enumerate(secs))
    recs.to_file(tmp_path / "librilight_recordings_small.jsonl.gz")
    counts = ll.write_segments(tmp_path, "small", tmp_path / "seg", 10.0, 3.0, cuts_per_piece=4,
                               seed=1, dev_files=1)
    dev = [c["id"] for c in _cuts(tmp_path / "seg" / "librilight_cuts_dev.jsonl.gz")]
    total = 4 + 3 + 3 + 1 + 0 + 1
    assert counts["segments"] + counts["dev_segments"] == total and counts["dev_segments"] == len(dev)
    sizes = [len(_cuts(p)) for p in ll.piece_paths(tmp_path / "seg", "small")]
    assert sum(sizes) == counts["segments"] and all(n == 4 for n in sizes[:-1]) and sizes[-1] <= 4
    with pytest.raises(ValueError, match="leaves none"):
        ll.write_segments(tmp_path, "small", tmp_path / "seg2", dev_files=6)


def test_fit_sample_reaches_the_hours_from_the_first_pieces(tmp_path):
    from icefall.data.librispeech import write_lines

    pieces = []
    for k in range(5):
        p = ll.cuts_path(tmp_path, f"small.{k:06d}")
        write_lines([json.dumps({"id": f"p{k}-{i}", "duration": 10.0}) for i in range(36)], p)
        pieces.append(p)
    out = tmp_path / "fit.jsonl.gz"
    # 0.1 h = 36 cuts of 10 s; a pool of 2x that is the first 2 pieces
    n = ll.write_fit_sample(pieces, out, hours=0.1, seed=3, pool_factor=2.0)
    ids = [c["id"] for c in _cuts(out)]
    assert n == len(ids) == 36 and len(set(ids)) == 36
    assert {i.split("-")[0] for i in ids} == {"p0", "p1"}  # drawn from both, and only them
