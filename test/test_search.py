"""Transducer greedy and modified beam search: constructed joiner, brute force."""
import itertools
import math

import pytest
import torch
from torch import nn

from icefall.asr.decoder import Decoder
from icefall.asr.joiner import Joiner
from icefall.asr.search import greedy_search_batch, modified_beam_search



class TinyTransducer(nn.Module):
    def __init__(self, vocab_size, dim, context_size=2):
        super().__init__()
        self.decoder = Decoder(vocab_size, dim, blank_id=0, context_size=context_size)
        self.joiner = Joiner(dim, dim, dim, vocab_size)


def frame_driven_model(V):
    """Joiner whose best output on a frame is the argmax of the encoder frame,
    whatever the decoder says."""
    m = TinyTransducer(V, V)
    with torch.no_grad():
        m.joiner.encoder_proj.weight.copy_(torch.eye(V))
        m.joiner.encoder_proj.bias.zero_()
        m.joiner.decoder_proj.weight.zero_()
        m.joiner.decoder_proj.bias.zero_()
        m.joiner.output_linear.weight.copy_(10 * torch.eye(V))
        m.joiner.output_linear.bias.zero_()
    return m


def test_constructed_joiner_greedy_and_beam():
    V = 6
    model = frame_driven_model(V)
    frames = [[0, 3, 0, 3, 5, 0, 2], [4, 4, 0, 1, 0, 0, 3]]  # 0 = blank
    enc = 3.0 * nn.functional.one_hot(torch.tensor(frames), V).float()
    lens = torch.tensor([7, 5])  # the 3 on frame 6 of utterance 1 is padding
    expected = [[3, 3, 5, 2], [4, 4, 1]]  # one symbol per frame; repeats are kept
    assert greedy_search_batch(model, enc, lens) == expected
    assert modified_beam_search(model, enc, lens, beam=4) == expected


def path_logprobs(model, enc_frame_list):
    """log p(y|x) for every y under the one-symbol-per-frame topology, by
    enumerating every per-frame output sequence and running the real
    decoder/joiner on each step."""
    V = model.decoder.vocab_size
    c = model.decoder.context_size
    T = len(enc_frame_list)
    scores = {}
    for path in itertools.product(range(V), repeat=T):
        context = [-1] * (c - 1) + [0]
        ys, lp = [], 0.0
        for t, tok in enumerate(path):
            dec = model.decoder(torch.tensor([context[-c:]]), need_pad=False)[0, 0]
            logits = model.joiner(enc_frame_list[t], dec)
            lp += logits.log_softmax(-1)[tok].item()
            if tok != 0:
                ys.append(tok)
                context.append(tok)
        key = tuple(ys)
        scores[key] = lp if key not in scores else float(torch.logaddexp(torch.tensor(scores[key]), torch.tensor(lp)))
    return scores


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_search_matches_brute_force(seed):
    torch.manual_seed(seed)
    V, D, T = 3, 4, 4
    model = TinyTransducer(V, D)
    for p in model.parameters():
        nn.init.normal_(p, std=1.5)
    enc = torch.randn(2, T, D)
    lens = torch.tensor([4, 3])
    with torch.no_grad():
        hyps = modified_beam_search(model, enc, lens, beam=100)
        for b in range(2):
            scores = path_logprobs(model, [enc[b, t] for t in range(lens[b])])
            assert math.fsum(math.exp(s) for s in scores.values()) == pytest.approx(1.0, abs=1e-5)
            c = model.decoder.context_size
            best = max(scores, key=lambda y: scores[y] / (len(y) + c))
            assert tuple(hyps[b]) == best


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_batch_matches_per_utterance_loop(seed):
    torch.manual_seed(seed)
    V, D = 5, 8
    model = TinyTransducer(V, D)
    for p in model.parameters():
        nn.init.normal_(p, std=1.0)
    enc = torch.randn(3, 9, D)
    lens = torch.tensor([9, 6, 2])
    hyps = greedy_search_batch(model, enc, lens)
    with torch.no_grad():
        for b in range(3):
            context, ys = [-1, 0], []
            for t in range(lens[b]):
                dec = model.decoder(torch.tensor([context[-2:]]), need_pad=False)[0, 0]
                tok = int(model.joiner(enc[b, t], dec).argmax())
                if tok != 0:
                    ys.append(tok)
                    context.append(tok)
            assert hyps[b] == ys


# ------------------------------------------------------------ shallow fusion with a token LM
@pytest.fixture(scope="module")
def token_lm(tmp_path_factory):
    """A trigram over the token symbols x (1) and y (2) that prefers x y x y ..."""
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from icefall.asr.lm import build_arpa
    from icefall.asr.lm_decode import TokenNgramLM

    d = tmp_path_factory.mktemp("token_lm")
    (d / "text.txt").write_text("x y x y\nx y\ny x y x y\nx y x\nx x y\n" * 5)
    return TokenNgramLM(build_arpa(d / "text.txt", d / "3gram.arpa", order=3),
                        {"<blk>": 0, "x": 1, "y": 2})


def lm_log10(lm, ys):
    return sum(float(lm.log10_probs(ys[:i])[t]) for i, t in enumerate(ys))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shallow_fusion_matches_brute_force(token_lm, seed):
    torch.manual_seed(seed)
    V, D, T = 3, 4, 4
    model = TinyTransducer(V, D)
    for p in model.parameters():
        nn.init.normal_(p, std=1.5)
    enc = torch.randn(1, T, D)
    lens = torch.tensor([T])
    c = model.decoder.context_size
    with torch.no_grad():
        scores = path_logprobs(model, [enc[0, t] for t in range(T)])
        for weight in (0.0, 3.0):
            fused = {y: s + weight * lm_log10(token_lm, y) for y, s in scores.items()}
            best = max(fused, key=lambda y: fused[y] / (len(y) + c))
            hyp = modified_beam_search(model, enc, lens, beam=100, lm=token_lm, lm_weight=weight)
            assert tuple(hyp[0]) == best, weight


def test_shallow_fusion_weight_zero_is_plain_and_a_weight_moves_towards_the_lm(token_lm):
    torch.manual_seed(3)
    model = TinyTransducer(3, 8)
    for p in model.parameters():
        nn.init.normal_(p, std=1.0)
    enc, lens = torch.randn(6, 12, 8), torch.tensor([12, 11, 9, 12, 7, 10])
    with torch.no_grad():
        plain = modified_beam_search(model, enc, lens, beam=4)
        assert modified_beam_search(model, enc, lens, beam=4, lm=token_lm, lm_weight=0.0) == plain
        fused = modified_beam_search(model, enc, lens, beam=4, lm=token_lm, lm_weight=2.0)
    assert fused != plain
    per_token = lambda hyps: sum(lm_log10(token_lm, h) for h in hyps) / sum(map(len, hyps))  # noqa: E731
    assert per_token(fused) > per_token(plain)


def test_token_lm_scores_and_cache(token_lm):
    assert token_lm.order == 3
    assert float(token_lm.log10_probs((1, 2, 1))[0]) == 0.0  # blank costs nothing
    # a trigram sees two tokens of history: longer histories with the same tail score alike
    assert torch.equal(token_lm.log10_probs((2, 2, 1, 2)), token_lm.log10_probs((1, 2)))
    assert not torch.equal(token_lm.log10_probs((1, 2)), token_lm.log10_probs((2,)))
    p = 10 ** token_lm.log10_probs((1,))[1:]
    assert float(p[1]) > float(p[0])  # after x, y is likelier than x


def test_token_arpa_of_letters(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from icefall.asr.lm import build_token_arpa
    from icefall.asr.lm_decode import TokenNgramLM
    from icefall.data.tokenizer import make_char_lang, read_tokens

    lang = make_char_lang(["AB BA"], tmp_path / "lang")
    (tmp_path / "text.txt").write_text("AB BA\nBA\n" * 5)
    arpa = build_token_arpa(tmp_path / "text.txt", lang, tmp_path / "t.arpa", order=2)
    bigrams = {tuple(line.split()[1:3]) for line in arpa.read_text().splitlines() if len(line.split()) >= 3}
    assert ("B", "|") in bigrams and ("|", "B") in bigrams  # letters, | between words
    tokens = read_tokens(lang / "tokens.txt")
    lm = TokenNgramLM(arpa, tokens)
    after_a = 10 ** lm.log10_probs((tokens["B"], tokens["A"]))
    assert float(after_a[tokens["B"]]) > float(after_a[tokens["|"]])  # only "AB" continues
