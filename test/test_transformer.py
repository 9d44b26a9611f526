"""Tests of icefall/nn/transformer.py (HuBERT / wav2vec 2.0 Transformer encoder)."""
import pytest
import torch
from torch import nn

from icefall.nn.configs import build_encoder, count_parameters
from icefall.nn.transformer import MultiheadSelfAttention, TransformerEncoder, TransformerEncoderLayer


def tiny(**kw) -> TransformerEncoder:
    args = dict(embed_dim=32, ffn_dim=64, num_heads=4, num_layers=3, conv_pos=16, conv_pos_groups=4,
                dropout=0.0, attention_dropout=0.0, layerdrop=0.0)
    args.update(kw)
    return TransformerEncoder(**args)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadSelfAttention(16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    expected, _ = ref(x, x, x, key_padding_mask=pad, need_weights=False)
    torch.testing.assert_close(ours(x, ~pad[:, None, None, :]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_layer_norm_placement(pre_norm):
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(16, 32, 4, dropout=0.0, attention_dropout=0.0,
                                    layer_norm_first=pre_norm).eval()
    x = torch.randn(2, 5, 16)
    attn, ln1, ln2 = layer.self_attn, layer.self_attn_layer_norm, layer.final_layer_norm

    def ffn(h):
        return layer.fc2(torch.nn.functional.gelu(layer.fc1(h)))

    if pre_norm:
        h = x + attn(ln1(x))
        expected = h + ffn(ln2(h))
    else:
        h = ln1(x + attn(x))
        expected = ln2(h + ffn(h))
    torch.testing.assert_close(layer(x), expected)


def test_no_qkv_bias_option():
    enc = tiny(qkv_bias=False)
    names = {n for n, _ in enc.named_parameters()}
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert f"layers.0.self_attn.{proj}.bias" not in names
    assert "layers.0.self_attn.out_proj.bias" in names
    assert count_parameters(tiny()) - count_parameters(enc) == 3 * 3 * 32


def test_fairseq_style_names_and_pos_conv():
    enc = TransformerEncoder(num_layers=1)
    sd = enc.state_dict()
    for key in ("layers.0.self_attn.q_proj.weight", "layers.0.self_attn.out_proj.bias",
                "layers.0.self_attn_layer_norm.weight", "layers.0.fc1.weight", "layers.0.fc2.bias",
                "layers.0.final_layer_norm.weight", "layer_norm.weight", "pos_conv.conv.bias"):
        assert key in sd, key
    g = sd["pos_conv.conv.parametrizations.weight.original0"]
    v = sd["pos_conv.conv.parametrizations.weight.original1"]
    assert g.shape == (1, 1, 128) and v.shape == (768, 768 // 16, 128)  # kernel 128, 16 groups
    # weight norm over dim 2: weight[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||
    w = enc.pos_conv.conv.weight
    torch.testing.assert_close(w, g * v / v.norm(dim=(0, 1), keepdim=True))


def test_padding_never_leaks():
    torch.manual_seed(0)
    enc = tiny().eval()
    lens = torch.tensor([20, 13, 1])
    x = torch.randn(3, 20, 32)
    x_pad = x.clone()
    for b, n in enumerate(lens.tolist()):
        x_pad[b, n:] = 50 * torch.randn(20 - n, 32)
    with torch.no_grad():
        out, out_lens, hidden = enc(x_pad, lens, return_hidden=True)
        assert torch.equal(out_lens, lens) and len(hidden) == 3
        for b, n in enumerate(lens.tolist()):
            o1, _, h1 = enc(x[b:b + 1, :n], lens[b:b + 1], return_hidden=True)
            torch.testing.assert_close(out[b, :n], o1[0], atol=1e-5, rtol=1e-5)
            for hb, h1b in zip(hidden, h1):
                torch.testing.assert_close(hb[b, :n], h1b[0], atol=1e-5, rtol=1e-5)
            assert torch.all(out[b, n:] == 0)


def test_layerdrop_skips_layers_in_training_only():
    torch.manual_seed(0)
    enc = tiny(layerdrop=1.0)
    x = torch.randn(1, 6, 32, requires_grad=True)
    out, _ = enc.train()(x, torch.tensor([6]))
    out.sum().backward()
    assert all(p.grad is None for p in enc.layers.parameters())
    assert enc.pos_conv.conv.bias.grad is not None
    out_eval, _ = enc.eval()(x, torch.tensor([6]))
    assert not torch.allclose(out_eval, out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_backward_finite(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except Exception as e:  # pragma: no cover
        pytest.skip(f"CPU autocast with {dtype} unsupported: {e}")
    torch.manual_seed(0)
    model = build_encoder("hubert-tiny").train()
    with torch.autocast("cpu", dtype=dtype):
        y, _ = model(torch.randn(2, 16000), torch.tensor([16000, 9000]))
    assert torch.isfinite(y).all()
    y.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _hf_to_ours(hf_sd):
    """Rename a Hugging Face HubertModel state dict into SpeechEncoder keys."""
    out = {}
    for k, v in hf_sd.items():
        if k == "masked_spec_embed":
            continue
        k = k.replace("feature_extractor.", "frontend.feature_extractor.")
        k = k.replace(".layer_norm.", ".norm.") if "conv_layers" in k else k
        k = k.replace("feature_projection.layer_norm", "frontend.layer_norm")
        k = k.replace("feature_projection.projection", "frontend.post_extract_proj")
        k = k.replace("encoder.pos_conv_embed.", "encoder.pos_conv.")
        k = k.replace(".attention.", ".self_attn.").replace("feed_forward.intermediate_dense", "fc1")
        k = k.replace("feed_forward.output_dense", "fc2")
        if ".layers." in k:
            k = k.replace(".layer_norm.", ".self_attn_layer_norm.")
        out[k] = v
    return out


@pytest.mark.parametrize("pre_norm", [False, True])
def test_matches_hugging_face_hubert(pre_norm):
    """Same weights in HF transformers' HubertModel give the same output (an independent
    implementation of the CNN, positional conv, and post-/pre-norm layers)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    mode = "layer" if pre_norm else "group"
    cfg = transformers.HubertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=[32] * 7, conv_bias=pre_norm, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm=mode, do_stable_layer_norm=pre_norm, hidden_dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    )
    hf = transformers.HubertModel(cfg).eval()
    ours = build_encoder(
        "hubert-tiny", embed_dim=64, ffn_dim=128, num_heads=4, num_layers=2, layer_norm_first=pre_norm,
        conv_pos=16, conv_pos_groups=4, frontend_conv_layers=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
        frontend_mode=mode, frontend_conv_bias=pre_norm,
    ).eval()
    ours.load_state_dict(_hf_to_ours(hf.state_dict()), strict=True)
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        expected = hf(wav).last_hidden_state
        got, lens = ours(wav, torch.tensor([8000]))
    assert lens.item() == expected.shape[1] == 24
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,target", [("hubert-base", 95e6), ("hubert-large", 316e6)])
def test_parameter_counts(name, target):
    model = build_encoder(name)
    n = count_parameters(model)
    assert abs(n - target) / target < 0.03, (name, n)
