"""BYOL-S: the target network gets no gradient and moves by the EMA formula (front end, encoder
and projector), the loss against a hand computation, views (crops inside the valid part,
log-mixup-exp, padding kept at zero, waveform and fbank), both encoders through the registry,
and a short toy training that lowers the loss."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.models import build_model, pretrain_config
from icefall.ssl.byol import (
    BatchStatNorm,
    ByolConfig,
    ByolModel,
    augment,
    log_mixup_exp,
    make_views,
    mean_max_pool,
    random_crop,
)
from test_spidr import ToyEncoder, ToyFrontend

SMALL = dict(projector_hidden_dim=32, projector_dim=8)


def toy(**kw):
    torch.manual_seed(0)
    return ByolModel(ToyFrontend(), ToyEncoder(), ByolConfig(**{**SMALL, **kw}))


def toy_views(seed=0, B=4, T=9):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([T, T - 2, T - 4, T][:B])
    return [(torch.randn(B, T, 6, generator=g), lens) for _ in range(2)]


def test_target_gets_no_gradient_and_online_does():
    model = toy()
    views = toy_views()
    loss, stats = model(None, None, views=views)
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    for name in ("frontend", "encoder", "projector", "predictor"):
        assert all(p.grad is not None for n, p in getattr(model, name).named_parameters()
                   if not n.startswith("pos_conv") or name != "encoder"), name
    assert not model.mask_emb.requires_grad  # no masks in BYOL: frozen, trained by fine-tuning
    assert stats["count_m"] == 4 and 0 <= stats["loss_m"] <= 8 * 4
    # stop-gradient: even with trainable target parameters, the loss does not reach them
    model.teacher.requires_grad_(True)
    model(None, None, views=views)[0].backward()
    assert all(p.grad is None for p in model.teacher.parameters())


def test_loss_equals_hand_computation():
    model = toy()
    with torch.no_grad():  # a target different from the online network
        for p in model.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    views = toy_views(1)

    def embed(front, enc, proj, v, lens):
        out, _ = enc(front(v, lens)[0], lens)
        pooled = torch.stack([out[b, :n].mean(0) + out[b, :n].max(0).values for b, n in enumerate(lens.tolist())])
        return proj(pooled)

    t = model.teacher
    q = [model.predictor(embed(model.frontend, model.encoder, model.projector, v, l)) for v, l in views]
    z = [embed(t["frontend"], t["encoder"], t["projector"], v, l) for v, l in views]
    expected = sum(2 - 2 * F.cosine_similarity(q[i][b], z[1 - i][b], dim=0)
                   for i in range(2) for b in range(4))
    loss, _ = model(None, None, views=views)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_target_moves_by_the_ema_formula():
    model = toy()
    assert model.teacher_decay(0) == model.teacher_decay(10**6) == 0.99  # BYOL-A: fixed
    names = [n for n, _ in model.teacher.named_parameters()]
    assert {n.split(".")[0] for n in names} == {"frontend", "encoder", "projector"}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = model(None, None, views=toy_views())
    loss.backward()
    opt.step()
    t0 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    student = dict(model.ema_student().named_parameters())
    assert model.update_teacher(1) == 0.99
    moved = 0
    for n, p in model.teacher.named_parameters():
        torch.testing.assert_close(p, 0.99 * t0[n] + 0.01 * student[n], rtol=1e-6, atol=1e-7)
        moved += not torch.equal(p, t0[n])
    assert moved > len(names) // 2

    cosine = toy(teacher_schedule="cosine", ema_start_decay=0.996, ema_anneal_end_step=100)
    assert cosine.teacher_decay(50) == pytest.approx(0.998) and cosine.teacher_decay(100) == 1.0


def test_views_crop_inside_the_valid_part():
    torch.manual_seed(0)
    B, T = 3, 50
    src = torch.arange(B * T, dtype=torch.float32).view(B, T, 1).expand(B, T, 4).contiguous()
    lens = torch.tensor([50, 30, 12])
    for _ in range(20):
        crop, clens = random_crop(src, lens, 20)
        assert clens.tolist() == [20, 20, 12] and crop.shape[1] == 20
        for b, n in enumerate(clens.tolist()):
            first = int(crop[b, 0, 0]) - b * T
            assert 0 <= first and first + n <= int(lens[b])  # contiguous, inside the valid part
            assert torch.equal(crop[b, :n, 0], src[b, first:first + n, 0])
            assert crop[b, n:].abs().sum() == 0


def test_log_mixup_exp_and_augment_keep_padding():
    x, y, a = torch.randn(5), torch.randn(5), torch.tensor(0.3)
    torch.testing.assert_close(log_mixup_exp(x, y, a), torch.log(0.7 * x.exp() + 0.3 * y.exp()))
    torch.testing.assert_close(log_mixup_exp(x, y, torch.tensor(0.0)), x)
    torch.manual_seed(0)
    cfg = ByolConfig()
    for source, lens in ((torch.randn(3, 150, 80), torch.tensor([150, 120, 60])),
                         (torch.randn(3, 24000), torch.tensor([24000, 16000, 8000]))):
        view, vlens = make_views(source, lens, cfg)
        rate = 100 if source.dim() == 3 else 16000
        assert vlens.tolist() == [min(int(n), rate) for n in lens]
        assert view.shape[1] == rate and torch.isfinite(view).all()
        for b, n in enumerate(vlens.tolist()):
            assert view[b, n:].abs().sum() == 0
    # mixup 0, no gain and no masks: the view is the crop
    plain = ByolConfig(mixup_ratio=0.0, gain_db=0.0, time_mask_seconds=0.0, freq_mask_bins=0)
    v = torch.randn(2, 30, 80)
    torch.testing.assert_close(augment(v, torch.tensor([30, 30]), plain), v)
    # mixup only where the partner has valid frames (a partner's padding is not silence)
    mix_only = ByolConfig(mixup_ratio=0.4, gain_db=0.0, time_mask_seconds=0.0, freq_mask_bins=0)
    v[1, 10:] = 0.0
    for _ in range(5):
        out = augment(v, torch.tensor([30, 10]), mix_only)
        torch.testing.assert_close(out[0, 10:], v[0, 10:])
        assert out[1, 10:].abs().sum() == 0


def test_batch_stat_norm_uses_the_batch_in_train_and_eval():
    norm = BatchStatNorm(5)
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    x = torch.randn(6, 5) * 3 + 2
    ref = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True)
    torch.testing.assert_close(norm.train()(x), ref)
    torch.testing.assert_close(norm.eval()(x), ref)  # no running statistics
    torch.testing.assert_close(norm(x[:1]), norm.bias.detach()[None])  # one utterance: the bias


def test_mean_max_pool():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[-2.0], [4.0], [0.0]]])
    assert mean_max_pool(x, torch.tensor([2, 3])).flatten().tolist() == pytest.approx([2.0 + 3.0, 2.0 / 3 + 4.0])


@pytest.mark.parametrize("encoder, frontend", [("zipformer-tiny", "fbank"), ("hubert-tiny", "fbank"),
                                               ("hubert-tiny", "cnn")])
def test_both_encoders_through_the_registry(encoder, frontend):
    torch.manual_seed(0)
    over = "projector_hidden_dim=64,projector_dim=16" + (",frontend_layer3_channels=16" if frontend == "fbank" else "")
    model = build_model(pretrain_config("byol", encoder, frontend, over))
    x, lens = ((torch.randn(2, 150, 80), torch.tensor([150, 110])) if frontend == "fbank"
               else (torch.randn(2, 20000), torch.tensor([20000, 14000])))
    loss, stats = model(x, lens)
    loss.backward()
    assert torch.isfinite(loss) and stats["count_m"] == 2
    model.update_teacher(1)
    feats, flens = model.extract_features(x, lens)
    L = 4 if encoder == "zipformer-tiny" else 2
    assert len(feats) == L + 1 and feats[-1].shape[1] == feats[0].shape[1]


def test_short_training_lowers_loss():
    """Utterances built from 4 'speakers' (a fixed spectral shape each) plus noise."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    shapes = torch.randn(4, 6, generator=g)

    class Front(nn.Module):
        output_dim = 16

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 16)

        def forward(self, x, lens):
            return self.lin(x), lens

    model = ByolModel(Front(), ToyEncoder(), ByolConfig(**SMALL, view_seconds=0.2))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses, stds = [], []
    for step in range(1, 41):
        spk = torch.randint(0, 4, (8,), generator=g)
        x = shapes[spk][:, None, :] + 0.5 * torch.randn(8, 60, 6, generator=g)
        loss, stats = model(x, torch.full((8,), 60))
        opt.zero_grad()
        (loss / stats["count_m"]).backward()
        opt.step()
        model.update_teacher(step)
        losses.append(stats["loss_m"] / stats["count_m"])
        stds.append(stats["target_std"])
    # measured: 4.11 (steps 1-5) -> 1.34 (steps 31-40), target spread 0.26 at step 1, >= 0.236 in 31-40
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert min(stds[-10:]) > 0.5 * stds[0], stds  # no collapse to one point
