"""Word-level CTC decoding with a lexicon and an n-gram LM: flashlight-text's ``LexiconDecoder``
with its KenLM (the "4-gram" rows of k2SSL), the search for LM weight and word score, and a
token n-gram LM (KenLM) for shallow fusion in the transducer's modified beam search.

The decoder searches token paths that spell lexicon words (a prefix tree of spellings) and
scores each hypothesis as

    CTC log-prob (ln)  +  lm_weight * LM log10-prob  +  word_score * number of words

``lm=None`` gives lexicon-only decoding (flashlight's ``ZeroLM``): the words are constrained
to the lexicon, and ``word_score`` still trades insertions for deletions.

Word ends. flashlight completes a word on the first frame of its last token and cannot stay on
that token afterwards, so (as in wav2letter's letter lexicons) every spelling ends with the
silence token: ``|`` for a character lang dir, whose CTC targets put it between words, and
blank for a BPE one (pieces mark word starts). The targets have no ``|`` after the last word, so
the decoder appends one frame that is certainly silence to every utterance.

Why flashlight-text: a maintained wheel (``pip install flashlight-text``, KenLM built in),
the decoder torchaudio's ``ctc_decoder`` wraps, no k2/OpenFst needed.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from icefall.asr.lm import Lexicon, read_lexicon
from icefall.data.tokenizer import BLANK, EXPORT_WORD_SEP, WORD_SEP, read_tokens

UNK_WORD = "<unk>"
_NEVER = -1e4  # log-prob of what cannot happen (finite: flashlight's beam arithmetic subtracts)


class CtcLexiconDecoder:
    """Beam search over CTC log-probs constrained to a lexicon, with an optional n-gram LM.

    Args:
      lexicon: {word: spellings} (see :func:`icefall.asr.lm.read_lexicon`).
      tokens: {symbol: id} of the model's output layer (``tokens.txt``).
      lm: ARPA (or KenLM binary) file of word n-grams; None: lexicon only.
      lm_weight: weight of the LM's log10 probabilities.
      word_score: added per word (positive favours more words).
      beam_size: hypotheses kept per frame.
      beam: hypotheses scoring more than ``beam`` below the best are dropped.
      beam_size_token: tokens tried per frame (default: all).
      silence: the token between words (see the module docstring); default ``|`` when
        ``tokens`` has it, else blank.
    """

    def __init__(
        self,
        lexicon: Lexicon,
        tokens: Dict[str, int],
        lm: Optional[Path] = None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        beam_size: int = 50,
        beam: float = 25.0,
        beam_size_token: Optional[int] = None,
        silence: Optional[str] = None,
    ) -> None:
        from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
        from flashlight.lib.text.dictionary import Dictionary

        self.num_tokens = max(tokens.values()) + 1
        self.blank = tokens[BLANK]
        self.sil = tokens[silence] if silence is not None else tokens.get(WORD_SEP, self.blank)
        self.words = Dictionary()
        for word in sorted(lexicon):
            self.words.add_entry(word)
        self.words.add_entry(UNK_WORD)
        self.unk = self.words.get_index(UNK_WORD)
        if lm is None:
            self.lm = ZeroLM()
        else:
            from flashlight.lib.text.decoder.kenlm import KenLM

            if not Path(lm).is_file():
                raise FileNotFoundError(f"LM file {lm} not found")
            self.lm = KenLM(str(lm), self.words)
        # The prefix tree of spellings; each node keeps the best unigram score below it, so
        # that a partial word is already scored by the LM (smearing).
        self.trie = Trie(self.num_tokens, self.sil)
        start = self.lm.start(False)
        for word, spellings in lexicon.items():
            index = self.words.get_index(word)
            _, score = self.lm.score(start, index)
            for spelling in spellings:
                try:
                    ids = [tokens[t] for t in spelling] + [self.sil]
                except KeyError as e:
                    raise ValueError(f"lexicon word {word!r} has a token not in tokens.txt: {e}") from None
                self.trie.insert(ids, index, score)
        self.trie.smear(SmearingMode.MAX)
        self.beam_size, self.beam = beam_size, beam
        self.beam_size_token = beam_size_token or self.num_tokens
        self.set_weights(lm_weight, word_score)

    def set_weights(self, lm_weight: float, word_score: float) -> None:
        """Re-weights without rebuilding the lexicon tree or reloading the LM."""
        from flashlight.lib.text.decoder import CriterionType, LexiconDecoder, LexiconDecoderOptions

        self.lm_weight, self.word_score = lm_weight, word_score
        options = LexiconDecoderOptions(
            beam_size=self.beam_size, beam_size_token=self.beam_size_token,
            beam_threshold=self.beam, lm_weight=lm_weight, word_score=word_score,
            unk_score=float("-inf"), sil_score=0.0, log_add=False,
            criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(options, self.trie, self.lm, self.sil, self.blank, self.unk,
                                      [], False)

    def decode_one(self, log_probs: Tensor) -> List[str]:
        """The best word sequence of one utterance's (T, V) CTC log-probs."""
        if log_probs.dim() != 2 or log_probs.size(1) != self.num_tokens:
            raise ValueError(f"expected (T, {self.num_tokens}) log-probs, got {tuple(log_probs.shape)}")
        if log_probs.size(0) == 0:
            return []
        emissions = log_probs.detach().to("cpu", torch.float32)
        end = torch.full((1, self.num_tokens), _NEVER)
        end[0, self.sil] = 0.0  # the silence after the last word (see the module docstring)
        emissions = torch.cat([emissions, end]).contiguous()
        best = self.decoder.decode(emissions.data_ptr(), emissions.size(0), emissions.size(1))[0]
        return [self.words.get_entry(w) for w in best.words if w >= 0]

    def decode(self, log_probs: Tensor, log_prob_lens: Tensor) -> List[List[str]]:
        """Words of each utterance of a batch: log_probs (B, T, V), log_prob_lens (B,)."""
        return [self.decode_one(lp[:n]) for lp, n in zip(log_probs, log_prob_lens.tolist())]


class TokenNgramLM:
    """An n-gram LM over the model's token symbols (e.g. BPE pieces; ARPA made by
    :func:`icefall.asr.lm.build_token_arpa`), read by KenLM, for shallow fusion.

    ``log10_probs(tokens)`` is (V,): log10 P(next token | tokens) for every token id, 0 for
    blank; cached by the last ``order - 1`` tokens (all the LM sees).
    """

    def __init__(self, path: Path, tokens: Dict[str, int]) -> None:
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        if not Path(path).is_file():
            raise FileNotFoundError(f"token LM {path} not found")
        symbols = sorted(tokens, key=tokens.get)
        if [tokens[s] for s in symbols] != list(range(len(symbols))):
            raise ValueError("token ids must be 0..V-1")
        self.lm = KenLM(str(path), Dictionary(symbols))
        self.order = arpa_order(path)
        self.blank, self.num_tokens = tokens[BLANK], len(symbols)
        self._cache: Dict[Tuple[int, ...], Tensor] = {}

    def log10_probs(self, tokens: Sequence[int]) -> Tensor:
        key = tuple(tokens[max(0, len(tokens) - self.order + 1):]) if self.order > 1 else ()
        if key not in self._cache:
            state = self.lm.start(False)
            for t in key:
                state, _ = self.lm.score(state, t)
            scores = torch.tensor([self.lm.score(state, v)[1] for v in range(self.num_tokens)])
            scores[self.blank] = 0.0
            self._cache[key] = scores
        return self._cache[key]


def arpa_order(path: Path) -> int:
    """The highest order of an ARPA file's ``\\data\\`` header."""
    order = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("\\1-grams"):
                break
            if line.strip().startswith("ngram"):
                order = max(order, int(line.split("=")[0].split()[-1]))
    if order == 0:
        raise ValueError(f"{path}: no ARPA header (ngram N=...) before \\1-grams:")
    return order


def load_lexicon_decoder(lang_dir: Path, lexicon: Optional[Path] = None, lm: Optional[Path] = None,
                         **options) -> CtcLexiconDecoder:
    """A decoder for the tokens of ``lang_dir`` with ``lexicon`` (default
    ``<lang_dir>/lexicon.txt``) and LM file ``lm`` (None: lexicon only)."""
    lexicon = Path(lexicon or Path(lang_dir) / "lexicon.txt")
    if not lexicon.is_file():
        raise FileNotFoundError(f"lexicon {lexicon} not found (make it with: python -m "
                                f"icefall.asr.lm lexicon --lang-dir {lang_dir} --words WORDS)")
    tokens = read_tokens(Path(lang_dir) / "tokens.txt")
    silence = BLANK  # BPE: pieces mark word starts
    if not (Path(lang_dir) / "bpe.model").is_file():  # letters: | (an exported tokens.txt: ▁)
        silence = WORD_SEP if WORD_SEP in tokens or EXPORT_WORD_SEP not in tokens else EXPORT_WORD_SEP
    return CtcLexiconDecoder(read_lexicon(lexicon), tokens, lm=lm, silence=silence, **options)


def tune_weights(
    decoder: CtcLexiconDecoder,
    utterances: Sequence[Tuple[Tensor, Sequence[str]]],
    lm_weights: Iterable[float],
    word_scores: Iterable[float],
) -> List[Tuple[float, float, float]]:
    """Decodes ``utterances`` ((T, V) log-probs, reference words) with every (lm_weight,
    word_score) pair; returns (lm_weight, word_score, WER %) rows, best (lowest WER, then the
    smaller weights) first. The decoder is left at the best weights."""
    from icefall.eval.wer import compute_wer

    rows = []
    for lm_weight, word_score in itertools.product(list(lm_weights), list(word_scores)):
        decoder.set_weights(lm_weight, word_score)
        results = [(str(i), ref, decoder.decode_one(lp)) for i, (lp, ref) in enumerate(utterances)]
        rows.append((lm_weight, word_score, compute_wer(results).wer))
        logging.info(f"lm_weight {lm_weight:g} word_score {word_score:g}: WER {rows[-1][2]:.2f}%")
    rows.sort(key=lambda r: (r[2], r[0], abs(r[1])))
    decoder.set_weights(rows[0][0], rows[0][1])
    return rows
