"""Tests of the compact export (icefall/prune/export.py) and the sparsity report (report.py).

References: outputs of the masked model, a dense torch.save of the same weights for the size,
exact tensor equality for the encoding round trip, current_sparsity for the report.
"""
import math

import pytest
import torch
import torch.nn as nn

from icefall.prune.baselines import uniform_magnitude_prune
from icefall.prune.export import (
    compact_state_dict,
    dense_state_dict,
    export_compact,
    folded_state_dict,
    load_compact,
    load_compact_state_dict,
)
from icefall.prune.gates import add_gates, current_sparsity
from icefall.prune.report import sparsity_table, write_sparsity_report


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 64)
        self.norm = nn.LayerNorm(64)
        self.register_buffer("step", torch.tensor(7, dtype=torch.int64))

    def forward(self, x):
        return self.norm(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))))


def _gated_at(sparsity):
    """A gated _Net whose thresholds prune ``sparsity`` of each layer (per-layer quantile)."""
    model = _Net()
    add_gates(model, r"^fc\d$")
    with torch.no_grad():
        for name in ("fc1", "fc2", "fc3"):
            g = model.get_submodule(name)
            g.threshold.fill_(torch.quantile(g.weight.abs().flatten(), sparsity).item())
    return model.eval()


def test_export_gives_same_outputs_and_is_smaller_at_80_percent(tmp_path):
    model = _gated_at(0.8)
    overall, _ = current_sparsity(model)
    assert overall == pytest.approx(0.8, abs=0.002)
    x = torch.randn(5, 64)
    with torch.no_grad():
        y_masked = model(x)

    report = export_compact(model, tmp_path / "model.pt")
    # The pruned weights, and the all-zero LayerNorm bias (sparse encoding is smaller for it too).
    assert sorted(report["sparse_tensors"]) == ["fc1.weight", "fc2.weight", "fc3.weight", "norm.bias"]

    # Independent size reference: the plain dense weights saved with torch.save.
    dense_path = tmp_path / "dense.pt"
    torch.save(folded_state_dict(model), dense_path)
    dense_size = dense_path.stat().st_size
    assert report["compact_bytes"] == (tmp_path / "model.pt").stat().st_size
    assert report["compact_bytes"] < 0.4 * dense_size  # ~0.23 expected (0.2*4 + 1/8 of 4 bytes)
    assert report["dense_bytes"] == pytest.approx(dense_size, rel=0.01)

    fresh = load_compact(tmp_path / "model.pt", _Net().eval())
    assert all(type(fresh.get_submodule(n)) is nn.Linear for n in ("fc1", "fc2", "fc3"))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), y_masked, rtol=0, atol=0)
    assert fresh.step.item() == 7
    # The gated model itself is untouched by the export.
    assert hasattr(model.fc1, "threshold")


def test_export_of_fixed_mask_model(tmp_path):
    model = _Net().eval()
    uniform_magnitude_prune(model, r"^fc\d$", 0.9)
    x = torch.randn(3, 64)
    with torch.no_grad():
        y = model(x)
    export_compact(model, tmp_path / "ump.pt")
    sd = load_compact_state_dict(tmp_path / "ump.pt")
    assert "fc2.weight_mask" not in sd
    assert int((sd["fc2.weight"] == 0).sum()) == round(0.9 * 256 * 256)
    with torch.no_grad():
        torch.testing.assert_close(load_compact(tmp_path / "ump.pt", _Net().eval())(x), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compact_round_trip_is_exact(dtype):
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(13, 7, generator=g).to(dtype)  # 91 entries: not a multiple of 8
    sparse[torch.rand(13, 7, generator=g) < 0.7] = 0
    dense = torch.randn(5, 5, generator=g).to(dtype)
    sd = {"a": sparse, "b": dense, "c": torch.arange(6), "d": torch.zeros(0)}
    enc = compact_state_dict(sd)
    assert isinstance(enc["a"], dict) and enc["a"]["values"].dtype == dtype
    assert enc["a"]["values"].numel() == int((sparse != 0).sum())
    assert isinstance(enc["b"], torch.Tensor)  # no zeros: dense is smaller
    assert enc["a"]["bitmap"].numel() == math.ceil(91 / 8)
    dec = dense_state_dict(enc)
    for k in sd:
        assert dec[k].dtype == sd[k].dtype and torch.equal(dec[k], sd[k])


def test_export_of_unpruned_model_is_plain_dense(tmp_path):
    model = _Net()
    with torch.no_grad():
        model.norm.bias.fill_(0.1)  # no zero tensor left
    report = export_compact(model, tmp_path / "m.pt")
    assert report["sparse_tensors"] == [] and report["compact_bytes"] == report["dense_bytes"]
    sd = load_compact_state_dict(tmp_path / "m.pt")
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_load_rejects_other_files(tmp_path):
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError):
        load_compact_state_dict(tmp_path / "x.pt")


def test_sparsity_report(tmp_path):
    model = _gated_at(0.5)
    with torch.no_grad():
        model.fc3.threshold.fill_(0.0)  # fc3 unpruned
    overall, per_layer = current_sparsity(model)
    table = sparsity_table(model)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3 + 1
    for line, name in zip(lines[2:5], ("fc1", "fc2", "fc3")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        n = model.get_submodule(name).weight.numel()
        kept = int(model.get_submodule(name).binary_mask().sum())
        assert cells[:3] == [name, str(n), str(kept)]
        assert float(cells[3]) == pytest.approx(100 * per_layer[name], abs=0.005)
    assert float(lines[-1].split("|")[-2]) == pytest.approx(100 * overall, abs=0.005)
    assert "| fc3 | 16384 | 16384 | 0.00 |" in table

    pytest.importorskip("matplotlib")
    md, png = write_sparsity_report(model, tmp_path / "rep", title="toy")
    assert md.read_text().endswith(table)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
