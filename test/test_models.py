"""icefall.models: the objective registry, typed configs, the one loader of every checkpoint kind,
conflicting-option and checkpoint-kind errors, and fine-tuning from each kind."""
import json

import pytest
import torch

from icefall.asr import decode as dec
from icefall.asr.finetune import build_asr_model, get_parser as finetune_parser, load_ssl_model
from icefall.checkpoint import save_checkpoint
from icefall.models import (
    OBJECTIVES,
    CheckpointKindError,
    ModelConfig,
    ModelConfigError,
    SslEncoder,
    build_model,
    get_objective,
    load_feature_model,
    load_model,
    pretrain_config,
    write_config_json,
)
from icefall.nn.configs import NAMED_ENCODERS, ConfigError, EncoderConfig, encoder_config, list_encoders
from icefall.ssl.pretrain import build_model as build_pretrain_model
from icefall.ssl.pretrain import get_parser as pretrain_parser
from icefall.utils import AttributeDict

TINY = dict(encoder="zipformer-tiny", frontend="fbank", encoder_overrides="frontend_layer3_channels=32",
            num_classes=10, num_codebooks=2, codebook_size=16)


def _pretrain_params(method, **kw):
    return AttributeDict(vars(pretrain_parser(**{**TINY, "method": method, **kw}).parse_args([])))


def _save_pretrain(path, method, **kw):
    """A pretraining checkpoint as the Trainer writes it (model, model_avg, params with the
    model config); returns the model."""
    torch.manual_seed(0)
    params = _pretrain_params(method, **kw)
    model = build_pretrain_model(params)
    avg = build_pretrain_model(params)  # a different "running average": init must pick it
    params.model_config = pretrain_config(method, params.encoder, params.frontend,
                                          params.encoder_overrides, params).to_dict()
    save_checkpoint(path, model, model_avg=avg, params=dict(params))
    return model, avg


def _fbank(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), 80, generator=g), torch.tensor(lengths)


def _equal_state(a, b, prefix=""):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), prefix + k


# ------------------------------------------------------------------ configs


def test_named_encoder_configs_round_trip_through_json():
    for name in list_encoders():
        cfg = NAMED_ENCODERS[name]
        assert EncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg = encoder_config("hubert-tiny", frontend="fbank", frontend_layer3_channels=16, qkv_bias=False)
    assert cfg.frontend_type == "fbank" and cfg.frontend.layer3_channels == 16 and not cfg.encoder.qkv_bias
    with pytest.raises(Exception):  # frozen
        cfg.name = "x"


def test_unknown_override_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown override 'num_layerz'.*valid: .*'num_layers'"):
        encoder_config("hubert-tiny", num_layerz=3)
    # a CNN-only field on the fbank front end
    with pytest.raises(ConfigError, match="frontend_conv_bias"):
        encoder_config("hubert-tiny", frontend="fbank", frontend_conv_bias=True)
    # pretraining: encoder fields or the objective's, and both are listed
    with pytest.raises(ConfigError, match=r"SpidrConfig field: .*'ema_start_decay'"):
        pretrain_config("spidr", "hubert-tiny", overrides="ema_start_dekay=0.99")
    with pytest.raises(ConfigError, match="--frontend cnn and --encoder-overrides frontend=fbank disagree"):
        pretrain_config("hubert", "hubert-tiny", "cnn", overrides="frontend=fbank")
    cfg = pretrain_config("spidr", "hubert-tiny", overrides="ema_start_decay=0.99,num_codebooks=2,dropout=0.0")
    assert cfg.objective_config.ema_start_decay == 0.99 and cfg.encoder.encoder.dropout == 0.0
    assert cfg.encoder.encoder.qkv_bias is False  # SpidR's Table 5 defaults, under the user's


def test_model_config_round_trip_and_config_json(tmp_path):
    for method in OBJECTIVES:
        cfg = pretrain_config(method, "zipformer-tiny", "fbank", "", {"num_codebooks": 2})
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        path = write_config_json(tmp_path / method, cfg)
        assert ModelConfig.from_dict(json.loads(path.read_text())["model"]) == cfg


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_every_objective_exposes_the_downstream_interface(method):
    """What fine-tuning, labels, extraction and layer evaluation use, for every registration."""
    torch.manual_seed(0)
    model = build_model(pretrain_config(method, "zipformer-tiny", "fbank", "frontend_layer3_channels=32",
                                        {"num_codebooks": 2, "num_classes": 10}))
    assert get_objective(method).name == method
    x, lens = _fbank([220, 160])
    feats, out_lens = model.eval().extract_features(x, lens)
    assert len(feats) == 5 and out_lens.tolist() == [(220 - 7) // 2, (160 - 7) // 2]
    enc = SslEncoder.from_model(model, mask_prob=0.0)
    out, out_lens2 = enc.eval()(x, lens)
    assert torch.equal(out_lens, out_lens2) and out.shape[:2] == feats[1].shape[:2]
    assert all(p.requires_grad for p in enc.parameters())  # SpidR freezes its last LayerNorm


# ------------------------------------------------------------------ the loader, every kind


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_loader_on_pretraining_checkpoints(tmp_path, method):
    _, avg = _save_pretrain(tmp_path / "epoch-1.pt", method)
    model, cfg = load_model(tmp_path / "epoch-1.pt", averaged=True)
    assert cfg.kind == "pretrain" and cfg.objective == method and cfg.input_type == "fbank"
    _equal_state(model, avg)
    feat_model, _ = load_feature_model(tmp_path / "epoch-1.pt")
    assert hasattr(feat_model, "extract_features")


def test_loader_on_checkpoints_without_a_model_config(tmp_path):
    """Checkpoints written before config.json/model_config existed still load."""
    torch.manual_seed(0)
    params = _pretrain_params("spidr")
    model = build_pretrain_model(params)
    torch.save({"model": model.state_dict(), "params": dict(params)}, tmp_path / "old.pt")
    loaded, cfg = load_model(tmp_path / "old.pt")
    assert cfg.objective == "spidr" and cfg.objective_config.num_codebooks == 2
    _equal_state(loaded, model)


@pytest.fixture
def lang_dir(tmp_path):
    from icefall.data.tokenizer import make_char_lang

    return make_char_lang(["a b", "c a d"], tmp_path / "lang")


def _finetune_params(lang_dir, *argv, **defaults):
    from icefall.data.tokenizer import load_tokenizer

    tok = load_tokenizer(lang_dir)
    params = AttributeDict(vars(finetune_parser(use_ctc=True, use_transducer=True, decoder_dim=16,
                                                joiner_dim=16, mask_prob=0.0, **defaults).parse_args(list(argv))))
    params.vocab_size, params.blank_id = tok.vocab_size, tok.blank_id
    return params


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_init_ckpt_from_every_method(tmp_path, lang_dir, method):
    """--init-ckpt with a spidr/dinosr (and hubert) checkpoint: the encoder holds the averaged
    pretrained weights; the fine-tuned checkpoint then loads for decoding and as --init-ckpt."""
    _, avg = _save_pretrain(tmp_path / "epoch-1.pt", method)
    params = _finetune_params(lang_dir, "--init-ckpt", str(tmp_path / "epoch-1.pt"))
    ssl = load_ssl_model(params)
    ref = avg.state_dict()
    for k, v in ssl.state_dict().items():
        assert torch.equal(v, ref[k].float()), k
    asr = build_asr_model(params, ssl)
    assert ModelConfig.from_dict(params.model_config).objective == method

    save_checkpoint(tmp_path / "ft" / "epoch-1.pt", asr, params=dict(params))
    model, cfg = load_model(tmp_path / "ft" / "epoch-1.pt", expect="asr")
    assert cfg.kind == "asr" and cfg.objective == method
    _equal_state(model, asr)
    # a fine-tuned model as --init-ckpt: its encoder, fresh heads
    again = load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", str(tmp_path / "ft" / "epoch-1.pt")))
    _equal_state(again, asr.encoder)
    # but not to continue pretraining
    from icefall.ssl.pretrain import model_config as pretrain_model_config

    with pytest.raises(CheckpointKindError, match="is a fine-tuned ASR checkpoint.*needs a pretraining one"):
        pretrain_model_config(_pretrain_params(method, init_ckpt=str(tmp_path / "ft" / "epoch-1.pt")))
    # and its encoder's layers for k-means labels
    feats, _ = load_feature_model(tmp_path / "ft" / "epoch-1.pt")
    x, lens = _fbank([200])
    (a,), _ = feats.extract_features(x, lens, layers=[2])
    (b,), _ = asr.encoder.eval().extract_features(x, lens, layers=[2])
    assert torch.equal(a, b)


def test_exported_pretrained_pt_loads(tmp_path, lang_dir):
    from icefall.asr.export import save_pretrained

    params = _finetune_params(lang_dir, "--encoder", "zipformer-tiny", "--frontend", "fbank")
    asr = build_asr_model(params, load_ssl_model(params))
    save_pretrained(asr, params, tmp_path / "pretrained.pt")
    model, cfg = load_model(tmp_path / "pretrained.pt", expect="asr")
    assert cfg.encoder.name == "zipformer-tiny" and cfg.objective is None
    _equal_state(model, asr)


# ------------------------------------------------------------------ conflicts and kinds


def test_conflicting_finetune_options_are_errors(tmp_path, lang_dir):
    _save_pretrain(tmp_path / "cnn.pt", "hubert", frontend="cnn", encoder_overrides="")
    ckpt = str(tmp_path / "cnn.pt")
    with pytest.raises(ModelConfigError, match=r"cnn front end.*--frontend fbank was asked, the checkpoint holds cnn"):
        load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", ckpt, "--frontend", "fbank"))
    with pytest.raises(ModelConfigError, match="--encoder hubert-tiny was asked, the checkpoint holds zipformer-tiny"):
        load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", ckpt, "--encoder", "hubert-tiny"))
    # a recipe's default serves --init-ckpt none only: the checkpoint's architecture is kept
    params = _finetune_params(lang_dir, "--init-ckpt", ckpt, frontend="fbank", encoder="hubert-tiny")
    assert load_ssl_model(params).config.frontend_type == "cnn" and params.frontend == "cnn"
    # agreeing options and regularisation overrides are fine
    ssl = load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", ckpt, "--frontend", "cnn",
                                          "--encoder-overrides", "dropout=0.0"))
    assert ssl.config.encoder.dropout == 0.0 and ssl.config.frontend_type == "cnn"
    # an override that changes the architecture names the file and the change
    with pytest.raises(ModelConfigError, match=r"(?s)cnn\.pt.*do not fit.*--encoder-overrides changed \[.encoder_dim.\]"):
        load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", ckpt,
                                        "--encoder-overrides", "encoder_dim=(64,96,128,64)"))
    with pytest.raises(ConfigError, match="unknown override 'dropoutt'"):
        load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", ckpt, "--encoder-overrides", "dropoutt=0.0"))


def _decode_args(**kw):
    parser = dec.get_parser()
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_checkpoint_kind_errors(tmp_path):
    _save_pretrain(tmp_path / "epoch-1.pt", "spidr")
    msg = r"epoch-1\.pt is a pretraining checkpoint \(spidr, zipformer-tiny, fbank front end\); decoding needs a fine-tuned one"
    with pytest.raises(CheckpointKindError, match=msg):
        dec.load_model(_decode_args(checkpoint=tmp_path / "epoch-1.pt"))
    with pytest.raises(CheckpointKindError, match=msg):
        dec.load_model(_decode_args(exp_dir=tmp_path, epoch=1, avg=1, use_averaged_model=False))
    with pytest.raises(CheckpointKindError, match="export.py needs a fine-tuned one"):
        dec.load_model(_decode_args(checkpoint=tmp_path / "epoch-1.pt"), purpose="export.py")
    assert load_model(tmp_path / "epoch-1.pt", expect="pretrain")[1].kind == "pretrain"
    torch.save({"model": {}, "params": {"lr": 1}}, tmp_path / "odd.pt")
    with pytest.raises(ModelConfigError, match=r"odd\.pt: cannot tell which model it holds"):
        load_model(tmp_path / "odd.pt")


# ------------------------------------------------------------------ fairseq


def test_converted_and_raw_fairseq_fine_tune_the_same(tmp_path, lang_dir, monkeypatch):
    """convert_fairseq.py output, ``fairseq:<path>`` and the raw file given as is (detected)
    give bitwise-equal models after init and the same loss."""
    pytest.importorskip("transformers")
    from test_fairseq_import import batch, write_post_norm

    from icefall.ssl.fairseq_import import convert_fairseq_checkpoint

    src, dst = tmp_path / "hubert_fs.pt", tmp_path / "converted.pt"
    write_post_norm(src, monkeypatch)
    convert_fairseq_checkpoint(src, dst)
    wav, lens = batch()
    models, losses = [], []
    for spec in (str(dst), f"fairseq:{src}", str(src)):
        params = _finetune_params(lang_dir, "--init-ckpt", spec)
        torch.manual_seed(1)  # the same fresh heads
        asr = build_asr_model(params, load_ssl_model(params))
        assert params.encoder == "hubert-base" and params.frontend == "cnn"
        cfg = ModelConfig.from_dict(params.model_config)
        assert cfg.objective == "hubert" and cfg.encoder.encoder.num_layers == 2
        asr.eval()
        with torch.no_grad():
            out = asr(wav, lens, [[3, 4], [5]])
        models.append(asr)
        losses.append((out.simple.item(), out.pruned.item(), out.ctc.item()))
    for other in models[1:]:
        _equal_state(other, models[0])
    assert losses[0] == losses[1] == losses[2]
    # the pretraining model of each is the same too
    a, ca = load_model(dst)
    b, cb = load_model(f"fairseq:{src}")
    assert ca.encoder == cb.encoder and ca.objective_config == cb.objective_config
    _equal_state(a, b)


def test_pretraining_continues_from_a_checkpoint(tmp_path, monkeypatch):
    """pretrain.py --init-ckpt (what docs/fairseq.md promised as --init-from): a fairseq file
    with new k-means labels keeps everything but the label embeddings; another method is an error."""
    pytest.importorskip("transformers")
    from test_fairseq_import import FINAL_DIM, NUM_CLASSES, write_post_norm

    from icefall.ssl.pretrain import init_weights, model_config

    src = tmp_path / "hubert_fs.pt"
    write_post_norm(src, monkeypatch)
    argv = ["--init-ckpt", f"fairseq:{src}", "--num-classes", str(NUM_CLASSES + 3)]
    params = AttributeDict(vars(pretrain_parser(encoder="hubert-base", frontend="cnn").parse_args(argv)))
    cfg = model_config(params)
    with pytest.raises(ModelConfigError, match=r"final_proj.weight.*would change shape.*'final_dim': \(8, 256\)"):
        init_weights(build_model(cfg), params.init_ckpt, cfg)
    params = AttributeDict(vars(pretrain_parser(encoder="hubert-base", frontend="cnn").parse_args(
        argv + ["--final-dim", str(FINAL_DIM)])))
    cfg = model_config(params)
    assert cfg.encoder.encoder.num_layers == 2 and cfg.objective_config.num_classes == NUM_CLASSES + 3
    model = build_model(cfg)
    init_weights(model, params.init_ckpt, cfg)
    ref, _ = load_model(f"fairseq:{src}")
    for k, v in ref.state_dict().items():
        if k != "label_embs_concat":
            assert torch.equal(model.state_dict()[k], v), k
    assert model.label_embs_concat.shape[0] == NUM_CLASSES + 3

    _save_pretrain(tmp_path / "spidr.pt", "spidr")
    with pytest.raises(ModelConfigError, match="--method hubert was asked, the checkpoint holds spidr"):
        model_config(_pretrain_params("hubert", init_ckpt=str(tmp_path / "spidr.pt")))
    assert model_config(_pretrain_params("spidr", init_ckpt=str(tmp_path / "spidr.pt"))).objective == "spidr"


def test_converted_icefall_k2ssl_checkpoint_loads_and_fine_tunes(tmp_path, lang_dir):
    """icefall.ssl.icefall_import's output has the converted-HuBERT layout: the loader and
    --init-ckpt take it like a converted fairseq file."""
    from test_icefall_import import ICEFALL_OPTIONS, TINY_CNN, k2ssl_state, our_k2ssl

    from icefall.ssl.icefall_import import main as convert

    original = our_k2ssl(0.1)
    src, dst = tmp_path / "epoch-1.pt", tmp_path / "k2ssl.pt"
    torch.save({"model": k2ssl_state(original, 0.1), **ICEFALL_OPTIONS, "conv_feature_layers": str(TINY_CNN)}, src)
    convert([str(src), str(dst)])
    model, cfg = load_model(dst)
    assert cfg.kind == "pretrain" and cfg.objective == "hubert" and cfg.source == f"icefall:{src}"
    ssl = load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", str(dst)))
    wav, lens = torch.randn(1, 8000), torch.tensor([8000])
    with torch.no_grad():
        assert torch.equal(ssl.eval()(wav, lens)[0], original.eval().encode(wav, lens)["out"])


def test_icefall_prefix_reads_an_icefall_checkpoint_directly(tmp_path, lang_dir):
    """``icefall:<path>`` (load_model and --init-ckpt) reads an icefall / k2SSL checkpoint without
    converting it first, taking its running-average weights when it has them."""
    from test_icefall_import import ICEFALL_OPTIONS, TINY_CNN, k2ssl_state, our_k2ssl

    original, averaged = our_k2ssl(0.1), our_k2ssl(0.1)
    with torch.no_grad():
        for p in averaged.parameters():
            p.add_(0.01)
    src = tmp_path / "epoch-3.pt"
    torch.save({"model": k2ssl_state(original, 0.1), "model_avg": k2ssl_state(averaged, 0.1),
                **ICEFALL_OPTIONS, "conv_feature_layers": str(TINY_CNN)}, src)
    model, cfg = load_model(f"icefall:{src}")
    assert cfg.kind == "pretrain" and cfg.objective == "hubert" and cfg.source == f"icefall:{src}"
    wav, lens = torch.randn(1, 8000), torch.tensor([8000])
    with torch.no_grad():
        assert torch.equal(model.encode(wav, lens)["out"], averaged.eval().encode(wav, lens)["out"])
    ssl = load_ssl_model(_finetune_params(lang_dir, "--init-ckpt", f"icefall:{src}"))
    with torch.no_grad():
        assert torch.equal(ssl.eval()(wav, lens)[0], averaged.eval().encode(wav, lens)["out"])
    with pytest.raises(CheckpointKindError, match="decod"):
        load_model(f"icefall:{src}", expect="asr", purpose="decoding")
