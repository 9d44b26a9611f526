"""Pieces of VietASR's iterative loop: pseudo-label confidence filtering (icefall.asr.pseudo_label)
on constructed posteriors and with a tiny model, and k-means features taken from a fine-tuned
ASR checkpoint (icefall.ssl.labels)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from icefall.asr import pseudo_label as pl
from icefall.asr.ctc import ctc_greedy_search

V = 5  # blank + 4 tokens


def _log_probs(path):
    """(T, V) log posteriors whose best token at frame t is path[t] = (token, probability);
    the remaining mass is spread evenly over the other tokens."""
    rows = []
    for tok, p in path:
        row = [(1 - p) / (V - 1)] * V
        row[tok] = p
        rows.append(row)
    return torch.tensor(rows).log()


def test_token_confidence_is_the_peak_of_each_run():
    lp = _log_probs([(0, 0.9), (1, 0.6), (1, 0.8), (0, 0.7), (2, 0.7), (2, 0.5), (1, 0.95),
                     (0, 0.99), (1, 0.55)])
    tokens, conf = pl.ctc_greedy_confidence(lp, blank=0)
    assert tokens == [1, 2, 1, 1]  # 1 1 collapse; 1 after a blank is a new token
    assert conf == pytest.approx([0.8, 0.7, 0.95, 0.55])
    assert pl.utterance_confidence(conf, "mean") == pytest.approx((0.8 + 0.7 + 0.95 + 0.55) / 4)
    assert pl.utterance_confidence(conf, "min") == pytest.approx(0.55)
    assert pl.utterance_confidence([], "mean") == 0.0
    with pytest.raises(ValueError):
        pl.utterance_confidence(conf, "max")


def test_tokens_agree_with_ctc_greedy_search():
    g = torch.Generator().manual_seed(3)
    for T in (1, 7, 40):
        lp = torch.randn(T, V, generator=g).log_softmax(-1)
        tokens, conf = pl.ctc_greedy_confidence(lp)
        assert tokens == ctc_greedy_search(lp.unsqueeze(0), torch.tensor([T]))[0]
        assert len(conf) == len(tokens) and all(1 / V <= c <= 1 for c in conf)


# Utterances with known per-token posteriors: which are kept at a threshold?
UTTS = {
    "a": [(0, 0.9), (1, 0.95), (0, 0.9), (2, 0.9)],   # tokens 0.95, 0.9: mean .925, min .9
    "b": [(3, 0.99), (3, 0.6), (0, 0.8), (4, 0.5)],   # 0.99, 0.5: mean .745, min .5
    "c": [(0, 0.99), (0, 0.97)],                      # nothing emitted: 0
    "d": [(2, 0.85), (0, 0.6)],                       # 0.85
    "e": [(1, 0.7), (2, 0.98), (3, 0.98)],            # 0.7 .98 .98: mean .8867, min .7
}


@pytest.mark.parametrize("threshold, reduce, kept", [
    (0.8, "mean", {"a", "d", "e"}),
    (0.9, "mean", {"a"}),
    (0.85, "min", {"a", "d"}),
    (0.5, "min", {"a", "b", "d", "e"}),
    (0.0, "mean", {"a", "b", "d", "e"}),  # an empty hypothesis is never a label
    (0.99, "mean", set()),
])
def test_which_utterances_are_kept(threshold, reduce, kept):
    out = set()
    for name, path in UTTS.items():
        tokens, conf = pl.ctc_greedy_confidence(_log_probs(path))
        if pl.keep(tokens, pl.utterance_confidence(conf, reduce), threshold):
            out.add(name)
    assert out == kept


def test_min_tokens():
    tokens, conf = pl.ctc_greedy_confidence(_log_probs(UTTS["d"]))
    assert pl.keep(tokens, 0.85, 0.8, min_tokens=1) and not pl.keep(tokens, 0.85, 0.8, min_tokens=2)


def _tiny_asr(tmp_path, vocab_texts):
    from icefall.asr.finetune import build_asr_model, get_parser, load_ssl_model
    from icefall.data.tokenizer import load_tokenizer, make_char_lang
    from icefall.utils import AttributeDict

    lang = make_char_lang(vocab_texts, tmp_path / "lang_char")
    tok = load_tokenizer(lang)
    args = get_parser(encoder="zipformer-tiny", frontend="fbank",
                      encoder_overrides="frontend_layer3_channels=32", use_ctc=True,
                      use_transducer=False).parse_args([])
    params = AttributeDict(vars(args))
    params.vocab_size, params.blank_id = tok.vocab_size, tok.blank_id
    torch.manual_seed(0)
    model = build_asr_model(params, load_ssl_model(params))
    with torch.no_grad():  # a sharper CTC head than the initial one: varied confidences
        for p in model.ctc_output.parameters():
            p.mul_(3.0)
    return model.eval(), params, tok


def _fbank_cuts(tmp_path, n):
    """n cuts of 1-2 s: chirps of different pitch and loudness plus seeded noise, with fbank."""
    import io

    import numpy as np
    import soundfile as sf
    from lhotse import CutSet, LilcomChunkyWriter, Recording

    from icefall.data.features import make_fbank_extractor

    rng = np.random.default_rng(1)
    cuts = []
    for i in range(n):
        t = np.arange(int(16000 * (1.0 + 0.2 * i))) / 16000
        f0 = 150.0 * (i + 1)
        x = (0.05 + 0.1 * i) * np.sin(2 * np.pi * (f0 + 400 * t * (i % 3)) * t)
        x = (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, x, 16000, format="WAV")
        cuts.append(Recording.from_bytes(buf.getvalue(), f"utt{i}").to_cut())
    return CutSet.from_cuts(cuts).compute_and_store_features(
        make_fbank_extractor(), tmp_path / "feats", storage_type=LilcomChunkyWriter)


@pytest.mark.slow
def test_pseudo_label_cuts_with_a_tiny_model(tmp_path):
    model, params, tok = _tiny_asr(tmp_path, ["xin chào các bạn", "tôi đã ăn cơm"])
    cuts = list(_fbank_cuts(tmp_path, 6))

    # Reference: one cut at a time, confidence computed naively from the softmax.
    ref = {}
    with torch.no_grad():
        for c in cuts:
            x = torch.as_tensor(c.load_features()).unsqueeze(0)
            enc, lens = model.forward_encoder(x, torch.tensor([x.shape[1]]))
            post = model.ctc_output(enc)[0, : int(lens[0])].exp()
            toks = ctc_greedy_search(post.log().unsqueeze(0), lens[:1])[0]
            best = post.argmax(-1).tolist()
            peaks, prev = [], 0
            for t, k in enumerate(best):
                if k != 0 and k == prev:
                    peaks[-1] = max(peaks[-1], float(post[t, k]))
                elif k != 0:
                    peaks.append(float(post[t, k]))
                prev = k
            ref[c.id] = (tok.decode(toks), sum(peaks) / len(peaks) if peaks else 0.0, len(toks))
    confs = sorted(v[1] for v in ref.values())
    # a threshold in the widest gap between two confidences, some kept and some not
    gap, i = max((confs[i + 1] - confs[i], i) for i in range(len(confs) - 1))
    assert gap > 1e-3, confs
    threshold = (confs[i] + confs[i + 1]) / 2
    kept, stats = pl.pseudo_label_cuts(model, cuts, tok, "fbank", threshold, max_frames=300)
    want = [c.id for c in cuts if ref[c.id][1] >= threshold and ref[c.id][2] >= 1]
    assert [c.id for c in kept] == want and stats == pytest.approx(
        {"cuts": 6, "kept": len(want), "mean_confidence": sum(confs) / 6}, abs=1e-4)
    for c in kept:
        s = c.supervisions[0]
        assert s.text == ref[c.id][0]
        assert s.custom["confidence"] == pytest.approx(ref[c.id][1], abs=1e-4)
        assert s.duration == c.duration


def test_kmeans_features_from_a_finetuned_asr_checkpoint(tmp_path):
    """icefall.ssl.labels reads a finetune.py checkpoint: its layer features are those of the
    fine-tuned encoder (checked against an SSL model loaded by hand from the ASR weights)."""
    from icefall.models import SslEncoder
    from icefall.nn.configs import encoder_config
    from icefall.ssl.labels import checkpoint_feature_fn, load_pretrained

    model, params, _ = _tiny_asr(tmp_path, ["xin chào"])
    with torch.no_grad():
        for p in model.encoder.parameters():  # "fine-tuned": away from any fresh init
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "epoch-3.pt"
    torch.save({"model": model.state_dict(), "params": dict(params)}, ckpt)

    ssl, input_type = load_pretrained(ckpt)
    assert input_type == "fbank" and not ssl.training

    speech = encoder_config("zipformer-tiny", frontend="fbank", frontend_layer3_channels=32).build()
    by_hand = SslEncoder(speech.frontend, speech.encoder)
    enc = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    by_hand.load_state_dict(enc)
    by_hand.eval()

    class Cut:
        def load_features(self):
            return torch.randn(240, 80, generator=torch.Generator().manual_seed(5)).numpy()

    for layer in (0, 2, 4):
        feats = checkpoint_feature_fn(ckpt, layer)(Cut())
        x = torch.as_tensor(Cut().load_features()).unsqueeze(0)
        with torch.no_grad():
            (want,), lens = by_hand.extract_features(x, torch.tensor([240]), layers=[layer])
        torch.testing.assert_close(feats, want[0, : int(lens[0])])


def _iterate(tmp_path, *args):
    script = Path(__file__).resolve().parents[1] / "egs" / "vietnamese" / "SSL" / "iterate.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(script), "--dry-run", "true", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def test_iterate_chains_one_iteration_to_the_next(tmp_path):
    """iterate.sh --dry-run: which checkpoints and label directories each step reads/writes."""
    r = _iterate(tmp_path, "--iter", "0", "--ft-epochs", "30", "--pseudo-label", "true")
    assert r.returncode == 0, r.stderr
    cmds = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert len(cmds) == 3  # scratch ASR, decode, pseudo-labels
    assert cmds[0].startswith("./zipformer/finetune.py --init-ckpt none --base-lr 0.045 "
                              "--train-split train-50h --lang-dir data/lang_bpe_2000 "
                              "--exp-dir zipformer/exp-ft-iter0 --num-epochs 30")
    assert "--exp-dir zipformer/exp-ft-iter0 --lang-dir data/lang_bpe_2000 --epoch 30" in cmds[1]
    assert cmds[2].endswith("--merge-with train-50h --out data/fbank/vietnamese_cuts_train-50h-pl0.jsonl.gz")

    r = _iterate(tmp_path, "--iter", "2", "--ft-epochs", "30", "--pt-epochs", "10",
                 "--use-pseudo-labels", "true", "--layer", "8")
    assert r.returncode == 0, r.stderr
    cmds = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert len(cmds) == 4  # k-means labels, pretrain, fine-tune, decode
    assert "-m icefall.ssl.labels --manifest-dir data/fbank --out-dir data/kmeans-asr1-500 " \
           "--prefix vietnamese --features layer --checkpoint zipformer/exp-ft-iter1/epoch-30.pt " \
           "--layer 8" in cmds[0]
    assert f"--max-fit-frames {2000 * 3600 * 50}" in cmds[0]
    assert cmds[1].startswith("./zipformer/pretrain.py --manifest-dir data/kmeans-asr1-500 "
                              "--num-classes 500 --label-rate 50 --exp-dir zipformer/exp-pretrain-iter2 "
                              "--num-epochs 10")
    assert cmds[2].startswith("./zipformer/finetune.py --init-ckpt zipformer/exp-pretrain-iter2/epoch-10.pt "
                              "--train-split train-50h-pl1 ")
    assert "--exp-dir zipformer/exp-ft-iter2" in cmds[2] and "--exp-dir zipformer/exp-ft-iter2" in cmds[3]

    # finished steps are skipped
    (tmp_path / "data" / "kmeans-asr1-500").mkdir(parents=True)
    (tmp_path / "data" / "kmeans-asr1-500" / ".done").touch()
    r = _iterate(tmp_path, "--iter", "2", "--ft-epochs", "30", "--pt-epochs", "10")
    assert "icefall.ssl.labels" not in r.stdout and r.stdout.count("done before") == 1

    assert _iterate(tmp_path).returncode == 1  # --iter is required
