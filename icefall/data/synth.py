"""Offline speech synthesis with word and phone alignments (espeak-ng through ctypes).

``libespeak-ng.so.1`` initialised with ``espeakINITIALIZE_PHONEME_EVENTS`` reports, through the
synth callback, one event per word and per phoneme with its audio position. We keep the audio
(22050 Hz int16 from espeak, resampled to 16 kHz) and turn the events into alignments:

- phones: a tiling of ``[0, duration]`` by (symbol, start, end); IPA symbols, pauses and the
  edges are ``"sil"``;
- words: (word, start, end) from the first to the last phone of each word.

Speakers are espeak voice/variant/rate/pitch combinations. ``augment`` adds mild reverberation
and noise so the task is not trivially clean. Everything is deterministic: espeak itself is, and
the augmentation takes an explicit ``numpy.random.Generator``.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

SAMPLE_RATE = 16000
SIL = "sil"

# espeak-ng enums (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_EV_LIST_TERMINATED, _EV_WORD, _EV_END, _EV_MSG_TERMINATED, _EV_PHONEME = 0, 1, 5, 6, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4

Alignment = List[Tuple[str, float, float]]  # (symbol, start seconds, end seconds)


class SynthesisError(RuntimeError):
    """espeak failed, or its events do not cover every word of the text."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Espeak:
    """Process-wide espeak-ng handle (the library keeps global state: one per process)."""

    _instance: Optional["_Espeak"] = None

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise SynthesisError("libespeak-ng.so.1 not found (apt-get install espeak-ng)") from e
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if self.sample_rate <= 0:
            raise SynthesisError("espeak_Initialize failed")
        self._chunks: List[bytes] = []
        self._events: List[Tuple[int, int, int, str]] = []
        self._phone_counts: Dict[Tuple[str, str], int] = {}
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> "_Espeak":
        if cls._instance is None:
            cls._instance = _Espeak()
        return cls._instance

    def _on_synth(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            e = events[i]
            name = e.id.string.decode("utf-8", "replace") if e.type == _EV_PHONEME else ""
            self._events.append((e.type, e.text_position, e.audio_position, name))
            i += 1
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int):
        """Returns (int16 samples at ``self.sample_rate``, events (type, text_pos, ms, name))."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SynthesisError(f"unknown espeak voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                             (_PARAM_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                    None, None)
        if err != 0:
            raise SynthesisError(f"espeak_Synth returned {err} for {text!r}")
        audio = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        return audio, self._events

    def phone_count(self, word: str, speaker: "Speaker") -> int:
        """Number of (non-pause) phones of ``word`` spoken alone by ``speaker``'s voice."""
        key = (word, speaker.espeak_voice)
        if key not in self._phone_counts:
            _, events = self.speak(word, speaker.espeak_voice, speaker.rate, speaker.pitch,
                                   speaker.pitch_range)
            self._phone_counts[key] = sum(
                1 for e in events if e[0] == _EV_PHONEME and e[3].strip())
        return self._phone_counts[key]


@dataclass(frozen=True)
class Speaker:
    """An espeak "speaker": voice (language/accent) + variant (timbre) + rate + pitch."""

    id: str
    lang: str  # "en" or "vi"
    voice: str  # espeak voice name, e.g. "en-us"
    variant: str  # espeak variant, e.g. "f3"
    rate: int  # words per minute
    pitch: int  # 0..100
    pitch_range: int = 50  # 0..100

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


@dataclass
class Utterance:
    """``audio``: float32 (N,) at 16 kHz in [-1, 1]; alignments in seconds."""

    audio: np.ndarray
    words: Alignment
    phones: Alignment

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _word_offsets(text: str) -> List[int]:
    """1-based character offsets of the words of ``text`` (espeak's text_position)."""
    offsets, pos = [], 0
    for w in text.split(" "):
        offsets.append(pos + 1)
        pos += len(w) + 1
    return offsets


def _alignments(text: str, events, duration: float,
                phone_count: Callable[[str], int]) -> Tuple[Alignment, Alignment]:
    """Turns espeak events into (words, phones) alignments; see the module docstring."""
    words = text.split(" ")
    offset_to_word = {o: i for i, o in enumerate(_word_offsets(text))}
    # (symbol, start, word index or None); a pause or the end event has symbol SIL.
    marks: List[Tuple[str, float, Optional[int]]] = []
    current: Optional[int] = None
    for etype, text_pos, ms, name in events:
        t = min(ms / 1000.0, duration)
        if etype == _EV_WORD:
            current = offset_to_word.get(text_pos)
        elif etype == _EV_PHONEME:
            # IPA mode reports pauses as empty names.
            marks.append((name, t, current) if name.strip() else (SIL, t, None))
        elif etype in (_EV_END, _EV_MSG_TERMINATED):
            marks.append((SIL, t, None))
    marks.append((SIL, duration, None))

    phones: Alignment = []
    phone_word: List[Optional[int]] = []
    pending = ""  # symbols of zero-length phones, merged into the next phone of their word
    prev_end = 0.0
    for (sym, start, w), (_, end, _) in zip(marks[:-1], marks[1:]):
        start = max(start, prev_end)
        if end <= start:
            if sym != SIL:
                pending += sym
            continue
        if sym != SIL:
            sym, pending = pending + sym, ""
        if start > prev_end:  # a gap before the first phone: leading silence
            phones.append((SIL, prev_end, start))
            phone_word.append(None)
        if sym == SIL and phones and phones[-1][0] == SIL:
            phones[-1] = (SIL, phones[-1][1], end)
        else:
            phones.append((sym, start, end))
            phone_word.append(w)
        prev_end = end
    if prev_end < duration:
        phones.append((SIL, prev_end, duration))
        phone_word.append(None)

    # espeak speaks some word pairs as one ("in the"): the second word then has no event of
    # its own. Give it the last phones of the previous word, as many as it has when spoken
    # alone.
    for i in range(len(words)):
        if i in phone_word:
            continue
        owned = [k for k, w in enumerate(phone_word) if w == i - 1] if i > 0 else []
        n = phone_count(words[i]) if owned else 0
        if n <= 0 or n >= len(owned):
            raise SynthesisError(f"no phones for word {words[i]!r} in {text!r}")
        for k in owned[-n:]:
            phone_word[k] = i

    spans: List[Optional[Tuple[float, float]]] = [None] * len(words)
    for (_, s, e), w in zip(phones, phone_word):
        if w is not None:
            old = spans[w]
            spans[w] = (s, e) if old is None else (old[0], e)
    missing = [words[i] for i, sp in enumerate(spans) if sp is None]
    if missing:
        raise SynthesisError(f"no phones for words {missing} in {text!r}")
    word_ali = [(words[i], sp[0], sp[1]) for i, sp in enumerate(spans)]
    # Round once per boundary (ms/10): equal floats stay equal, manifests stay short.
    word_ali = [(w, round(s, 4), round(e, 4)) for w, s, e in word_ali]
    phones = [(p, round(s, 4), round(e, 4)) for p, s, e in phones]
    for (_, _, e1), (_, s2, _) in zip(word_ali[:-1], word_ali[1:]):
        if s2 < e1:
            raise SynthesisError(f"overlapping word alignment in {text!r}")
    return word_ali, phones


def synthesize(text: str, speaker: Speaker, lead_silence: float = 0.0,
               trail_silence: float = 0.0) -> Utterance:
    """Speaks ``text`` (words separated by single spaces) with ``speaker``.

    Returns 16 kHz float32 audio (N,) with ``lead_silence``/``trail_silence`` seconds of
    silence added, and word/phone alignments of the returned audio.
    """
    engine = _Espeak.get()
    spoken = text.lower()  # espeak spells out some all-caps words as acronyms
    raw, events = engine.speak(spoken, speaker.espeak_voice, speaker.rate, speaker.pitch,
                               speaker.pitch_range)
    if raw.size == 0:
        raise SynthesisError(f"espeak produced no audio for {text!r}")
    audio = resample_poly(raw.astype(np.float32) / 32768.0, SAMPLE_RATE,
                          engine.sample_rate).astype(np.float32)
    words, phones = _alignments(text, events, len(audio) / SAMPLE_RATE,
                                lambda w: engine.phone_count(w.lower(), speaker))
    lead = int(round(lead_silence * SAMPLE_RATE))
    trail = int(round(trail_silence * SAMPLE_RATE))
    if lead or trail:
        audio = np.pad(audio, (lead, trail))
        shift = lead / SAMPLE_RATE
        words = [(w, round(s + shift, 4), round(e + shift, 4)) for w, s, e in words]
        phones = [(p, round(s + shift, 4), round(e + shift, 4)) for p, s, e in phones]
        end = len(audio) / SAMPLE_RATE
        if shift > 0:
            phones = _prepend_sil(phones, shift)
        if phones[-1][0] == SIL:
            phones[-1] = (SIL, phones[-1][1], end)
        else:
            phones.append((SIL, phones[-1][2], end))
    return Utterance(audio=audio, words=words, phones=phones)


def _prepend_sil(phones: Alignment, shift: float) -> Alignment:
    if phones[0][0] == SIL:
        return [(SIL, 0.0, phones[0][2])] + phones[1:]
    return [(SIL, 0.0, shift)] + phones


@dataclass(frozen=True)
class AugmentConfig:
    """Mild degradation: reverb with probability ``reverb_prob`` (exponentially decaying noise
    impulse response, RT60 uniform in ``rt60``), then additive coloured noise with probability
    ``noise_prob`` at an SNR uniform in ``snr_db``."""

    noise_prob: float = 0.8
    snr_db: Tuple[float, float] = (10.0, 30.0)
    reverb_prob: float = 0.5
    rt60: Tuple[float, float] = (0.1, 0.4)


def augment(audio: np.ndarray, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Returns a degraded copy of float32 ``audio`` (N,), same length, peak below 1."""
    x = audio.astype(np.float64)
    # Draw every random number up front so the stream does not depend on which branch ran.
    do_reverb = rng.random() < config.reverb_prob
    rt60 = rng.uniform(*config.rt60)
    do_noise = rng.random() < config.noise_prob
    snr_db = rng.uniform(*config.snr_db)
    colour = rng.uniform(0.0, 0.95)  # 0: white noise; near 1: low-passed (brown-like)
    if do_reverb:
        n = max(1, int(rt60 * SAMPLE_RATE))
        t = np.arange(n) / SAMPLE_RATE
        ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
        ir[0] = 1.0  # direct path
        ir /= np.sqrt(np.sum(ir**2))
        x = fftconvolve(x, ir)[: len(x)]
    if do_noise:
        noise = lfilter([1.0], [1.0, -colour], rng.standard_normal(len(x)))
        p_sig = np.mean(x**2) + 1e-12
        p_noise = np.mean(noise**2) + 1e-12
        x = x + noise * math.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    peak = np.max(np.abs(x)) + 1e-12
    if peak > 0.95:
        x *= 0.95 / peak
    return x.astype(np.float32)
