"""kNN-VC voice conversion and kNN-TTS with a trained vocoder.

    vc = KnnVC.from_checkpoint("knn_vc/exp-fbank/epoch-10.pt")   # features as it was trained on
    ref = vc.reference_frames([read_wav(p) for p in target_wavs])  # (N, D) target frames
    wav = vc.convert(read_wav("source.flac"), ref, k=4)            # in the target's voice
    wav = vc.speak("HELLO THERE", ref, k=4, lam=1.0)               # espeak-ng, then converted

kNN-TTS (Hajal et al. 2025) takes a single-voice TTS (ours: espeak-ng, :data:`BASE_SPEAKER`) and
converts its output by retrieval; ``lam`` interpolates between the TTS voice's features (0) and
the retrieved target features (1).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from icefall.data.synth import Speaker
from icefall.vc.features import SAMPLE_RATE, FeatureExtractor
from icefall.vc.knn import interpolate, knn_match
from icefall.vc.vocoder import Vocoder, load_vocoder

#: kNN-TTS's base voice: espeak-ng's default US English voice (no variant), mid rate and pitch.
BASE_SPEAKER = Speaker(id="espeak-base", lang="en", voice="en-us", variant="", rate=160, pitch=50, pitch_range=50)


def read_wav(path: Union[str, Path]) -> Tensor:
    """A sound file's first channel as (N,) float32 at 16 kHz (resampled when needed)."""
    from lhotse import Recording

    try:
        rec = Recording.from_file(path)
    except Exception as e:
        raise ValueError(f"{path}: cannot read as audio: {e}") from e
    if rec.sampling_rate != SAMPLE_RATE:
        rec = rec.resample(SAMPLE_RATE)
    return torch.as_tensor(rec.load_audio()[0], dtype=torch.float32)


def write_wav(path: Union[str, Path], wav: Tensor) -> Path:
    """(N,) float in [-1, 1] -> a 16 kHz 16-bit file (format from the suffix), written atomically."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    soundfile.write(str(tmp), wav.detach().clamp(-1, 1).cpu().numpy(), SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)
    return path


class KnnVC:
    """A feature extractor and the vocoder trained on its (prematched) features."""

    def __init__(self, vocoder: Vocoder, extractor: FeatureExtractor):
        if extractor.dim != vocoder.config.input_dim or extractor.hop_length != vocoder.config.hop_length:
            raise ValueError(f"vocoder expects dim {vocoder.config.input_dim}, hop {vocoder.config.hop_length}; "
                             f"the features ({extractor.name}) have dim {extractor.dim}, hop {extractor.hop_length}")
        self.vocoder = vocoder
        self.extractor = extractor

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: str = "cpu",
                        features: Optional[str] = None) -> "KnnVC":
        """The vocoder of ``path`` and the features it was trained on (``features`` overrides
        where the feature model is found, e.g. after moving it)."""
        vocoder, params = load_vocoder(path, device)
        extractor = FeatureExtractor(features or params["features"], params.get("layer"), device)
        return cls(vocoder, extractor)

    def reference_frames(self, wavs: Sequence[Tensor]) -> Tensor:
        """All frames (N, D) of the target speaker's reference waveforms."""
        if not wavs:
            raise ValueError("kNN-VC needs at least one reference waveform of the target speaker")
        return torch.cat([self.extractor(w) for w in wavs])

    @torch.no_grad()
    def vocode(self, feats: Tensor) -> Tensor:
        """(T, D) -> (T * hop,) waveform."""
        device = next(self.vocoder.parameters()).device
        return self.vocoder(feats.unsqueeze(0).to(device))[0].cpu()

    def match(self, feats: Tensor, reference: Tensor, k: int = 4, lam: float = 1.0) -> Tensor:
        """(T, D) source frames -> (T, D) frames in the reference's voice."""
        return interpolate(feats, knn_match(feats, reference, k), lam)

    def convert(self, wav: Tensor, reference: Tensor, k: int = 4, lam: float = 1.0) -> Tensor:
        """A source waveform (N,) in the voice of ``reference`` (:meth:`reference_frames`)."""
        return self.vocode(self.match(self.extractor(wav), reference, k, lam))

    def speak(self, text: str, reference: Tensor, k: int = 4, lam: float = 1.0,
              speaker: Speaker = BASE_SPEAKER) -> Tensor:
        """kNN-TTS: ``text`` spoken by espeak-ng's ``speaker``, converted to the reference's voice."""
        from icefall.data.synth import synthesize

        wav = torch.from_numpy(synthesize(text, speaker, 0.1, 0.1).audio)
        return self.convert(wav, reference, k, lam)


# ------------------------------------------------------------------------------ command lines
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocoder", type=Path, required=True, help="a train_vocoder.py checkpoint (epoch-N.pt)")
    parser.add_argument("--features", default=None, help="where the feature model is now, if moved since training")
    parser.add_argument("--reference", type=Path, nargs="+", required=True, help="wavs of the target speaker (more is better)")
    parser.add_argument("--k", type=int, default=4, help="neighbours averaged per frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, required=True)


def get_convert_parser(**defaults) -> argparse.ArgumentParser:
    """``convert.py``: a source wav into the voice of the reference wavs."""
    parser = argparse.ArgumentParser(description="kNN-VC: convert a wav to the voice of reference wavs",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(parser)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--lam", type=float, default=1.0, help="0: source features, 1: retrieved")
    parser.set_defaults(**defaults)
    return parser


def get_tts_parser(**defaults) -> argparse.ArgumentParser:
    """``tts.py``: text spoken by espeak-ng, converted to the voice of the reference wavs."""
    parser = argparse.ArgumentParser(description="kNN-TTS: speak a text in the voice of reference wavs",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(parser)
    parser.add_argument("--text", required=True)
    parser.add_argument("--lam", type=float, default=1.0, help="kNN-TTS lambda: 0 espeak's voice, 1 the target's")
    parser.add_argument("--base-voice", default=BASE_SPEAKER.voice, help="espeak-ng voice of the base TTS")
    parser.set_defaults(**defaults)
    return parser


def main(args: argparse.Namespace) -> Path:
    """Runs ``convert.py`` (``args.source``) or ``tts.py`` (``args.text``); returns the output path."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    vc = KnnVC.from_checkpoint(args.vocoder, args.device, args.features)
    reference = vc.reference_frames([read_wav(p) for p in args.reference])
    if getattr(args, "text", None) is not None:
        speaker = dataclasses.replace(BASE_SPEAKER, voice=args.base_voice)
        wav = vc.speak(args.text, reference, args.k, args.lam, speaker)
    else:
        wav = vc.convert(read_wav(args.source), reference, args.k, args.lam)
    out = write_wav(args.output, wav)
    logging.info(f"{out}: {wav.shape[0] / SAMPLE_RATE:.2f} s ({vc.extractor.name}, k={args.k}, "
                 f"{reference.shape[0]} reference frames)")
    return out
