"""Tests of icefall/nn/frontend.py (fbank Conv2d subsampling, wav2vec2 CNN front end)."""
import pytest
import torch
from torch import nn

from icefall.nn.configs import build_encoder
from icefall.nn.frontend import (
    WAV2VEC2_CONV_LAYERS,
    Conv2dSubsampling,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2FrontEnd,
)

SMALL_CNN = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2


def test_cnn_lengths_match_conv_arithmetic():
    fe = Wav2Vec2FeatureExtractor(SMALL_CNN)
    for n in [400, 401, 719, 720, 16000, 16319, 16320, 160000]:
        # independent reference: the frame count of torch's own conv stack on the unpadded input
        expected = n
        for _, k, s in WAV2VEC2_CONV_LAYERS:
            expected = (expected - k) // s + 1
        assert fe.output_lengths(torch.tensor([n])).item() == expected
        if n <= 16320:
            out, lens = fe(torch.randn(1, n), torch.tensor([n]))
            assert out.shape[1] == lens.item() == expected
    # 320 samples per frame: 1 s -> 49 frames (last partial frame dropped), 50 Hz rate
    assert fe.output_lengths(torch.tensor([16000 * 10])).item() == 499
    # published layout: kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2 (= 320), 512 channels
    assert [k for _, k, _ in WAV2VEC2_CONV_LAYERS] == [10, 3, 3, 3, 3, 2, 2]
    assert [s for _, _, s in WAV2VEC2_CONV_LAYERS] == [5, 2, 2, 2, 2, 2, 2]
    assert {c for c, _, _ in WAV2VEC2_CONV_LAYERS} == {512}


def test_masked_group_norm_equals_groupnorm_on_unpadded_input():
    torch.manual_seed(0)
    fe = Wav2Vec2FeatureExtractor(SMALL_CNN, mode="group")
    block = fe.conv_layers[0]
    ref = nn.GroupNorm(16, 16)
    with torch.no_grad():
        block.norm.weight.copy_(torch.rand(16) + 0.5)
        block.norm.bias.copy_(torch.randn(16))
        ref.weight.copy_(block.norm.weight)
        ref.bias.copy_(block.norm.bias)
    wav = torch.randn(1, 3000)
    y, _ = block(wav.unsqueeze(1), torch.tensor([3000]))
    expected = nn.functional.gelu(ref(block.conv(wav.unsqueeze(1))))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode,normalize", [("group", False), ("layer", True)])
def test_cnn_frontend_padding_never_leaks(mode, normalize):
    torch.manual_seed(0)
    fe = Wav2Vec2FrontEnd(out_dim=24, mode=mode, conv_bias=mode == "layer", conv_layers=SMALL_CNN,
                          normalize=normalize).eval()
    lens = torch.tensor([8000, 5123, 700])
    wav = torch.randn(3, 8000)
    wav_pad = wav.clone()
    for b, n in enumerate(lens.tolist()):
        wav_pad[b, n:] = 10 * torch.randn(8000 - n)
    with torch.no_grad():
        out, out_lens = fe(wav_pad, lens)
        for b, n in enumerate(lens.tolist()):
            o1, l1 = fe(wav[b:b + 1, :n], lens[b:b + 1])
            assert l1.item() == out_lens[b].item() == o1.shape[1]
            torch.testing.assert_close(out[b, : l1.item()], o1[0], atol=1e-5, rtol=1e-4)



@pytest.mark.parametrize("mode", ["group", "layer"])
def test_cnn_frontend_runs_in_float64(mode):
    # Weight-equivalence checks (e.g. icefall/k2SSL imports) run in float64: the norms must not
    # drop to float32 (they did, and the unpadded group norm failed on float64 weights).
    fe = Wav2Vec2FrontEnd(out_dim=24, mode=mode, conv_bias=mode == "layer", conv_layers=SMALL_CNN,
                          normalize=True).double().eval()
    wav = torch.randn(2, 4000, dtype=torch.float64)
    lens = torch.tensor([4000, 3000])
    with torch.no_grad():
        out, out_lens = fe(wav, lens)
        alone, _ = fe(wav[1:, :3000], lens[1:])
    assert out.dtype == alone.dtype == torch.float64
    assert (out[1, : out_lens[1]] - alone[0]).abs().max().item() < 1e-12

def test_feature_grad_mult_scales_cnn_gradients_only():
    torch.manual_seed(0)
    wav = torch.randn(2, 4000)
    lens = torch.tensor([4000, 3000])
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(1)
        fe = Wav2Vec2FrontEnd(out_dim=8, conv_layers=SMALL_CNN, feature_grad_mult=mult).train()
        out, _ = fe(wav, lens)
        out.pow(2).sum().backward()
        grads[mult] = {n: p.grad.clone() for n, p in fe.named_parameters()}
    for name, g in grads[1.0].items():
        factor = 0.1 if name.startswith("feature_extractor") else 1.0
        torch.testing.assert_close(grads[0.1][name], g * factor, atol=1e-6, rtol=1e-4)
    # feature_grad_mult = 0 freezes the CNN: no graph through it
    fe0 = Wav2Vec2FrontEnd(out_dim=8, conv_layers=SMALL_CNN, feature_grad_mult=0.0).train()
    fe0(wav, lens)[0].sum().backward()
    assert all(p.grad is None for p in fe0.feature_extractor.parameters())
    assert fe0.post_extract_proj.weight.grad is not None


def test_fbank_subsampling_lengths_and_shapes():
    sub = Conv2dSubsampling(80, 48).eval()
    for T in [9, 10, 11, 100, 101, 1000]:  # needs T >= 9 for one output frame
        out, lens = sub(torch.randn(1, T, 80), torch.tensor([T]))
        assert lens.item() == (T - 7) // 2 == out.shape[1]
        assert out.shape[2] == 48
    # 100 Hz -> 50 Hz: 10 s of fbank (1000 frames) -> 496 frames
    assert Conv2dSubsampling.output_lengths(torch.tensor([1000])).item() == 496


def test_fbank_subsampling_padding_never_leaks():
    torch.manual_seed(0)
    sub = Conv2dSubsampling(80, 32).eval()
    lens = torch.tensor([60, 41, 12])
    x = torch.randn(3, 60, 80)
    x_pad = x.clone()
    for b, n in enumerate(lens.tolist()):
        x_pad[b, n:] = 20 * torch.randn(60 - n, 80)
    with torch.no_grad():
        out, out_lens = sub(x_pad, lens)
        for b, n in enumerate(lens.tolist()):
            o1, l1 = sub(x[b:b + 1, :n], lens[b:b + 1])
            assert l1.item() == out_lens[b].item()
            torch.testing.assert_close(out[b, : l1.item()], o1[0], atol=1e-5, rtol=1e-4)


def test_fbank_frontend_override_and_pair():
    model = build_encoder("zipformer-tiny", frontend="fbank")
    assert isinstance(model.frontend, Conv2dSubsampling) and model.frontend_type == "fbank"
    out, lens = model.eval()(torch.randn(2, 207, 80), torch.tensor([207, 150]))
    assert lens.tolist() == [100, 71] and out.shape == (2, 100, model.output_dim)
    cnn = build_encoder("zipformer-tiny")
    assert isinstance(cnn.frontend, Wav2Vec2FrontEnd) and cnn.frontend_type == "cnn"
    with pytest.raises(ValueError, match="unknown override 'no_such_option'.*valid: .*'num_encoder_layers'"):
        build_encoder("zipformer-tiny", no_such_option=1)
