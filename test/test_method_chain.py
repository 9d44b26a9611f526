"""For each pretraining --method: pretrain (tiny config, a few updates) -> fine-tune from its
checkpoint (CTC) -> decode --epoch --avg, through the library entry points the recipe scripts
call, on a tiny random-fbank corpus. Also: config.json beside each run, the pretraining
checkpoint refused by decoding, and the fine-tuning run recording which objective it came from."""
import json

import numpy as np
import pytest

from icefall.asr import decode as dec
from icefall.asr import finetune
from icefall.checkpoint import load_file
from icefall.models import CheckpointKindError, ModelConfig, load_model
from icefall.ssl import pretrain

TEXTS = ["a b", "c a d", "b d", "a c"]
COMMON = ["--cuts-prefix", "t", "--num-epochs", "1", "--max-duration", "8", "--num-workers", "0",
          "--tensorboard", "false", "--encoder", "zipformer-tiny", "--frontend", "fbank",
          "--encoder-overrides", "frontend_layer3_channels=32", "--log-interval", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``<dir>/t_cuts_<split>.jsonl.gz`` for four splits: random 80-dim fbank of 1.2-2.1 s with
    texts and 50 Hz k-means labels; and a character lang dir."""
    from lhotse import CutSet, Features, MonoCut, SupervisionSegment
    from lhotse.features.io import NumpyFilesWriter

    from icefall.data.tokenizer import make_char_lang

    d = tmp_path_factory.mktemp("chain")
    rng = np.random.default_rng(0)
    with NumpyFilesWriter(d / "feats") as writer:
        for split in ("train-unlabeled", "dev", "train-labeled", "test"):
            cuts = []
            for i, text in enumerate(TEXTS):
                frames = 120 + 30 * i
                cid = f"{split}-{i}"
                key = writer.write(cid, rng.standard_normal((frames, 80)).astype(np.float32))
                dur = frames / 100
                feats = Features(type="fbank", num_frames=frames, num_features=80, frame_shift=0.01,
                                 sampling_rate=16000, start=0.0, duration=dur, storage_type=writer.name,
                                 storage_path=str(writer.storage_path), storage_key=key, recording_id=cid)
                sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=dur, text=text)
                labels = " ".join(str(v) for v in rng.integers(0, 10, round(dur * 50)))
                cuts.append(MonoCut(id=cid, start=0.0, duration=dur, channel=0, supervisions=[sup],
                                    features=feats, custom={"kmeans": labels}))
            CutSet.from_cuts(cuts).to_file(d / f"t_cuts_{split}.jsonl.gz")
    lang = make_char_lang(TEXTS, d / "lang")
    return d, lang


#: Per-method options after COMMON's (the last --encoder-overrides wins): BYOL-S's heads small.
EXTRA = {"byol": ["--encoder-overrides", "frontend_layer3_channels=32,projector_hidden_dim=64,projector_dim=16"]}


@pytest.mark.parametrize("method", ["hubert", "spidr", "dinosr", "wav2vec2", "data2vec", "byol"])
def test_pretrain_finetune_decode(corpus, tmp_path, method):
    data, lang = corpus
    pt_dir, ft_dir = tmp_path / "pt", tmp_path / "ft"
    pretrain.main(pretrain.get_parser().parse_args(COMMON + [
        "--manifest-dir", str(data), "--exp-dir", str(pt_dir), "--method", method, "--num-classes", "10",
        "--num-codebooks", "2", "--codebook-size", "16", "--ema-timescale", "5"] + EXTRA.get(method, [])))
    ckpt = load_file(pt_dir / "epoch-1.pt")
    assert ckpt["params"]["batch_idx_train"] >= 2  # a few updates
    written = ModelConfig.from_dict(json.loads((pt_dir / "config.json").read_text())["model"])
    assert written == ModelConfig.from_dict(ckpt["params"]["model_config"])
    assert written.kind == "pretrain" and written.objective == method

    finetune.main(finetune.get_parser().parse_args([
        "--init-ckpt", str(pt_dir / "epoch-1.pt"), "--manifest-dir", str(data), "--exp-dir", str(ft_dir),
        "--lang-dir", str(lang), "--use-ctc", "true", "--use-transducer", "false", "--decoder-dim", "16",
        "--joiner-dim", "16", "--enable-spec-aug", "false", "--mask-prob", "0.1",
        "--cuts-prefix", "t", "--num-epochs", "1", "--max-duration", "8", "--num-workers", "0",
        "--tensorboard", "false", "--log-interval", "1"]))
    ft = ModelConfig.from_dict(json.loads((ft_dir / "config.json").read_text())["model"])
    assert ft.kind == "asr" and ft.objective == method and ft.encoder == written.encoder
    assert load_file(ft_dir / "epoch-1.pt")["params"]["batch_idx_train"] >= 2

    args = dec.get_parser().parse_args([
        "--exp-dir", str(ft_dir), "--epoch", "1", "--avg", "1", "--use-averaged-model", "false",
        "--lang-dir", str(lang), "--decoding-method", "ctc-greedy-search", "--manifest-dir", str(data),
        "--cuts-prefix", "t", "--test-splits", "test", "--num-workers", "0"])
    wers = dec.main(args)
    assert set(wers) == {"test"} and 0.0 <= wers["test"] <= 200.0
    recogs = list((ft_dir / "ctc-greedy-search").glob("recogs-test-*.txt"))
    assert len(recogs) == 1 and recogs[0].read_text().count("ref=") == len(TEXTS)

    # decoding a pretraining checkpoint: a clear error, not a missing attribute
    args.exp_dir = pt_dir
    with pytest.raises(CheckpointKindError, match="is a pretraining checkpoint.*decoding needs a fine-tuned one"):
        dec.main(args)
    model, cfg = load_model(ft_dir / "epoch-1.pt", expect="asr")
    assert cfg.objective == method and model.use_ctc and not model.use_transducer
