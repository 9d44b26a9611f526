"""The kNN-VC vocoder: shapes, exact resume through the shared trainer, a few steps of fitting."""
from pathlib import Path

import pytest
import torch

from icefall.checkpoint import load_file
from icefall.utils import AttributeDict
from icefall.vc.vocoder import (
    Vocoder,
    VocoderConfig,
    VocoderData,
    compute_loss,
    load_vocoder,
    stft_loss,
    train_vocoder,
    upsample_rates_for,
)

TINY = VocoderConfig(input_dim=6, hop_length=160, channels=8, resblock_kernel_sizes=(3,), resblock_dilations=(1, 3))


class Stop(Exception):
    pass


def toy_data(n=6, frames=20, hop=160):
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(frames + i, 6, generator=g) for i in range(n)]
    t = torch.arange((frames + 5) * hop) / 16000
    waves = [0.3 * torch.sin(2 * torch.pi * (200 + 50 * i) * t) for i in range(n)]
    return VocoderData(feats, waves, hop, segment_frames=8)


def run(exp_dir, stop_at=None, **overrides):
    params = AttributeDict(exp_dir=Path(exp_dir), num_epochs=2, batch_size=2, base_lr=2e-3, lr_decay=0.99,
                           save_every_n=2, average_period=1, log_interval=100, tensorboard=False, seed=5,
                           vocoder_config=TINY.to_dict(), features="toy")
    params.update(overrides)
    calls = {"n": 0}

    def loss_fn(model, batch, is_training):
        calls["n"] += 1
        if stop_at is not None and calls["n"] > stop_at:
            raise Stop  # the job dies before this batch
        return compute_loss(model, batch, is_training)

    try:
        return train_vocoder(params, toy_data(), loss_fn)
    except Stop:
        return None


def test_upsampling_plan_and_output_length():
    assert upsample_rates_for(160) == (8, 5, 4)
    assert upsample_rates_for(320) == (8, 8, 5)
    with pytest.raises(ValueError):
        upsample_rates_for(7 * 16)
    for hop in (160, 320, 640):
        v = Vocoder(VocoderConfig(input_dim=6, hop_length=hop, channels=16))
        assert v(torch.randn(2, 5, 6)).shape == (2, 5 * hop)
    assert VocoderConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="channels=8"):
        VocoderConfig(hop_length=640, channels=8)  # 4 halvings


def test_vocoder_training_resumes_exactly(tmp_path):
    full = run(tmp_path / "full")
    assert full.params.batch_idx_train == 6  # 3 batches per epoch
    assert run(tmp_path / "split", stop_at=4) is None  # dies in epoch 2, after checkpoint-4.pt
    assert (tmp_path / "split" / "checkpoint-4.pt").is_file()
    resumed = run(tmp_path / "split", start_batch=4)
    assert resumed.params.batch_idx_train == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fresh = Vocoder(TINY).state_dict()
    assert not torch.equal(fresh["conv_pre.weight"], a["conv_pre.weight"])  # it did train
    model, params = load_vocoder(tmp_path / "split" / "epoch-2.pt")
    assert params["features"] == "toy"
    assert torch.equal(model.conv_pre.weight, b["conv_pre.weight"])


def test_vocoder_fits_one_utterance_a_little():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(1, 16, 6, generator=g)
    t = torch.arange(16 * 160) / 16000
    wav = (0.4 * torch.sin(2 * torch.pi * 300 * t) * torch.hann_window(16 * 160)).unsqueeze(0)
    model = Vocoder(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(25):
        loss, _ = compute_loss(model, (feats, wav), True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_stft_loss_is_zero_for_equal_and_positive_otherwise():
    x = torch.randn(2, 4000)
    assert stft_loss(x, x).abs().max() < 1e-6
    assert (stft_loss(x, 0.5 * x) > 0.1).all()


def test_load_vocoder_rejects_other_checkpoints(tmp_path):
    torch.save({"params": {"x": 1}, "model": {}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="a.pt: not a vocoder checkpoint"):
        load_vocoder(tmp_path / "a.pt")
