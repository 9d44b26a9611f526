"""wav2vec 2.0 (icefall/ssl/wav2vec2.py) against hand computations and naive loops.

Exact resume through the Trainer: test_resume_models.py; pretrain -> fine-tune -> decode through
the recipe entry points: test_method_chain.py (both parametrised over wav2vec2)."""
import math

import pytest
import torch
import torch.nn.functional as F

from icefall.models import build_model, pretrain_config
from icefall.ssl.wav2vec2 import (
    GumbelQuantizer,
    Wav2Vec2Config,
    contrastive_logits,
    diversity_loss,
    gumbel_softmax_st,
    sample_distractors,
)


def test_straight_through_gumbel_forward_and_gradient_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 5, generator=g, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(6, 2, 5, generator=g)))
    w = torch.randn(6, 2, 5, generator=g)
    tau = 0.7
    out = gumbel_softmax_st(logits, tau, noise)
    (out * w).sum().backward()
    y = (logits.detach() + noise) / tau
    for n in range(6):
        for grp in range(2):
            row = y[n, grp].tolist()
            k = row.index(max(row))
            assert out[n, grp].tolist() == [1.0 if j == k else 0.0 for j in range(5)]
            # d/dl_i sum_j w_j softmax(y)_j = s_i (w_i - sum_j s_j w_j) / tau
            e = [math.exp(v - max(row)) for v in row]
            s = [v / sum(e) for v in e]
            sw = sum(si * wi for si, wi in zip(s, w[n, grp].tolist()))
            expected = [si * (wi - sw) / tau for si, wi in zip(s, w[n, grp].tolist())]
            assert logits.grad[n, grp].tolist() == pytest.approx(expected, abs=1e-6)


def test_gumbel_noise_is_standard_gumbel():
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, math.log(3.0)]]).expand(20000, 2)
    picks = gumbel_softmax_st(logits, 1.0).argmax(-1).float().mean().item()
    assert picks == pytest.approx(0.75, abs=0.015)  # Gumbel-max samples softmax(logits)


def test_diversity_loss_by_hand():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 2, 4, generator=g) * 2
    G, V = 2, 4
    ppl = 0.0
    for grp in range(G):
        rows = [[math.exp(v) for v in logits[n, grp].tolist()] for n in range(7)]
        mean = [sum(r[j] / sum(r) for r in rows) / 7 for j in range(V)]
        ppl += math.exp(-sum(p * math.log(p + 1e-7) for p in mean))
    assert diversity_loss(logits).item() == pytest.approx((G * V - ppl) / (G * V), abs=1e-6)
    assert diversity_loss(torch.zeros(3, G, V)).item() == pytest.approx(0.0, abs=1e-5)  # all used
    collapsed = torch.full((3, G, V), -50.0)
    collapsed[:, :, 1] = 50.0
    assert diversity_loss(collapsed).item() == pytest.approx((G * V - G) / (G * V), abs=1e-5)


def test_quantizer_eval_picks_argmax_codevector_per_group():
    torch.manual_seed(0)
    q = GumbelQuantizer(dim=6, groups=2, num_vars=5, latent_dim=8).eval()
    x = torch.randn(4, 6)
    out, stats = q(x, tau=2.0)
    logits = (x @ q.weight_proj.weight.t() + q.weight_proj.bias).view(4, 2, 5)
    vars = q.vars.view(2, 5, 4)
    for n in range(4):
        picks = [int(logits[n, grp].argmax()) for grp in range(2)]
        assert stats["codes"][n].tolist() == picks
        torch.testing.assert_close(out[n], torch.cat([vars[grp, picks[grp]] for grp in range(2)]))
    q.train()
    out, stats = q(x, tau=0.5)  # training: a one-hot sample per group, still one codevector
    for n in range(4):
        picks = stats["codes"][n].tolist()
        torch.testing.assert_close(out[n], torch.cat([vars[grp, picks[grp]] for grp in range(2)]))


@pytest.mark.parametrize("seed", range(25))
def test_distractors_are_other_masked_frames_of_the_same_utterance(seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 9, (4,), generator=g)
    counts[seed % 4] = 2 if seed % 2 else 1
    idx, valid = sample_distractors(counts, 30, g)
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    i = 0
    for b, n in enumerate(counts.tolist()):
        for _ in range(n):
            if n == 1:
                assert not valid[i].any()
            else:
                assert valid[i].all()
                assert all(starts[b] <= j < starts[b] + n and j != i for j in idx[i].tolist())
            i += 1


def test_distractors_are_uniform_over_the_other_frames():
    g = torch.Generator().manual_seed(0)
    idx, _ = sample_distractors(torch.tensor([5]), 20000, g)
    for i in range(5):
        freq = torch.bincount(idx[i], minlength=5).float() / 20000
        assert freq[i] == 0
        assert torch.allclose(freq[torch.arange(5) != i], torch.full((4,), 0.25), atol=0.015)


def test_contrastive_loss_equals_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([4, 1, 6])
    N, D, K = int(counts.sum()), 5, 7
    context = torch.randn(N, D, generator=g)
    targets = torch.randn(N, D, generator=g)
    targets[8] = targets[6]  # same code in one utterance: that distractor must be ignored
    idx, valid = sample_distractors(counts, K, g)
    logits = contrastive_logits(context, targets, idx, valid, temp=0.1)
    loss = F.cross_entropy(logits, torch.zeros(N, dtype=torch.long), reduction="sum")
    naive, saw_duplicate = 0.0, False
    for i in range(N):
        terms = [F.cosine_similarity(context[i], targets[i], dim=0).item() / 0.1]
        for k in range(K):
            j = int(idx[i, k])
            if not valid[i, k] or torch.equal(targets[j], targets[i]):
                saw_duplicate |= bool(valid[i, k])
                continue
            terms.append(F.cosine_similarity(context[i], targets[j], dim=0).item() / 0.1)
        m = max(terms)
        naive += -(terms[0] - m - math.log(sum(math.exp(t - m) for t in terms)))
    assert saw_duplicate
    assert loss.item() == pytest.approx(naive, rel=1e-5)


def tiny(encoder="hubert-tiny", frontend="fbank", **kw):
    torch.manual_seed(0)
    overrides = {"latent_vars": 16, "final_dim": 32, "num_negatives": 10, **kw}
    if frontend == "fbank":
        overrides["frontend_layer3_channels"] = 16
    return build_model(pretrain_config("wav2vec2", encoder, frontend, overrides))


def test_loss_is_contrastive_plus_weighted_diversity_and_penalty():
    model = tiny(frontend="cnn")
    wav, lens = torch.randn(2, 8000), torch.tensor([8000, 6000])
    loss, st = model.train()(wav, lens)
    n = st["count_m"]
    assert n > 0 and 0 < st["diversity"] < 1 and st["temperature"] == 2.0
    assert loss.item() == pytest.approx(st["loss_m"] + 0.1 * st["diversity"] * n + 10 * st["feature_pen"] * n,
                                        rel=1e-5)
    loss.backward()  # the quantizer, its projection and the CNN all learn
    for name in ("quantizer.vars", "quantizer.weight_proj.weight", "project_q.weight",
                 "frontend.feature_extractor.conv_layers.0.conv.weight", "mask_emb"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_temperature_schedule_is_checkpointed():
    model = tiny()
    assert model.temperature == 2.0
    model.set_num_updates(1000)
    assert model.temperature == pytest.approx(2.0 * 0.999995 ** 1000)
    model.set_num_updates(10 ** 6)
    assert model.temperature == 0.5  # floor
    model.set_num_updates(5000)
    other = tiny()
    other.load_state_dict(model.state_dict())
    assert other.temperature == model.temperature == pytest.approx(2.0 * 0.999995 ** 5000)


@pytest.mark.parametrize("encoder", ["hubert-tiny", "zipformer-tiny"])
def test_a_few_steps_lower_the_loss_without_codebook_collapse(encoder):
    model = tiny(encoder, frontend="cnn", dropout_features=0.0)
    g = torch.Generator().manual_seed(0)
    envelope = 1 + torch.sin(2 * math.pi * 3 * torch.arange(16000) / 16000)  # some structure
    wav, lens = torch.randn(2, 16000, generator=g) * envelope, torch.tensor([16000, 12000])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, ppls = [], []
    for step in range(1, 31):
        loss, st = model.train()(wav, lens)
        opt.zero_grad()
        (loss / st["count_m"]).backward()
        opt.step()
        model.set_num_updates(step)
        losses.append(loss.item() / st["count_m"])
        ppls.append(st["codebook_ppl"])
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert min(ppls[-5:]) > 12  # of G V = 32 codes; a collapse gives 2
    assert model.temperature == pytest.approx(2.0 * 0.999995 ** 30)


def test_pretrain_option_defaults_are_the_objectives_own():
    from icefall.ssl.pretrain import get_parser, model_config
    from icefall.utils import AttributeDict

    def cfg(*argv):
        args = get_parser(encoder="zipformer-tiny", frontend="fbank").parse_args(list(argv))
        return model_config(AttributeDict(vars(args))).objective_config

    assert cfg("--method", "wav2vec2").mask_prob == 0.65  # fairseq wav2vec 2.0
    assert cfg("--method", "hubert").mask_prob == 0.8  # fairseq HuBERT
    assert cfg("--method", "wav2vec2", "--mask-prob", "0.5").mask_prob == 0.5
    assert cfg("--method", "wav2vec2") == Wav2Vec2Config()


def test_fbank_front_end_gets_no_gradient_through_the_targets():
    x, lens = torch.randn(2, 200, 80), torch.tensor([200, 160])
    grads = {}
    for target_grad in ("auto", "on"):
        model = tiny(target_grad=target_grad, feature_pen_weight=0.0, num_negatives=0)
        model.train()
        model.encoder.requires_grad_(False)  # the context path cannot reach the front end ...
        model.mask_emb.requires_grad_(False)
        loss, _ = model(x, lens)
        loss.backward()  # ... so only the quantizer path can
        grads[target_grad] = sum(float(p.grad.abs().sum()) for p in model.frontend.parameters()
                                 if p.grad is not None)
    assert grads["auto"] == 0 and grads["on"] > 0
