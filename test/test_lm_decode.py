"""Lexicon and n-gram LM decoding (icefall/asr/lm.py, lm_decode.py, decode.py's lexicon methods):
the decoder against an exhaustive search, LM weight 0 against lexicon only, the IRSTLM-built
ARPA file against the toolkit's own scores, lexicons, tuning."""
import itertools
import math
import re
import subprocess
from pathlib import Path

import pytest
from conftest import write_random_fbank_cuts
import torch

from icefall.asr import decode as dec
from icefall.asr.ctc import ctc_greedy_search
from icefall.asr.lm import build_arpa, irstlm_tool, make_lexicon, read_lexicon, spellings
from icefall.asr.lm_decode import CtcLexiconDecoder, tune_weights
from icefall.data.tokenizer import make_char_lang, read_tokens, train_bpe

pytest.importorskip("flashlight.lib.text.decoder.kenlm", reason="flashlight-text with KenLM")

LM_TEXT = ["AB BA", "BA AB", "AB AB", "BA", "AB BA BA", "AB"] * 3


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    """Letters A, B and the separator |; lexicon {AB, BA}; a bigram LM of LM_TEXT."""
    d = make_char_lang(["AB BA"], tmp_path_factory.mktemp("lang"))
    make_lexicon(["AB", "BA"], d)
    (d / "text.txt").write_text("".join(s + "\n" for s in LM_TEXT))
    build_arpa(d / "text.txt", d / "2gram.arpa", order=2)
    return d


def emissions(tokens, T, seed):
    """(T, V) log-probs: random over blank, |, A, B; <sos/eos> and <unk> never emitted."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, len(tokens), generator=g) * 2.0
    logits[:, [tokens["<sos/eos>"], tokens["<unk>"]]] = -1e4
    return logits.log_softmax(-1)


def collapse(path, blank):
    return tuple(t for i, t in enumerate(path) if t != blank and (i == 0 or t != path[i - 1]))


def parses(symbols, lexicon):
    """The word sequences the decoder reads from collapsed token symbols: every word is its
    spelling followed by ``|``, and more ``|`` (silence) may come anywhere between words."""
    chunks = [c for c in " ".join(symbols).split("|")]
    if chunks[-1].strip():  # the last word must be closed by |
        return []
    words = {tuple(s): w for w, s in lexicon.items()}
    out = [words.get(tuple(c.split())) for c in chunks[:-1] if c.strip()]
    return [out] if None not in out else []


def brute_force(lp, tokens, lexicon, lm, lm_weight, word_score):
    """The best word sequence over every frame-level path (Viterbi, like the decoder with
    log_add off): CTC score + lm_weight * LM log10 prob + word_score per word; (score, words)."""
    id2sym = {i: s for s, i in tokens.items()}
    allowed = [tokens[s] for s in ("<blk>", "|", "A", "B")]
    best_am = {}
    for path in itertools.product(allowed, repeat=lp.size(0)):
        score = float(lp[torch.arange(lp.size(0)), torch.tensor(path)].sum())
        key = collapse(path + (tokens["|"],), tokens["<blk>"])  # the decoder's final silence
        best_am[key] = max(best_am.get(key, -math.inf), score)
    spelled = {w: s[0] for w, s in lexicon.items()}
    best = (-math.inf, None)
    for key, am in best_am.items():
        for words in parses([id2sym[t] for t in key], spelled):
            total = am + word_score * len(words) + lm_weight * lm_log10(lm, words)
            best = max(best, (total, words))
    return best


def lm_log10(lm, words):
    """log10 P(words </s> | <s>) by the decoder's own KenLM (flashlight's LM interface)."""
    if lm is None:
        return 0.0
    state, total = lm.start(False), 0.0
    for w in words:
        state, s = lm.score(state, w)
        total += s
    return total + lm.finish(state)[1]


class WordLM:
    """A KenLM (flashlight's LM interface) addressed by word strings."""

    def __init__(self, lm, words):
        self.lm, self.words = lm, words

    @classmethod
    def load(cls, arpa, vocabulary):
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        words = Dictionary(list(vocabulary))
        return cls(KenLM(str(arpa), words), words)

    def start(self, flag):
        return self.lm.start(flag)

    def score(self, state, word):
        return self.lm.score(state, self.words.get_index(word))

    def finish(self, state):
        return self.lm.finish(state)


@pytest.mark.parametrize("with_lm,lm_weight,word_score", [(False, 0.0, 0.5), (True, 1.0, -0.5)])
def test_decoder_finds_the_exhaustive_best(lang, with_lm, lm_weight, word_score):
    tokens, lexicon = read_tokens(lang / "tokens.txt"), read_lexicon(lang / "lexicon.txt")
    lm = lang / "2gram.arpa" if with_lm else None
    decoder = CtcLexiconDecoder(lexicon, tokens, lm=lm, lm_weight=lm_weight, word_score=word_score,
                                beam_size=500, beam=1e3)
    word_lm = WordLM.load(lm, lexicon) if with_lm else None
    id2sym = {i: s for s, i in tokens.items()}
    changed = 0
    for seed in range(12):
        lp = emissions(tokens, T=7, seed=seed)
        _, words = brute_force(lp, tokens, lexicon, word_lm, lm_weight, word_score)
        assert decoder.decode_one(lp) == words, seed
        greedy = "".join(id2sym[t] for t in ctc_greedy_search(lp[None], torch.tensor([7]), 0)[0])
        changed += greedy != "|".join(words)
    assert changed >= 6  # the lexicon (and LM) change most greedy outputs


def test_lm_weight_zero_equals_lexicon_only(lang):
    tokens, lexicon = read_tokens(lang / "tokens.txt"), read_lexicon(lang / "lexicon.txt")
    with_lm = CtcLexiconDecoder(lexicon, tokens, lm=lang / "2gram.arpa", lm_weight=0.0,
                                word_score=0.3, beam_size=8, beam=12.0)
    no_lm = CtcLexiconDecoder(lexicon, tokens, lm=None, word_score=0.3, beam_size=8, beam=12.0)
    lps = [emissions(tokens, T=30, seed=s) for s in range(20)]
    assert [with_lm.decode_one(lp) for lp in lps] == [no_lm.decode_one(lp) for lp in lps]
    with_lm.set_weights(3.0, 0.3)  # and the LM does change something when weighted
    assert [with_lm.decode_one(lp) for lp in lps] != [no_lm.decode_one(lp) for lp in lps]


def test_silence_token_of_each_kind_of_lang_dir(lang, tmp_path):
    from icefall.asr.lm_decode import load_lexicon_decoder

    tokens = read_tokens(lang / "tokens.txt")
    assert load_lexicon_decoder(lang).sil == tokens["|"]
    exported = tmp_path / "exported"  # an exported letter model writes ▁ for |
    exported.mkdir()
    (exported / "tokens.txt").write_text((lang / "tokens.txt").read_text().replace("| ", "\u2581 "))
    assert load_lexicon_decoder(exported, lexicon=lang / "lexicon.txt").sil == tokens["|"]
    bpe = train_bpe(LM_TEXT * 4, tmp_path / "bpe", vocab_size=12)
    make_lexicon(["AB", "BA"], bpe)
    assert load_lexicon_decoder(bpe).sil == 0  # blank


def test_batch_decode_respects_lengths(lang):
    tokens, lexicon = read_tokens(lang / "tokens.txt"), read_lexicon(lang / "lexicon.txt")
    decoder = CtcLexiconDecoder(lexicon, tokens, lm=lang / "2gram.arpa")
    a, b = emissions(tokens, 20, 1), emissions(tokens, 9, 2)
    batch = torch.stack([a, torch.cat([b, emissions(tokens, 11, 3)])])
    assert decoder.decode(batch, torch.tensor([20, 9])) == [decoder.decode_one(a), decoder.decode_one(b)]
    assert decoder.decode_one(a[:0]) == []
    with pytest.raises(ValueError, match="log-probs"):
        decoder.decode_one(a[:, :3])


def read_arpa(path):
    """{ngram tuple: (log10 prob, log10 backoff)} of an ARPA file, parsed independently."""
    table, order = {}, 0
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\\(\d)-grams:", line)
        if m:
            order = int(m.group(1))
            continue
        fields = line.split()
        if order and len(fields) >= order + 1 and not line.startswith("\\"):
            table[tuple(fields[1:order + 1])] = (float(fields[0]),
                                                 float(fields[order + 1]) if len(fields) > order + 1 else 0.0)
    return table


def backoff_log10(table, history, word):
    """Katz backoff: P(word | history) from the longest n-gram present, with the backoff
    weights of the shortened histories."""
    for start in range(len(history) + 1):
        ngram = tuple(history[start:]) + (word,)
        if ngram in table:
            return table[ngram][0] + sum(table.get(tuple(history[s:]), (0, 0))[1] for s in range(start))
    return table[("<unk>",)][0] + sum(table.get(tuple(history[s:]), (0, 0))[1] for s in range(len(history)))


def test_irstlm_arpa_scores_as_irstlm_and_kenlm_say(tmp_path):
    from icefall.data.lm_text import generate_lm_text

    text = tmp_path / "text.txt"
    text.write_text("".join(s + "\n" for s in generate_lm_text(3000, seed=5)))
    arpa = build_arpa(text, tmp_path / "3gram.arpa", order=3)
    table = read_arpa(arpa)
    header = re.findall(r"ngram\s+(\d)=\s*(\d+)", arpa.read_text())
    assert [int(n) for _, n in header] == [sum(len(k) == o for k in table) for o in (1, 2, 3)]
    # On held-out sentences KenLM (as the decoder loads it) scores what the file says ...
    held_out = generate_lm_text(40, seed=6)
    vocabulary = sorted({k[0] for k in table if len(k) == 1} | {w for s in held_out for w in s.split()})
    lm = WordLM.load(arpa, vocabulary)
    total = 0.0
    for sentence in held_out:
        ken = lm_log10(lm, sentence.split())
        history, ours = ["<s>"], 0.0
        for w in sentence.split() + ["</s>"]:
            ours += backoff_log10(table, history[-2:], w)
            history.append(w)
        assert ken == pytest.approx(ours, abs=1e-4), sentence
        total += ken
    # ... and what IRSTLM, which estimated it, says: its perplexity of the same sentences
    eval_text = tmp_path / "eval.txt"
    eval_text.write_text("".join(f"<s> {s} </s>\n" for s in held_out))
    out = subprocess.run([irstlm_tool("compile-lm"), str(arpa), f"--eval={eval_text}"],
                         capture_output=True, text=True)
    m = re.search(r"Nw=(\d+) PP=([\d.]+)", out.stdout + out.stderr)
    assert int(m.group(1)) == sum(len(s.split()) + 1 for s in held_out)  # words and </s>
    assert float(m.group(2)) == pytest.approx(10 ** (-total / int(m.group(1))), abs=0.006)


def test_build_arpa_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: no sentences"):
        build_arpa(tmp_path / "empty.txt", tmp_path / "x.arpa")
    with pytest.raises(ValueError, match="unknown smoothing"):
        build_arpa(tmp_path / "empty.txt", tmp_path / "x.arpa", smoothing="good-turing")
    assert not (tmp_path / "x.arpa").exists()


def test_lexicons_spell_in_letters_and_bpe_pieces(tmp_path):
    texts = ["THE CAT SAT ON THE MAT", "A DOG SAT", "THE DOG RAN"] * 20
    char_dir = make_char_lang(texts, tmp_path / "char")
    bpe_dir = train_bpe(texts, tmp_path / "bpe", vocab_size=30)
    assert spellings(["CAT", "DOGS"], char_dir) == {"CAT": [["C", "A", "T"]], "DOGS": [["D", "O", "G", "S"]]}
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(bpe_dir / "bpe.model"))
    lex = spellings(["CAT", "DOG"], bpe_dir)
    assert lex == {w: [sp.encode(w, out_type=str)] for w in ("CAT", "DOG")}
    assert all(s[0][0].startswith("\u2581") for s in lex.values())  # word-initial pieces
    # a word with a letter the lang dir lacks is left out (with a warning), not an error
    assert spellings(["CAT", "ZEBRA"], char_dir) == {"CAT": [["C", "A", "T"]]}
    with pytest.raises(ValueError, match="spells none"):
        spellings(["ZZZ"], char_dir)
    path = make_lexicon(["SAT", "CAT", "CAT"], char_dir)
    assert path.read_text() == "CAT C A T\nSAT S A T\n"
    assert read_lexicon(path) == {"CAT": [["C", "A", "T"]], "SAT": [["S", "A", "T"]]}
    (tmp_path / "bad.txt").write_text("CAT C A T\nDOG\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected"):
        read_lexicon(tmp_path / "bad.txt")


def test_tune_weights_finds_the_best_pair(lang):
    tokens, lexicon = read_tokens(lang / "tokens.txt"), read_lexicon(lang / "lexicon.txt")
    decoder = CtcLexiconDecoder(lexicon, tokens, lm=lang / "2gram.arpa", beam_size=16)
    utts = []
    for seed in range(8):
        lp = emissions(tokens, T=12, seed=seed)
        utts.append((lp, ["AB", "BA"]))
    grid_w, grid_s = [0.0, 1.0, 4.0], [-3.0, 0.0, 3.0]
    rows = tune_weights(decoder, utts, grid_w, grid_s)
    assert len(rows) == 9 and [r[2] for r in rows] == sorted(r[2] for r in rows)
    from icefall.eval.wer import compute_wer

    for w, s, wer in rows:  # each row is what decoding with that pair gives
        d = CtcLexiconDecoder(lexicon, tokens, lm=lang / "2gram.arpa", beam_size=16, lm_weight=w, word_score=s)
        assert compute_wer([(str(i), ref, d.decode_one(lp)) for i, (lp, ref) in enumerate(utts)]).wer == wer
    assert (decoder.lm_weight, decoder.word_score) == rows[0][:2]
    assert rows[0][2] < rows[-1][2]


# ------------------------------------------------- decode.py and tune_lm.py on a fixture split
TEXTS = ["AB BA", "BA", "AB AB"]  # 5 reference words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``<dir>/t_cuts_test.jsonl.gz`` (and ``dev``): one cut per TEXTS item, random fbank."""
    return write_random_fbank_cuts(tmp_path_factory.mktemp("fbank"), TEXTS,
                                   [100 + 20 * i for i in range(len(TEXTS))], splits=("test", "dev"))


@pytest.fixture(scope="module")
def a_model(tmp_path_factory, lang):
    """pretrained.pt of a CTC model that says "A" on every frame, "B" second best."""
    from icefall.asr.export import save_pretrained
    from icefall.asr.finetune import build_asr_model
    from icefall.utils import AttributeDict

    tokens = read_tokens(lang / "tokens.txt")
    params = AttributeDict(encoder="zipformer-tiny", frontend="fbank", mask_prob=0.0, mask_length=10,
                           vocab_size=len(tokens), decoder_dim=32, joiner_dim=32, context_size=2,
                           blank_id=0, use_transducer=False, use_ctc=True)
    torch.manual_seed(0)
    model = build_asr_model(params).eval()
    with torch.no_grad():
        out = model.ctc_output.output
        out.weight.zero_()
        out.bias.fill_(-5.0)
        out.bias[tokens["A"]], out.bias[tokens["B"]], out.bias[tokens["<blk>"]] = 5.0, 2.0, 1.0
    path = tmp_path_factory.mktemp("exp") / "pretrained.pt"
    save_pretrained(model, params, path)
    return path


def _args(parser, ckpt, lang, corpus, method, *extra):
    return parser.parse_args([
        "--checkpoint", str(ckpt), "--exp-dir", str(ckpt.parent), "--lang-dir", str(lang),
        "--manifest-dir", str(corpus), "--cuts-prefix", "t", "--decoding-method", method,
        "--lm", str(lang / "2gram.arpa"), "--num-workers", "0", "--max-duration", "100", *extra])


def test_decode_py_lexicon_methods(lang, corpus, a_model):
    # greedy: "A" for every utterance (not a word of the lexicon): 5 errors of 5 words
    greedy = dec.decode_splits(_args(dec.get_parser(), a_model, lang, corpus, "ctc-greedy-search",
                                     "--test-splits", "test"))
    assert greedy == {"test": 100.0}
    # with the lexicon a word must be spelled: AB or BA, equally good acoustically; the LM
    # prefers <s> AB </s> (4/6 * 3/6 against 2/6 * 3/5): 1 + 1 + 1 errors of 5 words
    args = _args(dec.get_parser(), a_model, lang, corpus, "ctc-lexicon-lm", "--test-splits", "test",
                 "--lm-weight", "1", "--word-score", "0")
    assert dec.decode_splits(args) == {"test": 60.0}
    key = "ctc-lexicon-lm-beam-size-50-beam-25-lm-2gram-lm-weight-1-word-score-0-pretrained"
    assert dec.decoding_key(args) == key
    recogs = (a_model.parent / "ctc-lexicon-lm" / f"recogs-test-{key}.txt").read_text()
    assert recogs.count("hyp=['AB']") == 3
    # without an LM, AB and BA tie exactly: either, one word per utterance
    dec.decode_splits(_args(dec.get_parser(), a_model, lang, corpus, "ctc-lexicon", "--test-splits", "test"))
    recogs = next((a_model.parent / "ctc-lexicon").glob("recogs-test-*.txt")).read_text()
    assert recogs.count("hyp=['AB']") + recogs.count("hyp=['BA']") == 3


def test_tune_lm_writes_the_table_and_decodes_with_the_best(lang, corpus, a_model, tmp_path):
    from icefall.asr import tune_lm

    # (an LM weight of 0 would leave AB and BA tied: a WER of chance, see above)
    args = _args(tune_lm.get_parser(), a_model, lang, corpus, "ctc-lexicon-lm", "--tune-split", "dev",
                 "--methods", "ctc-lexicon-lm", "ctc-lexicon", "--lm-weights", "2", "1",
                 "--word-scores", "0", "30", "--test-splits", "test", "--res-dir", str(tmp_path))
    out = tune_lm.main(args)
    rows = out["ctc-lexicon-lm"]
    # a word score of 30 pays for many inserted words; equal WERs: the smaller weight first
    assert rows[:2] == [(1.0, 0.0, 60.0), (2.0, 0.0, 60.0)]
    assert [r[1] for r in rows[2:]] == [30.0, 30.0] and min(r[2] for r in rows[2:]) > 100.0
    assert [r[:2] for r in out["ctc-lexicon"]] in ([(0.0, 0.0), (0.0, 30.0)], [(0.0, 30.0), (0.0, 0.0)])
    table = tmp_path / "ctc-lexicon-lm" / "tune-dev-beam-size-50-pretrained.txt"
    assert table.read_text().splitlines()[:2] == ["lm_weight\tword_score\tWER", "1\t0\t60.00"]
    # the test split decoded with the best setting, as decode.py would have written it
    best_key = "ctc-lexicon-lm-beam-size-50-beam-25-lm-2gram-lm-weight-1-word-score-0-pretrained"
    recogs = (tmp_path / "ctc-lexicon-lm" / f"recogs-test-{best_key}.txt").read_text()
    dec.decode_splits(_args(dec.get_parser(), a_model, lang, corpus, "ctc-lexicon-lm", "--test-splits", "test",
                            "--lm-weight", "1", "--word-score", "0", "--res-dir", str(tmp_path / "ref")))
    assert recogs == (tmp_path / "ref" / f"recogs-test-{best_key}.txt").read_text()
    assert (tmp_path / "ctc-lexicon" / "tune-dev-beam-size-50-pretrained.txt").is_file()
    with pytest.raises(SystemExit):
        tune_lm.get_parser().parse_args(["--methods", "ctc-greedy-search"])


def test_decode_py_shallow_fusion(lang, corpus, tmp_path):
    """modified_beam_search_lm_shallow_fusion: weight 0 is modified_beam_search; the key and
    files name the weight."""
    from icefall.asr.export import save_pretrained
    from icefall.asr.finetune import build_asr_model
    from icefall.asr.lm import build_token_arpa
    from icefall.utils import AttributeDict

    tokens = read_tokens(lang / "tokens.txt")
    params = AttributeDict(encoder="zipformer-tiny", frontend="fbank", mask_prob=0.0, mask_length=10,
                           vocab_size=len(tokens), decoder_dim=32, joiner_dim=32, context_size=2,
                           blank_id=0, use_transducer=True, use_ctc=False)
    torch.manual_seed(0)
    save_pretrained(build_asr_model(params).eval(), params, tmp_path / "pretrained.pt")
    build_token_arpa(lang / "text.txt", lang, tmp_path / "token-2gram.arpa", order=2)
    extra = ("--test-splits", "test", "--token-lm", str(tmp_path / "token-2gram.arpa"))
    plain = dec.decode_splits(_args(dec.get_parser(), tmp_path / "pretrained.pt", lang, corpus,
                                    "modified_beam_search", *extra))
    args = _args(dec.get_parser(), tmp_path / "pretrained.pt", lang, corpus,
                 "modified_beam_search_lm_shallow_fusion", *extra, "--lm-weight", "0")
    assert dec.decode_splits(args) == plain
    key = "modified_beam_search_lm_shallow_fusion-beam-4-lm-weight-0-pretrained"
    assert dec.decoding_key(args) == key
    hyps = lambda f: [l for l in f.read_text().splitlines() if "hyp=" in l]  # noqa: E731
    assert hyps(tmp_path / "modified_beam_search_lm_shallow_fusion" / f"recogs-test-{key}.txt") == \
        hyps(tmp_path / "modified_beam_search" / "recogs-test-modified_beam_search-beam-4-pretrained.txt")
