"""The standalone icefall/asr/onnx_pretrained.py: what it imports, its wav reader, its fbank
(kaldi-native-fbank set up as lhotse's fbank of the training cuts) and its token-to-text rule.
Its decoding is checked against decode.py and sherpa-onnx in test_recipe_chain.py."""
import ast
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from icefall.asr import onnx_pretrained as op

ALLOWED = {"argparse", "struct", "sys", "wave", "pathlib", "typing", "kaldi_native_fbank", "numpy",
           "onnxruntime"}


def test_imports_only_the_standalone_set():
    tree = ast.parse(Path(op.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0])
    assert names <= ALLOWED, names - ALLOWED


def _signal(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.3 * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_fbank_equals_lhotse_fbank():
    from icefall.data.features import make_fbank_extractor

    x = _signal()
    ours = op.compute_fbank(x)
    ref = make_fbank_extractor(use_kaldifeat=False).extract(x, 16000)
    assert ours.shape == ref.shape == (150, 80)
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("subtype,tol", [("PCM_16", 1 / 32768), ("PCM_32", 1e-7), ("FLOAT", 0.0)])
def test_read_wav(tmp_path, subtype, tol):
    x = _signal(0.2)
    stereo = np.stack([x, -x], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 16000, subtype=subtype)
    got = op.read_wav(tmp_path / "a.wav")
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - x).max() <= tol  # the first channel
    sf.write(tmp_path / "b.wav", x, 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match="b.wav: 8000 Hz"):
        op.read_wav(tmp_path / "b.wav")


def test_tokens_to_text_matches_the_tokenizers(tmp_path):
    from icefall.data.tokenizer import load_tokenizer, make_char_lang

    texts = ["HELLO WORLD", "A B  C"]
    make_char_lang(texts, tmp_path)
    tok = load_tokenizer(tmp_path)
    table = op.read_tokens(tmp_path / "tokens.txt")
    for text in texts:
        ids = tok.encode([text])[0] + [0, 2]  # specials are never printed
        assert op.tokens_to_text(ids, table) == tok.decode(ids) == " ".join(text.split())
    pieces = {3: "\u2581HE", 4: "LLO", 5: "\u2581WOR", 6: "LD"}
    assert op.tokens_to_text([3, 4, 0, 5, 6], pieces) == "HELLO WORLD"
