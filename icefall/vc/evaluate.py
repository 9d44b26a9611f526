"""Speaker similarity and intelligibility of kNN-VC / kNN-TTS output (``knn_vc/evaluate.py``).

Protocol (unseen test speakers as targets): each test speaker's utterances are split into the
first ``n_eval`` (sources, and held out from every reference) and the rest (its reference set:
kNN matching frames and speaker centroid). Source utterance j of speaker i is converted to
speaker ``(i + 1 + j mod (S-1)) mod S``, so every source goes to another speaker.

Speaker similarity (the probing issue's ASV can replace it, see docs/knn-vc.md): :class:`SpeakerSimilarity`,
cosine between pooled-statistics embeddings; per system the mean cosine of converted vs the
target's centroid and vs the source speaker's centroid, and how often the nearest of all test
speakers' centroids is the target, and how often it is the source (speaker identification). Intelligibility: WER/CER of a fine-tuned
ASR model (CTC greedy) against the source transcript. Reference rows: the sources themselves, a
held-out real utterance of each target speaker (the ceiling of "cos to target"), and the same
through each vocoder without kNN (what the vocoder alone keeps of a voice and of the words).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

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

    def centroid(self, wavs: Sequence[Tensor]) -> Tensor:
        """Unit mean of the embeddings of one speaker's utterances."""
        return torch.nn.functional.normalize(torch.stack([self.embed(w) for w in wavs]).mean(0), dim=0)


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> float:
    """EER in percent of verification trials (label 1: same speaker): the error where the miss
    rate and the false-alarm rate cross, sweeping the threshold over the scores."""
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("EER needs both target and non-target trials")
    order = s.argsort(descending=True)
    y = y[order]
    fa = torch.cumsum(1 - y, 0) / (1 - y).sum()  # accepting the top i+1 trials
    miss = 1 - torch.cumsum(y, 0) / y.sum()
    i = int((fa - miss).abs().argmin())
    return float(100 * (fa[i] + miss[i]) / 2)


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
    system: str
    sim_target: float
    sim_source: float
    speaker_id_acc: float
    source_id_rate: float
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
                 sim: SpeakerSimilarity, centroids: Dict[str, Tensor], asr: Optional[AsrScorer] = None,
                 texts: Optional[Sequence[str]] = None) -> Row:
    """One row: similarity to target / source centroids, speaker-ID accuracy, WER/CER of ``asr``
    against ``texts`` (default: the source transcripts)."""
    spks = list(centroids)
    cents = torch.stack([centroids[s] for s in spks])
    st, ss, hit, hit_src = [], [], 0, 0
    for wav, (src, tgt) in zip(outputs, pairs):
        e = sim.embed(wav)
        st.append(float(e @ centroids[tgt]))
        ss.append(float(e @ centroids[src.speaker]))
        nearest = spks[int((cents @ e).argmax())]
        hit, hit_src = hit + (nearest == tgt), hit_src + (nearest == src.speaker)
    row = Row(name, sum(st) / len(st), sum(ss) / len(ss), 100.0 * hit / len(pairs), 100.0 * hit_src / len(pairs))
    if asr is not None:
        row.wer, row.cer = error_rates(texts or [u.text for u, _ in pairs], asr.transcribe(outputs))
    logging.info(f"{row}")
    return row


def markdown_table(rows: Sequence[Row]) -> str:
    head = ("| system | cos to target | cos to source | nearest = target % | nearest = source % | WER % | CER % |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return head + "".join(f"| {r.system} | {r.sim_target:.3f} | {r.sim_source:.3f} | {r.speaker_id_acc:.1f} | {r.source_id_rate:.1f} | "
                          f"{fmt(r.wer)} | {fmt(r.cer)} |\n" for r in rows)


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
    sim = SpeakerSimilarity([u.wav for u in read_utterances(cuts(args.background_split), max_per_speaker=3)])
    centroids = {s: sim.centroid([u.wav for u in us]) for s, us in refs.items()}
    # how well the measure itself tells the test speakers apart: held-out real utterances vs centroids
    trials = [(float(sim.embed(u.wav) @ c), int(u.speaker == s)) for us in sources.values() for u in us
              for s, c in centroids.items()]
    eer = equal_error_rate(*zip(*trials))
    asr = AsrScorer(args.asr_checkpoint, args.lang_dir) if args.asr_checkpoint else None
    texts = [u.text for u, _ in pairs]
    rows = [score_system("source (no conversion)", [u.wav for u, _ in pairs], pairs, sim, centroids, asr)]
    # the ceiling: a held-out real utterance of the target speaker (another text) in place of each output
    tgt_utts = [sources[t][i % len(sources[t])] for i, (_, t) in enumerate(pairs)]
    rows.append(score_system("target speaker, real held-out utterance", [u.wav for u in tgt_utts], pairs, sim,
                             centroids, asr, [u.text for u in tgt_utts]))
    examples: Dict[str, Tensor] = {"source": pairs[0][0].wav, f"target {pairs[0][1]} (other text)": refs[pairs[0][1]][0].wav}
    tts_in = [torch.from_numpy(synthesize(t, BASE_SPEAKER, 0.1, 0.1).audio) for t in texts] if args.tts_lams else []
    if tts_in:
        rows.append(score_system(f"espeak-ng base voice ({BASE_SPEAKER.voice}), TTS input", tts_in, pairs, sim, centroids, asr))
        examples["espeak-ng base voice, TTS input"] = tts_in[0]
    info = {"pairs": [(u.id, t) for u, t in pairs], "speaker_measure_eer": eer,
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
                                 [vc.vocode(f) for f in tgt_feats], pairs, sim, centroids, asr, [u.text for u in tgt_utts]))
        systems += [(f"{name}: kNN-VC k={k}", lambda i, k=k: vc.vocode(vc.match(feats[i], ref[pairs[i][1]], k)))
                    for k in args.ks]
        tts_feats = [vc.extractor(w) for w in tts_in]
        systems += [(f"{name}: kNN-TTS k=4 lambda={lam}", lambda i, lam=lam: vc.vocode(vc.match(tts_feats[i], ref[pairs[i][1]], 4, lam)))
                    for lam in args.tts_lams]
        for sys_name, fn in systems:
            outs = [fn(i) for i in range(len(pairs))]
            rows.append(score_system(sys_name, outs, pairs, sim, centroids, asr))
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
    print(f"speaker measure EER on real held-out test utterances: {eer:.2f}%  ({path})")
    return rows
