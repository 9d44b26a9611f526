"""Fine-tuning starts from the pretrained weights and architecture, with the run's own encoder
overrides (e.g. regularisation) applied on top."""
import torch

from icefall.asr.finetune import get_parser, load_ssl_model
from icefall.nn.configs import encoder_config, merge_overrides, parse_overrides
from icefall.nn.scaling import Dropout2, ScheduledFloat
from icefall.ssl.pretrain import build_model, get_parser as pretrain_parser
from icefall.utils import AttributeDict

TINY = dict(encoder="zipformer-tiny", frontend="fbank", num_classes=10, label_rate=50.0)


def test_merge_overrides_later_wins_and_round_trips():
    merged = merge_overrides("a=1,dims=(1, 2),name=x", "a=2,dropout=0.0")
    assert parse_overrides(merged) == {"a": 2, "dims": (1, 2), "name": "x", "dropout": 0.0}
    assert parse_overrides(merge_overrides("", "")) == {}


def _dropouts(model):
    return [m.p for n, m in model.named_modules() if isinstance(m, Dropout2) and "feed_forward" in n]


def test_finetune_keeps_pretrained_weights_and_applies_overrides(tmp_path):
    torch.manual_seed(0)
    pre = AttributeDict(vars(pretrain_parser(**TINY, encoder_overrides="frontend_layer3_channels=32").parse_args([])))
    pretrained = build_model(pre)
    assert all(isinstance(p, ScheduledFloat) for p in _dropouts(pretrained))
    ckpt = tmp_path / "epoch-1.pt"
    torch.save({"model": pretrained.state_dict(), "params": dict(pre)}, ckpt)

    args = get_parser(init_ckpt=str(ckpt)).parse_args(["--encoder-overrides", "dropout=0.0"])
    params = AttributeDict(vars(args))
    ssl = load_ssl_model(params)
    assert params.encoder == "zipformer-tiny"  # the checkpoint's architecture
    assert ssl.config == encoder_config("zipformer-tiny", frontend="fbank", frontend_layer3_channels=32, dropout=0.0)
    drops = _dropouts(ssl)
    assert drops and all(p == 0.0 for p in drops)
    ref = pretrained.state_dict()
    for name, value in ssl.state_dict().items():
        assert torch.equal(value, ref[name]), name
