"""One home for models: the registry of pretraining objectives, the model config every run and
checkpoint records, and the one loader of every checkpoint kind the project meets.

    model, config = load_model("zipformer/exp/epoch-20.pt")     # pretrain.py, any --method
    model, config = load_model("zipformer/exp-ft/epoch-20.pt")  # finetune.py -> AsrModel
    model, config = load_model("exp-ft/pretrained.pt")           # export.py
    model, config = load_model("exp/hubert-base-fairseq.pt")     # hubert/convert_fairseq.py
    model, config = load_model("fairseq:hubert_base_ls960.pt")   # a raw fairseq HuBERT file
    model, config = load_model("icefall:exp/epoch-30.pt")        # an icefall / k2SSL checkpoint
    model, config = load_model("hf:wav2vec2-base")               # a Hugging Face save_pretrained dir
    model, config = load_model(path, expect="asr", purpose="decode.py")  # kind checked

``config`` is a :class:`ModelConfig`: ``kind`` ("pretrain" or "asr"), the typed
:class:`~icefall.nn.configs.EncoderConfig`, the objective's name and typed config, and for "asr"
the head's settings. ``config.to_dict()`` is what ``<exp-dir>/config.json`` and every checkpoint
(``params["model_config"]``) hold; :func:`build_model` rebuilds the model from it.

**Objectives.** A pretraining method is one module in ``icefall/ssl/`` that defines an
:class:`Objective` and one line in :data:`OBJECTIVES`. Its model must expose what everything
downstream uses, and nothing else is reached into:

- ``frontend``, ``encoder``, ``mask_emb``: the student's front end, encoder and mask embedding,
  which :class:`SslEncoder` wraps for fine-tuning (its heads, teachers, codebooks are dropped);
- ``extract_features(source, source_lens, layers=None) -> (list of (B,T,D_l), lens)``: index 0
  the front-end output, 1..L the encoder layers (k-means labels, feature extraction, layer
  evaluation);
- ``forward(source, source_lens[, labels]) -> (loss, stats)`` for ``icefall.ssl.pretrain``.

Fine-tuning, k-means labels from a layer, feature extraction, decoding and export then work for
it unchanged. Objective modules are imported by name when first used, so that this module, below
``icefall.ssl`` and ``icefall.asr``, imports neither.

Dependencies point down: recipes -> probe/slm/vc/prune -> asr/ssl/eval -> models -> nn/data.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from icefall.nn.configs import ConfigError, EncoderConfig, _Config, encoder_config, parse_overrides
from icefall.nn.masking import compute_mask

PathLike = Union[str, Path]

#: Registered objectives: name -> "module:attribute" of its :class:`Objective`. Adding one is one
#: module in icefall/ssl/ and one line here.
OBJECTIVES: Dict[str, str] = {
    "hubert": "icefall.ssl.hubert:HUBERT",
    "spidr": "icefall.ssl.spidr:SPIDR",
    "dinosr": "icefall.ssl.spidr:DINOSR",
    "wavlm": "icefall.ssl.wavlm:WAVLM",
    "wav2vec2": "icefall.ssl.wav2vec2:WAV2VEC2",
    "data2vec": "icefall.ssl.data2vec:DATA2VEC",
    "byol": "icefall.ssl.byol:BYOL",
}

#: Builders of the fine-tuned models of each kind other than "pretrain" (``build(config)``), and
#: the head configs they read (``from_params`` reads a checkpoint's params from before model configs).
_TASK_BUILDERS: Dict[str, str] = {"asr": "icefall.asr.model:build_asr_from_config"}
_TASK_CONFIGS: Dict[str, str] = {"asr": "icefall.asr.model:AsrConfig"}

#: Readers of foreign checkpoint formats: ``read(path) -> (state_dict, ModelConfig)``.
_FOREIGN_READERS: Dict[str, str] = {
    "fairseq": "icefall.ssl.fairseq_import:read_fairseq_model",
    "icefall": "icefall.ssl.icefall_import:read_icefall_model",
    "hf": "icefall.ssl.hf_import:read_hf_model",
}

KINDS = ("pretrain", "asr")


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class CheckpointKindError(ValueError):
    """A checkpoint of another kind than the entry point needs (the message says which)."""


class ModelConfigError(ValueError):
    """A checkpoint without a usable model description, or options that contradict it."""


# ------------------------------------------------------------------------------ objectives
@dataclass(frozen=True)
class Objective:
    """How one pretraining method is configured, built and trained.

    Args:
      name: the ``--method`` value.
      config_cls: its frozen config dataclass (``to_dict``/``from_dict``/``replace``); fields
        with ``metadata={"help": ...}`` become ``pretrain.py`` options of the same name.
      build: ``(encoder model (SpeechEncoder), config) -> model``.
      fixed: config fields this registration fixes (e.g. ``variant="dinosr"``).
      needs_labels: batches carry k-means labels (``cut.custom["kmeans"]``).
      encoder_defaults: ``(EncoderConfig, config) -> overrides`` applied before the user's (e.g.
        SpidR's Table 5 settings of a Transformer).
      after_step: a ``Trainer(after_step=...)`` callback (e.g. EMA teacher updates).
      resizable: parameters that start afresh when a run continuing from a checkpoint changes
        their shape (HuBERT's label embeddings, for new k-means labels); any other shape change
        is an error.
    """

    name: str
    config_cls: Type
    build: Callable[[nn.Module, Any], nn.Module]
    fixed: Dict[str, Any] = dataclasses.field(default_factory=dict)
    needs_labels: bool = False
    encoder_defaults: Optional[Callable[[EncoderConfig, Any], Dict[str, Any]]] = None
    after_step: Optional[Callable[[Any], None]] = None
    resizable: Tuple[str, ...] = ()

    def config_from(self, values: Dict[str, Any]):
        """The config from ``values`` (e.g. the run's params): every config field present in
        it, plus :attr:`fixed`."""
        names = [f.name for f in dataclasses.fields(self.config_cls)]
        return self.config_cls.from_dict({**{k: values[k] for k in names if k in values}, **self.fixed})


def list_objectives() -> List[str]:
    return sorted(OBJECTIVES)


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ModelConfigError(f"unknown pretraining method {name!r}; registered: {list_objectives()}")
    return _resolve(OBJECTIVES[name])


def objective_options() -> List[Tuple[str, dataclasses.Field]]:
    """(objective, field) for every config field that is a command-line option, each name once."""
    seen, out = set(), []
    for name in list_objectives():
        obj = get_objective(name)
        for f in dataclasses.fields(obj.config_cls):
            if "help" in f.metadata and f.name not in seen and f.name not in obj.fixed:
                seen.add(f.name)
                out.append((name, f))
    return out


def option_defaults(field_name: str) -> Dict[str, Any]:
    """{objective: its default} of a command-line option shared by several objectives (e.g.
    ``mask_prob``: HuBERT 0.8, wav2vec 2.0 0.65). Where they differ the option defaults to None
    and each objective takes its own (:func:`pretrain_config` ignores None values)."""
    out = {}
    for name in list_objectives():
        obj = get_objective(name)
        for f in dataclasses.fields(obj.config_cls):
            if f.name == field_name and "help" in f.metadata and f.name not in obj.fixed:
                out[name] = f.default
    return out


# ------------------------------------------------------------------------------ model config
@dataclass(frozen=True)
class ModelConfig(_Config):
    """What a checkpoint's model is.

    kind: "pretrain" (an objective's model) or "asr" (a fine-tuned AsrModel over an SslEncoder).
    encoder: the front end + encoder.
    objective: the pretraining method ("pretrain"), or the one the encoder came from ("asr",
      informational; None when trained from scratch).
    objective_config: the objective's typed config ("pretrain" only).
    head: "asr": the AsrModel settings (``icefall.asr.model.AsrConfig`` as a dict).
    source: where the weights came from (e.g. ``fairseq:<path>``), informational.
    """

    kind: str
    encoder: EncoderConfig
    objective: Optional[str] = None
    objective_config: Any = None
    head: Optional[Dict[str, Any]] = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelConfigError(f"model kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "pretrain" and (self.objective is None or self.objective_config is None):
            raise ModelConfigError("a pretraining model config needs an objective and its config")

    @property
    def input_type(self) -> str:
        """"wav" (CNN front end) or "fbank"."""
        return self.encoder.input_type

    def describe(self) -> str:
        """One line for messages: e.g. ``a pretraining checkpoint (spidr, zipformer-tiny, fbank
        front end)``."""
        what = ("a pretraining checkpoint" if self.kind == "pretrain" else "a fine-tuned ASR checkpoint")
        detail = ", ".join(x for x in (self.objective, self.encoder.name, f"{self.encoder.frontend_type} front end") if x)
        return f"{what} ({detail})"

    def to_dict(self) -> Dict[str, Any]:
        oc = self.objective_config
        return {"kind": self.kind, "encoder": self.encoder.to_dict(), "objective": self.objective,
                "objective_config": oc.to_dict() if oc is not None else None,
                "head": dict(self.head) if self.head is not None else None, "source": self.source}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        oc = d.get("objective_config")
        if oc is not None:
            oc = get_objective(d["objective"]).config_cls.from_dict(oc)
        return cls(kind=d["kind"], encoder=EncoderConfig.from_dict(d["encoder"]),
                   objective=d.get("objective"), objective_config=oc, head=d.get("head"),
                   source=d.get("source", ""))


def pretrain_config(method: str, encoder: Union[str, EncoderConfig], frontend: Optional[str] = None,
                    overrides: Union[str, Dict[str, Any]] = "", values: Optional[Dict[str, Any]] = None) -> ModelConfig:
    """The config of a pretraining run: the named ``encoder`` with the ``frontend`` and the
    objective's encoder defaults (or a given EncoderConfig as it is), then ``overrides`` (a
    ``k=v`` string whose keys are encoder fields or fields of the objective's config), objective
    fields from ``values`` (the run's options) first. Unknown keys:
    :class:`~icefall.nn.configs.ConfigError` listing the valid ones."""
    obj = get_objective(method)
    kv = parse_overrides(overrides) if isinstance(overrides, str) else dict(overrides)
    obj_fields = set(obj.config_cls.field_names())
    obj_kv = {k: v for k, v in kv.items() if k in obj_fields}
    # None: an option left at its per-objective default (see option_defaults)
    cfg = obj.config_from({**{k: v for k, v in (values or {}).items() if v is not None}, **obj_kv})
    if frontend and kv.get("frontend", frontend) != frontend:
        raise ConfigError(f"--frontend {frontend} and --encoder-overrides frontend={kv['frontend']} disagree")
    if isinstance(encoder, EncoderConfig):
        enc = encoder
    else:
        enc = encoder_config(encoder, **({"frontend": frontend} if frontend else {}))
        if obj.encoder_defaults is not None:
            enc = enc.with_overrides(**obj.encoder_defaults(enc, cfg))
    enc_kv = {k: v for k, v in kv.items() if k not in obj_fields}
    try:
        enc = enc.with_overrides(**enc_kv)
    except ConfigError as e:
        raise ConfigError(f"{e}; or a {obj.config_cls.__name__} field: {sorted(obj_fields - set(obj.fixed))}") from e
    return ModelConfig("pretrain", enc, method, cfg)


# ------------------------------------------------------------------------------ building
class SslEncoder(nn.Module):
    """``(x, x_lens) -> (out (B,T,D), lens)``: a pretrained front end + encoder (+ the mask
    embedding), the encoder of every fine-tuned model, whatever objective trained it.

    In training, span masking with the learned mask embedding (as fairseq's ``apply_mask``) when
    ``mask_prob > 0``; the encoder runs without gradients while ``num_updates < freeze_steps``.

    Args:
      frontend: ``(source, lens) -> (x (B,T,D_in), lens)`` with ``output_dim``.
      encoder: ``(x, lens[, return_hidden]) -> (out (B,T,D), lens[, hidden])`` with ``output_dim``.
      mask_emb: (D_in,) parameter, or None for a fresh one.
      config: the EncoderConfig of ``frontend`` + ``encoder`` (recorded by fine-tuning).
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, mask_emb: Optional[nn.Parameter] = None,
                 mask_prob: float = 0.65, mask_length: int = 10, freeze_steps: int = 0, min_masks: int = 2,
                 config: Optional[EncoderConfig] = None):
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.encoder = encoder
        self.mask_emb = mask_emb if mask_emb is not None else nn.Parameter(torch.empty(frontend.output_dim).uniform_())
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.min_masks = min_masks
        self.freeze_steps = freeze_steps
        self.num_updates = 0
        self.output_dim = encoder.output_dim
        # An objective may freeze parts that feed none of its heads (SpidR's last LayerNorm);
        # fine-tuning trains everything.
        self.requires_grad_(True)

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> "SslEncoder":
        """The SslEncoder of an objective's model (sharing its modules) or of an AsrModel."""
        if isinstance(model, SslEncoder):
            return cls(model.frontend, model.encoder, model.mask_emb, **kwargs)
        if hasattr(model, "encoder") and isinstance(model.encoder, SslEncoder):  # AsrModel
            return cls.from_model(model.encoder, **kwargs)
        missing = [a for a in ("frontend", "encoder", "mask_emb") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"{type(model).__name__} lacks {missing}: not an SSL objective's model")
        return cls(model.frontend, model.encoder, model.mask_emb, **kwargs)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        frozen = self.training and self.num_updates < self.freeze_steps
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            feats, lens = self.frontend(x, x_lens)
            if self.training and self.mask_prob > 0:
                mask = compute_mask(feats.shape[:2], lens, self.mask_prob, self.mask_length,
                                    self.min_masks).to(feats.device)
                feats = torch.where(mask.unsqueeze(-1), self.mask_emb.to(feats.dtype), feats)
            return self.encoder(feats, lens)

    @torch.no_grad()
    def extract_features(self, source: Tensor, source_lens: Tensor,
                         layers: Optional[List[int]] = None) -> Tuple[List[Tensor], Tensor]:
        """Unmasked per-layer outputs: index 0 the front end, 1..L the encoder layers (restricted
        to ``layers`` when given), each (B,T,D_l); and lens (B,)."""
        x, lens = self.frontend(source, source_lens)
        return layer_features(self.encoder, x, lens, layers)


def select_layers(all_layers: List[Tensor], layers: Optional[List[int]] = None) -> List[Tensor]:
    """``all_layers`` (index 0 the front end, 1..L the encoder layers) restricted to ``layers``."""
    return all_layers if layers is None else [all_layers[i] for i in layers]


def layer_features(encoder: nn.Module, x: Tensor, lens: Tensor,
                   layers: Optional[List[int]] = None) -> Tuple[List[Tensor], Tensor]:
    """What ``extract_features`` returns, from the front-end output x (B,T,D) and lens (B,):
    x (index 0) and each encoder layer's output (1..L), each (B,T,D_l), restricted to
    ``layers`` when given; and the encoder's output lens (B,)."""
    _, out_lens, hidden = encoder(x, lens, return_hidden=True)
    return select_layers([x, *hidden], layers), out_lens


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of ``config`` (an objective's model, or an AsrModel)."""
    if config.kind == "pretrain":
        obj = get_objective(config.objective)
        return obj.build(config.encoder.build(), config.objective_config)
    return _resolve(_TASK_BUILDERS[config.kind])(config)


# ------------------------------------------------------------------------------ reading
def _legacy_config(params: Dict[str, Any]) -> ModelConfig:
    """The config of a checkpoint written before ``model_config`` existed (its params)."""
    if all(k in params for k in ("encoder", "encoder_overrides", "hubert_config")):  # converted fairseq
        enc = encoder_config(params["encoder"], **params["encoder_overrides"])
        hubert = get_objective("hubert").config_cls
        known = set(hubert.field_names())
        cfg = hubert.from_dict({k: v for k, v in params["hubert_config"].items() if k in known})
        return ModelConfig("pretrain", enc, "hubert", cfg, source=str(params.get("source", "")))
    if "encoder" not in params or "frontend" not in params:
        raise ModelConfigError("its params record no model (no model_config, encoder or frontend)")
    if "vocab_size" in params:  # a finetune.py checkpoint
        ssl = params.get("ssl_params")
        if ssl is not None:  # fairseq-initialised
            enc = encoder_config(ssl["encoder"], **ssl["encoder_overrides"])
        else:
            enc = encoder_config(params["encoder"], **{"frontend": params["frontend"],
                                                        **parse_overrides(params.get("encoder_overrides", ""))})
        return ModelConfig("asr", enc, head=_resolve(_TASK_CONFIGS["asr"]).from_params(params).to_dict())
    return pretrain_config(params.get("method", "hubert"), params["encoder"], params["frontend"],
                           params.get("encoder_overrides", ""), params)


def model_config_of(ckpt: Dict[str, Any], path: PathLike = "") -> ModelConfig:
    """The :class:`ModelConfig` of one of our checkpoint dicts (``params["model_config"]``, or
    rebuilt from older params)."""
    params = ckpt.get("params") if isinstance(ckpt, dict) else None
    if not isinstance(params, dict):
        raise ModelConfigError(f"{path}: not one of our checkpoints (no 'params')")
    try:
        if params.get("model_config") is not None:
            return ModelConfig.from_dict(params["model_config"])
        return _legacy_config(params)
    except (ConfigError, ModelConfigError, KeyError, TypeError) as e:
        raise ModelConfigError(f"{path}: cannot tell which model it holds: {e}") from e


def read_checkpoint(spec: PathLike, averaged: bool = False) -> Tuple[Dict[str, Tensor], ModelConfig]:
    """(state dict, config) of any checkpoint kind (see :func:`load_model`). ``averaged``: take
    ``model_avg`` when the checkpoint has one (pretraining init), else ``model``."""
    from icefall.checkpoint import load_file

    spec = str(spec)
    for prefix, reader in _FOREIGN_READERS.items():
        if spec.startswith(prefix + ":"):
            return _resolve(reader)(spec[len(prefix) + 1:])
    try:
        ckpt = load_file(spec)
    except FileNotFoundError:
        raise
    except Exception as ours:  # not loadable as ours: a foreign pickle (fairseq's omegaconf cfg)?
        try:
            return _resolve(_FOREIGN_READERS["fairseq"])(spec)
        except Exception:
            raise ours from None
    if isinstance(ckpt, dict) and "params" not in ckpt and ("cfg" in ckpt or "args" in ckpt):
        return _resolve(_FOREIGN_READERS["fairseq"])(spec)
    config = model_config_of(ckpt, spec)
    if not isinstance(ckpt.get("model"), dict):
        raise ModelConfigError(f"{spec}: no 'model' state dict")
    state = ckpt["model_avg"] if averaged and ckpt.get("model_avg") is not None else ckpt["model"]
    return state, config


def check_kind(config: ModelConfig, expect: Optional[str], path: PathLike, purpose: str) -> None:
    """Raise :class:`CheckpointKindError` unless ``config.kind == expect`` (None: any)."""
    if expect is None or config.kind == expect:
        return
    need = {"asr": "a fine-tuned one (finetune.py: epoch-N.pt, checkpoint-B.pt, or export.py's pretrained.pt)",
            "pretrain": "a pretraining one (pretrain.py)"}[expect]
    raise CheckpointKindError(f"{path} is {config.describe()}; {purpose or 'this'} needs {need}")


def check_options_agree(params: Dict[str, Any], held: ModelConfig, spec: str,
                        always: Optional[Dict[str, Tuple[Any, Any]]] = None) -> None:
    """``--encoder``/``--frontend`` given on the command line (a recipe's default is for
    ``--init-ckpt none`` only) with a checkpoint must be what it holds; so must ``always``
    (``{option: (asked, held)}``, checked whether given or not)."""
    given = set(params.get("options_given") or ())
    asked = {f"--{k}": (params.get(k), h) for k, h in
             (("encoder", held.encoder.name), ("frontend", held.encoder.frontend_type)) if k in given}
    asked.update(always or {})
    wrong = {k: v for k, v in asked.items() if v[0] != v[1]}
    if wrong:
        what = "; ".join(f"{k} {a} was asked, the checkpoint holds {h}" for k, (a, h) in wrong.items())
        hint = (" (a front end cannot be swapped under trained weights: for an fbank model, e.g. for "
                "sherpa-onnx, pretrain one with --frontend fbank)" if "--frontend" in wrong else "")
        raise ModelConfigError(
            f"--init-ckpt {spec} is {held.describe()}: {what}. The architecture comes from the "
            f"checkpoint: leave these options out (or set them to the checkpoint's), or start "
            f"from scratch with --init-ckpt none{hint}")


def load_model(spec: PathLike, expect: Optional[str] = None, purpose: str = "",
               averaged: bool = False, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, ModelConfig]:
    """The model of any checkpoint, in eval mode, and its :class:`ModelConfig`.

    Args:
      spec: one of our checkpoints (``pretrain.py`` of every ``--method``, ``finetune.py``'s
        ``epoch-N.pt``/``checkpoint-B.pt``, ``export.py``'s ``pretrained.pt``, a file of
        ``hubert/convert_fairseq.py``), a fairseq HuBERT or wav2vec 2.0 file (``fairseq:<path>``,
        or detected), an icefall one (``icefall:<path>``) or a Hugging Face model directory
        (``hf:<dir>``: Wav2Vec2Model, Data2VecAudioModel, WavLMModel).
      expect: "pretrain" or "asr" to require that kind (:class:`CheckpointKindError`).
      purpose: the entry point, named in errors (e.g. "decode.py").
      averaged: use the running-average weights (``model_avg``) when present.
    """
    state, config = read_checkpoint(spec, averaged)
    check_kind(config, expect, spec, purpose)
    model = build_model(config)
    load_weights(model, state, spec, config)
    return model.to(device).eval(), config


#: Parameters a checkpoint may lack: a fine-tuned fairseq file, or a Hugging Face base model, has
#: no pretraining head (HuBERT's, wav2vec 2.0's).
_OPTIONAL = ("final_proj.weight", "final_proj.bias", "label_embs_concat", "quantizer.vars",
             "quantizer.weight_proj.weight", "quantizer.weight_proj.bias", "project_q.weight", "project_q.bias")


def load_weights(model: nn.Module, state: Dict[str, Tensor], path: PathLike, config: ModelConfig,
                 optional: Sequence[str] = ()) -> None:
    """Copy ``state`` into ``model``; a mismatch is an error naming the file and its model.
    ``optional``: parameters that may be absent (besides a fairseq file's pretraining head)."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ModelConfigError(f"{path} ({config.describe()}): its weights do not fit the model "
                               f"built from its config: {str(e)[:800]}") from e
    missing = [k for k in result.missing_keys if k not in _OPTIONAL and k not in optional]
    if missing or result.unexpected_keys:
        raise ModelConfigError(
            f"{path} ({config.describe()}): its weights do not fit the model built from its config: "
            f"missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}")
    if result.missing_keys:
        logging.info(f"{path}: {result.missing_keys} not in the checkpoint: randomly initialised")


def load_feature_model(spec: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, ModelConfig]:
    """A model with ``extract_features(source, lens, layers)`` from any checkpoint, in eval mode:
    a pretraining checkpoint's objective model, or a fine-tuned one's encoder (an
    :class:`SslEncoder` with the fine-tuned weights). Layer indices mean the same in both."""
    model, config = load_model(spec, device=device)
    return (model.encoder if config.kind == "asr" else model), config


def write_config_json(exp_dir: PathLike, config: ModelConfig, **extra: Any) -> Path:
    """``<exp_dir>/config.json``: the model config (plus ``extra``), written atomically."""
    path = Path(exp_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.config.json")
    tmp.write_text(json.dumps({"model": config.to_dict(), **extra}, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
