"""Hugging Face Wav2Vec2Model / Data2VecAudioModel directories and fairseq wav2vec 2.0
checkpoints -> our front end + Transformer encoder (icefall/ssl/hf_import.py,
icefall/ssl/fairseq_import.py).

The reference is ``transformers`` itself: a tiny random HF model is saved with save_pretrained
(or renamed to fairseq's keys and saved as a fairseq checkpoint) and loaded with ours; every
layer's hidden states must equal HF's, in eval mode, on each utterance of a padded batch."""
import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from icefall.models import load_model  # noqa: E402
from icefall.ssl.hf_import import HfCheckpointError  # noqa: E402
from test_fairseq_import import hf_to_fairseq  # noqa: E402

CONV = dict(conv_dim=[16, 16, 16], conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2])
SIZE = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            num_conv_pos_embedding_groups=4, **CONV)


def perturbed(model):
    """Non-trivial norms and biases, so that a mis-mapped one shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def wav2vec2(large: bool, cls=None):
    cfg = transformers.Wav2Vec2Config(
        **SIZE, num_conv_pos_embeddings=16, conv_bias=large, feat_extract_norm="layer" if large else "group",
        do_stable_layer_norm=large, num_codevector_groups=2, num_codevectors_per_group=5,
        codevector_dim=12, proj_codevector_dim=8)
    torch.manual_seed(0)
    return perturbed((cls or transformers.Wav2Vec2Model)(cfg))


def data2vec():
    cfg = transformers.Data2VecAudioConfig(**SIZE, num_conv_pos_embeddings=3, conv_pos_kernel_size=5, conv_bias=True)
    torch.manual_seed(0)
    return perturbed(transformers.Data2VecAudioModel(cfg))


def batch():
    g = torch.Generator().manual_seed(4)
    lens = torch.tensor([3200, 2100])
    wav = torch.randn(2, 3200, generator=g)
    wav[1, 2100:] = 0.0
    return wav, lens


def frames(n: int) -> int:
    for k, s in zip(CONV["conv_kernel"], CONV["conv_stride"]):
        n = (n - k) // s + 1
    return n


def assert_matches_hf(model, hf, pre_norm: bool, normalize: bool = False):
    """Our padded batch against HF on each utterance alone: every layer's output."""
    wav, lens = batch()
    feats, out_lens = model.extract_features(wav, lens)
    assert out_lens.tolist() == [frames(int(n)) for n in lens]
    L = hf.config.num_hidden_layers
    assert len(feats) == L + 1
    for b in range(2):
        x = wav[b:b + 1, : lens[b]]
        if normalize:
            x = torch.nn.functional.layer_norm(x, x.shape[1:])
        with torch.no_grad():
            ref = hf(x, output_hidden_states=True)
        t = int(out_lens[b])
        # HF's pre-norm last entry is after the final LayerNorm, ours is the layer's output
        for i in range(1, L + 1 - (1 if pre_norm else 0)):
            torch.testing.assert_close(feats[i][b, :t], ref.hidden_states[i][0], atol=1e-4, rtol=0)
        with torch.no_grad():
            out, _ = model.encoder(*model.frontend(wav, lens))
        torch.testing.assert_close(out[b, :t], ref.last_hidden_state[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("large", [False, True])
def test_wav2vec2_model_matches_hf(tmp_path, large):
    hf = wav2vec2(large)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    if large:  # the preprocessor's waveform normalisation
        (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    model, cfg = load_model(f"hf:{tmp_path}")
    assert cfg.objective == "wav2vec2" and cfg.source == f"hf:{tmp_path}"
    assert model.encoder.layer_norm_first == large and model.frontend.normalize == large
    assert cfg.objective_config.latent_vars == 5 and cfg.objective_config.final_dim == 8
    assert_matches_hf(model, hf, pre_norm=large, normalize=large)


def test_data2vec_audio_model_matches_hf(tmp_path):
    hf = data2vec()
    hf.save_pretrained(tmp_path)
    model, cfg = load_model(f"hf:{tmp_path}")
    assert cfg.encoder.encoder.pos_conv_depth == 3 and len(model.encoder.pos_conv.layers) == 3
    assert model.encoder.pos_conv.layers[0].conv.kernel_size == (5,)
    assert_matches_hf(model, hf, pre_norm=False)


def test_pretraining_head_bin_and_shards(tmp_path):
    """Wav2Vec2ForPreTraining: body under ``wav2vec2.`` and the quantizer head; a
    pytorch_model.bin (weights_only) and sharded safetensors read the same."""
    hf = wav2vec2(False, transformers.Wav2Vec2ForPreTraining)
    hf.save_pretrained(tmp_path / "st", max_shard_size="20KB")
    assert (tmp_path / "st" / "model.safetensors.index.json").is_file()
    model, _ = load_model(f"hf:{tmp_path / 'st'}")
    sd = hf.state_dict()
    assert torch.equal(model.quantizer.vars, sd["quantizer.codevectors"])
    assert torch.equal(model.project_q.weight, sd["project_q.weight"])
    assert torch.equal(model.final_proj.weight, sd["project_hid.weight"])
    assert_matches_hf(model, hf.wav2vec2, pre_norm=False)
    # the same weights as a .bin
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    other, _ = load_model(f"hf:{tmp_path / 'bin'}")
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_unsupported_configs_and_bad_directories_are_named(tmp_path):
    hf = wav2vec2(False)
    hf.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    good = json.loads(cfg_path.read_text())
    for field, value in (("hidden_act", "relu"), ("add_adapter", True), ("layer_norm_eps", 1e-6),
                         ("feat_extract_norm", "batch")):
        cfg_path.write_text(json.dumps({**good, field: value}))
        with pytest.raises(HfCheckpointError, match=re.escape(str(cfg_path)) + f".*{field}"):
            load_model(f"hf:{tmp_path / 'm'}")
    cfg_path.write_text(json.dumps({**good, "model_type": "speecht5"}))
    with pytest.raises(HfCheckpointError, match="speecht5.*supported"):
        load_model(f"hf:{tmp_path / 'm'}")
    cfg_path.write_text(json.dumps(good))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(HfCheckpointError, match="model.safetensors.*cannot read"):
        load_model(f"hf:{tmp_path / 'm'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfCheckpointError, match="no config.json"):
        load_model(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(f"hf:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------ fairseq wav2vec 2.0
#: HF -> fairseq names of the wav2vec 2.0 pretraining head (HF's conversion script, inverted).
HEAD_TO_FAIRSEQ = {"quantizer.codevectors": "quantizer.vars", "project_hid.weight": "final_proj.weight",
                   "project_hid.bias": "final_proj.bias"}


def fairseq_wav2vec2(path, large: bool, finetuned: bool = False):
    hf = wav2vec2(large, transformers.Wav2Vec2ForPreTraining)
    sd = {}
    for k, v in hf.state_dict().items():
        if k.startswith("wav2vec2."):
            sd.update(hf_to_fairseq({k[len("wav2vec2."):]: v}, group_norm=not large, old_weight_norm=not large))
        else:
            sd[HEAD_TO_FAIRSEQ.get(k, k)] = v.clone()
    model = dict(_name="wav2vec2", extractor_mode="layer_norm" if large else "default",
                 encoder_layers=3, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                 conv_feature_layers="[(16,10,5)] + [(16,3,2)] + [(16,2,2)]", conv_bias=large,
                 layer_norm_first=large, conv_pos=16, conv_pos_groups=4, final_dim=8, latent_dim=12,
                 latent_vars=5, latent_groups=2, latent_temp="(2.0, 0.5, 0.999995)", feature_grad_mult=0.1,
                 quantize_targets=True, num_negatives=100, dropout_features=0.1, mask_prob=0.65)
    task = {"_name": "audio_pretraining", "normalize": large, "sample_rate": 16000}
    cfg = {"model": model, "task": task, "criterion": {"_name": "wav2vec", "loss_weights": [0.1, 10]}}
    if finetuned:
        sd = {"w2v_encoder.w2v_model." + k: v for k, v in sd.items()}
        sd["w2v_encoder.proj.weight"], sd["w2v_encoder.proj.bias"] = torch.randn(30, 32), torch.zeros(30)
        cfg = {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": model, "task": task}},
               "task": {"_name": "audio_finetuning", "normalize": large}}
    torch.save({"cfg": cfg, "model": sd, "args": None}, path)
    return hf


@pytest.mark.parametrize("large,finetuned", [(False, False), (True, False), (False, True)])
def test_fairseq_wav2vec2_checkpoint_matches_hf(tmp_path, large, finetuned):
    path = tmp_path / "wav2vec2.pt"
    hf = fairseq_wav2vec2(path, large, finetuned)
    for spec in (f"fairseq:{path}", path):  # explicit or detected
        model, cfg = load_model(spec)
        assert cfg.objective == "wav2vec2"
    c = cfg.objective_config
    assert (c.latent_vars, c.latent_dim, c.final_dim, c.latent_temp) == (5, 12, 8, (2.0, 0.5, 0.999995))
    assert (c.diversity_weight, c.feature_pen_weight, c.dropout_features) == (0.1, 10.0, 0.1)
    assert model.frontend.feature_grad_mult == 0.1
    assert_matches_hf(model, hf.wav2vec2, pre_norm=large, normalize=large)
    if not finetuned:  # the quantizer head came along
        assert torch.equal(model.quantizer.vars, hf.state_dict()["quantizer.codevectors"])
        assert torch.equal(model.final_proj.bias, hf.state_dict()["project_hid.bias"])


def test_hubert_loader_points_wav2vec2_files_to_load_model(tmp_path):
    from icefall.ssl.fairseq_import import FairseqCheckpointError, load_fairseq_hubert

    fairseq_wav2vec2(tmp_path / "w.pt", large=False)
    with pytest.raises(FairseqCheckpointError, match="wav2vec 2.0 checkpoint.*load_model"):
        load_fairseq_hubert(tmp_path / "w.pt")


def test_fine_tuning_and_continued_pretraining_start_from_hf(tmp_path):
    """``--init-ckpt hf:<dir>``: finetune.py's encoder and pretrain.py's wav2vec2 model get the
    HF weights."""
    from icefall.asr.finetune import build_asr_model, load_ssl_model
    from icefall.data.tokenizer import make_char_lang
    from icefall.ssl.pretrain import init_weights, model_config
    from icefall.models import build_model
    from test_models import _finetune_params, _pretrain_params

    hf = wav2vec2(False, transformers.Wav2Vec2ForPreTraining)
    hf.save_pretrained(tmp_path / "m")
    spec = f"hf:{tmp_path / 'm'}"
    ref, ref_config = load_model(spec)
    params = _finetune_params(make_char_lang(["a b"], tmp_path / "lang"), "--init-ckpt", spec)
    asr = build_asr_model(params, load_ssl_model(params))
    for k, v in ref.encoder.state_dict().items():
        assert torch.equal(asr.encoder.encoder.state_dict()[k], v), k
    # the objective's options are this run's (as for HuBERT's classes): here the HF head's sizes
    params = _pretrain_params("wav2vec2", init_ckpt=spec, latent_vars=5, final_dim=8,
                              encoder_overrides="latent_dim=12")
    config = model_config(params)
    assert config.encoder == ref_config.encoder
    model = build_model(config)
    init_weights(model, spec, config)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
