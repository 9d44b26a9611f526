"""kNN-VC / kNN-TTS end to end with a tiny untrained vocoder, and the evaluation helpers."""
import pytest
import torch

from icefall.vc.convert import BASE_SPEAKER, KnnVC, read_wav, write_wav
from icefall.vc.data import Utterance
from icefall.vc.evaluate import SpeakerScorer, SpeakerSimilarity, conversion_pairs, error_rates, split_test_speakers
from icefall.vc.features import FeatureExtractor
from icefall.vc.knn import knn_match
from icefall.vc.vocoder import Vocoder, VocoderConfig


def voice(f0, seconds=1.0, seed=0):
    """A crude 'speaker': harmonics of f0 with a fixed spectral tilt, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    wav = sum(torch.sin(2 * torch.pi * f0 * h * t) / h ** 1.5 for h in range(1, 20))
    return (0.2 * wav / wav.abs().max() + 0.01 * torch.randn(t.shape, generator=g)).float()


@pytest.fixture(scope="module")
def vc():
    torch.manual_seed(0)
    return KnnVC(Vocoder(VocoderConfig(input_dim=80, hop_length=160, channels=8)).eval(), FeatureExtractor("fbank"))


def test_convert_shapes_and_lambda_zero_is_resynthesis(vc):
    src, ref = voice(120, 0.5), vc.reference_frames([voice(220, 0.6, 1), voice(230, 0.4, 2)])
    assert ref.shape == (100, 80)
    out = vc.convert(src, ref, k=4)
    assert out.shape == (50 * 160,)
    assert torch.equal(vc.convert(src, ref, k=4, lam=0.0), vc.vocode(vc.extractor(src)))
    assert torch.equal(out, vc.vocode(knn_match(vc.extractor(src), ref, 4)))


def test_tts_speaks_then_converts(vc):
    ref = vc.reference_frames([voice(220, 0.5)])
    out = vc.speak("HELLO THERE", ref, k=2)
    assert out.dim() == 1 and out.shape[0] > 0.3 * 16000 and out.shape[0] % 160 == 0
    assert BASE_SPEAKER.espeak_voice == "en-us"


def test_vocoder_and_features_must_agree():
    with pytest.raises(ValueError, match="dim 40"):
        KnnVC(Vocoder(VocoderConfig(input_dim=40, hop_length=160, channels=8)), FeatureExtractor("fbank"))


def test_wav_round_trip_and_bad_file(tmp_path):
    wav = voice(150, 0.3)
    path = write_wav(tmp_path / "a.wav", wav)
    back = read_wav(path)
    assert back.shape == wav.shape and (back - wav).abs().max() < 1e-4
    (tmp_path / "b.wav").write_text("not audio")
    with pytest.raises(ValueError, match="b.wav"):
        read_wav(tmp_path / "b.wav")


def test_speaker_scorer_by_hand():
    """Embeddings on the unit circle (angle in degrees as the 'waveform'): centroids at 10 and 100
    degrees; held-out trials give targets cos 20, 50, 5 and non-targets cos 70, 40, 85 degrees, so
    the EER is 1/3 at the threshold cos 40 degrees."""
    import math

    def embed(wav):
        a = math.radians(float(wav[0]))
        return torch.tensor([math.cos(a), math.sin(a)], dtype=torch.float64)

    deg = lambda *angles: [torch.tensor([float(a)]) for a in angles]  # noqa: E731
    scorer = SpeakerScorer(embed, {"a": deg(0, 20), "b": deg(90, 110)}, {"a": deg(30, 60), "b": deg(95)})
    cos = lambda d: math.cos(math.radians(d))  # noqa: E731
    torch.testing.assert_close(scorer.centroids, torch.tensor([[cos(10), cos(80)], [cos(100), cos(-10)]], dtype=torch.float64))
    assert scorer.eer == pytest.approx(100 / 3) and scorer.threshold == pytest.approx(cos(40))
    # two conversions of speaker a to b: at 45 degrees (still nearer a) and at 80 degrees (b)
    got = scorer.score(deg(45, 80), ["b", "b"], ["a", "a"])
    assert got == pytest.approx({"cos_target": (cos(55) + cos(20)) / 2, "cos_source": (cos(35) + cos(70)) / 2,
                                 "accept_target": 50.0, "accept_source": 50.0, "nearest_target": 50.0,
                                 "nearest_source": 50.0})


def test_speaker_similarity_separates_voices():
    sim = SpeakerSimilarity([voice(f, 0.5, s) for s, f in enumerate((100, 140, 180, 260))])
    a1, a2, b = sim.embed(voice(110, 0.5, 5)), sim.embed(voice(110, 0.7, 6)), sim.embed(voice(240, 0.5, 7))
    assert a1.norm() == pytest.approx(1.0, abs=1e-5)
    assert float(a1 @ a2) > float(a1 @ b) + 0.2


def test_protocol_pairs_and_error_rates():
    utts = [Utterance(f"{s}-{i}", s, "A B", torch.zeros(10)) for s in ("x", "y", "z") for i in range(3)]
    sources, refs = split_test_speakers(utts, 2)
    assert [u.id for u in sources["y"]] == ["y-0", "y-1"] and [u.id for u in refs["y"]] == ["y-2"]
    pairs = conversion_pairs(sources)
    assert len(pairs) == 6 and all(u.speaker != t for u, t in pairs)
    assert {t for u, t in pairs if u.speaker == "x"} == {"y", "z"}
    with pytest.raises(ValueError, match="more than 3"):
        split_test_speakers(utts, 3)
    assert error_rates(["A B C"], ["a b"]) == (pytest.approx(100 / 3), pytest.approx(200 / 5))


@pytest.mark.parametrize("frontend", ["fbank", "cnn"])
def test_features_of_a_model_layer(tmp_path, frontend):
    from icefall.models import load_feature_model
    from icefall.ssl.pretrain import build_model, get_parser
    from icefall.utils import AttributeDict

    params = AttributeDict(vars(get_parser(method="spidr", encoder="hubert-tiny", frontend=frontend,
                                           num_codebooks=2, codebook_size=16).parse_args([])))
    torch.manual_seed(0)
    path = tmp_path / "epoch-0.pt"
    torch.save({"params": dict(params), "model": build_model(params).state_dict()}, path)
    with pytest.raises(ValueError, match="layer"):
        FeatureExtractor(path)
    fx = FeatureExtractor(path, layer=1)
    assert fx.hop_length == 320  # 50 Hz whatever the front end
    wav = voice(150, 1.3)
    got = fx(wav)
    model, _ = load_feature_model(path)
    x = fx.fbank(wav) if frontend == "fbank" else wav
    want = model.extract_features(x[None], torch.tensor([x.shape[0]]), layers=[1])[0][0][0]
    assert got.shape == (want.shape[0], fx.dim) and abs(got.shape[0] - 65) <= 4
    torch.testing.assert_close(got, want)
