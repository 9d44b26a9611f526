"""Speaker similarity and intelligibility of kNN-VC / kNN-TTS output (``knn_vc/evaluate.py``).

Protocol (unseen test speakers as targets): each test speaker's utterances are split into the
first ``n_eval`` (sources, and held out from every reference) and the rest (its reference set:
kNN matching frames and speaker centroid). Source utterance j of speaker i is converted to
speaker ``(i + 1 + j mod (S-1)) mod S``, so every source goes to another speaker.

Speaker similarity, by two measures (:class:`SpeakerScorer`): the headline is the probing issue's
speaker verification (:class:`icefall.probe.asv.SpeakerEmbedder`: the ASV probe of an upstream,
trained on train-labeled); the second, :class:`SpeakerSimilarity`, a training-free cosine of
pooled log-mel statistics. Per system and measure: the mean cosine of converted vs the target's
centroid and vs the source speaker's centroid; how often that cosine passes the threshold of the
measure's EER on real held-out utterances (accepted as the target / as the source speaker); how
often the nearest of all test speakers' centroids is the target, and how often the source.
Intelligibility: WER/CER of a fine-tuned ASR model (CTC greedy) against the source transcript.
Reference rows: the sources themselves, a held-out real utterance of each target speaker (the
ceiling of "cos to target"), and the same through each vocoder without kNN (what the vocoder
alone keeps of a voice and of the words).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from icefall.probe.asv import SpeakerEmbedder
from icefall.vc.data import Utterance, by_speaker
from icefall.vc.features import SAMPLE_RATE


# ------------------------------------------------------------------------------ speaker similarity
class SpeakerSimilarity:
    """A simple, training-free speaker embedding: mean and standard deviation over the speech
    frames (frame log-energy above the utterance's median) of 80-dim log-mel fbank, standardised
    per dimension by background utterances (training speakers), then unit length. Cosine of two
    embeddings is the score.

    It captures timbre and pitch range coarsely; it also rewards any output made of the target's
    own fbank frames, so it flatters fbank-kNN conversion next to SSL-kNN (docs/knn-vc.md).

    Args:
      background: waveforms (N,) of speakers outside the evaluation, for the standardisation.
    """

    def __init__(self, background: Sequence[Tensor]):
        from icefall.data.features import make_fbank_extractor

        self._fbank = make_fbank_extractor()
        if len(background) < 2:
            raise ValueError("SpeakerSimilarity needs 2 or more background utterances")
        raw = torch.stack([self._raw(w) for w in background])
        self.mean, self.std = raw.mean(0), raw.std(0).clamp_min(1e-5)

    def _raw(self, wav: Tensor) -> Tensor:
        x = torch.from_numpy(self._fbank.extract(wav.float().numpy(), SAMPLE_RATE)).double()
        energy = x.mean(1)
        speech = x[energy >= energy.median()]
        return torch.cat([speech.mean(0), speech.std(0)]).float()

    def embed(self, wav: Tensor) -> Tensor:
        """(N,) -> (160,) unit vector."""
        return torch.nn.functional.normalize((self._raw(wav) - self.mean) / self.std, dim=0)


class SpeakerScorer:
    """One speaker measure over the protocol's speakers: each speaker's centroid (the unit mean of
    its reference utterances' embeddings) and the measure's EER, with its threshold, on trials of
    held-out real utterances against every centroid.

    Args:
      embed: a waveform (N,) -> its (E,) unit embedding.
      refs: {speaker: reference waveforms}, the centroids.
      held_out: {speaker: real waveforms outside ``refs``}, the EER trials.
    """

    def __init__(self, embed: Callable[[Tensor], Tensor], refs: Dict[str, Sequence[Tensor]],
                 held_out: Dict[str, Sequence[Tensor]]):
        from icefall.probe.metrics import eer_and_threshold

        self.embed = embed
        self.speakers = list(refs)
        self.centroids = torch.stack([F.normalize(torch.stack([embed(w) for w in refs[s]]).mean(0), dim=0)
                                      for s in self.speakers])  # (S, E)
        scores = [(self.cosines(w), self.speakers.index(s)) for s, ws in held_out.items() for w in ws]
        trials = [(float(c[i]), int(i == j)) for c, j in scores for i in range(len(self.speakers))]
        eer, self.threshold = eer_and_threshold(*zip(*trials))
        self.eer = 100.0 * eer

    def cosines(self, wav: Tensor) -> Tensor:
        """(S,) cosine of ``wav``'s embedding with each speaker's centroid."""
        return self.centroids @ self.embed(wav)

    def score(self, outputs: Sequence[Tensor], targets: Sequence[str], sources: Sequence[str]) -> Dict[str, float]:
        """Means over the outputs: cosine with the target's / source's centroid (``cos_target``,
        ``cos_source``); % with that cosine >= the EER threshold (``accept_target``,
        ``accept_source``); % whose nearest centroid is the target / the source
        (``nearest_target``, ``nearest_source``)."""
        rows = []
        for wav, tgt, src in zip(outputs, targets, sources):
            c = self.cosines(wav)
            t, s, nearest = self.speakers.index(tgt), self.speakers.index(src), int(c.argmax())
            rows.append([float(c[t]), float(c[s]), 100.0 * float(c[t] >= self.threshold),
                         100.0 * float(c[s] >= self.threshold), 100.0 * (nearest == t), 100.0 * (nearest == s)])
        means = torch.tensor(rows, dtype=torch.float64).mean(0).tolist()
        return dict(zip(("cos_target", "cos_source", "accept_target", "accept_source", "nearest_target",
                         "nearest_source"), means))


# ------------------------------------------------------------------------------ intelligibility
class AsrScorer:
    """Transcribes 16 kHz waveforms with a fine-tuned model (CTC greedy search) and scores them."""

    def __init__(self, checkpoint: Path, lang_dir: Path):
        from icefall.data.tokenizer import load_tokenizer
        from icefall.models import load_model

        self.model, self.config = load_model(checkpoint, expect="asr", purpose="knn_vc/evaluate.py")
        self.tokenizer = load_tokenizer(lang_dir)

    @torch.no_grad()
    def transcribe(self, wavs: Sequence[Tensor], batch_size: int = 16) -> List[str]:
        from icefall.asr.decode import decode_batch
        from icefall.data.dataset import pad_batch
        from icefall.data.features import make_fbank_extractor

        fbank = make_fbank_extractor()
        out = []
        for i in range(0, len(wavs), batch_size):
            xs = [torch.from_numpy(fbank.extract(w.float().numpy(), SAMPLE_RATE)) if self.config.input_type == "fbank"
                  else w.float() for w in wavs[i: i + batch_size]]
            x, lens = pad_batch(xs)
            method = "ctc-greedy-search" if self.model.use_ctc else "greedy_search"
            out += [self.tokenizer.decode(h) for h in decode_batch(self.model, x, lens, method)]
        return out


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> Tuple[float, float]:
    """(WER %, CER %) of hypotheses against references (upper-case words)."""
    from icefall.eval.wer import compute_cer, compute_wer

    results = [(str(i), r.split(), h.upper().split()) for i, (r, h) in enumerate(zip(refs, hyps))]
    return compute_wer(results).wer, compute_cer(results).wer


# ------------------------------------------------------------------------------ protocol
@dataclass
class Row:
    """One system: ``speaker`` {measure name: :meth:`SpeakerScorer.score`}, WER/CER in %."""

    system: str
    speaker: Dict[str, Dict[str, float]]
    wer: Optional[float] = None
    cer: Optional[float] = None


def split_test_speakers(utts: Sequence[Utterance], n_eval: int) -> Tuple[Dict[str, List[Utterance]], Dict[str, List[Utterance]]]:
    """({speaker: first n_eval utterances}, {speaker: the rest, the reference set})."""
    groups = by_speaker(utts)
    short = [s for s, us in groups.items() if len(us) <= n_eval]
    if short or len(groups) < 2:
        raise ValueError(f"need 2+ speakers with more than {n_eval} utterances; too few: {short or list(groups)}")
    return {s: us[:n_eval] for s, us in groups.items()}, {s: us[n_eval:] for s, us in groups.items()}


def conversion_pairs(sources: Dict[str, List[Utterance]]) -> List[Tuple[Utterance, str]]:
    """(source utterance, target speaker): utterance j of speaker i goes to speaker
    (i + 1 + j mod (S-1)) mod S, never to its own."""
    spks = list(sources)
    return [(u, spks[(i + 1 + j % (len(spks) - 1)) % len(spks)])
            for i, s in enumerate(spks) for j, u in enumerate(sources[s])]


def score_system(name: str, outputs: Sequence[Tensor], pairs: Sequence[Tuple[Utterance, str]],
                 measures: Dict[str, SpeakerScorer], asr: Optional[AsrScorer] = None,
                 texts: Optional[Sequence[str]] = None) -> Row:
    """One row: every speaker measure's scores of ``outputs`` (converted to ``pairs``' targets
    from their sources' speakers), WER/CER of ``asr`` against ``texts`` (default: the source
    transcripts)."""
    targets, sources = [t for _, t in pairs], [u.speaker for u, _ in pairs]
    row = Row(name, {m: scorer.score(outputs, targets, sources) for m, scorer in measures.items()})
    if asr is not None:
        row.wer, row.cer = error_rates(texts or [u.text for u, _ in pairs], asr.transcribe(outputs))
    logging.info(f"{row}")
    return row


#: Column labels of the speaker measures ``main`` builds.
MEASURE_LABELS = {"asv": "ASV", "mel": "log-mel"}


def markdown_table(rows: Sequence[Row], headline: str = "asv", second: Optional[str] = "mel") -> str:
    """The ``headline`` measure's cosines, acceptance and nearest-centroid rates, the ``second``
    measure's cosines (if any), WER and CER."""
    h, m = MEASURE_LABELS.get(headline, headline), MEASURE_LABELS.get(second, second)
    head = ["system", f"{h} cos to target", f"{h} cos to source", f"{h} accepted as target %",
            f"{h} accepted as source %", f"{h} nearest = target %"]
    keys = ["cos_target", "cos_source", "accept_target", "accept_source", "nearest_target"]
    if second:
        head += [f"{m} cos to target", f"{m} cos to source"]
    fmt = lambda v, digits=2: "-" if v is None else f"{v:.{digits}f}"  # noqa: E731
    lines = ["| " + " | ".join(head + ["WER %", "CER %"]) + " |", "|---" + "|---:" * (len(head) + 1) + "|"]
    for r in rows:
        cells = [r.system] + [fmt(r.speaker[headline][k], 3 if k.startswith("cos") else 1) for k in keys]
        if second:
            cells += [fmt(r.speaker[second]["cos_target"], 3), fmt(r.speaker[second]["cos_source"], 3)]
        lines.append("| " + " | ".join(cells + [fmt(r.wer), fmt(r.cer)]) + " |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, rows: Sequence[Row], extra: Dict) -> Path:
    """``results.md`` (the table) and ``results.json``, written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.md", markdown_table(rows)),
                       ("results.json", json.dumps({"rows": [asdict(r) for r in rows], **extra}, indent=2))):
        tmp = out_dir / f".tmp{os.getpid()}.{name}"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    return out_dir / "results.md"


def save_spectrograms(path: Path, panels: Sequence[Tuple[str, Tensor]]) -> Path:
    """One PNG with a log-mel spectrogram per (title, waveform), stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from icefall.data.features import make_fbank_extractor

    fbank = make_fbank_extractor()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.9 * len(panels)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels):
        x = fbank.extract(wav.float().numpy(), SAMPLE_RATE)
        ax.imshow(x.T, origin="lower", aspect="auto", vmin=x.max() - 12, vmax=x.max(),
                  extent=(0, x.shape[0] / 100, 0, 80))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=72, format="png")
    plt.close(fig)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    # a 64-colour palette: a third of the bytes, no visible change for a spectrogram
    Image.open(buf).convert("RGB").quantize(64).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------ command line
def get_parser(**defaults):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocoders", type=Path, nargs="+", required=True, help="train_vocoder.py checkpoints, one system each")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tts-lams", type=float, nargs="*", default=[1.0, 0.5], help="kNN-TTS rows (k=4); none: no TTS")
    parser.add_argument("--n-eval", type=int, default=4, help="source utterances per test speaker")
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    parser.add_argument("--cuts-prefix", default="mini")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--background-split", default="train-labeled", help="speakers for SpeakerSimilarity's standardisation")
    parser.add_argument("--asv-upstream", default="fbank",
                        help="the ASV probe's upstream ('fbank' or a checkpoint), trained on train-labeled (icefall.probe)")
    parser.add_argument("--asv-exp-dir", type=Path, default=None,
                        help="the ASV probe's checkpoints and feature cache (default: <out-dir>/asv-probe); reused when trained")
    parser.add_argument("--asv-epochs", type=int, default=None, help="the ASV probe's epochs (default: the probing protocol's 40)")
    parser.add_argument("--asr-checkpoint", type=Path, default=None, help="a fine-tuned model (pretrained.pt); none: no WER")
    parser.add_argument("--lang-dir", type=Path, default=Path("data/lang_char"))
    parser.add_argument("--out-dir", type=Path, default=Path("knn_vc/eval"))
    parser.set_defaults(**defaults)
    return parser


def main(args) -> List[Row]:
    """The RESULTS table: source, vocoder resynthesis and kNN-VC at each k for every vocoder,
    kNN-TTS rows; ``<out-dir>/results.{md,json}``, example wavs and spectrogram PNGs."""
    from icefall.data.synth import synthesize
    from icefall.vc.convert import BASE_SPEAKER, KnnVC, write_wav
    from icefall.vc.data import read_utterances

    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    cuts = lambda split: args.manifest_dir / f"{args.cuts_prefix}_cuts_{split}.jsonl.gz"  # noqa: E731
    sources, refs = split_test_speakers(read_utterances(cuts(args.test_split)), args.n_eval)
    pairs = conversion_pairs(sources)
    asv_dir = args.asv_exp_dir or args.out_dir / "asv-probe"
    asv = SpeakerEmbedder.train(args.asv_upstream, asv_dir, args.manifest_dir, args.cuts_prefix, asv_dir / "cache",
                                ["--num-epochs", str(args.asv_epochs)] if args.asv_epochs else [])
    if set(asv.speakers) & set(refs):
        raise ValueError(f"the ASV probe was trained on test speakers {sorted(set(asv.speakers) & set(refs))}")
    mel = SpeakerSimilarity([u.wav for u in read_utterances(cuts(args.background_split), max_per_speaker=3)])
    ref_wavs = {s: [u.wav for u in us] for s, us in refs.items()}
    held_out = {s: [u.wav for u in us] for s, us in sources.items()}
    measures = {"asv": SpeakerScorer(asv.embed, ref_wavs, held_out), "mel": SpeakerScorer(mel.embed, ref_wavs, held_out)}
    asr = AsrScorer(args.asr_checkpoint, args.lang_dir) if args.asr_checkpoint else None
    texts = [u.text for u, _ in pairs]
    rows = [score_system("source (no conversion)", [u.wav for u, _ in pairs], pairs, measures, asr)]
    # the ceiling: a held-out real utterance of the target speaker (another text) in place of each output
    tgt_utts = [sources[t][i % len(sources[t])] for i, (_, t) in enumerate(pairs)]
    rows.append(score_system("target speaker, real held-out utterance", [u.wav for u in tgt_utts], pairs, measures, asr,
                             [u.text for u in tgt_utts]))
    examples: Dict[str, Tensor] = {"source": pairs[0][0].wav, f"target {pairs[0][1]} (other text)": refs[pairs[0][1]][0].wav}
    tts_in = [torch.from_numpy(synthesize(t, BASE_SPEAKER, 0.1, 0.1).audio) for t in texts] if args.tts_lams else []
    if tts_in:
        rows.append(score_system(f"espeak-ng base voice ({BASE_SPEAKER.voice}), TTS input", tts_in, pairs, measures, asr))
        examples["espeak-ng base voice, TTS input"] = tts_in[0]
    info = {"pairs": [(u.id, t) for u, t in pairs],
            "speaker_measures": {m: {"eer": sc.eer, "threshold": sc.threshold} for m, sc in measures.items()},
            "asv_upstream": str(args.asv_upstream),
            "reference_seconds": {s: sum(u.wav.shape[0] for u in us) / SAMPLE_RATE for s, us in refs.items()}}
    for path in args.vocoders:
        vc = KnnVC.from_checkpoint(path)
        name = vc.extractor.name.split(":")[0] + (":" + vc.extractor.name.split(":")[-1] if ":" in vc.extractor.name else "")
        if name in info:  # two vocoders of the same features: tell them apart by their exp dir
            name = f"{name} ({Path(path).parent.name})"
        ref = {s: vc.reference_frames([u.wav for u in us]) for s, us in refs.items()}
        feats = [vc.extractor(u.wav) for u, _ in pairs]
        systems: List[Tuple[str, Callable[[int], Tensor]]] = [(f"{name}: vocoder resynthesis (no kNN)", lambda i: vc.vocode(feats[i]))]
        tgt_feats = [vc.extractor(u.wav) for u in tgt_utts]
        rows.append(score_system(f"{name}: target's held-out utterance, vocoder resynthesis",
                                 [vc.vocode(f) for f in tgt_feats], pairs, measures, asr, [u.text for u in tgt_utts]))
        systems += [(f"{name}: kNN-VC k={k}", lambda i, k=k: vc.vocode(vc.match(feats[i], ref[pairs[i][1]], k)))
                    for k in args.ks]
        tts_feats = [vc.extractor(w) for w in tts_in]
        systems += [(f"{name}: kNN-TTS k=4 lambda={lam}", lambda i, lam=lam: vc.vocode(vc.match(tts_feats[i], ref[pairs[i][1]], 4, lam)))
                    for lam in args.tts_lams]
        for sys_name, fn in systems:
            outs = [fn(i) for i in range(len(pairs))]
            rows.append(score_system(sys_name, outs, pairs, measures, asr))
            examples[sys_name] = outs[0]
        info[name] = {"vocoder": str(path), **vc.extractor.describe(), "vocoder_params": vc.vocoder.num_params()}
    vc_panels = [(t, w) for t, w in examples.items() if "TTS" not in t and ("k=" not in t or "k=4" in t)]
    tts_panels = [(t, w) for t, w in examples.items() if "TTS" in t and ("lambda=1.0" in t or "input" in t)]
    save_spectrograms(args.out_dir / "images" / "knn-vc.png", vc_panels)
    if tts_panels:
        save_spectrograms(args.out_dir / "images" / "knn-tts.png", tts_panels)
    for i, (title, wav) in enumerate(examples.items()):
        write_wav(args.out_dir / "wavs" / f"{i:02d}-{''.join(c if c.isalnum() else '_' for c in title)}.wav", wav)
    info["examples"] = {"source": pairs[0][0].id, "target": pairs[0][1], "text": pairs[0][0].text}
    path = write_results(args.out_dir, rows, info)
    print(markdown_table(rows))
    for m, sc in measures.items():
        print(f"{m}: EER {sc.eer:.2f}% on real held-out test utterances vs centroids (threshold {sc.threshold:.3f})")
    print(path)
    return rows
