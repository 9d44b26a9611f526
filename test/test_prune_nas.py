"""Tests of NAS-based channel-wise pruning (icefall/prune/nas.py).

References: hand-computed candidate masks and expected sizes, the masked model's outputs for
the compact (channels removed) model, the closed-form cosine schedule of the temperature T.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn

from icefall.nn.transformer import TransformerEncoder
from icefall.prune.export import export_compact, linear_shapes, load_compact
from icefall.prune.gates import GateController, current_sparsity, remove_gates
from icefall.prune.nas import (
    PAPER_PRUNE_FRACTIONS,
    ChannelMaskedLinear,
    add_nas_channels,
    arch_parameters,
    candidate_masks,
    compact_channels,
    expected_kept,
    extra_parameter_counts,
    keep_counts,
    nas_owners,
    nas_regularizer,
    resample_gumbel,
)

FRACTIONS = (0.0, 0.5, 0.75)


def _encoder(layers=1, seed=0):
    torch.manual_seed(seed)
    enc = TransformerEncoder(embed_dim=8, ffn_dim=16, num_heads=2, num_layers=layers, dropout=0.0,
                             attention_dropout=0.0, layerdrop=0.0, conv_pos=4, conv_pos_groups=2)
    with torch.no_grad():  # weights of varied magnitude, so the rankings are not ties
        for p in enc.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return enc


def test_keep_counts_and_candidate_masks_by_hand():
    assert keep_counts(16, PAPER_PRUNE_FRACTIONS) == [16, 12, 8, 4, 2, 2, 1]
    assert keep_counts(4, (0.0, 0.99 - 0.0)) == [4, 1]  # never zero channels
    with pytest.raises(ValueError):
        keep_counts(4, (1.0,))
    imp = torch.tensor([3.0, 1.0, 2.0, 0.0])
    m = candidate_masks(imp, FRACTIONS)
    assert m.tolist() == [[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]]
    # Two heads of two channels: each head keeps its own best channel at 50%.
    m = candidate_masks(imp, (0.0, 0.5), num_heads=2)
    assert m.tolist() == [[1, 1, 1, 1], [1, 0, 1, 0]]
    imp = torch.tensor([0.0, 1.0, 5.0, 4.0])
    assert candidate_masks(imp, (0.5,), num_heads=2).tolist() == [[0, 1, 1, 0]]


def test_masks_respect_candidate_widths_and_are_nested():
    enc = _encoder(layers=2)
    names = add_nas_channels(enc, PAPER_PRUNE_FRACTIONS)
    assert len(names) == 12 and all(isinstance(enc.get_submodule(n), ChannelMaskedLinear) for n in names)
    for name, o in nas_owners(enc).items():
        masks = o.candidate_masks
        assert masks.shape[0] == 7
        heads = 2 if "self_attn" in name else 1
        per_head = masks.view(7, heads, -1).sum(-1)  # kept channels per head and candidate
        expected = torch.tensor(keep_counts(masks.shape[1] // heads, PAPER_PRUNE_FRACTIONS))
        assert torch.equal(per_head, expected[:, None].expand(7, heads))
        # a narrower candidate keeps a subset of a wider one's channels
        assert all(bool((masks[i + 1] <= masks[i]).all()) for i in range(6))
    # In eval mode the binary mask is the argmax candidate's, rows / columns as the axis says.
    enc.eval()
    owner = enc.layers[0].fc1
    with torch.no_grad():
        owner.arch_logits.copy_(torch.tensor([0, 0, 0, 5.0, 0, 0, 0]))
    c = owner.candidate_masks[3].float()
    assert torch.equal(enc.layers[0].fc1.binary_mask(), c[:, None].expand(16, 8))
    assert torch.equal(enc.layers[0].fc2.binary_mask(), c[None, :].expand(8, 16))
    assert torch.equal(enc.layers[0].fc1.mask(), enc.layers[0].fc1.binary_mask())


def test_expected_size_equals_hand_computation():
    enc = _encoder(layers=1)
    add_nas_channels(enc, FRACTIONS, tau=1.0)
    att, ffn = enc.layers[0].self_attn.q_proj, enc.layers[0].fc1
    with torch.no_grad():
        att.arch_logits.copy_(torch.tensor([0.5, 0.25, 0.25]).log())
        ffn.arch_logits.copy_(torch.tensor([0.2, 0.3, 0.5]).log())
    enc.train()
    kept, total = expected_kept(enc)
    # attention: 8 channels (2 heads x 4) -> keeps 8, 4, 2; a channel spans q, k, v rows (3 x 8)
    # and an out_proj column (8): 32 weights.  ffn: 16 channels -> 16, 8, 4; 8 + 8 weights each.
    hand_att = (0.5 * 8 + 0.25 * 4 + 0.25 * 2) * 32
    hand_ffn = (0.2 * 16 + 0.3 * 8 + 0.5 * 4) * 16
    assert total == 4 * 8 * 8 + 2 * 8 * 16
    assert kept.item() == pytest.approx(hand_att + hand_ffn)
    assert nas_regularizer(enc).item() == pytest.approx((hand_att + hand_ffn) / total)
    # gradient reaches the logits: d/dlogit of sum_i softmax_i s_i = lambda_j (s_j - E[s])
    kept.backward()
    lam = torch.tensor([0.2, 0.3, 0.5])
    sizes = torch.tensor([16.0, 8, 4]) * 16
    torch.testing.assert_close(ffn.arch_logits.grad, lam * (sizes - (lam * sizes).sum()))
    # T halves: lambda = softmax(logits / T)
    with torch.no_grad():
        ffn.tau = 0.5
    lam2 = torch.softmax(torch.tensor([0.2, 0.3, 0.5]).log() / 0.5, 0)
    kept2, _ = expected_kept(enc)
    assert kept2.item() == pytest.approx(hand_att + float(lam2 @ torch.tensor([16.0, 8, 4])) * 16)


def test_gumbel_noise_is_shared_by_a_group_and_trains_the_logits():
    enc = _encoder(layers=1)
    add_nas_channels(enc, FRACTIONS)
    enc.train()
    resample_gumbel(enc, torch.Generator().manual_seed(0))
    block = enc.layers[0]
    torch.testing.assert_close(block.fc1.channel_mask(), block.fc2.channel_mask())
    assert block.fc1.owner.gumbel is not None
    # The regulariser alone drives every group to its narrowest candidate.
    opt = torch.optim.SGD(arch_parameters(enc), lr=1.0)
    for step in range(50):
        resample_gumbel(enc)
        opt.zero_grad()
        nas_regularizer(enc).backward()
        opt.step()
    enc.eval()
    assert [int(o.arch_logits.argmax()) for o in nas_owners(enc).values()] == [2, 2]
    overall, _ = current_sparsity(enc)
    # attention keeps 2 of 8 channels, ffn 4 of 16: 75% of both groups' weights
    assert overall == pytest.approx(0.75)


def test_extra_parameters_next_to_gate_thresholds():
    enc = _encoder(layers=2)
    add_nas_channels(enc, PAPER_PRUNE_FRACTIONS)
    assert extra_parameter_counts(enc) == {"nas_arch_params": 2 * 2 * 7, "gate_thresholds": 12}


def test_temperature_follows_the_papers_cosine_schedule():
    enc = _encoder(layers=1)
    add_nas_channels(enc, FRACTIONS)
    ctrl = GateController(target_sparsity=0.5, eta=1.0, total_steps=10)
    for step in (0, 3, 10, 20):
        ctrl.update(enc, step, sparsity=0.0)
        frac = min(step / 10, 1.0)
        closed = 0.01 + 0.5 * (0.5 - 0.01) * (1 + math.cos(math.pi * frac))
        assert all(o.tau == pytest.approx(closed) for o in nas_owners(enc).values())


@pytest.mark.parametrize("choice", [(0, 0), (1, 2), (2, 1)])
def test_compact_export_equals_masked_model(choice, tmp_path):
    enc = _encoder(layers=2, seed=1)
    dense = copy.deepcopy(enc).eval()
    add_nas_channels(enc, FRACTIONS)
    x = torch.randn(2, 7, 8)
    lens = torch.tensor([7, 5])
    enc.train()  # uniform logits, no noise drawn: dense-candidate mixture != dense model
    with torch.no_grad():
        for layer in enc.layers:
            layer.self_attn.q_proj.arch_logits.copy_(torch.nn.functional.one_hot(
                torch.tensor(choice[0]), 3) * 10.0)
            layer.fc1.arch_logits.copy_(torch.nn.functional.one_hot(torch.tensor(choice[1]), 3) * 10.0)
    enc.eval()
    with torch.no_grad():
        masked, _ = enc(x, lens)
        if choice == (0, 0):
            torch.testing.assert_close(masked, dense(x, lens)[0])
        # sparse-file export (masks and masked biases folded) into a plain model
        export_compact(enc, tmp_path / "c.pt")
        plain = load_compact(tmp_path / "c.pt", copy.deepcopy(dense))
        torch.testing.assert_close(plain(x, lens)[0], masked)
        small = copy.deepcopy(enc)
        shapes = linear_shapes(small)
        widths = compact_channels(small)
        out, _ = small(x, lens)
        # the channel-compact file: narrower linears, rebuilt in a freshly built plain model
        report = export_compact(small, tmp_path / "narrow.pt", dense_shapes=shapes)
        rebuilt = load_compact(tmp_path / "narrow.pt", copy.deepcopy(dense))
        torch.testing.assert_close(rebuilt(x, lens)[0], masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, masked, rtol=1e-5, atol=1e-5)
    narrowed = report["narrowed"]
    assert set(narrowed) == (set() if choice == (0, 0) else {
        f"layers.{i}.{n}" for i in range(2) for n in (
            (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"] if choice[0] else [])
            + (["fc1", "fc2"] if choice[1] else []))})
    assert rebuilt.layers[1].fc2.weight.shape == (8, [16, 8, 4][choice[1]])
    assert (report["compact_bytes"] < report["dense_bytes"]) == (choice != (0, 0))
    assert not any(isinstance(m, ChannelMaskedLinear) for m in small.modules())
    att_w = [8, 4, 2][choice[0]]
    ffn_w = [16, 8, 4][choice[1]]
    assert widths["layers.0.attention"] == att_w and widths["layers.1.ffn"] == ffn_w
    layer = small.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (att_w, 8)
    assert layer.self_attn.out_proj.weight.shape == (8, att_w)
    assert layer.fc1.weight.shape == (ffn_w, 8) and layer.fc2.weight.shape == (8, ffn_w)
    # remove_gates folds the masks (biases included) like any masked layer
    folded = remove_gates(copy.deepcopy(enc))
    with torch.no_grad():
        torch.testing.assert_close(folded(x, lens)[0], masked)


def test_narrowed_file_refuses_a_model_without_that_linear(tmp_path):
    enc = _encoder(layers=1)
    add_nas_channels(enc, FRACTIONS)
    with torch.no_grad():
        enc.layers[0].fc1.arch_logits.copy_(torch.tensor([0.0, 9.0, 0.0]))
    shapes = linear_shapes(enc)
    compact_channels(enc)
    export_compact(enc, tmp_path / "n.pt", dense_shapes=shapes)
    other = nn.Module()
    other.layers = nn.ModuleList([nn.Module()])
    other.layers[0].fc1 = nn.Conv1d(8, 16, 1)
    with pytest.raises(ValueError, match="layers.0.fc1 is a Conv1d"):
        load_compact(tmp_path / "n.pt", other)


def test_nas_needs_transformer_blocks():
    with pytest.raises(ValueError, match="Transformer"):
        add_nas_channels(nn.Sequential(nn.Linear(2, 2)))


def test_recipe_hooks_run_nas_and_write_a_plain_checkpoint(tmp_path):
    """--method nas through PruneHooks: logits in the threshold group, eta * frames * R added,
    T annealed, Gumbel noise drawn per step; pruned.pt loads into the plain model."""
    from types import SimpleNamespace

    from icefall.checkpoint import load_file
    from icefall.prune.finetune import PruneHooks, finish_pruning, get_parser
    from icefall.utils import AttributeDict, MetricsTracker

    args = get_parser().parse_args(["--method", "nas", "--nas-fractions", "0", "0.5", "0.75"])
    assert args.nas_fractions == [0.0, 0.5, 0.75] and args.gate_scale == "absolute"
    params = AttributeDict(vars(args))
    params.update(exp_dir=tmp_path, num_epochs=1, accum_grad=1, log_interval=1, batch_idx_train=0,
                  base_lr=0.045, lr_batches=1000, lr_epochs=20, warmup_batches=10, eta=3.0,
                  controller="paper", target_sparsity=0.5)
    enc = _encoder(layers=2)
    dense = copy.deepcopy(enc)
    hooks = PruneHooks()
    hooks.setup_model(enc, params)
    assert len(nas_owners(enc)) == 4
    opt, _ = hooks.make_optimizer(enc, params)
    assert opt.param_groups[1]["params"] == arch_parameters(enc)
    assert opt.param_groups[1]["base_lr"] == 0.05  # --arch-lr, not --threshold-lr

    x, lens = torch.randn(2, 5, 8), torch.tensor([5, 5])

    def base_loss(m, batch, is_training):
        info = MetricsTracker()
        info["frames"] = 10
        return m(*batch)[0].sum(), info

    loss_fn = hooks.wrap_compute_loss(base_loss, None)
    enc.train()
    hooks.before_batch(SimpleNamespace(model=enc, params=params, tb_writer=None, rank=0))
    assert hooks.eta == 3.0 and all(o.gumbel is not None for o in nas_owners(enc).values())
    assert all(o.tau == pytest.approx(0.5) for o in nas_owners(enc).values())
    loss, _ = loss_fn(enc, (x, lens), True)
    assert loss.item() == pytest.approx(enc(x, lens)[0].sum().item() + 3.0 * 10 * nas_regularizer(enc).item(),
                                        rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in arch_parameters(enc))

    with torch.no_grad():
        enc.layers[1].fc1.arch_logits.copy_(torch.tensor([0.0, 0.0, 9.0]))
    enc.eval()
    expected = enc(x, lens)[0]
    summary = finish_pruning(enc, params)
    assert summary["nas_arch_params"] == 12 and summary["gate_thresholds"] == 12
    assert summary["nas_kept_fraction"]["layers.1.fc1"] == 0.25
    plain = copy.deepcopy(dense).eval()
    plain.load_state_dict(load_file(tmp_path / "pruned.pt")["model"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, lens)[0], expected)
