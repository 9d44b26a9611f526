"""Typed encoder configurations: one frozen dataclass per front end and per encoder.

An :class:`EncoderConfig` is a front-end config plus an encoder config, named after the named
configuration it started from. It round-trips through a plain dict (``to_dict``/``from_dict``:
what ``config.json`` and checkpoints hold) and builds a :class:`SpeechEncoder`
(``.frontend``, ``.encoder``, ``.output_dim``; use the parts separately to insert masking between
them, as HuBERT-style pretraining does).

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

All front ends give 50 Hz frames. Overrides (keyword arguments, or the command line's
``k=v,k=v`` string via :func:`parse_overrides`): ``frontend="cnn"|"fbank"`` swaps the front end
(``fbank``: the :class:`~icefall.nn.frontend.Conv2dSubsampling` over 80-dim fbank at 100 Hz, e.g.
for VietASR); ``frontend_<field>=...`` sets a front-end field (e.g.
``frontend_feature_grad_mult=0.1``); any other key is an encoder field (e.g.
``num_encoder_layers=(1, 1, 1, 1)``, ``qkv_bias=False``, ``gated_rel_pos_bias=True``). An unknown key is a
:class:`ConfigError` listing the valid ones.

    cfg = encoder_config("zipformer-tiny", frontend="fbank", dropout=0.0)
    model = cfg.build()
    EncoderConfig.from_dict(cfg.to_dict()) == cfg
"""
from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type, Union

from torch import Tensor, nn

from icefall.nn.frontend import WAV2VEC2_CONV_LAYERS, Conv2dSubsampling, Wav2Vec2FrontEnd
from icefall.nn.scaling import BALANCER_LIMITS, set_balancer_limits
from icefall.nn.transformer import TransformerEncoder
from icefall.nn.zipformer import Zipformer2

IntOrTuple = Union[int, Tuple[int, ...]]


class ConfigError(ValueError):
    """An unknown or invalid configuration key; the message lists the valid ones."""


def _tuples(value: Any) -> Any:
    """Lists (as JSON and ``literal_eval`` give them) -> tuples, recursively: configs are frozen
    and compare equal after a round trip."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


class _Config:
    """Shared dict conversion of the frozen dataclass configs below (and the objectives')."""

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (tuples as lists): JSON- and checkpoint-friendly."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, _Config) else _lists(v)
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        return cls(**_checked_kwargs(cls, d))

    def replace(self, **changes: Any):
        """A copy with ``changes`` (field names checked)."""
        return dataclasses.replace(self, **_checked_kwargs(type(self), changes))

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _lists(v: Any) -> Any:
    return [_lists(x) for x in v] if isinstance(v, (list, tuple)) else v


def _checked_kwargs(cls: Type, d: Dict[str, Any]) -> Dict[str, Any]:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid: {names}")
    return {k: _tuples(v) for k, v in d.items()}


# ------------------------------------------------------------------------------ front ends
@dataclass(frozen=True)
class CnnFrontEndConfig(_Config):
    """wav2vec 2.0 / HuBERT CNN over 16 kHz waveform (:class:`Wav2Vec2FrontEnd`)."""

    kind: ClassVar[str] = "cnn"
    mode: str = "group"  # fairseq extractor_mode: "default" = group, "layer_norm" = layer
    conv_layers: Tuple[Tuple[int, int, int], ...] = tuple(WAV2VEC2_CONV_LAYERS)  # conv_feature_layers
    conv_bias: bool = False  # fairseq conv_bias
    feature_grad_mult: float = 1.0  # fairseq feature_grad_mult
    dropout_input: float = 0.0  # fairseq dropout_input
    normalize: bool = False  # fairseq task.normalize (waveform mean/variance normalisation)

    def build(self, out_dim: int) -> nn.Module:
        return Wav2Vec2FrontEnd(out_dim=out_dim, **dataclasses.asdict(self))


@dataclass(frozen=True)
class FbankFrontEndConfig(_Config):
    """icefall's Conv2d subsampling over 80-dim fbank at 100 Hz (:class:`Conv2dSubsampling`,
    icefall ``encoder_embed``)."""

    kind: ClassVar[str] = "fbank"
    in_channels: int = 80  # icefall feature_dim
    layer1_channels: int = 8
    layer2_channels: int = 32
    layer3_channels: int = 128
    dropout: float = 0.1

    def build(self, out_dim: int) -> nn.Module:
        return Conv2dSubsampling(out_channels=out_dim, **dataclasses.asdict(self))


# ------------------------------------------------------------------------------ encoders
@dataclass(frozen=True)
class ZipformerConfig(_Config):
    """Zipformer2 (icefall ``egs/librispeech/ASR/zipformer`` option names); per-stack tuples."""

    kind: ClassVar[str] = "zipformer"
    output_downsampling_factor: int = 1  # 1 keeps 50 Hz (SSL); icefall ASR uses 2
    downsampling_factor: Tuple[int, ...] = (1, 2, 4, 8, 4, 2)
    encoder_dim: IntOrTuple = 384
    num_encoder_layers: IntOrTuple = 4
    encoder_unmasked_dim: IntOrTuple = 256
    query_head_dim: IntOrTuple = 24
    pos_head_dim: IntOrTuple = 4
    value_head_dim: IntOrTuple = 12
    num_heads: IntOrTuple = 8
    feedforward_dim: IntOrTuple = 1536
    cnn_module_kernel: IntOrTuple = 31
    pos_dim: int = 192
    dropout: Optional[float] = None  # None: icefall's schedule 0.3 -> 0.1 over 20k batches
    warmup_batches: float = 4000.0
    feature_mask_per_frame: bool = True
    # how the Balancers of the encoder and its front end limit mean/std (BALANCER_LIMITS):
    # "gaussian" (exact) or "icefall" (icefall's approximation; set for imported icefall models)
    balancer_limits: str = "gaussian"

    def __post_init__(self) -> None:
        if self.balancer_limits not in BALANCER_LIMITS:
            raise ConfigError(f"balancer_limits={self.balancer_limits!r}: choose from {BALANCER_LIMITS}")

    def build(self) -> nn.Module:
        kwargs = dataclasses.asdict(self)
        limits = kwargs.pop("balancer_limits")
        encoder = Zipformer2(**kwargs)
        set_balancer_limits(encoder, limits)
        return encoder


@dataclass(frozen=True)
class TransformerConfig(_Config):
    """wav2vec 2.0 / HuBERT Transformer (fairseq names in the comments)."""

    kind: ClassVar[str] = "transformer"
    embed_dim: int = 768  # encoder_embed_dim
    ffn_dim: int = 3072  # encoder_ffn_embed_dim
    num_heads: int = 12  # encoder_attention_heads
    num_layers: int = 12  # encoder_layers
    layer_norm_first: bool = False  # layer_norm_first (pre-norm, Large)
    dropout: float = 0.1  # dropout
    attention_dropout: float = 0.1  # attention_dropout
    activation_dropout: float = 0.0  # activation_dropout
    layerdrop: float = 0.05  # encoder_layerdrop
    conv_pos: int = 128  # conv_pos
    conv_pos_groups: int = 16  # conv_pos_groups
    qkv_bias: bool = True  # False in SpidR (no Q/K/V biases)
    # WavLM's gated relative position bias (off: HuBERT's encoder, state dict unchanged)
    gated_rel_pos_bias: bool = False  # WavLM relative_position_embedding + gru_rel_pos
    rel_pos_buckets: int = 320  # WavLM num_buckets
    rel_pos_max_distance: int = 800  # WavLM max_distance (HF max_bucket_distance)
    pos_conv_depth: int = 1  # pos_conv_depth (data2vec: 5 convs with LayerNorm)

    def build(self) -> nn.Module:
        return TransformerEncoder(**dataclasses.asdict(self))


FRONTENDS: Dict[str, Type[_Config]] = {"cnn": CnnFrontEndConfig, "fbank": FbankFrontEndConfig}
ENCODERS: Dict[str, Type[_Config]] = {"zipformer": ZipformerConfig, "transformer": TransformerConfig}
FrontEndConfig = Union[CnnFrontEndConfig, FbankFrontEndConfig]
EncoderBodyConfig = Union[ZipformerConfig, TransformerConfig]


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


@dataclass(frozen=True)
class EncoderConfig(_Config):
    """A front end + an encoder. ``name``: the named configuration it was derived from."""

    name: str
    frontend: FrontEndConfig
    encoder: EncoderBodyConfig

    @property
    def frontend_type(self) -> str:
        """"cnn" (16 kHz waveform in) or "fbank" (80-dim fbank in)."""
        return self.frontend.kind

    @property
    def input_type(self) -> str:
        """What the model reads: "wav" or "fbank" (the data loaders' ``input_type``)."""
        return "wav" if self.frontend.kind == "cnn" else "fbank"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name,
                "frontend": {"type": self.frontend.kind, **self.frontend.to_dict()},
                "encoder": {"type": self.encoder.kind, **self.encoder.to_dict()}}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "EncoderConfig":
        try:
            fe, enc = dict(d["frontend"]), dict(d["encoder"])
            fe_cls, enc_cls = FRONTENDS[fe.pop("type")], ENCODERS[enc.pop("type")]
            return cls(str(d["name"]), fe_cls.from_dict(fe), enc_cls.from_dict(enc))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"not an encoder config ({type(e).__name__}: {e}): {d!r}") from e

    def valid_overrides(self) -> List[str]:
        return (["frontend"] + [f"frontend_{n}" for n in self.frontend.field_names()]
                + self.encoder.field_names())

    def with_overrides(self, **overrides: Any) -> "EncoderConfig":
        """A copy with ``k=v`` overrides applied (see the module docstring)."""
        frontend, fe_changes, enc_changes = self.frontend, {}, {}
        if "frontend" in overrides:
            kind = overrides["frontend"]
            if kind not in FRONTENDS:
                raise ConfigError(f"frontend={kind!r}: choose from {sorted(FRONTENDS)}")
            if kind != frontend.kind:
                frontend = FRONTENDS[kind]()
        valid = ["frontend"] + [f"frontend_{n}" for n in frontend.field_names()] + self.encoder.field_names()
        for key, value in overrides.items():
            if key == "frontend":
                continue
            if key not in valid:
                raise ConfigError(f"unknown override {key!r} for {self.name} "
                                  f"({frontend.kind} front end, {self.encoder.kind} encoder); valid: {valid}")
            if key.startswith("frontend_"):
                fe_changes[key[len("frontend_"):]] = value
            else:
                enc_changes[key] = value
        return EncoderConfig(self.name, frontend.replace(**fe_changes), self.encoder.replace(**enc_changes))

    def differences(self, other: "EncoderConfig") -> Dict[str, Tuple[Any, Any]]:
        """``{override key: (self's value, other's value)}`` where the two differ."""
        out: Dict[str, Tuple[Any, Any]] = {}
        if self.frontend.kind != other.frontend.kind:
            out["frontend"] = (self.frontend.kind, other.frontend.kind)
        else:
            for n in self.frontend.field_names():
                a, b = getattr(self.frontend, n), getattr(other.frontend, n)
                if a != b:
                    out[f"frontend_{n}"] = (a, b)
        if self.encoder.kind != other.encoder.kind:
            out["encoder"] = (self.encoder.kind, other.encoder.kind)
        else:
            for n in self.encoder.field_names():
                a, b = getattr(self.encoder, n), getattr(other.encoder, n)
                if a != b:
                    out[n] = (a, b)
        return out

    def build(self) -> SpeechEncoder:
        encoder = self.encoder.build()
        frontend = self.frontend.build(encoder.input_dim)
        # the front end's Balancers follow the encoder's choice
        set_balancer_limits(frontend, getattr(self.encoder, "balancer_limits", "gaussian"))
        return SpeechEncoder(frontend, encoder, name=self.name, frontend_type=self.frontend.kind)


# ------------------------------------------------------------------------------ named configs
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

_TINY_CNN = ((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2

NAMED_ENCODERS: Dict[str, EncoderConfig] = {
    "zipformer-ssl-base": EncoderConfig(
        "zipformer-ssl-base",
        CnnFrontEndConfig(mode="group", conv_bias=False, feature_grad_mult=1.0),
        ZipformerConfig(
            **_ZIPFORMER_COMMON,
            encoder_dim=(192, 256, 448, 768, 448, 192),
            num_encoder_layers=(2, 2, 3, 4, 3, 2),
            feedforward_dim=(512, 768, 1024, 1536, 1024, 768),
            encoder_unmasked_dim=(192, 192, 256, 256, 256, 192),
        ),
    ),
    "zipformer-ssl-large": EncoderConfig(
        "zipformer-ssl-large",
        CnnFrontEndConfig(mode="group", conv_bias=False, feature_grad_mult=1.0),
        ZipformerConfig(
            **_ZIPFORMER_COMMON,
            encoder_dim=(256, 512, 768, 1024, 768, 512),
            num_encoder_layers=(2, 2, 4, 5, 4, 2),
            feedforward_dim=(768, 1536, 2048, 3072, 2048, 1536),
            encoder_unmasked_dim=(256, 256, 256, 320, 256, 256),
        ),
    ),
    "hubert-base": EncoderConfig(
        "hubert-base",
        CnnFrontEndConfig(mode="group", conv_bias=False, feature_grad_mult=0.1, dropout_input=0.1),
        TransformerConfig(embed_dim=768, ffn_dim=3072, num_heads=12, num_layers=12,
                          layer_norm_first=False, layerdrop=0.05),
    ),
    "hubert-large": EncoderConfig(
        "hubert-large",
        CnnFrontEndConfig(mode="layer", conv_bias=True, feature_grad_mult=1.0, dropout_input=0.0,
                          normalize=True),
        TransformerConfig(embed_dim=1024, ffn_dim=4096, num_heads=16, num_layers=24,
                          layer_norm_first=True, layerdrop=0.0),
    ),
    "zipformer-tiny": EncoderConfig(
        "zipformer-tiny",
        CnnFrontEndConfig(mode="group", conv_layers=_TINY_CNN),
        ZipformerConfig(
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
    "hubert-tiny": EncoderConfig(
        "hubert-tiny",
        CnnFrontEndConfig(mode="group", conv_layers=_TINY_CNN),
        TransformerConfig(embed_dim=128, ffn_dim=256, num_heads=4, num_layers=2,
                          layer_norm_first=False, layerdrop=0.0, conv_pos=16, conv_pos_groups=4),
    ),
}


def list_encoders() -> List[str]:
    """Names accepted by :func:`encoder_config` and :func:`build_encoder`."""
    return sorted(NAMED_ENCODERS)


def encoder_config(name: str, **overrides: Any) -> EncoderConfig:
    """The named configuration with ``overrides`` applied."""
    if name not in NAMED_ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose from {list_encoders()}")
    return NAMED_ENCODERS[name].with_overrides(**overrides)


def build_encoder(name: str, **overrides: Any) -> SpeechEncoder:
    """Build the named front end + encoder pair (see the module docstring for names and
    override rules).  Returns a :class:`SpeechEncoder` with ``.frontend``, ``.encoder`` and
    ``.output_dim``."""
    return encoder_config(name, **overrides).build()


# ------------------------------------------------------------------------------ k=v strings
def parse_overrides(text: str) -> Dict[str, Any]:
    """'a=1,b=(1,2),c=x' -> {'a': 1, 'b': (1, 2), 'c': 'x'} (Python literals where they parse)."""
    out: Dict[str, Any] = {}
    for item in re.split(r",(?![^()\[\]]*[)\]])", text or ""):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"--encoder-overrides: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def merge_overrides(base: str, extra: str) -> str:
    """``base`` overrides with ``extra``'s on top (``extra`` wins), as one override string."""
    merged = {**parse_overrides(base), **parse_overrides(extra)}
    return ",".join(f"{k}={v!r}" for k, v in merged.items())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
