"""fairseq HuBERT checkpoints -> our HubertModel.

The reference is Hugging Face's ``transformers.HubertModel`` (an independent implementation of
the same network): a tiny random HF model is renamed to fairseq's keys with the HF<->fairseq
mapping of HF's own conversion script, written as a fairseq checkpoint (``args`` Namespace or
``cfg`` DictConfig) and loaded without fairseq; our hidden states must equal HF's.
"""
import argparse
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from icefall.checkpoint import load_file  # noqa: E402
from icefall.ssl.fairseq_import import (  # noqa: E402
    FairseqCheckpointError,
    convert_fairseq_state_dict,
    load_fairseq_hubert,
    load_pretrained_hubert,
    to_fairseq_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
CONV = [(16, 10, 5), (16, 3, 2), (16, 2, 2)]
CONV_SPEC = "[(16,10,5)] + [(16,3,2)] + [(16, 2, 2)]"
NUM_CLASSES, FINAL_DIM = 12, 8

# HF name -> fairseq name (HF's convert_hubert_original_pytorch_checkpoint_to_pytorch.py, inverted).
HF_TO_FAIRSEQ = [
    (r"masked_spec_embed", r"mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_projection\.layer_norm\.", r"layer_norm."),
    (r"feature_projection\.projection\.", r"post_extract_proj."),
    (r"encoder\.pos_conv_embed\.conv\.", r"encoder.pos_conv.0."),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
]


def hf_to_fairseq(hf_sd, group_norm: bool, old_weight_norm: bool):
    out = {}
    for key, value in hf_sd.items():
        # conv block norm: fairseq Sequential index 2 (GroupNorm) or 2.1 (LayerNorm in a Sequential)
        key = re.sub(r"conv_layers\.(\d+)\.layer_norm\.", r"conv_layers.\1.2." if group_norm
                     else r"conv_layers.\1.2.1.", key)
        for pattern, repl in HF_TO_FAIRSEQ:
            key = re.sub("^" + pattern, repl, key)
        if old_weight_norm:  # torch.nn.utils.weight_norm names, as fairseq saves them
            key = key.replace("parametrizations.weight.original0", "weight_g")
            key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.clone()
    return out


def make_hf(pre_norm: bool):
    cfg = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=[c for c, _, _ in CONV], conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV], conv_bias=pre_norm,
        feat_extract_norm="layer" if pre_norm else "group", do_stable_layer_norm=pre_norm,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(1 if pre_norm else 2)
    model = transformers.HubertModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms/biases so that a mis-mapped one shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def model_cfg(pre_norm: bool):
    return dict(
        _name="hubert", label_rate="${task.label_rate}",
        extractor_mode="layer_norm" if pre_norm else "default",
        encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
        activation_fn="gelu", layer_type="transformer", dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.1, dropout_features=0.1,
        final_dim=FINAL_DIM, untie_final_proj=pre_norm, layer_norm_first=pre_norm,
        conv_feature_layers=CONV_SPEC, conv_bias=pre_norm, logit_temp=0.1, target_glu=False,
        feature_grad_mult=0.1, mask_length=10, mask_prob=0.8, conv_pos=16, conv_pos_groups=4,
    )


def task_cfg(normalize: bool):
    return dict(_name="hubert_pretraining", sample_rate=16000, normalize=normalize, label_rate=50.0)


def with_head(sd, prefix=""):
    g = torch.Generator().manual_seed(3)
    sd = {prefix + k: v for k, v in sd.items()}
    if not prefix:
        sd["final_proj.weight"] = torch.randn(FINAL_DIM, 32, generator=g) * 0.2
        sd["final_proj.bias"] = torch.randn(FINAL_DIM, generator=g) * 0.1
        sd["label_embs_concat"] = torch.rand(NUM_CLASSES, FINAL_DIM, generator=g)
    return sd


def fake_fairseq_meter_class(monkeypatch):
    """A class living in a 'fairseq.*' module while pickling (fairseq checkpoints carry
    fairseq meter objects in extra_state); the module is gone again when we load."""
    names = ["fairseq", "fairseq.logging", "fairseq.logging.meters"]
    mods = {n: types.ModuleType(n) for n in names}
    cls = type("StopwatchMeter", (), {"__module__": "fairseq.logging.meters"})
    mods["fairseq.logging.meters"].StopwatchMeter = cls
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    return cls


def write_post_norm(path, monkeypatch):
    """Base-like: post-norm, group-norm extractor; old-style checkpoint with an ``args``
    Namespace and weight_g/weight_v names."""
    hf = make_hf(pre_norm=False)
    sd = with_head(hf_to_fairseq(hf.state_dict(), group_norm=True, old_weight_norm=True))
    args = argparse.Namespace(**model_cfg(False))
    args.label_rate, args.sample_rate, args.normalize = 50.0, 16000, False
    with monkeypatch.context() as mp:
        meter = fake_fairseq_meter_class(mp)()
        meter.sum = 12.5
        torch.save({"args": args, "cfg": None, "model": sd,
                    "extra_state": {"train_meters": {"wall": meter}}}, path)
    return hf, sd


def make_cfg(pre_norm: bool, normalize: bool):
    cfg = {"model": model_cfg(pre_norm), "task": task_cfg(normalize),
           "criterion": {"_name": "hubert", "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0,
                         "loss_weights": [10.0]}}
    try:  # a real DictConfig where omegaconf is installed (the loader never needs it)
        from omegaconf import OmegaConf
        return OmegaConf.create(cfg)
    except ImportError:
        return cfg


def write_pre_norm(path):
    """Large-like: pre-norm, layer-norm extractor with conv bias, normalize=True; a ``cfg``
    DictConfig and the parametrizations names of newer torch."""
    hf = make_hf(pre_norm=True)
    sd = with_head(hf_to_fairseq(hf.state_dict(), group_norm=False, old_weight_norm=False))
    torch.save({"args": None, "cfg": make_cfg(True, normalize=True), "model": sd}, path)
    return hf, sd


def batch():
    g = torch.Generator().manual_seed(4)
    lens = torch.tensor([2400, 1700])
    wav = torch.randn(2, 2400, generator=g)
    wav[1, 1700:] = 0.0
    return wav, lens


def hf_frames(n: int) -> int:
    for _, k, s in CONV:
        n = (n - k) // s + 1
    return n


def hf_reference(hf, wav, lens, normalize: bool):
    """HF hidden states of each utterance alone (no padding): list over utterances of
    (hidden_states tuple, last_hidden_state)."""
    refs = []
    for b in range(wav.shape[0]):
        x = wav[b:b + 1, : lens[b]]
        if normalize:  # fairseq's data-side normalisation of each waveform
            x = torch.nn.functional.layer_norm(x, x.shape[1:])
        with torch.no_grad():
            out = hf(x, output_hidden_states=True)
        refs.append((out.hidden_states, out.last_hidden_state))
    return refs


def check_against_hf(model, refs, wav, lens, pre_norm: bool):
    with torch.no_grad():
        enc = model.encode(wav, lens, return_hidden=True)
    assert enc["lens"].tolist() == [hf_frames(int(n)) for n in lens]
    num_layers = len(enc["hidden"])
    for b, (hs, last) in enumerate(refs):
        t = int(enc["lens"][b])
        assert hs[0].shape[1] == t
        torch.testing.assert_close(enc["out"][b, :t], last[0], atol=1e-4, rtol=0)
        # HF's per-layer states; a pre-norm model's last entry is after the final LayerNorm
        for i in range(num_layers - (1 if pre_norm else 0)):
            torch.testing.assert_close(enc["hidden"][i][b, :t], hs[i + 1][0], atol=1e-4, rtol=0)
    return enc


def fairseq_logits(x, sd, prefix=""):
    """fairseq HuBERT's compute_nce logits, one column per class (cosine / logit_temp)."""
    proj = x @ sd[prefix + "final_proj.weight"].t() + sd[prefix + "final_proj.bias"]
    embs = sd[prefix + "label_embs_concat"]
    return torch.cosine_similarity(proj[:, None, :], embs[None, :, :], dim=-1) / 0.1


def test_post_norm_base_like_matches_hf(tmp_path, monkeypatch):
    path = tmp_path / "hubert_base_like.pt"
    hf, sd = write_post_norm(path, monkeypatch)
    model, cfg = load_fairseq_hubert(path)
    assert not model.encoder.layer_norm_first and cfg["model"]["extractor_mode"] == "default"
    wav, lens = batch()
    # Our padded batch against HF on each utterance alone (HF's group norm would see padding).
    enc = check_against_hf(model, hf_reference(hf, wav, lens, normalize=False), wav, lens, False)
    # config mapped: training hyperparameters and head
    assert model.frontend.feature_grad_mult == 0.1 and model.encoder.layerdrop == 0.05
    assert model.cfg.num_classes == NUM_CLASSES and model.cfg.final_dim == FINAL_DIM
    assert model.cfg.label_rate == 50.0 and model.cfg.frame_rate == 16000 / 20
    x = enc["out"][0, :50]
    torch.testing.assert_close(model.logits(x), fairseq_logits(x, sd), atol=1e-4, rtol=0)


def test_pre_norm_large_like_matches_hf_padded(tmp_path):
    path = tmp_path / "hubert_large_like.pt"
    hf, sd = write_pre_norm(path)
    model, cfg = load_fairseq_hubert(path)
    assert model.encoder.layer_norm_first and model.frontend.normalize
    assert cfg["model"]["label_rate"] == 50.0  # the ${task.label_rate} interpolation resolved
    wav, lens = batch()
    refs = hf_reference(hf, wav, lens, normalize=True)
    check_against_hf(model, refs, wav, lens, pre_norm=True)
    # HF itself on the padded batch with an attention mask agrees (this variant supports it)
    normed = torch.zeros_like(wav)
    for b in range(2):
        normed[b, : lens[b]] = torch.nn.functional.layer_norm(wav[b, : lens[b]], (int(lens[b]),))
    mask = (torch.arange(wav.shape[1])[None] < lens[:, None]).long()
    with torch.no_grad():
        padded = hf(normed, attention_mask=mask).last_hidden_state
        ours = model.encode(wav, lens)["out"]
    t = hf_frames(1700)
    torch.testing.assert_close(ours[1, :t], padded[1, :t], atol=1e-4, rtol=0)


def test_finetuned_layout(tmp_path, monkeypatch):
    """HuBERT under w2v_encoder.w2v_model., pretraining cfg in model.w2v_args, CTC proj beside."""
    hf, sd = write_post_norm(tmp_path / "pre.pt", monkeypatch)
    ft_sd = with_head({k: v for k, v in sd.items() if k not in ("final_proj.weight",
                       "final_proj.bias", "label_embs_concat")}, "w2v_encoder.w2v_model.")
    ft_sd["w2v_encoder.proj.weight"] = torch.randn(30, 32)
    ft_sd["w2v_encoder.proj.bias"] = torch.zeros(30)
    w2v_args = {"model": model_cfg(False), "task": task_cfg(False)}
    cfg = {"model": {"_name": "hubert_ctc", "w2v_path": "/nowhere/hubert.pt", "normalize": False,
                     "w2v_args": w2v_args, "feature_grad_mult": 0.0},
           "task": {"_name": "hubert_pretraining", "normalize": False, "label_rate": -1.0}}
    path = tmp_path / "hubert_ft.pt"
    torch.save({"args": None, "cfg": cfg, "model": ft_sd}, path)
    model, _ = load_fairseq_hubert(path)
    assert model.cfg.label_rate == 50.0  # from w2v_args' own task, not the fine-tuning task
    wav, lens = batch()
    check_against_hf(model, hf_reference(hf, wav, lens, normalize=False), wav, lens, False)


def test_state_dict_round_trip(tmp_path, monkeypatch):
    """to_fairseq_state_dict gives back the file's tensors under fairseq's names (weight norm
    written as weight_g/weight_v whichever names the file used)."""
    for name, write in (("base", lambda p: write_post_norm(p, monkeypatch)), ("large", write_pre_norm)):
        _, sd = write(tmp_path / f"{name}.pt")
        model, _ = load_fairseq_hubert(tmp_path / f"{name}.pt")
        back = to_fairseq_state_dict(model)
        expected = {k.replace("parametrizations.weight.original0", "weight_g")
                    .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
        assert back.keys() == expected.keys()
        for k in expected:
            assert torch.equal(back[k], expected[k]), k


def test_convert_script_and_init_from(tmp_path, monkeypatch):
    src, dst = tmp_path / "fs.pt", tmp_path / "exp" / "hubert-fairseq.pt"
    write_post_norm(src, monkeypatch)
    script = ROOT / "egs/librispeech/SSL/hubert/convert_fairseq.py"
    subprocess.run([sys.executable, str(script), "--in", str(src), "--out", str(dst)],
                   check=True, cwd=ROOT, capture_output=True)
    ckpt = load_file(dst)  # plain weights: loads with weights_only
    assert set(ckpt) == {"model", "params"} and ckpt["params"]["encoder"] == "hubert-base"
    b, params = load_pretrained_hubert(dst)
    assert params["source"] == f"fairseq:{src}"
    wav, lens = batch()
    with torch.no_grad():
        ref = b.eval().encode(wav, lens)["out"]
        for spec in (f"fairseq:{src}", src):  # the fairseq file itself, with or without prefix
            a, _ = load_pretrained_hubert(spec)
            assert torch.equal(a.eval().encode(wav, lens)["out"], ref)
    # continuing pretraining with new k-means labels: fresh label embeddings, the rest kept
    c, params = load_pretrained_hubert(dst, num_classes=NUM_CLASSES + 5)
    assert params["hubert_config"]["num_classes"] == c.label_embs_concat.shape[0] == NUM_CLASSES + 5
    assert torch.equal(c.final_proj.weight, b.final_proj.weight)
    with torch.no_grad():
        assert torch.equal(c.encode(wav, lens)["out"], ref)
    with pytest.raises(FairseqCheckpointError, match=re.escape(str(tmp_path / "x.pt"))):
        torch.save({"model": {}, "params": {"encoder": "hubert-base"}}, tmp_path / "x.pt")
        load_pretrained_hubert(tmp_path / "x.pt")


def test_bad_files_name_the_file(tmp_path, monkeypatch):
    good = tmp_path / "good.pt"
    _, sd = write_post_norm(good, monkeypatch)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    ours = tmp_path / "ours.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "params": {}}, ours)
    wav2vec2 = tmp_path / "wav2vec2.pt"  # a foreign model: quantizer params HuBERT lacks
    torch.save({"args": argparse.Namespace(**model_cfg(False)),
                "model": {**sd, "quantizer.vars": torch.zeros(1, 4, 8)}}, wav2vec2)
    for path, what in ((truncated, "cannot read"), (text, "cannot read"),
                       (ours, "no 'cfg' or 'args'"), (wav2vec2, "quantizer.vars")):
        with pytest.raises(FairseqCheckpointError, match=re.escape(str(path)) + ".*" + re.escape(what)):
            load_fairseq_hubert(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_fairseq_hubert(tmp_path / "missing.pt")


def test_unknown_key_is_reported():
    with pytest.raises(FairseqCheckpointError, match="target_glu"):
        convert_fairseq_state_dict({"mask_emb": torch.zeros(4), "target_glu.0.weight": torch.zeros(1)})
