"""A transcript (or any text file we read) that is not UTF-8 gives an error naming the file
(and line where the whole file is read), not a bare UnicodeDecodeError."""
import gzip

import pytest

from icefall.utils import read_utf8

LATIN1 = "CAFÉ AU LAIT".encode("latin-1")  # \xc9 is not UTF-8


def test_read_utf8_names_file_line_and_byte(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"GOOD LINE\n" + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=rf"{f}:2: not UTF-8 text \(byte 0xc9"):
        read_utf8(f)
    f.write_bytes("ĐÚNG\n".encode("utf-8"))
    assert read_utf8(f) == "ĐÚNG\n"


def test_librispeech_transcripts(tmp_path):
    from icefall.data.librispeech import prepare_manifests

    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    trans = chapter / "84-121123.trans.txt"
    trans.write_bytes(b"84-121123-0000 " + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=f"{trans}:1: not UTF-8"):
        prepare_manifests(tmp_path / "LibriSpeech", ["dev-clean"], tmp_path / "manifests")


def test_vietnamese_tables(tmp_path):
    from icefall.data.vietnamese import read_commonvoice, read_gigaspeech2

    (tmp_path / "dev.tsv").write_bytes(b"utt1\t" + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'dev.tsv'}:1: not UTF-8"):
        read_gigaspeech2(tmp_path, "dev")
    (tmp_path / "test.tsv").write_bytes(b"client_id\tpath\tsentence\nc1\ta.mp3\t" + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'test.tsv'}: not UTF-8"):
        read_commonvoice(tmp_path, "test")


def test_tokens_manifests_transcripts_items(tmp_path):
    from icefall.data.librispeech import read_lines
    from icefall.data.tokenizer import read_tokens
    from icefall.eval.abx import read_item_file
    from icefall.eval.wer import read_transcripts

    cases = []
    tokens = tmp_path / "tokens.txt"
    tokens.write_bytes(b"<blk> 0\n" + LATIN1[:4] + b" 1\n")
    cases.append((read_tokens, tokens))
    manifest = tmp_path / "cuts.jsonl.gz"
    with gzip.open(manifest, "wb") as f:
        f.write(b'{"id": "' + LATIN1 + b'"}\n')
    cases.append((read_lines, manifest))
    recogs = tmp_path / "recogs-dev.txt"
    recogs.write_bytes(b"c1:\tref=['" + LATIN1 + b"']\n")
    cases.append((read_transcripts, recogs))
    items = tmp_path / "dev.item"
    items.write_bytes(b"#file onset offset #phone prev-phone next-phone speaker\nf 0 1 " + LATIN1 + b" a b s\n")
    cases.append((read_item_file, items))
    for read, path in cases:
        with pytest.raises(ValueError, match=f"{path}.*not UTF-8"):
            read(path)
