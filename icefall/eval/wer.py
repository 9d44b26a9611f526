"""Word error rate with alignments, and icefall-style result files.

Files written by :func:`save_results` (the layout icefall's decode.py uses):
  recogs-<set>-<key>.txt       ``<cut_id>:\tref=[...]`` / ``<cut_id>:\thyp=[...]``
  errs-<set>-<key>.txt         %WER line, error counts, per-utterance
                               alignments, substitution / deletion /
                               insertion / per-word tables
  wer-summary-<set>-<key>.txt  ``settings\tWER`` table of every key
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, TextIO, Tuple

EPS = "*"
Result = Tuple[str, Sequence[str], Sequence[str]]  # (cut_id, ref words, hyp words)


def align(ref: Sequence[str], hyp: Sequence[str], eps: str = EPS) -> List[Tuple[str, str]]:
    """Minimum-edit-distance alignment of two word sequences, as Kaldi and icefall align them.

    Returns (ref_word, hyp_word) pairs; ``eps`` marks an insertion (in ref) or a deletion (in
    hyp). ``kaldialign`` (the library icefall scores with) breaks ties between alignments of
    equal cost, so the insertion/deletion/substitution split and the ``errs-*.txt`` lines are
    icefall's exactly, not only the total.
    """
    import kaldialign

    return [tuple(p) for p in kaldialign.align(list(ref), list(hyp), eps)]


@dataclass
class ErrorStats:
    ins: int = 0
    dels: int = 0
    subs: int = 0
    corr: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        """Word error rate in percent (0 for an empty reference)."""
        return 100.0 * self.errors / self.ref_len if self.ref_len else 0.0


def compute_wer(results: Iterable[Result]) -> ErrorStats:
    """Error counts summed over (cut_id, ref, hyp) triples."""
    stats = ErrorStats()
    for _, ref, hyp in results:
        stats.ref_len += len(ref)
        for r, h in align(ref, hyp):
            if r == EPS:
                stats.ins += 1
            elif h == EPS:
                stats.dels += 1
            elif r != h:
                stats.subs += 1
            else:
                stats.corr += 1
    return stats


def _merge_error_runs(ali: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Join consecutive errors into one (ref phrase, hyp phrase) pair for display."""
    out: List[Tuple[List[str], List[str]]] = []
    prev_error = False
    for r, h in ali:
        error = r != h
        if error and prev_error:
            out[-1][0].append(r)
            out[-1][1].append(h)
        else:
            out.append(([r], [h]))
        prev_error = error
    joined = []
    for rs, hs in out:
        rs = [w for w in rs if w != EPS]
        hs = [w for w in hs if w != EPS]
        joined.append((" ".join(rs) or EPS, " ".join(hs) or EPS))
    return joined


def write_error_stats(
    f: TextIO,
    test_set_name: str,
    results: List[Result],
    enable_log: bool = True,
    compute_CER: bool = False,
) -> float:
    """Write the icefall ``errs-*.txt`` report to ``f``; return the WER (%).

    With compute_CER, words are split into characters (spaces dropped).
    """
    if compute_CER:
        results = [(c, list("".join(r)), list("".join(h))) for c, r, h in results]
    subs: Dict[Tuple[str, str], int] = defaultdict(int)
    ins: Dict[str, int] = defaultdict(int)
    dels: Dict[str, int] = defaultdict(int)
    # per word: correct, substituted (as ref), substituted-in (as hyp), inserted, deleted
    words: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    alignments = []
    for cut_id, ref, hyp in results:
        ali = align(ref, hyp)
        alignments.append((cut_id, ali))
        for r, h in ali:
            if r == EPS:
                ins[h] += 1
                words[h][3] += 1
            elif h == EPS:
                dels[r] += 1
                words[r][4] += 1
            elif r != h:
                subs[(r, h)] += 1
                words[r][1] += 1
                words[h][2] += 1
            else:
                words[r][0] += 1
    ref_len = sum(len(r) for _, r, _ in results)
    n_sub, n_ins, n_del = sum(subs.values()), sum(ins.values()), sum(dels.values())
    n_err = n_sub + n_ins + n_del
    n_corr = sum(v[0] for v in words.values())
    wer = float(f"{100.0 * n_err / max(ref_len, 1):.2f}")
    if enable_log:
        logging.info(
            f"[{test_set_name}] %WER {wer:.2f}% [{n_err} / {ref_len}, {n_ins} ins, {n_del} del, {n_sub} sub ]"
        )
    print(f"%WER = {wer:.2f}", file=f)
    print(f"Errors: {n_ins} insertions, {n_del} deletions, {n_sub} substitutions, "
          f"over {ref_len} reference words ({n_corr} correct)", file=f)
    print("Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
          "DELETIONS:, INSERTIONS:, PER-WORD STATS:", file=f)
    print("", file=f)
    print("PER-UTT DETAILS: corr or (ref->hyp)  ", file=f)
    for cut_id, ali in alignments:
        shown = (r if r == h else f"({r}->{h})" for r, h in _merge_error_runs(ali))
        print(f"{cut_id}:\t" + " ".join(shown), file=f)
    print("", file=f)
    print("SUBSTITUTIONS: count ref -> hyp", file=f)
    for count, (r, h) in sorted(((v, k) for k, v in subs.items()), reverse=True):
        print(f"{count}   {r} -> {h}", file=f)
    print("", file=f)
    print("DELETIONS: count ref", file=f)
    for count, r in sorted(((v, k) for k, v in dels.items()), reverse=True):
        print(f"{count}   {r}", file=f)
    print("", file=f)
    print("INSERTIONS: count hyp", file=f)
    for count, h in sorted(((v, k) for k, v in ins.items()), reverse=True):
        print(f"{count}   {h}", file=f)
    print("", file=f)
    print("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp", file=f)
    for _, word, (corr, ref_sub, hyp_sub, n_i, n_d) in sorted(
        ((sum(v[1:]), k, v) for k, v in words.items()), reverse=True
    ):
        print(f"{word}   {corr} {ref_sub + hyp_sub + n_i + n_d} {corr + ref_sub + n_d} "
              f"{corr + hyp_sub + n_i}", file=f)
    return wer


def store_transcripts(filename: Path, results: Iterable[Result]) -> None:
    """``recogs-*.txt``: two lines per utterance, word lists as Python lists."""
    with open(filename, "w", encoding="utf8") as f:
        for cut_id, ref, hyp in results:
            print(f"{cut_id}:\tref={list(ref)}", file=f)
            print(f"{cut_id}:\thyp={list(hyp)}", file=f)


def read_transcripts(filename: Path) -> List[Result]:
    """Inverse of :func:`store_transcripts`: a ``recogs-*.txt`` file -> [(cut_id, ref, hyp)]."""
    import ast

    refs: Dict[str, List[str]] = {}
    results: List[Result] = []
    from icefall.utils import read_utf8

    for line in read_utf8(filename).splitlines():
        cut_id, field = line.split(":\t", 1)
        kind, words = field.split("=", 1)
        if kind == "ref":
            refs[cut_id] = ast.literal_eval(words)
        else:
            results.append((cut_id, refs.pop(cut_id), ast.literal_eval(words)))
    return results


def compute_cer(results: Iterable[Result]) -> ErrorStats:
    """Character errors of word results: each side's words joined by spaces, spaces included."""
    return compute_wer((i, list(" ".join(r)), list(" ".join(h))) for i, r, h in results)


def save_results(
    res_dir: Path,
    test_set_name: str,
    results_dict: Dict[str, List[Result]],
    enable_log: bool = True,
) -> Dict[str, float]:
    """Write recogs/errs files for every decoding setting ``key`` of
    ``results_dict`` and one ``wer-summary-<set>-<key>.txt`` (named after the
    last key, as icefall does); return {key: WER %}.
    """
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    wers: Dict[str, float] = {}
    for key, results in results_dict.items():
        results = sorted(results, key=lambda r: r[0])
        store_transcripts(res_dir / f"recogs-{test_set_name}-{key}.txt", results)
        with open(res_dir / f"errs-{test_set_name}-{key}.txt", "w", encoding="utf8") as f:
            wers[key] = write_error_stats(f, f"{test_set_name}-{key}", results, enable_log)
    if wers:
        with open(res_dir / f"wer-summary-{test_set_name}-{key}.txt", "w", encoding="utf8") as f:
            print("settings\tWER", file=f)
            for k, v in sorted(wers.items(), key=lambda kv: kv[1]):
                print(f"{k}\t{v}", file=f)
    return wers
