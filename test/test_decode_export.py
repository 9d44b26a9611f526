"""Decoding, export (pretrained.pt, TorchScript, ONNX) and ONNX decoding of a tiny random AsrModel.

The model is zipformer-tiny with the fbank front end and both heads (transducer + CTC), so one
export covers encoder/decoder/joiner.onnx and model.onnx. References are the eager PyTorch model
(through its own API, not the export wrappers), hand-computed averages and hand-computed WERs.
"""
import argparse
import math

import numpy as np
import onnxruntime as ort
import pytest
from conftest import write_random_fbank_cuts
import torch

from icefall.asr import decode as dec
from icefall.asr import export as exp
from icefall.asr.finetune import build_asr_model
from icefall.asr.onnx_decode import OnnxAsrModel, onnx_decode
from icefall.asr.onnx_decode import get_parser as onnx_parser
from icefall.asr.pretrained import get_parser as pretrained_parser
from icefall.asr.pretrained import transcribe
from icefall.checkpoint import save_checkpoint
from icefall.data.tokenizer import load_tokenizer, make_char_lang
from icefall.utils import AttributeDict

TEXTS = ["a b", "c a d", "a"]  # 6 reference words
TOL = 1e-3


def tiny_params(vocab_size: int, **kw) -> AttributeDict:
    p = AttributeDict(encoder="zipformer-tiny", frontend="fbank", mask_prob=0.0, mask_length=10,
                      vocab_size=vocab_size, decoder_dim=32, joiner_dim=32, context_size=2, blank_id=0,
                      use_transducer=True, use_ctc=True)
    p.update(kw)
    return p


def make_model(params: AttributeDict, seed: int = 0):
    torch.manual_seed(seed)
    return build_asr_model(params).eval()


@torch.no_grad()
def vary_outputs(model) -> None:
    """Make a random model's outputs depend on its input, as a trained one's do.

    At initialisation the encoder output is dominated by a per-channel constant, so every frame
    gives the same token and search comparisons would compare constant outputs. The heads are
    given random weights over the standardised encoder output instead; <sos/eos> and <unk>
    (ids 1, 2) are never emitted, so that hypotheses decode to words.
    """
    g = torch.Generator().manual_seed(123)
    x, lens = random_batch([180, 120], seed=99)
    enc, _ = model.forward_encoder(x, lens)
    mean, std = enc.mean((0, 1)), enc.std((0, 1)) + 1e-3
    for lin in (model.ctc_output.output, model.joiner.encoder_proj):
        w = torch.randn(lin.weight.shape, generator=g) * 2.0 / lin.weight.shape[1] ** 0.5 / std
        lin.weight.copy_(w)
        lin.bias.copy_(-w @ mean)
    out = model.joiner.output_linear
    out.weight.copy_(torch.randn(out.weight.shape, generator=g) * 3.0 / out.weight.shape[1] ** 0.5)
    for lin in (model.ctc_output.output, out):
        lin.bias[1:3] -= 10.0


@pytest.fixture(scope="module")
def lang_dir(tmp_path_factory):
    return make_char_lang(TEXTS, tmp_path_factory.mktemp("lang"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``<dir>/t_cuts_test.jsonl.gz``: one cut per TEXTS item with random 80-dim fbank."""
    return write_random_fbank_cuts(tmp_path_factory.mktemp("fbank"), TEXTS,
                                   [120 + 37 * i for i in range(len(TEXTS))])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, lang_dir):
    """A random model exported to ONNX and TorchScript: (model, params, dir, {kind: diffs})."""
    params = tiny_params(load_tokenizer(lang_dir).vocab_size)
    model = make_model(params)
    vary_outputs(model)
    out = tmp_path_factory.mktemp("exp")
    diffs = {"onnx": exp.export_onnx(model, params, out / "onnx"),
             "jit": exp.export_torchscript(model, params, out / "jit")}
    exp.copy_tokens(lang_dir, out / "onnx")
    exp.save_pretrained(model, params, out / "pretrained.pt")
    return model, params, out, diffs


def random_batch(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80, generator=g)
    return x, torch.tensor(lengths, dtype=torch.int64)


def _ref_encoder(model, x, lens):
    with torch.no_grad():
        out, out_lens = model.forward_encoder(x, lens)
        return out, out_lens


# ------------------------------------------------------------------ trace-friendly internals


def test_traceable_zipformer_is_the_same_function():
    from icefall.nn import zipformer

    ps = torch.randn(2, 3, 11, 21)
    assert torch.equal(exp._rel_to_abs_gather(ps), zipformer.rel_to_abs(ps))
    pe = zipformer.CompactRelPositionalEncoding(48, dropout_rate=0.0).eval()
    for T in (1, 7, 300):
        ref = pe(T, torch.device("cpu"), torch.float32)
        assert torch.allclose(exp._rel_pos_encoding_traced(pe, T, torch.device("cpu"), torch.float32), ref,
                              atol=1e-6)
    with exp.traceable_zipformer():
        assert zipformer.rel_to_abs is exp._rel_to_abs_gather
    assert zipformer.rel_to_abs is not exp._rel_to_abs_gather  # restored


# ------------------------------------------------------------------ exported models == PyTorch


@pytest.mark.parametrize("lengths", [[150, 97, 150], [263]])
def test_onnx_models_match_pytorch(exported, lengths):
    model, params, out, _ = exported
    x, lens = random_batch(lengths, seed=len(lengths))
    sess = {n: ort.InferenceSession(str(out / "onnx" / f"{n}.onnx"), providers=["CPUExecutionProvider"])
            for n in ("encoder", "decoder", "joiner", "model")}
    enc, enc_lens = _ref_encoder(model, x, lens)
    feeds = {"x": x.numpy(), "x_lens": lens.numpy()}

    got, got_lens = sess["encoder"].run(None, feeds)
    with torch.no_grad():
        ref = model.joiner.encoder_proj(enc)
    assert np.array_equal(got_lens, enc_lens.numpy())
    assert np.abs(got - ref.numpy()).max() < TOL

    log_probs, lp_lens = sess["model"].run(None, feeds)
    with torch.no_grad():
        ref_lp = model.ctc_output(enc)
    assert np.array_equal(lp_lens, enc_lens.numpy())
    assert np.abs(log_probs - ref_lp.numpy()).max() < TOL

    N = len(lengths) + 2
    y = torch.randint(0, model.vocab_size, (N, 2))
    y[0, 0] = -1  # start-of-utterance context
    with torch.no_grad():
        ref_dec = model.joiner.decoder_proj(model.decoder(y, need_pad=False)[:, 0])
    (got_dec,) = sess["decoder"].run(None, {"y": y.numpy()})
    assert np.abs(got_dec - ref_dec.numpy()).max() < TOL

    e, d = torch.randn(N, 32), torch.randn(N, 32)
    with torch.no_grad():
        ref_logit = model.joiner(e, d, project_input=False)
    (got_logit,) = sess["joiner"].run(None, {"encoder_out": e.numpy(), "decoder_out": d.numpy()})
    assert got_logit.shape == (N, model.vocab_size)
    assert np.abs(got_logit - ref_logit.numpy()).max() < TOL


def test_onnx_metadata_and_self_check(exported):
    model, params, out, diffs = exported
    meta = ort.InferenceSession(str(out / "onnx" / "decoder.onnx")).get_modelmeta().custom_metadata_map
    assert meta["vocab_size"] == str(model.vocab_size) and meta["context_size"] == "2"
    assert meta["feature_type"] == "fbank" and meta["model_type"] == "zipformer2"
    assert (out / "onnx" / "tokens.txt").is_file()
    # export's own check (eager model outside the patched block) covers two lengths per module
    for kind in ("onnx", "jit"):
        assert len(diffs[kind]) == 8 and max(diffs[kind].values()) < TOL, diffs[kind]


def test_exported_letter_tokens_separate_words_as_sherpa_onnx_expects(exported, lang_dir):
    """sherpa-onnx prints "▁" as a space (and "|" as itself): the exported tokens.txt of a letter
    model uses "▁", which our tokenizer reads back to the same ids and text."""
    from icefall.data.tokenizer import CharTokenizer

    _, _, out, _ = exported
    lines = (out / "onnx" / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert "\u2581 3" in lines and not any(line.startswith("| ") for line in lines)
    ours, exported_tok = CharTokenizer(lang_dir), CharTokenizer(out / "onnx")
    ids = ours.encode(TEXTS)
    assert exported_tok.encode(TEXTS) == ids
    assert [exported_tok.decode(i) for i in ids] == [" ".join(t.split()) for t in TEXTS]


def test_metadata_says_where_the_encoder_came_from(exported):
    model, params, _, _ = exported
    assert "trained from scratch" in exp.model_metadata(model, AttributeDict(params, init_ckpt="none"))["comment"]
    meta = exp.model_metadata(model, AttributeDict(params, init_ckpt="exp/epoch-9.pt", init_objective="spidr"))
    assert "SSL pretrained (spidr)" in meta["comment"]
    params_ctc = AttributeDict(params, use_transducer=False)
    assert exp.model_metadata(make_model(params_ctc), params_ctc)["model_type"] == "zipformer2_ctc"


def test_torchscript_matches_pytorch(exported):
    model, params, out, _ = exported
    x, lens = random_batch([211, 140], seed=5)
    enc_ref, lens_ref = _ref_encoder(model, x, lens)
    encoder = torch.jit.load(str(out / "jit" / "encoder_jit_trace.pt"))
    ctc = torch.jit.load(str(out / "jit" / "model_jit_trace.pt"))
    with torch.no_grad():
        enc, enc_lens = encoder(x, lens)
        lp, lp_lens = ctc(x, lens)
        assert (enc - model.joiner.encoder_proj(enc_ref)).abs().max() < TOL
        assert (lp - model.ctc_output(enc_ref)).abs().max() < TOL
    assert torch.equal(enc_lens, lens_ref) and torch.equal(lp_lens, lens_ref)


def test_cnn_frontend_exports(tmp_path):
    """Waveform input (N, samples) for the wav2vec2-CNN front end."""
    params = tiny_params(7, frontend="cnn", use_transducer=False)
    model = make_model(params, seed=1)
    diffs = exp.export_onnx(model, params, tmp_path)
    assert set(diffs) == {"model@123", "model@345"} and max(diffs.values()) < TOL, diffs
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"))
    assert sess.get_modelmeta().custom_metadata_map["feature_type"] == "waveform"
    wav, lens = 0.1 * torch.randn(2, 24000), torch.tensor([24000, 17000])
    lp, lp_lens = sess.run(None, {"x": wav.numpy(), "x_lens": lens.numpy()})
    with torch.no_grad():
        enc, enc_lens = model.forward_encoder(wav, lens)
        assert np.abs(lp - model.ctc_output(enc).numpy()).max() < TOL
    assert np.array_equal(lp_lens, enc_lens.numpy())


# ------------------------------------------------------------------ ONNX decoding == PyTorch decoding


@pytest.mark.parametrize("method", ["greedy_search", "ctc-greedy-search", "modified_beam_search"])
def test_onnx_search_equals_pytorch(exported, method):
    model, params, out, _ = exported
    onnx_model = OnnxAsrModel(out / "onnx")
    total = 0
    for seed, lengths in enumerate([[180, 120], [95], [240, 200, 160]]):
        x, lens = random_batch(lengths, seed=10 + seed)
        ref = dec.decode_batch(model, x, lens, method, beam_size=3)
        assert onnx_model.decode(x, lens, method, beam_size=3) == ref
        total += sum(len(h) for h in ref)
    assert total > 0  # not a comparison of empty outputs


# ------------------------------------------------------------------ pretrained.pt round trip


def test_pretrained_pt_is_the_requested_average(tmp_path, lang_dir):
    params = tiny_params(load_tokenizer(lang_dir).vocab_size)
    models = [make_model(params, seed=s) for s in (1, 2)]
    avgs = [make_model(params, seed=s).double() for s in (3, 4)]
    for epoch, (m, a, b) in enumerate(zip(models, avgs, (10, 30)), start=1):
        save_checkpoint(tmp_path / f"epoch-{epoch}.pt", m, model_avg=a, params=dict(params, batch_idx_train=b))

    def export_and_load(**kw):
        args = exp.get_parser().parse_args(["--exp-dir", str(tmp_path), "--lang-dir", str(lang_dir),
                                            "--jit", "false", "--onnx", "false"] + kw["argv"])
        exp.export(args)
        loaded, loaded_params = dec.load_model(argparse.Namespace(checkpoint=tmp_path / "pretrained.pt"))
        assert loaded_params.encoder == "zipformer-tiny" and loaded_params.vocab_size == params.vocab_size
        return loaded.state_dict()

    # plain mean of epochs 1..2
    got = export_and_load(argv=["--epoch", "2", "--avg", "2", "--use-averaged-model", "false"])
    s1, s2 = models[0].state_dict(), models[1].state_dict()
    for k, v in got.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (s1[k] + s2[k]) / 2)
    # mean over batches (10, 30] from the running averages: (30 * avg2 - 10 * avg1) / 20
    got = export_and_load(argv=["--epoch", "2", "--avg", "1", "--use-averaged-model", "true"])
    a1, a2 = avgs[0].state_dict(), avgs[1].state_dict()
    for k, v in got.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, ((30 * a2[k] - 10 * a1[k]) / 20).float())


# ------------------------------------------------------------------ decode.py files and WERs


def test_decoding_key():
    args = dec.get_parser().parse_args(["--epoch", "20", "--avg", "5"])
    assert dec.decoding_key(args) == "greedy_search-epoch-20-avg-5-use-averaged-model"
    args = dec.get_parser().parse_args(["--iter", "800", "--avg", "2", "--use-averaged-model", "0",
                                        "--decoding-method", "modified_beam_search"])
    assert dec.decoding_key(args) == "modified_beam_search-beam-4-iter-800-avg-2"


def _decode_args(ckpt, exp_dir, lang_dir, corpus, method):
    return dec.get_parser().parse_args([
        "--checkpoint", str(ckpt), "--exp-dir", str(exp_dir), "--lang-dir", str(lang_dir),
        "--manifest-dir", str(corpus), "--cuts-prefix", "t", "--test-splits", "test",
        "--decoding-method", method, "--num-workers", "0", "--max-duration", "100",
    ])


@pytest.mark.parametrize("method,wer", [
    # every frame says "a": CTC collapses it to the word "a" -> 1 + 2 + 0 deletions of 6 words
    ("ctc-greedy-search", 50.0), ("ctc-prefix-beam-search", 50.0),
    # the transducer emits "a" on every frame: one word "aaa..." -> (1+1) + (1+2) + 1 errors
    ("greedy_search", 100.0), ("modified_beam_search", 100.0),
])
def test_decode_writes_icefall_files_with_the_right_wer(tmp_path, lang_dir, corpus, method, wer):
    tok = load_tokenizer(lang_dir)
    a = tok.encode(["a"])[0][0]
    params = tiny_params(tok.vocab_size)
    model = make_model(params)
    with torch.no_grad():  # outputs that ignore the audio: token "a" wins everywhere
        for lin in (model.ctc_output.output, model.joiner.output_linear):
            lin.weight.zero_()
            lin.bias.zero_()
            lin.bias[a] = 10.0
    exp.save_pretrained(model, params, tmp_path / "pretrained.pt")
    wers = dec.decode_splits(_decode_args(tmp_path / "pretrained.pt", tmp_path, lang_dir, corpus, method))
    assert wers == {"test": wer}
    beam = "-beam-4" if "beam" in method else ""
    key = f"{method}{beam}-pretrained"
    res = tmp_path / method
    recogs = (res / f"recogs-test-{key}.txt").read_text().splitlines()
    assert len(recogs) == 2 * len(TEXTS)
    assert "c1:\tref=['c', 'a', 'd']" in recogs
    hyp = [line for line in recogs if line.startswith("c2:\thyp=")][0]
    assert hyp == "c2:\thyp=['a']" if method.startswith("ctc") else hyp.startswith("c2:\thyp=['aaa")
    assert (res / f"errs-test-{key}.txt").read_text().startswith(f"%WER = {wer:.2f}")
    assert (res / f"wer-summary-test-{key}.txt").read_text().splitlines()[1] == f"{key}\t{wer}"


@pytest.mark.parametrize("method", ["greedy_search", "ctc-greedy-search"])
def test_onnx_split_wer_equals_pytorch(exported, corpus, lang_dir, method):
    model, params, out, _ = exported
    wers = dec.decode_splits(_decode_args(out / "pretrained.pt", out, lang_dir, corpus, method))
    args = onnx_parser().parse_args(["--model-dir", str(out / "onnx"), "--test-splits", "test",
                                     "--manifest-dir", str(corpus), "--cuts-prefix", "t",
                                     "--decoding-method", method])
    _, onnx_wers = onnx_decode(args)
    assert onnx_wers == wers and math.isfinite(wers["test"])
    hyps = lambda path: [l for l in path.read_text().splitlines() if "\thyp=" in l]  # noqa: E731
    torch_hyps = hyps(out / method / f"recogs-test-{method}-pretrained.txt")
    assert torch_hyps == hyps(out / "onnx" / method / f"recogs-test-onnx-{method}.txt")
    assert any(h.split("hyp=")[1] != "[]" for h in torch_hyps)


def test_pretrained_and_onnx_transcribe_sound_files(exported, tmp_path):
    import soundfile as sf

    model, params, out, _ = exported
    rng = np.random.default_rng(1)
    files = []
    for i, (sr, sec) in enumerate([(16000, 1.3), (8000, 0.9)]):  # 8 kHz is resampled
        files.append(tmp_path / f"w{i}.wav")
        sf.write(files[-1], (0.1 * rng.standard_normal(int(sr * sec))).astype(np.float32), sr)
    names = [str(f) for f in files]
    texts = transcribe(pretrained_parser().parse_args(
        ["--checkpoint", str(out / "pretrained.pt"), "--lang-dir", str(out / "onnx")] + names))
    onnx_texts, _ = onnx_decode(onnx_parser().parse_args(["--model-dir", str(out / "onnx")] + names))
    assert list(texts) == names and texts == onnx_texts
