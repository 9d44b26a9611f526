"""Tests of the pruning glue for CTC fine-tuning (icefall/prune/finetune.py) and of the sweep
comparison (icefall/prune/compare.py) on small stand-in models.

References: hand counts of pruned entries, the soft-L0 regulariser recomputed from its formula,
zeros counted in the saved files, and MAPSSWE p-values of identical/different systems.
"""
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from icefall.checkpoint import load_file
from icefall.prune.baselines import FixedMaskLinear
from icefall.prune.compare import char_results, is_lossless, main as compare_main, recogs_path
from icefall.prune.export import load_compact_state_dict
from icefall.prune.finetune import (
    PruneHooks,
    count_batches,
    finish_pruning,
    get_parser,
    resolve_patterns,
)
from icefall.prune.gates import GatedLinear, ZIPFORMER_PATTERNS
from icefall.eval.wer import store_transcripts
from icefall.utils import AttributeDict, MetricsTracker

PATTERNS = [r"fc\d$"]


class Net(nn.Module):
    """Two prunable layers (fc1, fc2) and one that is not (head)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _params(tmp_path, **kw):
    p = AttributeDict(method="gates", target_sparsity=0.5, patterns=PATTERNS, eta=2.0, tau_start=0.5,
                      tau_end=0.01, threshold_init=1e-5, threshold_lr=1e-3, dense_ckpt=None,
                      sparsity_from=None, base_lr=0.045, lr_batches=1000, lr_epochs=20,
                      warmup_batches=10, exp_dir=tmp_path, num_epochs=2, accum_grad=1,
                      log_interval=1, batch_idx_train=0, controller="hold")
    p.update(kw)
    return p


def test_parser_has_finetune_and_prune_options():
    args = get_parser(num_epochs=3).parse_args(["--method", "uniform", "--target-sparsity", "0.9"])
    assert args.method == "uniform" and args.target_sparsity == 0.9 and args.num_epochs == 3
    assert args.use_ctc is False and hasattr(args, "init_ckpt")  # the fine-tuning options are there
    assert resolve_patterns(["zipformer", "x$"]) == list(ZIPFORMER_PATTERNS) + ["x$"]


@pytest.mark.parametrize("target", [0.5, 0.75])
def test_uniform_from_dense_checkpoint(tmp_path, target):
    dense = Net()
    torch.save({"model": dense.state_dict()}, tmp_path / "dense.pt")
    model = Net()  # different init: the weights must come from the checkpoint
    PruneHooks().setup_model(model, _params(tmp_path, method="uniform", target_sparsity=target,
                                            dense_ckpt=tmp_path / "dense.pt"))
    assert isinstance(model.fc1, FixedMaskLinear) and type(model.head) is nn.Linear
    for name in ("fc1", "fc2"):
        w = getattr(dense, name).weight.detach()
        layer = getattr(model, name)
        assert torch.equal(layer.weight, w)
        n_pruned = int((~layer.weight_mask).sum())
        assert n_pruned == round(target * w.numel())
        # every pruned entry is no larger than every kept one
        assert w[~layer.weight_mask].abs().max() <= w[layer.weight_mask].abs().min()


def test_mixed_reproduces_per_layer_sparsities(tmp_path):
    torch.save({"model": Net().state_dict()}, tmp_path / "dense.pt")
    layers = {"fc1": 0.25, "fc2": 0.875}  # 32 of 128, 168 of 192 entries
    (tmp_path / "sparsity.json").write_text(json.dumps({"overall": 0.0, "layers": layers}))
    model = Net()
    PruneHooks().setup_model(model, _params(tmp_path, method="mixed", dense_ckpt=tmp_path / "dense.pt",
                                            sparsity_from=tmp_path / "sparsity.json"))
    assert int((~model.fc1.weight_mask).sum()) == 32 and int((~model.fc2.weight_mask).sum()) == 168


def test_missing_inputs_are_reported(tmp_path):
    with pytest.raises(ValueError, match="--dense-ckpt"):
        PruneHooks().setup_model(Net(), _params(tmp_path, method="uniform"))
    torch.save({"model": Net().state_dict()}, tmp_path / "dense.pt")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        PruneHooks().setup_model(Net(), _params(tmp_path, method="mixed", dense_ckpt=tmp_path / "dense.pt",
                                                sparsity_from=tmp_path / "nope.json"))


def _trainer(model, params):
    return SimpleNamespace(model=model, params=params, tb_writer=None, rank=0)


def test_gates_regulariser_optimizer_and_controller(tmp_path):
    params = _params(tmp_path)
    model = Net()
    hooks = PruneHooks()
    hooks.setup_model(model, params)
    assert isinstance(model.fc1, GatedLinear) and isinstance(model.fc2, GatedLinear)

    opt, _ = hooks.make_optimizer(model, params)
    groups = opt.param_groups
    assert [len(g["params"]) for g in groups] == [6, 2]  # weights+biases of 3 layers; 2 thresholds
    assert groups[1]["params"][0] is model.fc1.threshold and groups[1]["scalar_lr_scale"] == 1.0

    def base_loss(m, batch, is_training):
        info = MetricsTracker()
        info["frames"] = 7
        return m(batch).sum(), info

    dl = DataLoader(list(range(10)), batch_size=3)  # 4 batches an epoch
    loss_fn = hooks.wrap_compute_loss(base_loss, dl)
    assert hooks.batches_per_epoch == 4
    x = torch.randn(5, 8)

    params.batch_idx_train = 1
    hooks.before_batch(_trainer(model, params))  # sparsity ~0 < 0.5: eta on
    assert hooks.ctrl.total_steps == 8 and hooks.ctrl.current_eta == 2.0
    tau = hooks.ctrl.tau_at(1)
    assert model.fc1.tau == pytest.approx(tau)
    soft = [torch.sigmoid((m.weight ** 2 - m.threshold ** 2) / tau) for m in (model.fc1, model.fc2)]
    r = (soft[0].sum() + soft[1].sum()) / (128 + 192)  # the regulariser from its formula
    loss, _ = loss_fn(model, x, True)
    assert loss.item() == pytest.approx(model(x).sum().item() + 2.0 * 7 * r.item(), rel=1e-5)
    assert loss_fn(model, x, False)[0].item() == pytest.approx(model(x).sum().item(), rel=1e-6)

    with torch.no_grad():  # reach the target: eta switches off, the loss is the task loss
        model.fc1.threshold.fill_(10.0)
        model.fc2.threshold.fill_(10.0)
    hooks.before_batch(_trainer(model, params))
    assert hooks.ctrl.current_eta == 0.0
    assert loss_fn(model, x, True)[0].item() == pytest.approx(model(x).sum().item(), rel=1e-6)
    # held: the thresholds get no gradient, so the optimizer leaves them (and their momentum) alone
    loss_fn(model, x, True)[0].backward()
    assert model.fc1.threshold.grad is None and model.fc1.weight.grad is not None
    opt.step()
    assert model.fc1.threshold.item() == 10.0
    with torch.no_grad():  # below the target again: eta and the thresholds' gradients come back
        model.fc1.threshold.fill_(0.0)
        model.fc2.threshold.fill_(0.0)
    hooks.before_batch(_trainer(model, params))
    assert hooks.ctrl.current_eta == 2.0 and model.fc1.threshold.requires_grad


def test_finish_writes_folded_and_compact_models(tmp_path):
    params = _params(tmp_path)
    model = Net()
    PruneHooks().setup_model(model, params)
    with torch.no_grad():
        model.fc1.threshold.fill_(float(model.fc1.weight.abs().median()))
        model.fc2.threshold.fill_(float(model.fc2.weight.abs().quantile(0.8)))
    keep1 = model.fc1.weight.abs() >= model.fc1.threshold.abs()
    keep2 = model.fc2.weight.abs() >= model.fc2.threshold.abs()
    x = torch.randn(4, 8)
    expected = model(x)
    summary = finish_pruning(model, params)

    zeros = int((~keep1).sum() + (~keep2).sum())
    assert summary["sparsity_pruned_layers"] == pytest.approx(zeros / (128 + 192))
    all_weights = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("threshold"))
    assert summary["sparsity_model"] == pytest.approx(zeros / all_weights)  # no other exact zeros
    assert json.loads((tmp_path / "prune-summary.json").read_text()) == summary
    per_layer = json.loads((tmp_path / "sparsity.json").read_text())["layers"]
    assert per_layer == pytest.approx({"fc1": float((~keep1).float().mean()), "fc2": float((~keep2).float().mean())})
    assert (tmp_path / "sparsity.md").is_file() and (tmp_path / "sparsity.png").stat().st_size > 0

    pruned = load_file(tmp_path / "pruned.pt")
    assert pruned["params"]["method"] == "gates"
    assert torch.equal(pruned["model"]["fc1.weight"], model.fc1.weight * keep1)
    for sd in (pruned["model"], load_compact_state_dict(tmp_path / "compact.pt")):
        plain = Net()
        plain.load_state_dict(sd, strict=True)  # the keys of the unpruned model
        assert torch.equal(plain(x), expected)
    assert summary["compact_bytes"] < summary["dense_bytes"]


def test_count_batches_does_not_consume_the_loader():
    dl = DataLoader(list(range(11)), batch_size=4, shuffle=True)
    assert count_batches(dl) == 3 and len(list(dl)) == 3
    assert count_batches(SimpleNamespace()) is None


def _system(root, name, method, results, split="test", target=0.5, reached=None, wall=None,
            decoding="ctc-greedy-search", settings=""):
    """An experiment dir as prune.py + decode.py --checkpoint pruned.pt leave it; ``settings``:
    what decode.py puts between the method and the model in result names."""
    exp = root / name
    exp.mkdir(parents=True)
    reached = target if reached is None else reached
    (exp / "prune-summary.json").write_text(json.dumps(dict(
        method=method, target_sparsity=target, sparsity_pruned_layers=reached if method != "none" else 0.0,
        sparsity_model=0.25, compact_bytes=2048, dense_bytes=4096, ratio=2.0)))
    if wall is not None:
        (exp / "wall-seconds").write_text(f"{wall}\n")
    path = exp / decoding / f"recogs-{split}-{decoding}{settings}-pruned.txt"
    path.parent.mkdir(parents=True)
    store_transcripts(path, results)
    return exp


def test_compare_table_and_lossless(tmp_path, capsys):
    refs = [(f"u{i}", ["A", "B", "C", "D"], ["A", "B", "C", "D"]) for i in range(30)]
    worse = [(c, r, ["A", "X", "C", "D"]) for c, r, _ in refs]  # one substitution everywhere
    base = _system(tmp_path, "dense", "none", refs)
    same = _system(tmp_path, "same", "gates", refs)
    bad = _system(tmp_path, "bad", "uniform", worse)
    rows = compare_main(["--baseline", f"dense={base}", "--systems", f"same={same}", f"bad={bad}",
                         "--png", str(tmp_path / "sweep.png")])
    assert rows[1]["p_word"] == 1.0 and rows[1]["lossless"] is True
    assert rows[2]["wer"] == pytest.approx(25.0) and rows[2]["cer"] == pytest.approx(100 / 7)
    assert rows[2]["p_word"] == 0.0 and rows[2]["lossless"] is False  # 30 segments, all +1
    out = capsys.readouterr().out
    assert out.count("\n") == 5 and "| bad | 50 | 50.00 | 25.00 | 25.00 | 14.29 | 0 | 0 | no | 2 |" in out
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_sweep_summary_over_seeds(tmp_path, capsys):
    """Two seed roots as prune_sweep.sh leaves them, decoded with the LM (its long result names);
    means, ranges, per-seed p-values and the highest lossless target computed by hand."""
    refs = [(f"u{i}", ["A", "B", "C", "D"], ["A", "B", "C", "D"]) for i in range(30)]
    def errs_in(utts):  # one substitution in each of these utterances
        return [(c, r, ["A", "Y", "C", "D"] if i in utts else h) for i, (c, r, h) in enumerate(refs)]
    dense = errs_in({0, 1, 2})
    one_sub = errs_in(set(range(30)))  # vs dense: 27 segments +1, 3 equal: significant
    moved = errs_in({2, 3, 4})  # vs dense: -1, -1, 0, +1, +1: mean 0, p = 1
    lm = dict(decoding="ctc-lexicon-lm", settings="-beam-size-50-beam-25-lm-3gram-lm-weight-1-word-score-2")
    for seed, gates90 in (("seed1", moved), ("seed2", one_sub)):
        root = tmp_path / seed
        _system(root, "exp-dense", "none", dense, **lm, wall=100)
        _system(root, "exp-gates-50", "gates", refs, **lm, target=0.5, reached=0.49, wall=10)  # fewer errors
        _system(root, "exp-gates-90", "gates", gates90, **lm, target=0.9, reached=0.91, wall=30)
        _system(root, "exp-ump-50", "uniform", moved, **lm, target=0.5, wall=20)
    (tmp_path / "seed2" / "exp-ump-90").mkdir()  # unfinished: skipped, not fatal
    groups = compare_main(["--sweep", str(tmp_path / "seed1"), str(tmp_path / "seed2"),
                           "--decoding-method", "ctc-lexicon-lm", "--png", str(tmp_path / "fig2.png")])
    by = {(g["system"], g["target"]): g for g in groups}
    assert [g["system"] for g in groups][0] == "dense" and by[("dense", 0.0)]["seeds"] == 2
    g90 = by[("gates", 0.9)]
    # WER: seed1 3 errors / 120 words, seed2 30 / 120
    assert g90["wer"] == pytest.approx((2.5 + 25.0) / 2) and g90["wer_range"] == pytest.approx((2.5, 25.0))
    assert g90["sparsity"] == pytest.approx(0.91) and g90["wall_s"] == 30
    assert g90["p_word"][0] == 1.0 and g90["p_word"][1] < 1e-6 and g90["lossless"] is False
    assert by[("gates", 0.5)]["lossless"] is True and by[("ump", 0.5)]["lossless"] is True
    out = capsys.readouterr().out
    assert "Highest sparsity lossless in every seed (target): gates 50%, ump 50%" in out
    assert (tmp_path / "fig2.png").stat().st_size > 0


def test_lossless_rule_and_char_results():
    assert is_lossless(0.2, 1.0) and is_lossless(0.001, -0.5) and not is_lossless(0.01, 0.3)
    assert char_results([("u", ["AB", "C"], ["A"])]) == [("u", ["A", "B", " ", "C"], ["A"])]


@pytest.mark.parametrize("mode", ["paper", "hold", "band"])
def test_controllers(mode):
    from icefall.prune.finetune import controlled_eta
    from icefall.prune.gates import GateController, add_gates

    model = Net()
    add_gates(model, PATTERNS)
    ctrl = GateController(target_sparsity=0.5, eta=3.0, total_steps=10)
    cases = [(0.40, 3.0), (0.502, 0.0), (0.52, -3.0 if mode == "band" else 0.0)]
    for sparsity, expected in cases:
        eta = controlled_eta(ctrl, model, 0, sparsity, mode, band=0.005)
        assert eta == expected
        frozen = mode != "paper" and expected == 0.0
        assert model.fc1.threshold.requires_grad is (not frozen)
    with pytest.raises(ValueError, match="controller"):
        controlled_eta(ctrl, model, 0, 0.4, "nope")


def test_dense_ckpt_must_be_a_fine_tuned_model(tmp_path):
    from icefall.models import CheckpointKindError
    from icefall.ssl.pretrain import build_model, get_parser as pretrain_parser

    params = AttributeDict(vars(pretrain_parser(encoder="hubert-tiny", num_classes=5).parse_args([])))
    torch.save({"model": build_model(params).state_dict(), "params": dict(params)}, tmp_path / "pt.pt")
    with pytest.raises(CheckpointKindError, match=r"pt\.pt is a pretraining checkpoint.*--dense-ckpt needs a fine-tuned one"):
        PruneHooks().setup_model(Net(), _params(tmp_path, method="uniform", dense_ckpt=tmp_path / "pt.pt"))
