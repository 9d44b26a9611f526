"""Word-level decoding resources: lexicons and n-gram LMs in ARPA format.

- A lexicon (``lexicon.txt``, icefall's layout: ``WORD tok1 tok2 ...`` per line) spells each
  word in the tokens of a lang dir: letters for a character lang dir, sentencepiece pieces for
  a BPE one. ``make_lexicon`` builds it from a word list; the decoder reads it back.
- The ARPA LM is estimated by a real LM toolkit: IRSTLM's ``tlm`` (Debian package ``irstlm``,
  installed by install.sh). KenLM's ``lmplz`` would be the usual choice, but it has no wheel or
  Debian package and needs a C++/Boost build; IRSTLM is one ``apt-get install`` away. Its
  Kneser-Ney estimators crash (``kn``) or refuse (``msb``: "count-of-counts cannot be estimated")
  on small-vocabulary text such as the mini corpus's, so the default is Witten-Bell (``wb``),
  which estimates from type counts only and works on any text. flashlight-text's KenLM loads
  the resulting ARPA file (tests check that it scores as the file says).

Usage::

    python -m icefall.asr.lm lexicon --lang-dir data/lang_char --words data/lm/words.txt
    python -m icefall.asr.lm arpa --text data/lm/text.txt --order 3 --out data/lm/3gram.arpa
    python -m icefall.asr.lm token-arpa --text data/lm/text.txt --lang-dir data/lang_bpe_256 \\
        --order 4 --out data/lang_bpe_256/token-4gram.arpa      # for transducer shallow fusion
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from icefall.utils import atomic_write_path

Lexicon = Dict[str, List[List[str]]]  # word -> its spellings (token symbol lists)
SMOOTHINGS = ("wb", "sb", "kn", "msb")  # IRSTLM names: Witten-Bell, shift-beta, (modified) KN


def spellings(words: Sequence[str], lang_dir: Path) -> Lexicon:
    """{word: [spelling]} for ``words`` in the tokens of ``lang_dir``: sentencepiece pieces when
    the dir holds ``bpe.model``, else NFC characters (no ``|``: the decoder treats the word
    separator as optional silence between words, as the CTC targets have it)."""
    from icefall.data.tokenizer import read_tokens

    lang_dir = Path(lang_dir)
    tokens = read_tokens(lang_dir / "tokens.txt")
    if (lang_dir / "bpe.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(lang_dir / "bpe.model"))
        spelled = {w: sp.encode(w, out_type=str) for w in words}
    else:
        spelled = {w: list(unicodedata.normalize("NFC", w)) for w in words}
    lexicon, unspellable = {}, []
    for word, toks in spelled.items():
        if toks and all(t in tokens for t in toks):
            lexicon[word] = [toks]
        else:
            unspellable.append(word)
    if unspellable:  # e.g. a big LM vocabulary with characters the transcripts never had
        logging.warning(f"{len(unspellable)} of {len(spelled)} words have a character without a "
                        f"token in {lang_dir}/tokens.txt and are left out: {unspellable[:5]}")
    if not lexicon:
        raise ValueError(f"{lang_dir}/tokens.txt spells none of the {len(spelled)} words")
    return lexicon


def write_lexicon(lexicon: Lexicon, path: Path) -> None:
    """``WORD tok1 tok2 ...`` per spelling, words sorted; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(path)
    tmp.write_text("".join(f"{w} {' '.join(s)}\n" for w in sorted(lexicon) for s in lexicon[w]),
                   encoding="utf-8")
    os.replace(tmp, path)


def read_lexicon(path: Path) -> Lexicon:
    """Reads ``lexicon.txt``; a line without a spelling is an error naming file and line."""
    lexicon: Lexicon = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{n}: expected 'WORD token...' but got {line!r}")
        lexicon.setdefault(fields[0], []).append(fields[1:])
    if not lexicon:
        raise ValueError(f"{path}: empty lexicon")
    return lexicon


def make_lexicon(words: Iterable[str], lang_dir: Path, out: Optional[Path] = None) -> Path:
    """Spells ``words`` in the tokens of ``lang_dir`` into ``out`` (default
    ``<lang_dir>/lexicon.txt``) and returns its path."""
    out = Path(out or Path(lang_dir) / "lexicon.txt")
    write_lexicon(spellings(sorted(set(words)), lang_dir), out)
    return out


def irstlm_tool(name: str = "tlm") -> str:
    """The path of an IRSTLM program (Debian puts them in /usr/lib/irstlm/bin), or a
    RuntimeError saying how to install it."""
    for candidate in (shutil.which(name), f"/usr/lib/irstlm/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"IRSTLM's {name} not found: install the Debian package irstlm "
                       "(apt-get install irstlm; install.sh does) to build ARPA LMs")


def build_arpa(text: Path, out: Path, order: int = 3, smoothing: str = "wb") -> Path:
    """Estimates an ``order``-gram backoff LM of the sentences in ``text`` (one per line,
    words separated by spaces) with IRSTLM and writes it to ``out`` in ARPA format, atomically.

    ``smoothing``: an IRSTLM ``-lm`` name (``wb`` Witten-Bell, the default; ``sb`` shift-beta;
    ``kn``/``msb`` Kneser-Ney variants, which need a large vocabulary). Singletons are kept
    (``-ps=no``): small corpora have no count to spare.
    """
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"unknown smoothing {smoothing!r}; one of {SMOOTHINGS}")
    text, out = Path(text), Path(out)
    lines = [ln.split() for ln in text.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"{text}: no sentences to estimate an LM from")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_path(out)
    with tempfile.TemporaryDirectory() as d:
        marked = Path(d) / "text.se"  # IRSTLM wants explicit sentence boundaries
        marked.write_text("".join(f"<s> {' '.join(ln)} </s>\n" for ln in lines), encoding="utf-8")
        cmd = [irstlm_tool("tlm"), f"-tr={marked}", f"-n={order}", f"-lm={smoothing}", "-bo=yes",
               "-ps=no", f"-o={tmp}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"IRSTLM failed on {text} ({' '.join(cmd)}): exit {proc.returncode}\n"
                           + (proc.stdout + proc.stderr)[-2000:])
    os.replace(tmp, out)
    logging.info(f"{out}: {order}-gram {smoothing} LM of {len(lines)} sentences")
    return out


def build_token_arpa(text: Path, lang_dir: Path, out: Path, order: int = 4,
                     smoothing: str = "wb") -> Path:
    """An ``order``-gram LM over the token symbols of ``lang_dir`` (the sentences of ``text``
    encoded as the tokenizer does; ``|`` between words for letters), for shallow fusion."""
    from icefall.data.tokenizer import load_tokenizer, read_tokens

    tokenizer = load_tokenizer(lang_dir)
    symbols = {i: s for s, i in read_tokens(Path(lang_dir) / "tokens.txt").items()}
    sentences = [ln for ln in Path(text).read_text(encoding="utf-8").splitlines() if ln.strip()]
    with tempfile.TemporaryDirectory() as d:
        tokens_text = Path(d) / "tokens.txt"
        tokens_text.write_text("".join(" ".join(symbols[i] for i in ids) + "\n"
                                       for ids in tokenizer.encode(sentences)), encoding="utf-8")
        return build_arpa(tokens_text, out, order, smoothing)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    lx = sub.add_parser("lexicon", help="spell a word list in a lang dir's tokens")
    lx.add_argument("--lang-dir", type=Path, required=True, help="tokens.txt (+ bpe.model)")
    lx.add_argument("--words", type=Path, required=True, help="one word per line (or LM text)")
    lx.add_argument("--out", type=Path, default=None, help="default <lang-dir>/lexicon.txt")
    ar = sub.add_parser("arpa", help="estimate an n-gram LM with IRSTLM")
    ar.add_argument("--text", type=Path, required=True, help="one sentence per line")
    ar.add_argument("--out", type=Path, required=True)
    ar.add_argument("--order", type=int, default=3)
    ar.add_argument("--smoothing", default="wb", choices=SMOOTHINGS)
    tk = sub.add_parser("token-arpa", help="an n-gram LM over a lang dir's tokens (shallow fusion)")
    tk.add_argument("--text", type=Path, required=True, help="one sentence per line")
    tk.add_argument("--lang-dir", type=Path, required=True)
    tk.add_argument("--out", type=Path, required=True)
    tk.add_argument("--order", type=int, default=4)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.command == "lexicon":
        words = args.words.read_text(encoding="utf-8").split()
        out = make_lexicon(words, args.lang_dir, args.out)
        logging.info(f"{out}: {len(set(words))} words spelled in {args.lang_dir}")
    elif args.command == "arpa":
        build_arpa(args.text, args.out, args.order, args.smoothing)
    else:
        build_token_arpa(args.text, args.lang_dir, args.out, args.order)


if __name__ == "__main__":
    main()
