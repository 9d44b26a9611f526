"""WavLM: gated relative position bias (against Hugging Face's WavLMAttention and WavLMModel on
random weights), utterance mixing (energy ratios by hand, the primary's targets, the mixing
rate), the HF importer, and a few pretraining steps through the shared Trainer that lower the
loss and resume bitwise exactly."""
import json
import math
import re

import pytest
import torch

from icefall.models import build_model, load_model, pretrain_config
from icefall.nn.configs import EncoderConfig, encoder_config
from icefall.nn.transformer import MultiheadSelfAttention, RelativePositionBias, relative_position_bucket
from icefall.ssl.hubert import HubertModel
from icefall.ssl.wavlm import MixPlan, WavlmConfig, mix_utterances, sample_mix_plan
from icefall.ssl.hf_import import read_hf_wavlm
from icefall.utils import AttributeDict, MetricsTracker

transformers = pytest.importorskip("transformers")
from transformers.models.wavlm.modeling_wavlm import WavLMAttention  # noqa: E402


# ---------------------------------------------------------------------- relative position bias
def naive_bucket(r: int, num_buckets: int, max_distance: int) -> int:
    """The WavLM paper's bucketing, one offset at a time."""
    half = num_buckets // 2
    exact = half // 2
    bucket = half if r > 0 else 0
    d = abs(r)
    if d < exact:
        return bucket + d
    return bucket + min(half - 1, exact + int(math.log(d / exact) / math.log(max_distance / exact) * (half - exact)))


@pytest.mark.parametrize("num_buckets,max_distance", [(320, 800), (32, 128)])
def test_relative_position_bucket_equals_naive_loop(num_buckets, max_distance):
    r = torch.arange(-2 * max_distance - 7, 2 * max_distance + 8)
    expected = torch.tensor([naive_bucket(int(v), num_buckets, max_distance) for v in r])
    got = relative_position_bucket(r, num_buckets, max_distance)
    assert torch.equal(got, expected)
    assert got.min() == 0 and got.max() == num_buckets - 1


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # inside HF
def test_gated_attention_equals_hf_wavlm_attention():
    torch.manual_seed(0)
    D, H, T = 32, 4, 150  # T > 80: offsets in the logarithmic buckets too
    ref = WavLMAttention(D, H, dropout=0.0, num_buckets=320, max_distance=100).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.3)
    ours = MultiheadSelfAttention(D, H, gated_rel_pos_bias=True).eval()
    bias = RelativePositionBias(H, 320, 100)
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj", "out_proj", "gru_rel_pos_linear"):
            getattr(ours, name).load_state_dict(getattr(ref, name).state_dict())
        ours.gru_rel_pos_const.copy_(ref.gru_rel_pos_const)
        bias.embedding.weight.copy_(ref.rel_attn_embed.weight)
    x = torch.randn(2, T, D)
    lens = torch.tensor([T, 97])
    valid = torch.arange(T)[None] < lens[:, None]
    with torch.no_grad():
        expected, _, _ = ref(x, attention_mask=valid.long())
        got = ours(x, valid[:, None, None, :], bias(T))
        ungated = MultiheadSelfAttention.forward(ours, x, valid[:, None, None, :], torch.zeros(1, H, T, T))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - ungated).abs().max() > 1e-2  # the bias matters at these weights
    # gate by hand at one head and frame: a * (b * c - 1) + 2 from the grouped sums
    g = ref.gru_rel_pos_linear(x[0, 5].reshape(H, D // H))[1]
    a, b = torch.sigmoid(g[:4].sum()), torch.sigmoid(g[4:].sum())
    torch.testing.assert_close(ours.gate(x)[0, 1, 5, 0], a * (b * ref.gru_rel_pos_const[0, 1, 0, 0] - 1) + 2)


def test_gated_bias_off_leaves_hubert_unchanged():
    plain = encoder_config("hubert-tiny")
    assert not plain.encoder.gated_rel_pos_bias
    keys = set(plain.build().state_dict())
    assert not any("rel_pos" in k for k in keys)
    # a config written before the option existed still reads, with the option off
    old = plain.to_dict()
    for k in ("gated_rel_pos_bias", "rel_pos_buckets", "rel_pos_max_distance"):
        del old["encoder"][k]
    assert EncoderConfig.from_dict(old) == plain
    gated = encoder_config("hubert-tiny", gated_rel_pos_bias=True).build()
    extra = set(gated.state_dict()) - keys
    assert extra == {"encoder.rel_pos_bias.embedding.weight"} | {
        f"encoder.layers.{i}.self_attn.{n}" for i in range(2)
        for n in ("gru_rel_pos_const", "gru_rel_pos_linear.weight", "gru_rel_pos_linear.bias")}


# ---------------------------------------------------------------------- HF WavLMModel import
CONV = [(16, 10, 5), (16, 3, 2), (16, 2, 2)]


def save_hf_wavlm(directory, pre_norm: bool, do_normalize: bool = False):
    cfg = transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        conv_dim=[c for c, _, _ in CONV], conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV], conv_bias=pre_norm,
        feat_extract_norm="layer" if pre_norm else "group", do_stable_layer_norm=pre_norm,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_buckets=320,
        max_bucket_distance=800)
    torch.manual_seed(3 if pre_norm else 4)
    hf = transformers.WavLMModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms, biases, gates so that a mis-mapped one shows
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(directory)
    if do_normalize:
        (directory / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    return hf


@pytest.mark.parametrize("pre_norm", [False, True])
def test_hf_wavlm_hidden_states_match(tmp_path, pre_norm):
    hf = save_hf_wavlm(tmp_path, pre_norm, do_normalize=pre_norm)
    model, config = load_model(f"hf:{tmp_path}")
    assert config.objective == "wavlm" and config.encoder.encoder.gated_rel_pos_bias
    assert model.encoder.layer_norm_first == pre_norm and model.frontend.normalize == pre_norm
    g = torch.Generator().manual_seed(5)
    lens = torch.tensor([16000 * 2, 9000])  # 1599 frames: offsets beyond max_distance too
    wav = torch.randn(2, int(lens[0]), generator=g)
    wav[1, lens[1]:] = 0.0
    with torch.no_grad():
        enc = model.encode(wav, lens, return_hidden=True)
    for b in range(2):  # our padded batch against HF on each utterance alone
        x = wav[b:b + 1, : lens[b]]
        if pre_norm:  # the feature extractor's do_normalize, done by our front end
            x = torch.nn.functional.layer_norm(x, x.shape[1:])
        with torch.no_grad():
            ref = hf(x, output_hidden_states=True)
        t = ref.last_hidden_state.shape[1]
        assert int(enc["lens"][b]) == t
        torch.testing.assert_close(enc["out"][b, :t], ref.last_hidden_state[0], atol=1e-4, rtol=0)
        # every layer; a pre-norm model's last HF entry is after the final LayerNorm
        for i in range(len(enc["hidden"]) - (1 if pre_norm else 0)):
            torch.testing.assert_close(enc["hidden"][i][b, :t], ref.hidden_states[i + 1][0], atol=1e-4, rtol=0)


def test_finetuning_starts_from_hf_wavlm(tmp_path):
    """finetune.py --init-ckpt hf:<dir>: the fine-tuned encoder is HF's WavLM (gated bias
    included), through the common loader."""
    from icefall.asr.finetune import get_parser as finetune_parser, load_ssl_model
    from icefall.data.tokenizer import load_tokenizer, make_char_lang

    hf = save_hf_wavlm(tmp_path / "hf", pre_norm=False)
    lang = make_char_lang(["a b", "c a"], tmp_path / "lang")
    params = vars(finetune_parser(use_ctc=True, use_transducer=False, mask_prob=0.0).parse_args(
        ["--init-ckpt", f"hf:{tmp_path / 'hf'}", "--lang-dir", str(lang)]))
    params["vocab_size"], params["blank_id"] = load_tokenizer(lang).vocab_size, 0
    ssl = load_ssl_model(AttributeDict(params)).eval()
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, _ = ssl(wav, torch.tensor([8000]))
        torch.testing.assert_close(out, hf(wav).last_hidden_state, atol=1e-4, rtol=0)


def test_hf_wavlm_bad_input_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(f"hf:{tmp_path / 'nowhere'}")
    other = tmp_path / "hubert"
    transformers.HubertModel(transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        conv_dim=[16], conv_kernel=[10], conv_stride=[5])).save_pretrained(other)
    with pytest.raises(ValueError, match=re.escape(str(other)) + ".*model_type 'hubert'"):
        read_hf_wavlm(other)
    extra = tmp_path / "extra"
    save_hf_wavlm(extra, pre_norm=False)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(extra / "model.safetensors"))
    sd["encoder.layers.0.attention.mystery.weight"] = torch.zeros(2)
    save_file(sd, str(extra / "model.safetensors"))
    with pytest.raises(ValueError, match=re.escape(str(extra)) + ".*mystery"):
        load_model(f"hf:{extra}")


# ---------------------------------------------------------------------- utterance mixing
def full_plan(lens, **kw):
    return sample_mix_plan(lens, prob=1.0, **kw)


def check_plan_ranges(plan: MixPlan, lens):
    for i in plan.mixed.nonzero().flatten().tolist():
        j, L = int(plan.partner[i]), int(plan.length[i])
        assert j != i
        assert 1 <= L <= int(lens[i]) // 2 and L <= int(lens[j])
        assert 0 <= plan.start[i] and plan.start[i] + L <= lens[i]
        assert 0 <= plan.partner_start[i] and plan.partner_start[i] + L <= lens[j]
        assert -5.0 <= plan.ratio_db[i] <= 5.0


def test_waveform_mixing_hits_the_sampled_energy_ratio():
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([16000, 12000, 7000, 4000])
    wav = torch.randn(4, 16000, generator=g) * torch.tensor([[1.0], [0.1], [3.0], [0.5]])
    for b, n in enumerate(lens.tolist()):
        wav[b, n:] = 0.0
    plan = full_plan(lens, generator=torch.Generator().manual_seed(1))
    mixed, plan = mix_utterances(wav, lens, plan)
    assert plan.mixed.all()
    check_plan_ranges(plan, lens)
    for i in range(4):
        j, L, s, sj = (int(v[i]) for v in (plan.partner, plan.length, plan.start, plan.partner_start))
        added = (mixed[i] - wav[i]).double()
        # only [s, s + L) changed, by a multiple of the partner's segment
        assert added[:s].abs().max() == 0 and added[s + L:].abs().max() == 0
        seg = wav[j, sj:sj + L].double()
        scale = (added[s:s + L] @ seg) / (seg @ seg)
        torch.testing.assert_close(added[s:s + L], scale * seg, atol=1e-5, rtol=1e-4)
        # the ratio by hand: mean power of the primary's valid samples / of what was added
        p = wav[i, : lens[i]].double().pow(2).mean()
        q = added[s:s + L].pow(2).mean()
        assert abs(10 * math.log10(p / q) - float(plan.ratio_db[i])) < 1e-3
    assert torch.equal(mixed[:, 16000:], wav[:, 16000:])


def test_fbank_mixing_adds_linear_mel_power_at_the_sampled_ratio():
    g = torch.Generator().manual_seed(2)
    lens = torch.tensor([300, 220, 160])
    fbank = torch.randn(3, 300, 80, generator=g) * 2 - 5  # log-mel, power around exp(-5)
    fbank[1] += 3.0
    for b, n in enumerate(lens.tolist()):
        fbank[b, n:] = 0.0
    plan = full_plan(lens, generator=torch.Generator().manual_seed(3))
    mixed, plan = mix_utterances(fbank, lens, plan)
    check_plan_ranges(plan, lens)
    for i in range(3):
        j, L, s, sj = (int(v[i]) for v in (plan.partner, plan.length, plan.start, plan.partner_start))
        added = mixed[i].double().exp() - fbank[i].double().exp()  # linear mel power added
        assert torch.equal(mixed[i, :s], fbank[i, :s]) and torch.equal(mixed[i, s + L: lens[i]], fbank[i, s + L: lens[i]])
        seg = fbank[j, sj:sj + L].double().exp()
        ratio = added[s:s + L] / seg  # one gain g for every bin and frame
        torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), atol=0, rtol=1e-3)
        p = fbank[i, : lens[i]].double().exp().mean()
        assert abs(10 * math.log10(p / added[s:s + L].mean()) - float(plan.ratio_db[i])) < 1e-2
    assert torch.equal(mixed[0, 300:], fbank[0, 300:]) and torch.equal(mixed[2, 160:], fbank[2, 160:])


def test_silent_partner_segment_is_not_mixed():
    lens = torch.tensor([8000, 8000])
    wav = torch.zeros(2, 8000)
    wav[0] = torch.randn(8000)
    plan = full_plan(lens, generator=torch.Generator().manual_seed(0))
    mixed, plan = mix_utterances(wav, lens, plan)
    assert plan.mixed.tolist() == [False, True]  # utterance 1 (silent) still gets 0's segment
    assert torch.equal(mixed[0], wav[0])


def test_mixing_probability_and_ratio_distribution_over_seeds():
    lens = torch.tensor([500, 480, 300, 120, 60, 2, 250, 400])
    mixed, ratios = [], []
    for seed in range(400):
        plan = sample_mix_plan(lens, 0.2, generator=torch.Generator().manual_seed(seed))
        check_plan_ranges(plan, lens)
        mixed.append(plan.mixed)
        ratios.append(plan.ratio_db[plan.mixed])
    rate = torch.stack(mixed).double().mean().item()
    assert abs(rate - 0.2) < 0.025, rate  # 3200 draws: standard error 0.007
    r = torch.cat(ratios)
    assert abs(r.mean().item()) < 0.5 and r.min() > -5 and r.max() < 5 and r.min() < -4.5 and r.max() > 4.5
    assert not sample_mix_plan(torch.tensor([100]), 1.0).mixed.any()  # alone in its batch


def tiny_wavlm(mix_prob=1.0, frontend="fbank", encoder="hubert-tiny"):
    cfg = pretrain_config("wavlm", encoder, frontend, dict(num_classes=12, mix_prob=mix_prob, label_rate=100.0,
                                                           feature_pen_weight=0.0, dropout=0.0, mask_length=4))
    torch.manual_seed(0)
    return build_model(cfg), cfg


def fbank_batch(seed=0, B=4, T=120, num_classes=12):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([T, T - 13, T - 40, T - 7][:B])
    x = torch.randn(B, T, 80, generator=g)
    labels = torch.randint(0, num_classes, (B, T), generator=g)
    for b, n in enumerate(lens.tolist()):
        x[b, n:] = 0.0
        labels[b, n:] = -100
    return x, lens, labels


def test_mixing_keeps_the_primary_targets():
    model, cfg = tiny_wavlm()
    assert cfg.encoder.encoder.gated_rel_pos_bias  # --method wavlm turns it on for a Transformer
    model.train()
    x, lens, labels = fbank_batch()
    torch.manual_seed(7)
    loss, stats = model(x, lens, labels)
    assert stats["mixed"] == 4 and -20 <= stats["mix_db"] <= 20
    # the same draws by hand: the plan, the mix, then HuBERT's loss on the mixed input with
    # the primary's labels gives the same loss; the partners' labels do not
    torch.manual_seed(7)
    plan = sample_mix_plan(lens, 1.0)
    mixed, plan = mix_utterances(x, lens, plan)
    rng = torch.get_rng_state()
    primary, _ = HubertModel.forward(model, mixed, lens, labels)
    torch.set_rng_state(rng)
    partners, _ = HubertModel.forward(model, mixed, lens, labels[plan.partner])
    assert torch.equal(loss, primary)
    assert not torch.allclose(loss, partners)
    assert stats["mix_db"] == pytest.approx(plan.ratio_db.sum().item())
    # eval mode (validation): no mixing, HuBERT's loss on the clean input
    model.eval()
    torch.manual_seed(8)
    clean, stats = model(x, lens, labels)
    assert "mixed" not in stats
    torch.manual_seed(8)
    assert torch.equal(clean, HubertModel.forward(model, x, lens, labels)[0])


def test_zipformer_gets_mixing_only_and_waveform_input_mixes():
    model, cfg = tiny_wavlm(frontend="cnn", encoder="zipformer-tiny")
    assert cfg.encoder.encoder.kind == "zipformer" and not hasattr(cfg.encoder.encoder, "gated_rel_pos_bias")
    model.train()
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([16000, 11000])
    wav = torch.randn(2, 16000, generator=g)
    wav[1, 11000:] = 0
    loss, stats = model(wav, lens, torch.randint(0, 12, (2, 100), generator=g))
    assert torch.isfinite(loss) and stats["mixed"] == 2


def test_metrics_tracker_reports_mixing_fraction_and_mean_ratio():
    a, b = MetricsTracker(), MetricsTracker()
    a.update(frames=50, loss=100.0, utterances=4, mixed=1, mix_db=3.0)
    b.update(frames=30, loss=30.0, utterances=6, mixed=2, mix_db=-1.0)
    items = dict((a + b).norm_items())
    assert items["mixed"] == pytest.approx(3 / 10) and items["mix_db"] == pytest.approx(2.0 / 3)
    assert items["loss"] == pytest.approx(130 / 80) and items["utterances"] == 10


# ---------------------------------------------------------------------- pretraining steps
def protos_batches(n, seed, B=4, T=120, C=12):
    """Fbank batches whose 100 Hz labels are runs of 25-49 frames, each run a noisy copy of its
    class's prototype: masked frames are predictable from their unmasked neighbours."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(C, 80, generator=torch.Generator().manual_seed(99)) * 2
    batches = []
    for k in range(n):
        lens = torch.tensor([T, T - 20, T - 8, T - 33][:B])
        labels = torch.full((B, T), -100)
        for b in range(B):
            t = 0
            while t < int(lens[b]):
                d = int(torch.randint(25, 50, (1,), generator=g))
                labels[b, t: min(t + d, int(lens[b]))] = int(torch.randint(0, C, (1,), generator=g))
                t += d
        x = protos[labels.clamp(min=0)] + 0.5 * torch.randn(B, T, 80, generator=g)
        x[labels < 0] = 0.0
        batches.append({"inputs": x, "lengths": lens, "labels": labels, "label_lengths": lens,
                        "cut_ids": [f"c{k}-{b}" for b in range(B)], "seconds": float(lens.sum()) / 100})
    return batches


class Stop(Exception):
    pass


def run_trainer(exp_dir, num_epochs=3, stop_after=None, train=True, **overrides):
    from icefall.ssl.pretrain import build_model as build_from_params, compute_loss, get_parser
    from icefall.trainer import Trainer, make_optimizer, set_schedule_count

    args = get_parser(method="wavlm", encoder="hubert-tiny", frontend="fbank", num_classes=12, label_rate=100.0,
                      feature_pen_weight=0.0, mask_prob=0.3, mask_length=4, mix_prob=0.5, max_duration=160.0,
                      base_lr=0.045, warmup_batches=2, lr_batches=50,
                      encoder_overrides="frontend_layer3_channels=16").parse_args([])
    params = AttributeDict(vars(args))
    params.update(exp_dir=exp_dir, num_epochs=num_epochs, save_every_n=3, average_period=1, log_interval=100,
                  valid_interval=1000, tensorboard=False, seed=5)
    params.update(overrides)
    torch.manual_seed(0)
    model = build_from_params(params)
    optimizer, scheduler = make_optimizer(model, params)
    losses = []

    def loss_fn(model, batch, is_training):
        loss, info = compute_loss(model, batch, is_training)
        losses.append((loss.item() / info["frames"], info["mixed"], info["utterances"]))
        return loss, info

    def before_batch(trainer):
        if stop_after is not None and trainer.params.batch_idx_train > stop_after:
            raise Stop
        set_schedule_count(trainer)

    dl = torch.utils.data.DataLoader(protos_batches(4, seed=1), batch_size=None, shuffle=True)
    trainer = Trainer(params, model, optimizer, scheduler, loss_fn, dl, None, before_batch=before_batch)
    try:
        if train:
            trainer.train()
    except Stop:
        pass
    return trainer, losses


def test_pretraining_lowers_the_loss_and_resumes_exactly(tmp_path):
    full, losses = run_trainer(tmp_path / "full", num_epochs=5)
    per_frame = [x for x, _, _ in losses]
    assert sum(per_frame[-4:]) / 4 < sum(per_frame[:4]) / 4 - 0.3, per_frame
    mixed = sum(m for _, m, _ in losses) / sum(u for _, _, u in losses)
    assert 0.2 < mixed < 0.8  # mix_prob 0.5 over 80 utterances
    # killed mid-epoch 2 and resumed from checkpoint-6.pt: bitwise the unbroken run
    part = tmp_path / "part"
    run_trainer(part, num_epochs=5, stop_after=7)
    assert (part / "checkpoint-6.pt").is_file()
    resumed, _ = run_trainer(part, num_epochs=5, start_batch=6)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any("rel_pos_bias" in k for k in a)
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]
