import argparse

import pytest
import torch

from icefall.utils import AttributeDict, MetricsTracker, make_pad_mask, str2bool


@pytest.mark.parametrize(
    "text,expected",
    [("true", True), ("True", True), ("1", True), ("yes", True),
     ("false", False), ("FALSE", False), ("0", False), ("no", False)],
)
def test_str2bool(text, expected):
    assert str2bool(text) is expected


def test_str2bool_in_argparse_and_rejects_garbage():
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-fp16", type=str2bool, default=True)
    assert parser.parse_args(["--use-fp16", "false"]).use_fp16 is False
    assert parser.parse_args(["--use-fp16", "0"]).use_fp16 is False
    assert parser.parse_args(["--use-fp16", "1"]).use_fp16 is True
    assert parser.parse_args([]).use_fp16 is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--use-fp16", "maybe"])


def test_attribute_dict():
    d = AttributeDict({"a": 1})
    d.b = 2
    assert d["b"] == 2 and d.a == 1
    del d.a
    with pytest.raises(AttributeError):
        _ = d.a


def test_make_pad_mask_matches_loop():
    lengths = torch.tensor([3, 1, 5])
    mask = make_pad_mask(lengths)
    expected = torch.tensor([[t >= n for t in range(5)] for n in lengths.tolist()])
    assert torch.equal(mask, expected)
    assert make_pad_mask(lengths, max_len=7).shape == (3, 7)


def test_metrics_tracker_normalises_by_frames():
    a = MetricsTracker({"frames": 10, "loss": 20.0, "seconds": 1.5})
    b = MetricsTracker({"frames": 30, "loss": 20.0, "seconds": 2.5})
    s = a + b
    items = dict(s.norm_items())
    assert items["loss"] == pytest.approx(1.0)  # 40 / 40 frames
    assert items["frames"] == 40 and items["seconds"] == pytest.approx(4.0)
    # A zero loss must survive addition (collections.Counter drops non-positive values).
    z = MetricsTracker({"frames": 1, "loss": 0.0}) + MetricsTracker({"frames": 1, "loss": 0.0})
    assert "loss" in z and z["frames"] == 2
