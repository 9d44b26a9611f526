"""CTC loss and decoding against brute-force enumeration of all alignments."""
import itertools
import math

import pytest
import torch

from icefall.asr.ctc import (CtcHead, ctc_greedy_search, ctc_loss, ctc_prefix_beam_search,
                             ctc_prefix_beam_search_nbest)



def collapse(path, blank=0):
    out = []
    for i, tok in enumerate(path):
        if tok != blank and (i == 0 or tok != path[i - 1]):
            out.append(tok)
    return tuple(out)


def brute_force_label_logprobs(log_probs):
    """log p(labels | x) for every label sequence, by enumerating V**T paths."""
    T, V = log_probs.shape
    scores = {}
    for path in itertools.product(range(V), repeat=T):
        lp = sum(log_probs[t, c].item() for t, c in enumerate(path))
        key = collapse(path)
        scores[key] = lp if key not in scores else float(torch.logaddexp(torch.tensor(scores[key]), torch.tensor(lp)))
    return scores


def test_ctc_loss_matches_enumeration():
    T, V = 5, 3
    log_probs = torch.randn(2, T, V).log_softmax(-1)
    lens = torch.tensor([5, 4])
    targets = [[1, 1], [2, 1, 2]]
    losses = ctc_loss(log_probs, lens, targets, reduction="none")
    for b in range(2):
        ref = brute_force_label_logprobs(log_probs[b, : lens[b]])
        assert losses[b].item() == pytest.approx(-ref[tuple(targets[b])], rel=1e-5)
    assert ctc_loss(log_probs, lens, targets).item() == pytest.approx(losses.sum().item(), rel=1e-6)


def test_greedy_merges_repeats_and_drops_blanks():
    path = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3]])
    log_probs = torch.nn.functional.one_hot(path, 4).float().log()
    assert ctc_greedy_search(log_probs, torch.tensor([9])) == [[1, 1, 2, 3]]
    assert ctc_greedy_search(log_probs, torch.tensor([4])) == [[1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_beam_search_is_exact_with_a_wide_beam(seed):
    g = torch.Generator().manual_seed(seed)
    T, V = 5, 3
    log_probs = (2.0 * torch.randn(1, T, V, generator=g)).log_softmax(-1)
    ref = sorted(brute_force_label_logprobs(log_probs[0]).items(), key=lambda kv: -kv[1])
    nbest = ctc_prefix_beam_search_nbest(log_probs, torch.tensor([T]), beam=100)[0]
    assert len(nbest) == len(ref)  # every label sequence reached
    got = {tuple(tokens): score for tokens, score in nbest}
    for tokens, ref_score in ref:
        assert got[tokens] == pytest.approx(ref_score, abs=1e-5)
    assert [s for _, s in nbest] == sorted((s for _, s in nbest), reverse=True)
    assert tuple(ctc_prefix_beam_search(log_probs, torch.tensor([T]), beam=100)[0]) == ref[0][0]
    # scores of all prefixes sum to one
    assert math.fsum(math.exp(s) for _, s in nbest) == pytest.approx(1.0, abs=1e-5)


def test_prefix_beam_search_beats_greedy_on_a_constructed_case():
    # Frame-wise best path is blank-blank (p=.36) but "1" has more alignments.
    p = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]])
    log_probs = p.log()
    assert ctc_greedy_search(log_probs, torch.tensor([2])) == [[]]
    assert ctc_prefix_beam_search(log_probs, torch.tensor([2]), beam=4) == [[1]]  # .64 vs .36


def test_ctc_head_normalises():
    head = CtcHead(8, 5).eval()
    out = head(torch.randn(2, 7, 8))
    assert out.shape == (2, 7, 5)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 7))
