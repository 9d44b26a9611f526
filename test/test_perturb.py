"""VTLP on stored fbank against a real filter bank (lhotse's Fbank of scaled tones)."""
import numpy as np
import pytest
import torch

from icefall.data.features import make_fbank_extractor
from icefall.data.perturb import Vtlp

SR = 16000


@pytest.fixture(scope="module")
def fbank():
    extractor = make_fbank_extractor()
    t = np.arange(SR) / SR

    def tones(freqs):
        x = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in freqs)
        return torch.from_numpy(np.asarray(extractor.extract(x.astype(np.float32), SR)))

    return tones


@pytest.mark.parametrize("alpha", [0.85, 0.9, 1.1, 1.2])
@pytest.mark.parametrize("freqs", [[800], [3000], [500, 1500, 2500]])
def test_warp_moves_tones_where_the_filter_bank_puts_scaled_tones(fbank, alpha, freqs):
    """The warped fbank of tones at f is the fbank of tones at alpha * f (lhotse's Fbank, the
    features the recipes store): mean log energy per bin within a fraction of the unwarped gap."""
    source = fbank(freqs).mean(0)
    target = fbank([f * alpha for f in freqs]).mean(0)
    warped = Vtlp().warp(fbank(freqs), alpha).mean(0)
    assert (warped - target).abs().mean() < 0.4 * (source - target).abs().mean()
    if len(freqs) == 1:
        assert abs(int(warped.argmax()) - int(target.argmax())) <= 1


def test_warp_map_keeps_the_band_and_is_monotonic():
    p = Vtlp()
    hz = torch.linspace(20.0, 7600.0, 2000, dtype=torch.float64)
    for alpha in (0.8, 0.95, 1.0, 1.05, 1.25):
        src = p.warp_hz(hz, alpha)
        assert float(src[-1]) == pytest.approx(7600.0)
        assert bool((src[1:] >= src[:-1]).all())
        low = hz < 0.5 * p.boundary_hz
        assert torch.allclose(src[low], (hz[low] / alpha).clamp(min=20.0))


def test_identity_warp_leaves_features_unchanged():
    x = torch.randn(57, 80)
    assert torch.equal(Vtlp().warp(x, 1.0), x)


def test_draws_follow_the_torch_rng_and_keep_the_shape():
    p = Vtlp(0.1)
    x = torch.randn(200, 80)
    torch.manual_seed(3)
    a = [p(x) for _ in range(5)]
    torch.manual_seed(3)
    b = [p(x) for _ in range(5)]
    assert all(torch.equal(u, v) and u.shape == x.shape for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])


def test_vtlp_option_reaches_the_training_dataset_only():
    """--vtlp gives the training AsrDataset a Vtlp; validation/decoding datasets get none."""
    import argparse

    from icefall.data.datamodule import DataModule

    parser = argparse.ArgumentParser()
    DataModule.add_arguments(parser)
    dm = DataModule(parser.parse_args(["--vtlp", "0.1"]))
    assert isinstance(dm.asr_dataset(None, train=True).perturb, Vtlp)
    assert dm.asr_dataset(None, train=False).perturb is None


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="max_warp"):
        Vtlp(0.6)
