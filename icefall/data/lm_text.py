"""LM training text: a text-only corpus drawn from the sentence generator (the mini corpus's
analogue of LibriSpeech's LM corpus), LM text from transcripts (Vietnamese recipe), and the
official LibriSpeech LM files (openslr 11).

The generator text uses its own seed stream (``lm-text-<lang>-<seed>``), which the audio
corpus never draws from (its utterances use ``<seed>-<utt id>-<attempt>``), and leaves out
every sentence of the ``--exclude`` supervisions (dev and test), so that the LM never saw a
test sentence. ``words.txt`` lists the words of the text, one per line: the lexicon's words.

    python -m icefall.data.lm_text generate --num-sentences 100000 --lang en --seed 0 \\
        --exclude data/manifests/mini_supervisions_{dev,test}.jsonl.gz --out-dir data/lm
    python -m icefall.data.lm_text transcripts --supervisions data/manifests/..._train.jsonl.gz \\
        --out-dir data/lm
    python -m icefall.data.lm_text librispeech --dl-dir download/lm
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import urllib.request
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set

from icefall.data.text import generate_sentence
from icefall.utils import atomic_write_path


def generate_lm_text(num_sentences: int, lang: str = "en", seed: int = 0,
                     exclude: Iterable[str] = ()) -> List[str]:
    """``num_sentences`` generator sentences from the LM seed stream, none of them in
    ``exclude`` (deterministic for given arguments)."""
    excluded: Set[str] = set(exclude)
    rng = random.Random(f"lm-text-{lang}-{seed}")
    out: List[str] = []
    while len(out) < num_sentences:
        sentence = generate_sentence(rng, lang)
        if sentence not in excluded:
            out.append(sentence)
    return out


def supervision_texts(paths: Sequence[Path]) -> List[str]:
    """The non-empty texts of lhotse supervision manifests, in order."""
    from lhotse import load_manifest_lazy

    texts = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"supervision manifest {path} not found")
        texts += [s.text for s in load_manifest_lazy(path) if s.text and s.text.strip()]
    return texts


def write_lm_text(sentences: Sequence[str], out_dir: Path) -> Path:
    """Writes ``<out_dir>/text.txt`` (one sentence per line) and ``<out_dir>/words.txt``
    (its sorted words), each atomically; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    words = sorted({w for s in sentences for w in s.split()})
    for name, lines in (("text.txt", sentences), ("words.txt", words)):
        tmp = atomic_write_path(out_dir / name)
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        os.replace(tmp, out_dir / name)
    logging.info(f"{out_dir}: {len(sentences)} sentences, {len(words)} words")
    return out_dir


OPENSLR_11 = "https://www.openslr.org/resources/11"
LIBRISPEECH_LM_FILES = ("librispeech-lm-norm.txt.gz", "3-gram.arpa.gz", "4-gram.arpa.gz",
                        "librispeech-lexicon.txt", "librispeech-vocab.txt")


def download_librispeech_lm(dl_dir: Path, url: str = OPENSLR_11,
                            files: Sequence[str] = LIBRISPEECH_LM_FILES) -> Path:
    """Fetches the LibriSpeech LM corpus, its 3-gram and 4-gram ARPA LMs, lexicon and vocabulary
    from ``url`` into ``dl_dir``; a file already there is kept (so an offline machine can be
    given them by hand). Each download is written to a temporary name first."""
    dl_dir = Path(dl_dir)
    dl_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = dl_dir / name
        if target.is_file():
            logging.info(f"{target} exists")
            continue
        logging.info(f"downloading {url}/{name}")
        tmp = atomic_write_path(target)
        try:
            with urllib.request.urlopen(f"{url}/{name}") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"could not download {url}/{name} ({e}); without internet access "
                               f"fetch it elsewhere and put it at {target}") from None
        os.replace(tmp, target)
    return dl_dir


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sentences from the mini corpus's generator")
    gen.add_argument("--num-sentences", type=int, default=100000)
    gen.add_argument("--lang", default="en")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--exclude", type=Path, nargs="*", default=[],
                     help="supervision manifests whose sentences the text must not contain")
    tr = sub.add_parser("transcripts", help="the texts of supervision manifests")
    tr.add_argument("--supervisions", type=Path, nargs="+", required=True)
    for sp in (gen, tr):
        sp.add_argument("--out-dir", type=Path, required=True, help="writes text.txt, words.txt")
    ls = sub.add_parser("librispeech", help="download the LibriSpeech LM files (openslr 11)")
    ls.add_argument("--dl-dir", type=Path, required=True)
    ls.add_argument("--url", default=OPENSLR_11)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.command == "librispeech":
        download_librispeech_lm(args.dl_dir, args.url)
        return
    if args.command == "generate":
        sentences = generate_lm_text(args.num_sentences, args.lang, args.seed,
                                     supervision_texts(args.exclude))
    else:
        sentences = supervision_texts(args.supervisions)
    write_lm_text(sentences, args.out_dir)


if __name__ == "__main__":
    main()
