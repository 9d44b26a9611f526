"""SpidR / DinoSR: codebook EMA by hand, teacher schedules and EMA against their formulas, targets
against brute-force nearest codewords, the loss against a naive all-frames computation, head
wiring, and a short training run on a toy task."""
import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from icefall.nn.transformer import TransformerEncoder
from icefall.ssl.spidr import (
    Codebook,
    SpidrConfig,
    SpidrModel,
    build_spidr,
    dinosr_teacher_decay,
    layer_outputs,
    masked_instance_norm,
    perplexity,
    spidr_teacher_decay,
)


# ---------------------------------------------------------------------- toy modules
class ToyFrontend(nn.Module):
    """(B, T, 6) features -> (B, T, 16)."""

    output_dim = 16

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 16)

    def forward(self, x, lens):
        return self.lin(x), lens


class ToyEncoder(nn.Module):
    """Three layers of widths 12, 10, 8 (per-layer dims differ, like the Zipformer's) and a final
    output ``2 * h3`` that differs from the last layer, so that head wiring is observable."""

    output_dim = 8

    def __init__(self):
        super().__init__()
        self.pos_conv = nn.Linear(16, 16)  # stands for a positional embedding: copied, not averaged
        self.l1, self.l2, self.l3 = nn.Linear(16, 12), nn.Linear(12, 10), nn.Linear(10, 8)
        self.register_buffer("seen", torch.zeros(3))

    def forward(self, x, lens, return_hidden=False):
        x = x + self.pos_conv(x)
        h1 = torch.tanh(self.l1(x))
        h2 = torch.tanh(self.l2(h1))
        h3 = self.l3(h2)
        out = 2 * h3
        return (out, lens, [h1, h2, h3]) if return_hidden else (out, lens)


def toy_model(variant="spidr", **kw):
    torch.manual_seed(0)
    cfg = SpidrConfig(variant=variant, num_codebooks=2, codebook_size=5, mask_length=3, **kw)
    return SpidrModel(ToyFrontend(), ToyEncoder(), cfg)


def toy_input(B=3, T=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 6, generator=g)
    lens = torch.tensor([T, T - 3, T - 5][:B])
    mask = torch.rand(B, T, generator=g) < 0.5
    return x, lens, mask


# ---------------------------------------------------------------------- codebook
def _hand_codebook(decay=0.9):
    cb = Codebook(dim=2, size=3, decay=decay)
    cb.sums.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]]))
    cb.counts.copy_(torch.tensor([1.0, 2.0, 2.0]))  # codewords (1,0), (0,1), (2,2)
    return cb


FRAMES = torch.tensor([[1.2, 0.1], [0.9, -0.3], [2.5, 1.5]])  # -> codewords 0, 0, 2; 1 unused
# tau = 0.9: s0 = .9 (1,0) + .1 (2.1,-.2), n0 = .9 + .1*2; s2 = .9 (4,4) + .1 (2.5,1.5), n2 = 1.8 + .1
HAND_SUMS = torch.tensor([[1.11, -0.02], [0.0, 2.0], [3.85, 3.75]])
HAND_COUNTS = torch.tensor([1.1, 2.0, 1.9])


def test_codebook_ema_update_by_hand():
    cb = _hand_codebook()
    labels = cb.assign(FRAMES)
    assert labels.tolist() == [0, 0, 2]
    # two micro-batches accumulate into one update (gradient accumulation)
    cb.accumulate(FRAMES[:1], labels[:1])
    cb.accumulate(FRAMES[1:], labels[1:])
    cb.update()
    torch.testing.assert_close(cb.sums, HAND_SUMS)
    torch.testing.assert_close(cb.counts, HAND_COUNTS)
    torch.testing.assert_close(cb.codewords()[1], torch.tensor([0.0, 1.0]))  # inactive: unmoved
    torch.testing.assert_close(cb.codewords()[0], torch.tensor([1.11 / 1.1, -0.02 / 1.1]))
    # no statistics since: nothing moves
    cb.update()
    torch.testing.assert_close(cb.sums, HAND_SUMS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _codebook_rank(rank, port, out_dir):
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "localhost", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cb = _hand_codebook()
    frames = FRAMES[:2] if rank == 0 else FRAMES[2:]  # each rank sees part of the frames
    cb.accumulate(frames, cb.assign(frames))
    cb.update()
    torch.save({"sums": cb.sums, "counts": cb.counts}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_codebook_statistics_all_reduced_across_ranks(tmp_path):
    # fork: the workers need no re-import of torch and this module
    mp.start_processes(_codebook_rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["sums"], HAND_SUMS)
        torch.testing.assert_close(got["counts"], HAND_COUNTS)


def test_nearest_codeword_vs_brute_force():
    g = torch.Generator().manual_seed(0)
    cb = Codebook(dim=7, size=33)
    cb.counts.copy_(torch.rand(33, generator=g) + 0.5)
    z = torch.randn(200, 7, generator=g) * 1.5
    brute = torch.cdist(z.double(), cb.codewords().double()).argmin(1)
    assert torch.equal(cb.assign(z), brute)


def test_perplexity():
    assert perplexity(F.one_hot(torch.arange(8) % 4, 4)) == pytest.approx(4.0, rel=1e-5)
    assert perplexity(F.one_hot(torch.zeros(6, dtype=torch.long), 4)) == pytest.approx(1.0)
    # probabilities: 2 ** H of the mean distribution
    p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    assert perplexity(p) == pytest.approx(2 ** 1.5, rel=1e-5)  # mean (.5,.25,.25): H = 1.5 bits


def test_masked_instance_norm_matches_per_utterance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 4, generator=g) * 3 + 1
    lens = torch.tensor([9, 6, 2])
    got = masked_instance_norm(x, lens)
    for b, n in enumerate(lens.tolist()):
        ref = F.instance_norm(x[b : b + 1, :n].transpose(1, 2)).transpose(1, 2)[0]
        torch.testing.assert_close(got[b, :n], ref, atol=1e-5, rtol=1e-5)
        assert got[b, n:].abs().sum() == 0


# ---------------------------------------------------------------------- teacher
def test_teacher_decay_schedules():
    for t in (0, 1, 1000, 10000, 50000):
        assert spidr_teacher_decay(t) == pytest.approx(1 - 0.001 * math.exp(-t / 10000), abs=1e-15)
    assert spidr_teacher_decay(0) == pytest.approx(0.999)
    steps = [0, 10, 100, 10**4, 10**5]
    vals = [spidr_teacher_decay(t) for t in steps]
    assert all(a < b for a, b in zip(vals, vals[1:])) and vals[-1] > 1 - 1e-7
    # DinoSR: 0.999 -> 0.9999 linearly over 30k steps, constant, then frozen (1.0) from 200k
    expected = {0: 0.999, 15000: 0.99945, 30000: 0.9999, 100000: 0.9999, 199999: 0.9999,
                200000: 1.0, 300000: 1.0}
    for t, v in expected.items():
        assert dinosr_teacher_decay(t) == pytest.approx(v, abs=1e-12), t
    assert toy_model("spidr").teacher_decay(500) == spidr_teacher_decay(500)
    assert toy_model("dinosr").teacher_decay(500) == dinosr_teacher_decay(500)


def _perturb_student(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        model.encoder.seen.fill_(7.0)


def test_teacher_ema_update_and_pos_conv_copied():
    model = toy_model("spidr", ema_timescale=100.0)
    assert model.copied_params == ["pos_conv.weight", "pos_conv.bias"]
    _perturb_student(model)
    t0 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    s0 = {n: p.clone() for n, p in model.encoder.named_parameters()}
    beta = model.update_teacher(50)
    assert beta == pytest.approx(1 - 0.001 * math.exp(-0.5))
    for n, p in model.teacher.named_parameters():
        if n.startswith("pos_conv"):
            torch.testing.assert_close(p, s0[n], rtol=0, atol=0)
        else:
            torch.testing.assert_close(p, beta * t0[n] + (1 - beta) * s0[n])
            assert not torch.allclose(p, s0[n])
    for n, p in model.encoder.named_parameters():
        assert torch.equal(p, s0[n])  # the student is untouched
    assert model.teacher.seen.tolist() == [7.0] * 3  # buffers follow the student
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_dinosr_teacher_frozen_after_freeze_step():
    model = toy_model("dinosr", teacher_freeze_step=100)
    _perturb_student(model)
    t0 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    assert model.update_teacher(100) == 1.0
    for n, p in model.teacher.named_parameters():
        assert torch.equal(p, t0[n])


def test_transformer_positional_conv_copied():
    model = build_spidr("hubert-tiny", "spidr", num_codebooks=2)
    assert all(n.startswith("pos_conv.") for n in model.copied_params)
    assert len(model.copied_params) == sum(1 for _ in model.encoder.pos_conv.parameters())
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1)
    model.update_teacher(1)
    s = dict(model.encoder.named_parameters())
    for n, p in model.teacher.named_parameters():
        assert torch.equal(p, s[n]) == (n in model.copied_params), n


# ---------------------------------------------------------------------- loss and wiring
def naive_loss(model, x_in, lens, mask):
    """Every frame scored with full logits and brute-force targets, then the masked valid frames
    are summed (the model only ever computes those)."""
    x = model.frontend.lin(x_in)
    xm = torch.where(mask.unsqueeze(-1), model.mask_emb, x)
    out, _, hid = model.encoder(xm, lens, return_hidden=True)
    _, _, thid = model.teacher(x, lens, return_hidden=True)
    B, T, _ = x.shape
    sel = mask & (torch.arange(T)[None] < lens[:, None])
    total = torch.zeros(B, T)
    for i, layer in enumerate(model.target_layers):
        z = torch.zeros_like(thid[layer - 1])
        for b, n in enumerate(lens.tolist()):  # instance norm per utterance over its frames
            z[b, :n] = F.instance_norm(thid[layer - 1][b : b + 1, :n].transpose(1, 2)).transpose(1, 2)[0]
        cw = model.codebooks[i].codewords()
        labels = torch.cdist(z.double().reshape(B * T, -1), cw.double()).argmin(1).reshape(B, T)
        h = hid[layer - 1] if model.cfg.variant == "spidr" else out
        logits = model.heads[i](h)
        total += F.cross_entropy(logits.reshape(B * T, -1), labels.reshape(-1), reduction="none").reshape(B, T)
    return (total / len(model.target_layers))[sel].sum(), sel


@pytest.mark.parametrize("variant", ["spidr", "dinosr"])
def test_loss_matches_naive_on_masked_frames_only(variant):
    model = toy_model(variant)
    x, lens, mask = toy_input()
    mask[1, 9:] = True  # padded frames inside the mask must still not count
    loss, stats = model(x, lens, mask=mask)
    ref, sel = naive_loss(model, x, lens, mask)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    assert stats["count_m"] == sel.sum().item() and stats["loss_m"] == pytest.approx(loss.item())
    assert 1.0 <= stats["codebook_ppl"] <= 5 and 1.0 <= stats["pred_ppl"] <= 5
    # nothing masked: nothing scored
    loss0, stats0 = model(x, lens, mask=torch.zeros_like(mask))
    assert loss0.item() == 0.0 and stats0["count_m"] == 0.0
    loss.backward()  # the mask embedding is what the student sees at the scored frames
    assert model.mask_emb.grad is not None and model.mask_emb.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["spidr", "dinosr"])
def test_head_wiring(variant):
    model = toy_model(variant)
    x, lens, mask = toy_input()
    seen = {}
    for i, head in enumerate(model.heads):
        head.register_forward_pre_hook(lambda m, inp, i=i: seen.__setitem__(i, inp[0].detach()))
    model(x, lens, mask=mask)
    xm = torch.where(mask.unsqueeze(-1), model.mask_emb, model.frontend.lin(x))
    out, _, hid = model.encoder(xm, lens, return_hidden=True)
    sel = mask & (torch.arange(x.shape[1])[None] < lens[:, None])
    assert model.target_layers == [2, 3]
    for i, layer in enumerate(model.target_layers):
        expected = hid[layer - 1] if variant == "spidr" else out  # SpidR: layer k; DinoSR: last
        torch.testing.assert_close(seen[i], expected[sel].detach())
    dims = [h.in_features for h in model.heads]
    assert dims == ([10, 8] if variant == "spidr" else [8, 8])
    assert [c.sums.shape[1] for c in model.codebooks] == [10, 8]  # teacher layer widths


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_ffn_tap_is_feedforward_output_before_residual(layer_norm_first):
    torch.manual_seed(0)
    enc = TransformerEncoder(embed_dim=16, ffn_dim=24, num_heads=2, num_layers=2, layerdrop=0.0,
                             conv_pos=4, conv_pos_groups=2, layer_norm_first=layer_norm_first).eval()
    x, lens = torch.randn(2, 7, 16), torch.tensor([7, 7])
    with torch.no_grad():
        _, _, ffn = layer_outputs(enc, x, lens, "ffn")
        _, _, blocks = enc(x, lens, return_hidden=True)
        h = x + enc.pos_conv(x)
        inputs = [h if layer_norm_first else enc.layer_norm(h), blocks[0]]
        for k, layer in enumerate(enc.layers):
            a = inputs[k]
            if layer_norm_first:
                a = a + layer.self_attn(layer.self_attn_layer_norm(a))
                ref = layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(a))))
            else:
                a = layer.self_attn_layer_norm(a + layer.self_attn(a))
                ref = layer.fc2(F.gelu(layer.fc1(a)))
            torch.testing.assert_close(ffn[k], ref, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(ffn[k], blocks[k], atol=1e-3)


def test_codebooks_learn_only_in_training_mode():
    model = toy_model()
    x, lens, mask = toy_input()
    before = [c.sums.clone() for c in model.codebooks]
    model.eval()
    model(x, lens, mask=mask)
    model.update_teacher(1)
    assert all(torch.equal(c.sums, b) for c, b in zip(model.codebooks, before))
    model.train()
    model(x, lens, mask=mask)
    model.update_teacher(2)
    assert all(not torch.equal(c.sums, b) for c, b in zip(model.codebooks, before))


# ---------------------------------------------------------------------- units and features
def test_predict_units_and_extract_features():
    model = toy_model("spidr").eval()
    x, lens, _ = toy_input()
    feats, flens = model.extract_features(x, lens)
    _, _, hid = model.encoder(model.frontend.lin(x), lens, return_hidden=True)
    assert len(feats) == 4 and torch.equal(flens, lens)
    valid = (torch.arange(x.shape[1])[None] < lens[:, None]).unsqueeze(-1)
    torch.testing.assert_close(feats[2], hid[1] * valid)
    units, ulens = model.predict_units(x, lens, layer=3)
    ref = model.heads[1](hid[2]).argmax(-1)
    assert torch.equal(units[valid[..., 0]], ref[valid[..., 0]])
    assert (units[~valid[..., 0]] == -1).all()
    probs, _ = model.predict_units(x, lens, layer=2, return_probs=True)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    with pytest.raises(ValueError):
        model.predict_units(x, lens, layer=1)  # no codebook on layer 1 (K = 2 of 3)


def test_frontend_freeze_step_survives_checkpoint():
    model = toy_model(freeze_frontend_step=5)
    x, lens, mask = toy_input()
    model.update_teacher(4)
    model(x, lens, mask=mask)[0].backward()
    assert model.frontend.lin.weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.update_teacher(5)
    fresh = toy_model(freeze_frontend_step=5)
    fresh.load_state_dict(model.state_dict())  # num_updates is a buffer: the freeze is restored
    for m in (model, fresh):
        m(x, lens, mask=mask)[0].backward()
        assert m.frontend.lin.weight.grad is None and m.encoder.l1.weight.grad is not None


# ---------------------------------------------------------------------- named configs
def test_build_spidr_transformer_table5():
    model = build_spidr("hubert-tiny", "spidr", num_codebooks=2, codebook_size=16)
    assert model.tap == "ffn" and model.encoder.layerdrop == 0.0
    for layer in model.encoder.layers:
        assert all(getattr(layer.self_attn, f"{q}_proj").bias is None for q in "qkv")
    assert model.frontend.normalize and model.frontend.feature_grad_mult == 1.0
    wav, lens = torch.randn(2, 4000), torch.tensor([4000, 3000])
    loss, stats = model(wav, lens)
    loss.backward()
    # every trainable parameter reaches the loss (DDP without find_unused_parameters)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [] and stats["count_m"] > 0
    assert build_spidr("hubert-tiny", "dinosr", num_codebooks=2).encoder.layerdrop == 0.0  # tiny cfg
    with pytest.raises(ValueError):
        build_spidr("hubert-tiny", "spidr")  # K = 8 > 2 layers


@pytest.mark.parametrize("variant", ["spidr", "dinosr"])
def test_build_spidr_zipformer_per_layer_dims(variant):
    model = build_spidr("zipformer-tiny", variant, num_codebooks=3, codebook_size=16)
    # zipformer-tiny: one layer per stack of widths (64, 96, 128, 96): top 3 layers
    assert model.tap == "block" and model.target_layers == [2, 3, 4]
    assert [c.sums.shape[1] for c in model.codebooks] == [96, 128, 96]
    assert [h.in_features for h in model.heads] == ([96, 128, 96] if variant == "spidr" else [128] * 3)
    if variant == "spidr":  # one forward/backward/update is enough to show the dims fit
        wav, lens = torch.randn(2, 3200), torch.tensor([3200, 2400])
        loss, stats = model(wav, lens)
        loss.backward()
        assert torch.isfinite(loss) and stats["count_m"] > 0
        model.update_teacher(1)


# ---------------------------------------------------------------------- toy training
class FeatFrontend(nn.Module):
    output_dim = 32

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 32)

    def forward(self, x, lens):
        return self.lin(x), lens


def toy_batch(g, protos, B=8, T=60):
    """Segments of 3-8 frames, each a noisy copy of one of 8 prototype vectors ("phones")."""
    x = torch.zeros(B, T, protos.shape[1])
    for b in range(B):
        t = 0
        while t < T:
            d = int(torch.randint(3, 9, (1,), generator=g))
            x[b, t : t + d] = protos[int(torch.randint(0, len(protos), (1,), generator=g))]
            t += d
    lens = torch.full((B,), T)
    lens[-1] = T - 10
    return x + 0.3 * torch.randn(x.shape, generator=g), lens


def train_toy(variant, steps=50, V=16):
    """Train a 3-layer Transformer (K = 2 codebooks of V) on :func:`toy_batch` with Adam.
    Returns per-step (loss per masked frame, codebook perplexity, prediction perplexity)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(8, 16, generator=g)
    enc = TransformerEncoder(embed_dim=32, ffn_dim=64, num_heads=4, num_layers=3, layerdrop=0.0,
                             conv_pos=8, conv_pos_groups=4, qkv_bias=False, dropout=0.0,
                             attention_dropout=0.0)
    cfg = SpidrConfig(variant=variant, num_codebooks=2, codebook_size=V, mask_length=4,
                      ema_start_decay=0.99, ema_timescale=100.0, ema_end_decay=0.999,
                      ema_anneal_end_step=50)
    model = SpidrModel(FeatFrontend(), enc, cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for step in range(1, steps + 1):
        x, lens = toy_batch(g, protos)
        loss, stats = model(x, lens)
        opt.zero_grad()
        (loss / stats["count_m"]).backward()
        opt.step()
        model.update_teacher(step)
        history.append((loss.item() / stats["count_m"], stats["codebook_ppl"], stats["pred_ppl"]))
    return history


@pytest.mark.parametrize("variant", ["spidr", "dinosr"])
def test_short_training_lowers_loss_without_codebook_collapse(variant):
    V = 16
    losses, ppls, _ = zip(*train_toy(variant, V=V))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > math.log(V) - 0.5  # starts near chance
    assert last < first - 0.3, (first, last)
    assert min(ppls[-10:]) > 4.0, ppls[-10:]  # far from a collapse to 1 (V = 16)


# ---------------------------------------------------------------------- shared Trainer
@pytest.mark.parametrize("accum_grad", [1, 2])
def test_trainer_after_step_updates_teacher_once_per_optimizer_step(tmp_path, accum_grad):
    from icefall.trainer import Trainer
    from icefall.ssl.spidr import spidr_after_step
    from icefall.utils import AttributeDict, MetricsTracker

    model = toy_model()
    teacher0 = model.teacher.l1.weight.clone()
    sums0 = [c.sums.clone() for c in model.codebooks]
    batches = [toy_input(seed=s)[:2] for s in range(4)]

    def compute_loss(model, batch, is_training):
        loss, stats = model(*batch)
        return loss, MetricsTracker({"frames": stats["count_m"], "loss": stats["loss_m"]})

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    params = AttributeDict(exp_dir=tmp_path, num_epochs=1, tensorboard=False, accum_grad=accum_grad)
    Trainer(params, model, opt, None, compute_loss, batches, after_step=spidr_after_step).train()
    assert int(model.num_updates) == 4 // accum_grad  # optimizer steps, not batches
    assert not torch.equal(model.teacher.l1.weight, teacher0)
    assert all(not torch.equal(c.sums, s) for c, s in zip(model.codebooks, sums0))


# ---------------------------------------------------------------------- units (icefall/ssl/units.py)
def test_deduplicate():
    from icefall.ssl.units import deduplicate

    assert deduplicate([3, 3, 5, 5, 5, 3, 7]) == [3, 5, 3, 7]
    assert deduplicate([]) == [] and deduplicate([4]) == [4]


def test_codebook_units_and_layer_features_in_cuts(tmp_path):
    import numpy as np
    import soundfile as sf
    from lhotse import CutSet, Recording, RecordingSet

    from icefall.ssl.units import layer_feature_fn, write_codebook_units

    rng = np.random.default_rng(0)
    recs = []
    for i, n in enumerate([8000, 5600]):
        sf.write(tmp_path / f"u{i}.wav", 0.1 * rng.standard_normal(n), 16000)
        recs.append(Recording.from_file(tmp_path / f"u{i}.wav", recording_id=f"u{i}"))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs))
    model = build_spidr("hubert-tiny", "spidr", num_codebooks=2, codebook_size=16).eval()
    out = write_codebook_units(cuts, model, layer=2, out_path=tmp_path / "units.jsonl.gz")
    # reference: both utterances in one padded batch
    wavs = torch.zeros(2, 8000)
    for i, c in enumerate(cuts):
        wavs[i, : c.num_samples] = torch.as_tensor(c.load_audio()[0])
    lens = torch.tensor([8000, 5600])
    ref_units, ulens = model.predict_units(wavs, lens, layer=2)
    ref_feats, _ = model.extract_features(wavs, lens, layers=[1])
    feature_fn = layer_feature_fn(model, layer=1)
    for i, c in enumerate(CutSet.from_file(out)):
        n = int(ulens[i])
        assert [int(u) for u in c.custom["units"].split()] == ref_units[i, :n].tolist()
        torch.testing.assert_close(feature_fn(c), ref_feats[0][i, :n], rtol=1e-4, atol=1e-4)
