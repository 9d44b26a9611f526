"""Named encoder configurations: ``build_encoder(name, **overrides)``.

Each name fixes a front end and an encoder.  ``build_encoder`` returns a
:class:`SpeechEncoder` with ``.frontend`` and ``.encoder`` (use them separately to insert
masking between them, as HuBERT-style pretraining does) and a ``forward`` that chains them.

===================== ======================= ==================================== ==========
name                  front end               encoder                              params
===================== ======================= ==================================== ==========
zipformer-ssl-base    wav2vec2 CNN (group)    Zipformer2, dims 192..768, 16 layers ~94M
zipformer-ssl-large   wav2vec2 CNN (group)    Zipformer2, dims 256..1024, 19 layers ~305M
hubert-base           wav2vec2 CNN (group)    Transformer 12 x 768, post-norm      ~94M
hubert-large          wav2vec2 CNN (layer)    Transformer 24 x 1024, pre-norm      ~316M
zipformer-tiny        small CNN (64 ch)       Zipformer2, dims 64..128, 4 layers   ~1M
hubert-tiny           small CNN (64 ch)       Transformer 2 x 128, post-norm       ~0.4M
===================== ======================= ==================================== ==========

All front ends give 50 Hz frames.  ``frontend="fbank"`` swaps in the fbank
:class:`~icefall.nn.frontend.Conv2dSubsampling` (80-dim fbank at 100 Hz -> 50 Hz), e.g. for
VietASR.  Overrides: ``frontend="cnn"|"fbank"``; ``frontend_<arg>=...`` for a front-end
argument (e.g. ``frontend_feature_grad_mult=0.1``); any other keyword goes to the encoder
(e.g. ``num_encoder_layers=(1, 1, 1, 1)``, ``output_downsampling_factor=2``, ``qkv_bias=False``).
"""
import copy
import inspect
from typing import Any, Dict, List

from torch import Tensor, nn

from icefall.nn.frontend import Conv2dSubsampling, Wav2Vec2FrontEnd
from icefall.nn.transformer import TransformerEncoder
from icefall.nn.zipformer import Zipformer2

_ZIPFORMER_COMMON = dict(
    output_downsampling_factor=1,
    downsampling_factor=(1, 2, 4, 8, 4, 2),
    num_heads=(4, 4, 4, 8, 4, 4),
    query_head_dim=32,
    pos_head_dim=4,
    value_head_dim=12,
    pos_dim=48,
    cnn_module_kernel=(31, 31, 15, 15, 15, 31),
)

_TINY_CNN = [(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2

ENCODER_CONFIGS: Dict[str, Dict[str, Any]] = {
    "zipformer-ssl-base": dict(
        encoder="zipformer",
        frontend="cnn",
        frontend_args=dict(mode="group", conv_bias=False, feature_grad_mult=1.0),
        encoder_args=dict(
            _ZIPFORMER_COMMON,
            encoder_dim=(192, 256, 448, 768, 448, 192),
            num_encoder_layers=(2, 2, 3, 4, 3, 2),
            feedforward_dim=(512, 768, 1024, 1536, 1024, 768),
            encoder_unmasked_dim=(192, 192, 256, 256, 256, 192),
        ),
    ),
    "zipformer-ssl-large": dict(
        encoder="zipformer",
        frontend="cnn",
        frontend_args=dict(mode="group", conv_bias=False, feature_grad_mult=1.0),
        encoder_args=dict(
            _ZIPFORMER_COMMON,
            encoder_dim=(256, 512, 768, 1024, 768, 512),
            num_encoder_layers=(2, 2, 4, 5, 4, 2),
            feedforward_dim=(768, 1536, 2048, 3072, 2048, 1536),
            encoder_unmasked_dim=(256, 256, 256, 320, 256, 256),
        ),
    ),
    "hubert-base": dict(
        encoder="transformer",
        frontend="cnn",
        frontend_args=dict(mode="group", conv_bias=False, feature_grad_mult=0.1, dropout_input=0.1),
        encoder_args=dict(embed_dim=768, ffn_dim=3072, num_heads=12, num_layers=12,
                          layer_norm_first=False, layerdrop=0.05),
    ),
    "hubert-large": dict(
        encoder="transformer",
        frontend="cnn",
        frontend_args=dict(mode="layer", conv_bias=True, feature_grad_mult=1.0, dropout_input=0.0,
                           normalize=True),
        encoder_args=dict(embed_dim=1024, ffn_dim=4096, num_heads=16, num_layers=24,
                          layer_norm_first=True, layerdrop=0.0),
    ),
    "zipformer-tiny": dict(
        encoder="zipformer",
        frontend="cnn",
        frontend_args=dict(mode="group", conv_layers=_TINY_CNN),
        encoder_args=dict(
            output_downsampling_factor=1,
            downsampling_factor=(1, 2, 4, 2),
            encoder_dim=(64, 96, 128, 96),
            num_encoder_layers=(1, 1, 1, 1),
            feedforward_dim=(128, 192, 256, 192),
            encoder_unmasked_dim=(48, 64, 64, 64),
            num_heads=(2, 2, 4, 2),
            query_head_dim=16,
            pos_head_dim=4,
            value_head_dim=8,
            pos_dim=16,
            cnn_module_kernel=(15, 15, 7, 15),
            warmup_batches=500.0,
        ),
    ),
    "hubert-tiny": dict(
        encoder="transformer",
        frontend="cnn",
        frontend_args=dict(mode="group", conv_layers=_TINY_CNN),
        encoder_args=dict(embed_dim=128, ffn_dim=256, num_heads=4, num_layers=2,
                          layer_norm_first=False, layerdrop=0.0, conv_pos=16, conv_pos_groups=4),
    ),
}

_ENCODERS = {"zipformer": Zipformer2, "transformer": TransformerEncoder}


def list_encoders() -> List[str]:
    """Names accepted by :func:`build_encoder`."""
    return sorted(ENCODER_CONFIGS)


class SpeechEncoder(nn.Module):
    """A front end followed by an encoder.

    ``forward(x, x_lens, return_hidden=False)``: x is a waveform (B, N) for the CNN front
    end or fbank (B, T, 80) for the fbank one; returns ``(out (B, T', output_dim), out_lens)``
    (plus the hidden list) like the encoder.
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, name: str = "", frontend_type: str = ""):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.name = name
        self.frontend_type = frontend_type
        self.output_dim: int = encoder.output_dim

    def forward(self, x: Tensor, x_lens: Tensor, return_hidden: bool = False):
        feats, lens = self.frontend(x, x_lens)
        return self.encoder(feats, lens, return_hidden=return_hidden)


def _split_overrides(cfg: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    enc_cls = _ENCODERS[cfg["encoder"]]
    enc_params = inspect.signature(enc_cls.__init__).parameters
    for key, value in overrides.items():
        if key == "frontend":
            assert value in ("cnn", "fbank"), value
            if value != cfg["frontend"]:
                cfg["frontend"], cfg["frontend_args"] = value, {}
        elif key.startswith("frontend_"):
            cfg["frontend_args"][key[len("frontend_"):]] = value
        elif key in enc_params:
            cfg["encoder_args"][key] = value
        else:
            raise TypeError(f"unknown override {key!r} for {enc_cls.__name__}")
    return cfg


def build_encoder(name: str, **overrides: Any) -> SpeechEncoder:
    """Build the named front end + encoder pair (see the module docstring for names and
    override rules).  Returns a :class:`SpeechEncoder` with ``.frontend``, ``.encoder`` and
    ``.output_dim``."""
    if name not in ENCODER_CONFIGS:
        raise KeyError(f"unknown encoder {name!r}; choose from {list_encoders()}")
    cfg = _split_overrides(ENCODER_CONFIGS[name], overrides)
    encoder = _ENCODERS[cfg["encoder"]](**cfg["encoder_args"])
    if cfg["frontend"] == "cnn":
        frontend: nn.Module = Wav2Vec2FrontEnd(out_dim=encoder.input_dim, **cfg["frontend_args"])
    else:
        frontend = Conv2dSubsampling(out_channels=encoder.input_dim, **cfg["frontend_args"])
    return SpeechEncoder(frontend, encoder, name=name, frontend_type=cfg["frontend"])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
