"""icefall / k2SSL checkpoints -> our models (icefall.ssl.icefall_import).

The icefall-layout state dicts are written here from our own models with icefall's names (the
inverse of the importer's renames, spelled out independently below); the key lists in
test/fixtures/icefall/ were dumped from icefall's own modules.
"""
import json
import re
from pathlib import Path
from typing import Dict

import pytest
import torch

from icefall.asr.model import AsrModel
from icefall.nn.configs import build_encoder
from icefall.nn.scaling import Balancer
from icefall.ssl.fairseq_import import load_pretrained_hubert
from icefall.ssl.hubert import HubertConfig, HubertModel
from icefall.ssl.icefall_import import (
    DROPPED,
    IcefallCheckpointError,
    convert_icefall_state_dict,
    load_icefall_checkpoint,
    main,
)

FIXTURES = Path(__file__).parent / "fixtures" / "icefall"

# A tiny Zipformer2 in icefall's spelling (comma-separated strings) ...
ICEFALL_OPTIONS = dict(
    num_encoder_layers="1,2,1,1", downsampling_factor="1,2,4,2", encoder_dim="32,48,64,48",
    feedforward_dim="64,96,128,96", num_heads="2,2,4,2", query_head_dim="8", value_head_dim="6",
    pos_head_dim="4", pos_dim=16, encoder_unmasked_dim="32,32,48,32", cnn_module_kernel="15,15,7,15",
)
# ... and in ours.
OUR_ZIPFORMER = dict(
    num_encoder_layers=(1, 2, 1, 1), downsampling_factor=(1, 2, 4, 2), encoder_dim=(32, 48, 64, 48),
    feedforward_dim=(64, 96, 128, 96), num_heads=(2, 2, 4, 2), query_head_dim=8, value_head_dim=6,
    pos_head_dim=4, pos_dim=16, encoder_unmasked_dim=(32, 32, 48, 32), cnn_module_kernel=(15, 15, 7, 15),
)
DOWNSAMPLING = (1, 2, 4, 2)
TINY_CNN = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
NUM_LAYERS = 5
ASR_HEADS = {
    "decoder.embedding.weight": (10, 16), "decoder.conv.weight": (16, 4, 2),
    "joiner.encoder_proj.weight": (16, 64), "joiner.output_linear.weight": (10, 16),
    "simple_am_proj.weight": (10, 64), "simple_lm_proj.weight": (10, 16), "ctc_output.1.weight": (10, 64),
}


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its initial value (so a misplaced tensor changes the output)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def icefall_zipformer_keys(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Our ``encoder.*`` Zipformer2 keys -> icefall's under ``prefix``: a downsampled stack holds
    its layers in ``.encoder``, and every layer has an (unused) ``bypass_scale``."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"encoder\.encoders\.(\d+)\.layers\.(\d+)\.(.+)", key)
        if m:
            stack, layer, rest = int(m[1]), m[2], m[3]
            base = f"{prefix}encoders.{stack}{'.encoder' if DOWNSAMPLING[stack] != 1 else ''}.layers.{layer}"
            out[f"{base}.{rest}"] = value
            if rest == "norm.bias":
                out[f"{base}.bypass_scale"] = torch.rand_like(value)
        elif key.startswith("encoder."):
            out[prefix + key[len("encoder."):]] = value
    return out


def icefall_cnn_keys(state: Dict[str, torch.Tensor], mode: str = "default") -> Dict[str, torch.Tensor]:
    """Our wav2vec2 front end -> k2SSL's HubertModel keys: conv block = Sequential(conv,
    dropout, norm, GELU), the norm a GroupNorm ("default" mode, first block) or
    Sequential(transpose, LayerNorm, transpose) ("layer_norm" mode, every block)."""
    norm = "2" if mode == "default" else "2.1"
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"frontend\.feature_extractor\.conv_layers\.(\d+)\.(conv|norm)\.(weight|bias)", key)
        if m:
            out[f"feature_extractor.conv_layers.{m[1]}.{'0' if m[2] == 'conv' else norm}.{m[3]}"] = value
        elif key.startswith("frontend."):
            out[key[len("frontend."):]] = value
    return out


def our_fbank_encoder():
    return build_encoder("zipformer-ssl-base", frontend="fbank", output_downsampling_factor=2, **OUR_ZIPFORMER)


def our_k2ssl(logit_temp: float, mode: str = "default", channels: int = 32) -> HubertModel:
    cnn = [(channels, k, s) for _, k, s in TINY_CNN]
    speech = build_encoder("zipformer-ssl-base", frontend_conv_layers=cnn, frontend_normalize=True,
                           frontend_mode={"default": "group", "layer_norm": "layer"}[mode],
                           frontend_conv_bias=mode == "layer_norm", output_downsampling_factor=1, **OUR_ZIPFORMER)
    cfg = HubertConfig(head="linear", num_classes=20, logit_temp=logit_temp)
    return perturbed(HubertModel(speech.frontend, speech.encoder, cfg))


def k2ssl_state(model: HubertModel, logit_temp: float, prefix: str = "", mode: str = "default"
                ) -> Dict[str, torch.Tensor]:
    """k2SSL's state dict of ``model``; its CE head divides final_proj(x) by logit_temp."""
    sd = model.state_dict()
    state = {**icefall_cnn_keys(sd, mode), **icefall_zipformer_keys(sd, "encoder."), "mask_emb": sd["mask_emb"],
             "final_proj.weight": sd["final_proj.weight"] * logit_temp,
             "final_proj.bias": sd["final_proj.bias"] * logit_temp}
    return {prefix + k: v for k, v in state.items()}


def heads() -> Dict[str, torch.Tensor]:
    return {k: torch.randn(shape) for k, shape in ASR_HEADS.items()}


def read_fixture(name: str):
    lines = (FIXTURES / name).read_text().splitlines()
    options = json.loads(next(l for l in lines if l.startswith("# options: "))[len("# options: "):])
    state = {}
    for line in lines:
        if not line.startswith("#"):
            key, shape = line.split()
            state[key] = torch.randn(() if shape == "-" else tuple(int(s) for s in shape.split("x")))
    return state, options


def icefall_asr_state(model: AsrModel) -> Dict[str, torch.Tensor]:
    """Our AsrModel over a fbank SpeechEncoder -> icefall's ASR AsrModel keys."""
    sd = model.state_dict()
    encoder = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    state = {"encoder_embed." + k[len("frontend."):]: v for k, v in encoder.items() if k.startswith("frontend.")}
    state.update(icefall_zipformer_keys(encoder, "encoder."))
    for k, v in sd.items():
        if not k.startswith("encoder."):  # icefall's CTC head is Sequential(Dropout, Linear, LogSoftmax)
            state[k.replace("ctc_output.output.", "ctc_output.1.")] = v
    return state


def test_asr_checkpoint_gives_our_outputs(tmp_path):
    original = perturbed(AsrModel(our_fbank_encoder(), vocab_size=10, decoder_dim=16, joiner_dim=16,
                                  context_size=2, use_ctc=True))
    path = tmp_path / "epoch-3.pt"  # as icefall's save_checkpoint writes it: options flat
    torch.save({"model": icefall_asr_state(original), "optimizer": None, "sampler": None, "epoch": 3,
                "feature_dim": 80, "causal": False, "chunk_size": "-1", "blank_id": 0, **ICEFALL_OPTIONS}, path)

    imp = load_icefall_checkpoint(path)
    assert imp.kind == "asr" and imp.defaulted == []
    assert sum(v == DROPPED for v in imp.key_map.values()) == NUM_LAYERS
    assert imp.asr_options() == dict(use_transducer=True, use_ctc=True, blank_id=0, vocab_size=10,
                                      decoder_dim=16, joiner_dim=16, context_size=2)
    encoder = imp.build_encoder()
    # an imported model trains on with icefall's Balancer limits, front end included
    limits = {m.limits for m in encoder.modules() if isinstance(m, Balancer)}
    assert limits == {"icefall"} and any(isinstance(m, Balancer) for m in encoder.frontend.modules())
    rebuilt = AsrModel(encoder, **imp.asr_options())
    rebuilt.load_state_dict({**{"encoder." + k: v for k, v in imp.encoder_state.items()}, **imp.asr_head_state()})
    rebuilt, original = rebuilt.double().eval(), original.double()
    x = torch.randn(2, 67, 80, dtype=torch.float64)
    lens = torch.tensor([67, 50])
    y = torch.tensor([[0, 3, 5, 2], [0, 1, 9, 4]])
    with torch.no_grad():
        out, out_lens = rebuilt.forward_encoder(x, lens)
        ref, ref_lens = original.forward_encoder(x, lens)
        assert out.shape == (2, 15, 64)  # (67 - 7) // 2 = 30 frames at 50 Hz, then 25 Hz
        assert torch.equal(out, ref) and torch.equal(out_lens, ref_lens)
        assert torch.equal(rebuilt.ctc_output(out), original.ctc_output(ref))
        joint = rebuilt.joiner(out[:, :, None], rebuilt.decoder(y)[:, None])
        assert torch.equal(joint, original.joiner(ref[:, :, None], original.decoder(y)[:, None]))


@pytest.mark.parametrize("mode,channels", [("default", 32), ("layer_norm", 40)])
def test_k2ssl_pretraining_checkpoint_gives_our_outputs_and_logits(tmp_path, mode, channels):
    # layer_norm: every conv block normed, conv biases, and a post_extract_proj (40 -> 32)
    temp = 0.25  # a power of two: k2SSL's head divides by it, ours holds final_proj / temp, exactly
    original = our_k2ssl(temp, mode, channels)
    path = tmp_path / "epoch-1.pt"
    torch.save({"model": k2ssl_state(original, temp, mode=mode), "optimizer": None, **ICEFALL_OPTIONS,
                "conv_feature_layers": f"[({channels},10,5)] + [({channels},3,2)] * 4 + [({channels},2,2)] * 2",
                "extractor_mode": mode, "conv_bias": mode == "layer_norm", "logit_temp": temp, "mask_prob": 0.8,
                "num_classes": [20], "do_normalize": True}, path)

    imp = load_icefall_checkpoint(path)
    assert imp.kind == "k2ssl" and imp.heads == {}
    assert ("post_extract_proj.weight" in imp.key_map) == (channels != 32)
    hc = imp.params["hubert_config"]
    assert (hc["head"], hc["num_classes"], hc["mask_prob"], hc["frame_rate"]) == ("linear", 20, 0.8, 50.0)
    rebuilt = imp.build_hubert().double()
    original = original.double()
    assert torch.equal(rebuilt.mask_emb, original.mask_emb)
    wav = torch.randn(2, 8000, dtype=torch.float64)
    lens = torch.tensor([8000, 6000])
    with torch.no_grad():
        out = rebuilt.encode(wav, lens)
        ref = original.encode(wav, lens)
        assert torch.equal(out["out"], ref["out"]) and torch.equal(out["lens"], ref["lens"])
        k2ssl_w = k2ssl_state(original, temp, mode=mode)
        k2ssl_logits = torch.nn.functional.linear(ref["out"], k2ssl_w["final_proj.weight"],
                                                  k2ssl_w["final_proj.bias"]) / temp
        assert torch.equal(rebuilt.logits(out["out"]), k2ssl_logits)


def test_k2ssl_finetuned_checkpoint(tmp_path):
    original = our_k2ssl(0.1)
    state = {**k2ssl_state(original, 0.1, prefix="encoder."), **heads()}
    imp = convert_icefall_state_dict(state, dict(ICEFALL_OPTIONS, conv_feature_layers=str(TINY_CNN)))
    assert imp.kind == "k2ssl-finetuned" and set(imp.heads) == set(ASR_HEADS)
    ours = {k: v for k, v in original.state_dict().items() if k.startswith(("frontend.", "encoder."))}
    assert imp.encoder_state.keys() == ours.keys()
    assert all(torch.equal(imp.encoder_state[k], v) for k, v in ours.items())
    torch.testing.assert_close(imp.ssl_state["final_proj.weight"], original.final_proj.weight.detach())
    assert imp.build_encoder().output_dim == 64


@pytest.mark.parametrize("name", ["k2ssl_tiny_keys.txt", "asr_tiny_keys.txt"])
def test_icefall_key_lists_map_completely(name):
    state, options = read_fixture(name)
    imp = convert_icefall_state_dict(state, options, source=name)
    assert set(imp.key_map) == set(state)
    assert sorted(k for k, v in imp.key_map.items() if v == DROPPED) == sorted(
        k for k in state if re.search(r"layers\.\d+\.bypass_scale$", k))
    encoder = imp.build_encoder()  # raises on any missing, extra or misshapen tensor
    stack1 = encoder.encoder.encoders[1].layers[1]
    assert torch.equal(stack1.conv_module2.depthwise_conv.weight,
                       state["encoder.encoders.1.encoder.layers.1.conv_module2.depthwise_conv.weight"])
    if imp.kind == "k2ssl":
        model = imp.build_hubert()
        assert torch.equal(model.frontend.feature_extractor.conv_layers[0].norm.weight,
                           state["feature_extractor.conv_layers.0.2.weight"])
        assert torch.equal(model.mask_emb, state["mask_emb"])
        assert imp.params["encoder_overrides"]["frontend_conv_layers"] == TINY_CNN
    else:
        assert torch.equal(encoder.frontend.convnext.pointwise_conv2.weight,
                           state["encoder_embed.convnext.pointwise_conv2.weight"])
        assert len(imp.heads) == 14 and all(k.startswith(("decoder.", "joiner.", "simple_", "ctc_output."))
                                            for k in imp.heads)
        asr = AsrModel(encoder, **imp.asr_options())  # strict: every head tensor has its place
        asr.load_state_dict({**{"encoder." + k: v for k, v in imp.encoder_state.items()}, **imp.asr_head_state()})
        assert torch.equal(asr.ctc_output.output.weight, state["ctc_output.1.weight"])


def test_causal_checkpoints_are_refused_with_what_is_needed():
    state, options = read_fixture("asr_tiny_keys.txt")
    with pytest.raises(IcefallCheckpointError, match="causal.*ChunkCausalDepthwiseConv1d"):
        convert_icefall_state_dict(state, dict(options, causal=True, chunk_size="16,32,64,-1"))
    # icefall's ChunkCausalDepthwiseConv1d parameters give it away without the options too
    causal = {k.replace("depthwise_conv.weight", "depthwise_conv.causal_conv.weight"): v for k, v in state.items()}
    del options["causal"]
    with pytest.raises(IcefallCheckpointError, match="causal_conv"):
        convert_icefall_state_dict(causal, options)


def test_unmapped_keys_are_listed():
    state, options = read_fixture("k2ssl_tiny_keys.txt")
    with pytest.raises(IcefallCheckpointError, match=r"no counterpart.*'label_embs\.weight'"):
        convert_icefall_state_dict({**state, "label_embs.weight": torch.zeros(3)}, options)
    extra = "encoder.encoders.0.layers.0.conv_module1.extra.weight"
    imp = convert_icefall_state_dict({**state, extra: torch.zeros(3)}, options)
    with pytest.raises(IcefallCheckpointError, match=re.escape(extra)):
        imp.build_encoder()
    with pytest.raises(IcefallCheckpointError, match="not an icefall Zipformer2 checkpoint"):
        convert_icefall_state_dict({"encoder.layers.0.fc1.weight": torch.zeros(3)})


def test_pretrained_pt_without_options_needs_them(tmp_path):
    original = perturbed(our_fbank_encoder())
    state = {**{"encoder_embed." + k[len("frontend."):]: v for k, v in original.state_dict().items()
                if k.startswith("frontend.")},
             **icefall_zipformer_keys(original.state_dict(), "encoder.")}
    path = tmp_path / "pretrained.pt"  # icefall's export.py keeps only the model
    torch.save({"model": state}, path)
    imp = load_icefall_checkpoint(path)
    assert "num_encoder_layers" in imp.defaulted
    with pytest.raises(IcefallCheckpointError, match=r"pretrained\.pt.*icefall's defaults.*params="):
        imp.build_encoder()
    rebuilt = load_icefall_checkpoint(path, params=ICEFALL_OPTIONS).build_encoder()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), original.state_dict().values()))


def test_converted_checkpoint_loads_like_a_converted_fairseq_one(tmp_path):
    temp = 0.1
    original = our_k2ssl(temp)
    src, dst = tmp_path / "epoch-1.pt", tmp_path / "k2ssl.pt"
    torch.save({"model": k2ssl_state(original, temp), **ICEFALL_OPTIONS,
                "conv_feature_layers": str(TINY_CNN)}, src)
    main([str(src), str(dst)])
    model, params = load_pretrained_hubert(dst)
    assert params["icefall_kind"] == "k2ssl" and params["hubert_config"]["num_classes"] == 20
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.equal(model.encode(wav, torch.tensor([8000]))["out"],
                           original.encode(wav, torch.tensor([8000]))["out"])
