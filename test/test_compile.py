"""torch.compile: the encoders' forward traces into one graph (no graph breaks) on tiny configs.

What still breaks, and why (docs/training.md#torchcompile): the Zipformer in training mode
draws Python random numbers to decide, per call, whether a Balancer/Whiten constraint, layer
bypass or positional-score skip applies (icefall's design; each draw is a graph break), and a
Transformer with ``layerdrop > 0`` draws one per layer. The trainer's ``--compile`` is tested in
test_trainer.py (in-place compile, plain checkpoint keys, exact resume).
"""
import pytest
import torch

from icefall.nn.configs import build_encoder
from icefall.nn.scaling import set_batch_count
from icefall.nn.zipformer import rel_to_abs


def _encoder_inputs(name: str, train: bool):
    torch.manual_seed(0)
    model = build_encoder(name, frontend="fbank").train(train)
    set_batch_count(model, 100.0)
    lens = torch.tensor([120, 90])  # padding in the batch: the masked paths are traced too
    with torch.no_grad():
        feats, feat_lens = model.frontend(torch.randn(2, 120, 80), lens)
    return model.encoder, feats, feat_lens


def _graph_breaks(module, *args):
    torch._dynamo.reset()
    explained = torch._dynamo.explain(module)(*args)
    return explained.graph_count, [b.reason.splitlines()[0] for b in explained.break_reasons]


def test_transformer_encoder_training_forward_is_one_graph():
    encoder, feats, feat_lens = _encoder_inputs("hubert-tiny", train=True)
    assert _graph_breaks(encoder, feats, feat_lens) == (1, [])


def test_zipformer_encoder_inference_forward_is_one_graph():
    encoder, feats, feat_lens = _encoder_inputs("zipformer-tiny", train=False)
    assert _graph_breaks(encoder, feats, feat_lens) == (1, [])


def test_hubert_training_forward_with_cnn_front_end_is_one_graph():
    torch.manual_seed(0)
    model = build_encoder("hubert-tiny").train()  # wav2vec2 CNN over waveform, then the encoder
    wav, lens = torch.randn(2, 4000), torch.tensor([4000, 3000])
    assert _graph_breaks(model, wav, lens) == (1, [])


@pytest.mark.parametrize("T", [1, 2, 7])
def test_rel_to_abs_reads_the_offset_of_each_key(T):
    pos = torch.randn(3, 2, T, 2 * T - 1)
    out = rel_to_abs(pos)
    assert out.shape == (3, 2, T, T)
    for i in range(T):
        for j in range(T):
            assert torch.equal(out[..., i, j], pos[..., i, (T - 1) - i + j])
