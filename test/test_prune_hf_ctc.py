"""Hugging Face Wav2Vec2ForCTC / HubertForCTC directories -> our CTC AsrModel
(icefall/prune/hf_ctc.py). Reference: ``transformers`` itself on tiny random models: our
log-probs equal log_softmax of HF's logits on each utterance of a padded batch."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from icefall.checkpoint import load_file  # noqa: E402
from icefall.models import build_model, model_config_of  # noqa: E402
from icefall.prune.hf_ctc import convert, load_hf_ctc  # noqa: E402
from icefall.ssl.hf_import import HfCheckpointError  # noqa: E402

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16, conv_dim=[16, 16, 16],
            conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2], vocab_size=12, pad_token_id=0)


def _hf(cls_name: str, cfg_name: str):
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(getattr(transformers, cfg_name)(**SIZE))
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped one shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _batch():
    g = torch.Generator().manual_seed(4)
    wav = torch.randn(2, 3200, generator=g)
    lens = torch.tensor([3200, 2100])
    wav[1, 2100:] = 0.0
    return wav, lens


def _assert_logits_equal(ours, hf):
    wav, lens = _batch()
    with torch.no_grad():
        out, out_lens = ours.encoder(wav, lens)
        logp = ours.ctc_output(out)
        for b in range(2):
            ref = hf(wav[b:b + 1, : lens[b]]).logits.log_softmax(-1)[0]
            t = int(out_lens[b])
            assert t == ref.shape[0]
            torch.testing.assert_close(logp[b, :t], ref, atol=1e-4, rtol=0)


def test_wav2vec2_for_ctc_logits_equal(tmp_path):
    hf = _hf("Wav2Vec2ForCTC", "Wav2Vec2Config")
    hf.save_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 2, "A": 1, **{chr(66 + i): 3 + i for i in range(9)}}))
    ours, cfg, tokens = load_hf_ctc(tmp_path)
    assert cfg.kind == "asr" and cfg.head["vocab_size"] == 12 and cfg.head["blank_id"] == 0
    assert tokens[:3] == ["<pad>", "A", "|"] and len(tokens) == 12
    _assert_logits_equal(ours, hf)

    # our checkpoint: rebuilt from its own config, same outputs (what prune.py --dense-ckpt reads)
    ckpt = load_file(convert(tmp_path, tmp_path / "dense.pt"))
    rebuilt = build_model(model_config_of(ckpt)).eval()
    rebuilt.load_state_dict(ckpt["model"], strict=True)
    _assert_logits_equal(rebuilt, hf)


def test_hubert_for_ctc_logits_equal(tmp_path):
    hf = _hf("HubertForCTC", "HubertConfig")
    hf.save_pretrained(tmp_path)
    ours, cfg, tokens = load_hf_ctc(tmp_path)
    assert tokens is None and cfg.objective == "hubert"
    _assert_logits_equal(ours, hf)


def test_base_model_without_lm_head_is_refused(tmp_path):
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SIZE)).save_pretrained(tmp_path)
    with pytest.raises(HfCheckpointError, match="lm_head"):
        load_hf_ctc(tmp_path)


def test_gates_start_from_a_converted_checkpoint_head_included(tmp_path):
    """prune.py --method gates --dense-ckpt <converted HF model>: every weight, the CTC head
    included, is the HF model's (before, --init-ckpt alone gave a fresh head)."""
    from icefall.prune.finetune import PruneHooks, get_parser
    from icefall.prune.gates import GatedLinear
    from icefall.utils import AttributeDict

    hf = _hf("Wav2Vec2ForCTC", "Wav2Vec2Config")
    hf.save_pretrained(tmp_path / "hf")
    path = convert(tmp_path / "hf", tmp_path / "dense.pt")
    ckpt = load_file(path)
    model = build_model(model_config_of(ckpt))  # fresh weights
    args = get_parser().parse_args(["--method", "gates", "--patterns", "transformer", "--dense-ckpt", str(path)])
    PruneHooks().setup_model(model, AttributeDict(vars(args)))
    assert isinstance(model.encoder.encoder.layers[0].fc1, GatedLinear)
    assert torch.equal(model.ctc_output.output.weight, ckpt["model"]["ctc_output.output.weight"])
    _assert_logits_equal(model.eval(), hf)  # thresholds at 1e-5 prune nothing
