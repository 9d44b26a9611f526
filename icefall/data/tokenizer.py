"""Token sets for fine-tuning: sentencepiece BPE and characters (letters), blank id 0.

Both kinds of lang dir hold ``tokens.txt`` (``symbol id`` per line, the layout icefall and
sherpa-onnx read) with ``<blk>`` = 0, ``<sos/eos>`` = 1, ``<unk>`` = 2. A BPE dir
(``data/lang_bpe_<N>/``) also holds ``bpe.model``; a character dir (``data/lang_char/``) uses
``|`` between words, as fairseq's letter dictionaries do. ``transcript_words.txt`` keeps the
training text.

Usage (``prepare.sh`` stage 4)::

    python -m icefall.data.tokenizer --type bpe --vocab-size 256 --lang-dir data/lang_bpe_256 \\
        --supervisions data/manifests/mini_supervisions_train-labeled.jsonl.gz ...
    python -m icefall.data.tokenizer --type char --lang-dir data/lang_char --supervisions ...
"""
from __future__ import annotations

import argparse
import logging
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

BLANK, SOS_EOS, UNK = "<blk>", "<sos/eos>", "<unk>"
WORD_SEP = "|"
# An exported letter model's tokens.txt separates words with sentencepiece's "▁" instead, which
# sherpa-onnx prints as a space (it would print "|").
EXPORT_WORD_SEP = "\u2581"
UNK_ID = 2  # ids 0..UNK_ID are the specials: blank, sos/eos, unk


def read_tokens(path: Path) -> Dict[str, int]:
    """``tokens.txt`` -> {symbol: id}."""
    table = {}
    from icefall.utils import read_utf8

    for line in read_utf8(path).splitlines():
        sym, idx = line.rsplit(" ", 1)
        table[sym] = int(idx)
    return table


def _write_tokens(path: Path, symbols: Sequence[str]) -> None:
    Path(path).write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")


class CharTokenizer:
    """Characters of the NFC-normalised text; ``|`` between words (``▁`` in an exported
    ``tokens.txt``); unknown chars -> <unk>."""

    def __init__(self, lang_dir: Path) -> None:
        self.token2id = read_tokens(Path(lang_dir) / "tokens.txt")
        self.id2token = {i: s for s, i in self.token2id.items()}
        self.blank_id, self.unk_id = self.token2id[BLANK], self.token2id[UNK]
        self.word_sep = WORD_SEP if WORD_SEP in self.token2id or EXPORT_WORD_SEP not in self.token2id \
            else EXPORT_WORD_SEP

    @property
    def vocab_size(self) -> int:
        return len(self.token2id)

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        out = []
        for text in texts:
            chars = self.word_sep.join(unicodedata.normalize("NFC", text).split())
            out.append([self.token2id.get(c, self.unk_id) for c in chars])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        chars = "".join(self.id2token[i] for i in ids if i > UNK_ID)
        return " ".join(w for w in chars.split(self.word_sep) if w)


class BpeTokenizer:
    """A sentencepiece model; ids are sentencepiece ids (``<blk>`` is piece 0)."""

    def __init__(self, lang_dir: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(Path(lang_dir) / "bpe.model"))
        self.blank_id, self.unk_id = self.sp.piece_to_id(BLANK), self.sp.unk_id()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if i > UNK_ID])


def load_tokenizer(lang_dir: Path):
    """A ``BpeTokenizer`` if ``lang_dir/bpe.model`` exists, else a ``CharTokenizer``. Both have
    ``encode(texts) -> List[List[int]]``, ``decode(ids) -> str``, ``vocab_size``, ``blank_id``."""
    if (Path(lang_dir) / "bpe.model").is_file():
        return BpeTokenizer(lang_dir)
    return CharTokenizer(lang_dir)


def train_bpe(texts: Iterable[str], lang_dir: Path, vocab_size: int) -> Path:
    """Trains a unigram sentencepiece model with ``<blk>``=0, ``<sos/eos>``=1, ``<unk>``=2 and
    writes bpe.model, tokens.txt and transcript_words.txt. Idempotent: keeps an existing
    model. ``vocab_size`` is an upper bound on a tiny text (the model may come out smaller)."""
    import sentencepiece as spm

    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    model = lang_dir / "bpe.model"
    if not model.is_file():
        text_file = lang_dir / "transcript_words.txt"
        text_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(text_file), model_prefix=str(lang_dir / "bpe"), model_type="unigram",
            vocab_size=vocab_size, character_coverage=1.0, user_defined_symbols=[BLANK, SOS_EOS],
            unk_id=UNK_ID, bos_id=-1, eos_id=-1, hard_vocab_limit=False, num_threads=1,
            shuffle_input_sentence=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.piece_to_id(BLANK) == 0 and sp.unk_id() == UNK_ID
    _write_tokens(lang_dir / "tokens.txt", [sp.id_to_piece(i) for i in range(sp.get_piece_size())])
    return lang_dir


def make_char_lang(texts: Iterable[str], lang_dir: Path) -> Path:
    """Writes tokens.txt (specials, ``|``, then the sorted characters of ``texts``) and
    transcript_words.txt."""
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    (lang_dir / "transcript_words.txt").write_text("".join(t + "\n" for t in texts),
                                                   encoding="utf-8")
    chars = sorted({c for t in texts for c in t if not c.isspace()} - {WORD_SEP})
    _write_tokens(lang_dir / "tokens.txt", [BLANK, SOS_EOS, UNK, WORD_SEP] + chars)
    return lang_dir


def main(argv: Optional[Iterable[str]] = None) -> None:
    from lhotse import load_manifest_lazy

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--type", choices=["bpe", "char"], required=True)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--supervisions", type=Path, nargs="+", required=True,
                   help="supervision manifests whose text trains the token set")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    texts = [s.text for path in args.supervisions for s in load_manifest_lazy(path) if s.text]
    if args.type == "bpe":
        train_bpe(texts, args.lang_dir, args.vocab_size)
    else:
        make_char_lang(texts, args.lang_dir)
    n = len(read_tokens(args.lang_dir / "tokens.txt"))
    logging.info(f"{args.lang_dir}: {n} tokens from {len(texts)} transcripts")


if __name__ == "__main__":
    main()
