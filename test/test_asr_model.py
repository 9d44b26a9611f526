"""AsrModel wiring: losses against direct computations, warm-up, a tiny overfit."""
import pytest
import torch
from torch import nn

from icefall.asr import rnnt_loss as R
from icefall.asr.ctc import ctc_loss
from icefall.asr.model import AsrLosses, AsrModel, combine_losses, transducer_loss_scales
from icefall.asr.search import greedy_search_batch, modified_beam_search



class TinyEncoder(nn.Module):
    """(x (B, T, C), lens) -> (tanh(linear(x)) (B, T, D), lens)."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.output_dim = out_dim
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x, x_lens):
        return torch.tanh(self.linear(x)), x_lens


def make_batch(B=2, T=10, C=6):
    x = torch.randn(B, T, C)
    x_lens = torch.tensor([T, T - 3])[:B]
    targets = [[1, 3, 2], [4, 4]][:B]
    return x, x_lens, targets


def test_transducer_losses_match_direct_computation():
    V = 6
    model = AsrModel(TinyEncoder(6, 16), V, decoder_dim=8, joiner_dim=12, use_ctc=True).eval()
    x, x_lens, targets = make_batch()
    S = 3
    losses = model(x, x_lens, targets, prune_range=S + 1)  # no pruning
    # direct: full joiner over every (frame, context) pair
    enc, enc_lens = model.encoder(x, x_lens)
    symbols = torch.tensor([[1, 3, 2], [4, 4, 0]])
    dec = model.decoder(torch.cat([torch.zeros(2, 1, dtype=torch.long), symbols], dim=1))
    boundary = torch.tensor([[0, 0, 3, 10], [0, 0, 2, 7]])
    logits = model.joiner(enc.unsqueeze(2), dec.unsqueeze(1))
    full = R.rnnt_loss(logits, symbols, 0, boundary, reduction="sum")
    assert losses.pruned.item() == pytest.approx(full.item(), rel=1e-5)
    simple = R.rnnt_loss_smoothed(model.simple_lm_proj(dec), model.simple_am_proj(enc), symbols, 0,
                                  lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary,
                                  reduction="sum")
    assert losses.simple.item() == pytest.approx(simple.item(), rel=1e-5)
    ref_ctc = ctc_loss(model.ctc_output(enc), enc_lens, targets)
    assert losses.ctc.item() == pytest.approx(ref_ctc.item(), rel=1e-5)
    # pruning can only remove paths
    pruned2 = model(x, x_lens, targets, prune_range=2).pruned
    assert pruned2.item() >= full.item() - 1e-4


def test_gradients_reach_every_parameter():
    model = AsrModel(TinyEncoder(6, 16), 6, decoder_dim=8, joiner_dim=12, use_ctc=True)
    x, x_lens, targets = make_batch()
    combine_losses(model(x, x_lens, targets), batch_idx=10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_ctc_only_model():
    model = AsrModel(TinyEncoder(6, 16), 6, use_transducer=False, use_ctc=True)
    losses = model(*make_batch())
    assert losses.simple is None and losses.pruned is None
    assert combine_losses(losses, 0) is losses.ctc


def test_warmup_scales():
    assert transducer_loss_scales(0) == (1.0, 0.1)
    s, p = transducer_loss_scales(1000, warm_step=2000)
    assert s == pytest.approx(0.75) and p == pytest.approx(0.55)
    assert transducer_loss_scales(2000) == (0.5, 1.0)
    assert transducer_loss_scales(10**6, simple_loss_scale=0.3) == (0.3, 1.0)
    losses = AsrLosses(torch.tensor(2.0), torch.tensor(4.0), torch.tensor(10.0))
    assert combine_losses(losses, 0).item() == pytest.approx(2.0 + 0.4 + 2.0)


def test_tiny_model_learns_to_transcribe():
    """Overfit one batch; greedy and beam search must then return the targets
    (checks that training and decoding feed the decoder the same way)."""
    torch.manual_seed(0)
    V, T = 6, 12
    x = torch.randn(2, T, 6)
    x_lens = torch.tensor([T, T - 2])
    targets = [[1, 3, 3, 2], [4, 5]]
    model = AsrModel(TinyEncoder(6, 32), V, decoder_dim=16, joiner_dim=32)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for step in range(60):
        loss = combine_losses(model(x, x_lens, targets), batch_idx=step, warm_step=20)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    enc, enc_lens = model.encoder(x, x_lens)
    assert greedy_search_batch(model, enc, enc_lens) == targets
    assert modified_beam_search(model, enc, enc_lens, beam=3) == targets
