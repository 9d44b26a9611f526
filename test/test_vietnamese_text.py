"""Vietnamese transcript normalisation (icefall.data.vietnamese.normalize_text) on hand-written
examples, and the corpus readers on hand-written tsv files."""
import unicodedata

import pytest

from icefall.data import vietnamese as vi
from icefall.data.text import vocabulary


@pytest.mark.parametrize("raw, expected", [
    ("Xin chào, Việt Nam!", "xin chào việt nam"),
    ("“Tôi đã ăn cơm”; rồi… đi ngủ.", "tôi đã ăn cơm rồi đi ngủ"),
    ("ĐƯỜNG PHỐ Hà-Nội (sáng nay)", "đường phố hà nội sáng nay"),
    ("năm 2024 có 12 tháng", "năm 2024 có 12 tháng"),
    ("wifi và zalo", "wifi và zalo"),                    # f j w z: loanword letters, kept
    ("Müller nói 你好 với ông ấy", "nói với ông ấy"),      # ü and CJK: not Vietnamese, word dropped
    ("naïve café", "café"),                              # ï is not Vietnamese; é (e sắc) is
    ("  nhiều    khoảng\ttrắng \n ", "nhiều khoảng trắng"),
    ("!!! ...", ""),
])
def test_hand_written_examples(raw, expected):
    assert vi.normalize_text(raw) == expected


def test_nfc_and_nfd_inputs_give_the_same_output():
    s = "Tiếng Việt có dấu: huyền, sắc, hỏi, ngã, nặng — Ở ĐÂY!"
    nfc, nfd = unicodedata.normalize("NFC", s), unicodedata.normalize("NFD", s)
    assert nfc != nfd
    out = vi.normalize_text(nfd)
    assert out == vi.normalize_text(nfc) == "tiếng việt có dấu huyền sắc hỏi ngã nặng ở đây"
    assert out == unicodedata.normalize("NFC", out)
    # a half-composed input: e-circumflex precomposed + a combining acute
    assert vi.normalize_text("vi\u00ea\u0301t") == "viết"


def test_digits_can_be_dropped():
    assert vi.normalize_text("năm 2024 rồi", keep_digits=False) == "năm rồi"


def test_alphabet_hand_count():
    # 12 vowels x 6 tones (unmarked + 5 marks), 17 consonants, 4 loanword letters
    assert len(vi.VI_LETTERS) == 12 * 6 + 17 + 4
    pangram = "ạ ả ã à á ằ ắ ẳ ẵ ặ ầ ấ ẩ ẫ ậ ề ế ể ễ ệ ỉ ĩ ì í ị ồ ố ổ ỗ ộ ờ ớ ở ỡ ợ ừ ứ ử ữ ự ỳ ý ỷ ỹ ỵ đ"
    assert set(pangram.replace(" ", "")) <= vi.VI_LETTERS
    assert not {"ñ", "ç", "ü", "ö", "ß", "å", "ø"} & vi.VI_LETTERS


def test_the_synthesizer_vocabulary_is_unchanged():
    # Every word the Vietnamese generator emits survives normalisation as it is.
    words = vocabulary("vi")
    assert len(words) > 150
    assert [vi.normalize_text(w) for w in words] == words


def test_readers_on_hand_written_tsv(tmp_path):
    gs = tmp_path / "gs"
    (gs / "dev" / "3" / "7").mkdir(parents=True)
    (gs / "dev" / "3" / "7" / "3-7-0.wav").write_bytes(b"")
    (gs / "dev.tsv").write_text("3-7-0\tXin chào.\n3-7-1\tkhông có âm thanh\n", encoding="utf-8")
    utts = vi.read_gigaspeech2(gs, "dev")
    assert [(u.id, u.text, u.audio is not None) for u in utts] == [
        ("3-7-0", "Xin chào.", True), ("3-7-1", "không có âm thanh", False)]

    cv = tmp_path / "cv"
    (cv / "clips").mkdir(parents=True)
    (cv / "clips" / "a.mp3").write_bytes(b"")
    (cv / "test.tsv").write_text("client_id\tpath\tsentence\tgender\nc1\ta.mp3\tCâu \"một\tmale\n",
                                 encoding="utf-8")
    [u] = vi.read_commonvoice(cv, "test")
    assert (u.id, u.text, u.speaker, u.gender) == ("a", 'Câu "một', "c1", "male")
    (cv / "dev.tsv").write_text("path\tsentence\na.mp3\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="client_id"):
        vi.read_commonvoice(cv, "dev")

    fl = tmp_path / "fl"
    (fl / "audio" / "test" / "test").mkdir(parents=True)
    (fl / "audio" / "test" / "test" / "9.wav").write_bytes(b"")
    (fl / "test.tsv").write_text("5\t9.wav\tXin Chào!\txin chào\tx i n | c h à o |\t16000\tMALE\n",
                                 encoding="utf-8")
    [u] = vi.read_fleurs(fl, "test")
    assert (u.id, u.text, u.gender, u.audio.name) == ("9", "xin chào", "MALE", "9.wav")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        vi.read_fleurs(fl, "dev")


def test_write_manifests_counts_and_parallel_reading(tmp_path):
    import gzip
    import json

    import numpy as np
    import soundfile as sf

    utts = []
    for k, (text, sr) in enumerate([("Một, hai!", 16000), ("北京", 16000), ("Ba bốn.", 8000),
                                    ("năm", 16000), ("sáu bảy", 16000)]):
        path = tmp_path / "audio" / f"u{k}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), np.zeros(sr // 2 + 100 * k, dtype=np.float32), sr)
        utts.append(vi.Utt(f"u{k}", path, text, speaker=f"s{k % 2}"))
    utts.append(vi.Utt("gone", None, "không có"))
    stats = vi.write_manifests(utts, tmp_path / "m1", "x", num_jobs=1)
    assert stats == {"utterances": 4, "no_audio": 1, "empty_text": 1}
    assert vi.write_manifests(utts, tmp_path / "m2", "x", num_jobs=2) == stats
    for kind in ("recordings", "supervisions"):
        a = (tmp_path / "m1" / f"vietnamese_{kind}_x.jsonl.gz").read_bytes()
        assert a == (tmp_path / "m2" / f"vietnamese_{kind}_x.jsonl.gz").read_bytes()
    with gzip.open(tmp_path / "m1" / "vietnamese_supervisions_x.jsonl.gz", "rt") as f:
        sups = [json.loads(line) for line in f]
    with gzip.open(tmp_path / "m1" / "vietnamese_recordings_x.jsonl.gz", "rt") as f:
        recs = {r["id"]: r for r in (json.loads(line) for line in f)}
    assert [(s["id"], s["text"]) for s in sups] == [("u0", "một hai"), ("u2", "ba bốn"),
                                                   ("u3", "năm"), ("u4", "sáu bảy")]
    assert recs["u2"]["sampling_rate"] == 16000 and recs["u2"]["num_samples"] == 2 * (4000 + 200)
    assert all(abs(s["duration"] - recs[s["id"]]["duration"]) < 1e-9 for s in sups)
    # the unlabeled pool keeps the empty one
    assert vi.write_manifests(utts, tmp_path / "m3", "x", keep_empty=True)["utterances"] == 5
