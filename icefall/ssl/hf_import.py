"""Hugging Face ``transformers`` checkpoints (a ``save_pretrained`` directory: ``config.json``
and ``model.safetensors``, its shards, or ``pytorch_model.bin`` read with ``weights_only``) ->
our models, without importing ``transformers``.

    model, config = load_model("hf:/path/to/wav2vec2-base")      # any supported model_type
    model, config = load_model("hf:wavlm-base-plus/")      # WavLM

``read_hf_model`` (``hf:<dir>``) dispatches on ``config.json``'s ``model_type``:

- ``wav2vec2`` (``Wav2Vec2Model``, and the ``wav2vec2.`` body of ``Wav2Vec2ForPreTraining`` /
  ``Wav2Vec2ForCTC``): group-norm (Base) or layer-norm (``feat_extract_norm="layer"``) CNN,
  post-norm or pre-norm (``do_stable_layer_norm``) layers -> our ``wav2vec2`` objective;
  ``Wav2Vec2ForPreTraining`` 's quantizer, ``project_q`` and ``project_hid`` become its head.
- ``hubert`` (``HubertModel`` / ``HubertForCTC``): wav2vec 2.0's keys and encoder (with the
  feature-projection LayerNorm) -> the ``hubert`` objective's model, its head afresh.
- ``data2vec-audio`` (``Data2VecAudioModel``): layer-norm CNN, a stack of
  ``num_conv_pos_embeddings`` positional convs (``pos_conv_depth``), post-norm layers -> the
  ``hubert`` objective's model (front end, encoder and mask embedding: what fine-tuning,
  feature extraction and k-means use; its head starts afresh).
- ``wavlm`` (``WavLMModel`` / ``WavLMFor*``): :func:`read_hf_wavlm`, our
  :class:`~icefall.ssl.wavlm.WavlmModel` over the Transformer with gated relative position bias.
  HF's WavLMModel has no pretraining head: ``final_proj`` and ``label_embs_concat`` start afresh
  (``num_classes`` 500, as fairseq HuBERT's second iteration).

The wav2vec 2.0 family is table-driven (:data:`HF_MODELS`: a key-mapping table, the reading of
its config and the objective per ``model_type``). A config field we do not implement
(``add_adapter``, another activation, another LayerNorm epsilon, ...) is an
:class:`HfCheckpointError` naming the file and the field. Task heads (``lm_head``,
``projector``, ``classifier``, ...) are dropped. Waveform normalisation is a preprocessor
setting: ``do_normalize`` of ``preprocessor_config.json`` when the directory has one, else off.
Key mappings: docs/interop.md.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
from torch import Tensor

from icefall.models import ModelConfig, get_objective
from icefall.nn.configs import CnnFrontEndConfig, EncoderConfig, TransformerConfig, encoder_config

PathLike = Union[str, Path]


class HfCheckpointError(ValueError):
    """Not a (supported) Hugging Face checkpoint; the message names the directory."""


#: HF WavLMModel key (regex, anchored) -> ours (WavlmModel). Group numbers carry layer indices.
WAVLM_KEYS: List[Tuple[str, str]] = [
    (r"masked_spec_embed", r"mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"frontend.feature_extractor.conv_layers.\1.conv."),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"frontend.feature_extractor.conv_layers.\1.norm."),
    (r"feature_projection\.layer_norm\.", r"frontend.layer_norm."),
    (r"feature_projection\.projection\.", r"frontend.post_extract_proj."),
    (r"encoder\.pos_conv_embed\.conv\.", r"encoder.pos_conv.conv."),
    (r"encoder\.layer_norm\.", r"encoder.layer_norm."),
    # WavLM keeps the shared bucket embedding in layer 0; ours sits in the encoder
    (r"encoder\.layers\.0\.attention\.rel_attn_embed\.", r"encoder.rel_pos_bias.embedding."),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
]

# torch.nn.utils.weight_norm names (older transformers) -> parametrizations (ours)
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def convert_hf_wavlm_state_dict(hf: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """HF WavLM keys -> ours (:data:`WAVLM_KEYS`). A ``wavlm.`` prefix (``WavLMFor*`` models)
    is stripped and their task heads left out; any other unknown key is a
    :class:`HfCheckpointError` naming it."""
    if any(k.startswith("wavlm.") for k in hf):
        heads = sorted(k for k in hf if not k.startswith("wavlm."))
        if heads:
            logging.info(f"HF WavLM: leaving out the task head {heads[:6]}")
        hf = {k[len("wavlm."):]: v for k, v in hf.items() if k.startswith("wavlm.")}
    out, unknown = {}, []
    for key, value in hf.items():
        for pattern, repl in WAVLM_KEYS:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                for old, ours in _WEIGHT_NORM.items():
                    new = re.sub(rf"\.{old}$", "." + ours, new)
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise HfCheckpointError(f"HF WavLM keys with no counterpart here: {unknown[:8]}"
                                + (" (adapter layers are not supported)" if any("adapter" in k for k in unknown) else ""))
    return out


def wavlm_config_from_hf(cfg: Dict[str, Any], do_normalize: bool = False, source: str = "") -> ModelConfig:
    """Our :class:`ModelConfig` (``wavlm`` objective) from an HF ``WavLMConfig`` dict
    (``config.json``); ``do_normalize``: the feature extractor's per-waveform normalisation
    (``preprocessor_config.json``), done by our front end."""
    from icefall.ssl.wavlm import WavlmConfig

    def get(key: str, default: Any) -> Any:
        return cfg.get(key, default)

    for key, ok in (("feat_extract_activation", "gelu"), ("hidden_act", "gelu"), ("layer_norm_eps", 1e-5),
                    ("add_adapter", False)):
        if get(key, ok) != ok:
            raise HfCheckpointError(f"HF WavLM option {key}={cfg[key]!r} is not supported (only {ok!r})")
    conv_layers = tuple((int(c), int(k), int(s)) for c, k, s in
                        zip(get("conv_dim", [512] * 7), get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]),
                            get("conv_stride", [5, 2, 2, 2, 2, 2, 2])))
    norm = get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise HfCheckpointError(f"HF WavLM feat_extract_norm={norm!r}: expected 'group' or 'layer'")
    layer_norm_first = bool(get("do_stable_layer_norm", False))
    frontend = CnnFrontEndConfig(mode=norm, conv_layers=conv_layers, conv_bias=bool(get("conv_bias", False)),
                                 dropout_input=float(get("feat_proj_dropout", 0.0)), normalize=do_normalize)
    encoder = TransformerConfig(
        embed_dim=int(get("hidden_size", 768)), ffn_dim=int(get("intermediate_size", 3072)),
        num_heads=int(get("num_attention_heads", 12)), num_layers=int(get("num_hidden_layers", 12)),
        layer_norm_first=layer_norm_first, dropout=float(get("hidden_dropout", 0.1)),
        attention_dropout=float(get("attention_dropout", 0.1)),
        activation_dropout=float(get("activation_dropout", 0.0)), layerdrop=float(get("layerdrop", 0.1)),
        conv_pos=int(get("num_conv_pos_embeddings", 128)),
        conv_pos_groups=int(get("num_conv_pos_embedding_groups", 16)),
        gated_rel_pos_bias=True, rel_pos_buckets=int(get("num_buckets", 320)),
        rel_pos_max_distance=int(get("max_bucket_distance", 800)))
    name = "hubert-large" if layer_norm_first else "hubert-base"  # the closest named configuration
    objective = WavlmConfig(frame_rate=16000 / math.prod(s for _, _, s in conv_layers),
                            mask_prob=float(get("mask_time_prob", 0.05)),
                            mask_length=int(get("mask_time_length", 10)))
    return ModelConfig("pretrain", EncoderConfig(name, frontend, encoder), "wavlm", objective, source=source)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HfCheckpointError(f"{path}: cannot read it as JSON: {e}") from e


def read_hf_state_dict(directory: PathLike) -> Dict[str, Tensor]:
    """The weights of a ``save_pretrained`` directory: ``model.safetensors`` (or the shards its
    index names), else ``pytorch_model.bin`` loaded with ``weights_only``. An unreadable file is
    an :class:`HfCheckpointError` naming it."""
    d = Path(directory)
    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file() or index.is_file():
        from safetensors.torch import load_file

        files = [single] if single.is_file() else sorted(
            {d / f for f in _read_json(index).get("weight_map", {}).values()})
        state: Dict[str, Tensor] = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except Exception as e:  # truncated, not safetensors, a missing shard
                raise HfCheckpointError(f"{f}: cannot read as safetensors ({type(e).__name__}: {e})") from e
        return state
    binary = d / "pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:
            raise HfCheckpointError(f"{binary}: cannot read with weights_only ({type(e).__name__}: {e})") from e
    raise HfCheckpointError(f"{d}: no model.safetensors or pytorch_model.bin (not a save_pretrained directory)")


def read_hf_wavlm(directory: PathLike) -> Tuple[Dict[str, Tensor], ModelConfig]:
    """(our WavlmModel state dict, its ModelConfig) of an HF WavLM ``save_pretrained``
    directory (:func:`read_hf_model` reads ``model_type`` "wavlm" with it)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such directory (an HF save_pretrained directory is expected)")
    cfg = _read_json(d / "config.json")
    if cfg.get("model_type") != "wavlm":
        raise HfCheckpointError(f"{d}/config.json: model_type {cfg.get('model_type')!r}, expected 'wavlm'")
    pre = d / "preprocessor_config.json"
    do_normalize = bool(_read_json(pre).get("do_normalize", False)) if pre.is_file() else False
    hf_state = read_hf_state_dict(d)
    try:
        state = convert_hf_wavlm_state_dict(hf_state)
        config = wavlm_config_from_hf(cfg, do_normalize, source=f"hf:{d}")
    except HfCheckpointError as e:
        raise HfCheckpointError(f"{d}: {e}") from e
    return state, config


# --------------------------------------------------------------------------- the wav2vec 2.0 family (table-driven)
_I = r"(?P<i>\d+)"
_P = r"(?P<p>weight|bias)"
_ATT = r"(?P<m>[qkv]_proj|out_proj)"
_FE = "frontend.feature_extractor.conv_layers"

#: (HF regex, our template) rows shared by the wav2vec 2.0 family (HF keys without the task
#: model's prefix).
_WAV2VEC2_BODY: List[Tuple[str, str]] = [
    (r"masked_spec_embed", "mask_emb"),
    (rf"feature_extractor\.conv_layers\.{_I}\.conv\.{_P}", rf"{_FE}.{_I}.conv.{_P}"),
    (rf"feature_extractor\.conv_layers\.{_I}\.layer_norm\.{_P}", rf"{_FE}.{_I}.norm.{_P}"),
    (rf"feature_projection\.layer_norm\.{_P}", rf"frontend.layer_norm.{_P}"),
    (rf"feature_projection\.projection\.{_P}", rf"frontend.post_extract_proj.{_P}"),
    (rf"encoder\.layer_norm\.{_P}", rf"encoder.layer_norm.{_P}"),
    (rf"encoder\.layers\.{_I}\.attention\.{_ATT}\.{_P}", rf"encoder.layers.{_I}.self_attn.{_ATT}.{_P}"),
    (rf"encoder\.layers\.{_I}\.layer_norm\.{_P}", rf"encoder.layers.{_I}.self_attn_layer_norm.{_P}"),
    (rf"encoder\.layers\.{_I}\.feed_forward\.intermediate_dense\.{_P}", rf"encoder.layers.{_I}.fc1.{_P}"),
    (rf"encoder\.layers\.{_I}\.feed_forward\.output_dense\.{_P}", rf"encoder.layers.{_I}.fc2.{_P}"),
    (rf"encoder\.layers\.{_I}\.final_layer_norm\.{_P}", rf"encoder.layers.{_I}.final_layer_norm.{_P}"),
    # pre-norm (do_stable_layer_norm) models keep the same layer keys
]
_WN = "encoder.pos_conv.conv.parametrizations.weight.original"
_WAV2VEC2_POS = [
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original(?P<k>[01])", _WN + "(?P<k>[01])"),
    (r"encoder\.pos_conv_embed\.conv\.weight_g", _WN + "0"),  # torch.nn.utils.weight_norm names
    (r"encoder\.pos_conv_embed\.conv\.weight_v", _WN + "1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.conv.bias"),
]
#: Wav2Vec2ForPreTraining's head, outside its ``wav2vec2.`` prefix.
_WAV2VEC2_HEAD = [
    (r"quantizer\.codevectors", "quantizer.vars"),
    (rf"quantizer\.weight_proj\.{_P}", rf"quantizer.weight_proj.{_P}"),
    (rf"project_q\.{_P}", rf"project_q.{_P}"),
    (rf"project_hid\.{_P}", rf"final_proj.{_P}"),
]
_DATA2VEC_POS = [
    (rf"encoder\.pos_conv_embed\.layers\.{_I}\.conv\.{_P}", rf"encoder.pos_conv.layers.{_I}.conv.{_P}"),
]
#: Heads of HF task models that have no counterpart here (dropped, logged).
_TASK_HEADS = r"(lm_head|projector|classifier|feature_extractor_head|tdnn|objective|dropout_features)\..*|layer_weights"


# --------------------------------------------------------------------------- configs
def _check(cfg: Dict[str, Any], path: Path, expected: Dict[str, Any]) -> None:
    """Every ``field: value`` of ``expected`` must hold in ``cfg`` (a missing field takes it)."""
    for key, ok in expected.items():
        value = cfg.get(key, ok)
        if value != ok and not (isinstance(ok, float) and isinstance(value, (int, float)) and abs(value - ok) < 1e-12):
            raise HfCheckpointError(f"{path}: config field {key}={value!r} is not supported (only {ok!r})")


def _common_encoder(cfg: Dict[str, Any], path: Path, normalize: bool) -> Dict[str, Any]:
    """Our encoder overrides for the fields the wav2vec 2.0 family shares."""
    _check(cfg, path, {"hidden_act": "gelu", "feat_extract_activation": "gelu", "layer_norm_eps": 1e-5,
                       "add_adapter": False})
    conv = [tuple(int(v) for v in t) for t in zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])]
    if conv[-1][0] == cfg["hidden_size"]:
        raise HfCheckpointError(f"{path}: conv_dim[-1] == hidden_size ({cfg['hidden_size']}) is not supported "
                            "(our front end has no projection between equal widths)")
    return dict(
        embed_dim=int(cfg["hidden_size"]), ffn_dim=int(cfg["intermediate_size"]),
        num_heads=int(cfg["num_attention_heads"]), num_layers=int(cfg["num_hidden_layers"]),
        dropout=float(cfg.get("hidden_dropout", 0.1)), attention_dropout=float(cfg.get("attention_dropout", 0.1)),
        activation_dropout=float(cfg.get("activation_dropout", 0.1)), layerdrop=float(cfg.get("layerdrop", 0.1)),
        conv_pos_groups=int(cfg["num_conv_pos_embedding_groups"]),
        frontend_conv_layers=conv, frontend_conv_bias=bool(cfg.get("conv_bias", False)),
        frontend_dropout_input=float(cfg.get("feat_proj_dropout", 0.0)), frontend_normalize=normalize,
    )


def _wav2vec2_encoder(cfg: Dict[str, Any], path: Path, normalize: bool) -> Dict[str, Any]:
    norm = cfg.get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise HfCheckpointError(f"{path}: config field feat_extract_norm={norm!r} is not supported")
    return dict(_common_encoder(cfg, path, normalize), frontend_mode=norm,
                layer_norm_first=bool(cfg.get("do_stable_layer_norm", False)),
                conv_pos=int(cfg["num_conv_pos_embeddings"]), pos_conv_depth=1)


def _hubert_encoder(cfg: Dict[str, Any], path: Path, normalize: bool) -> Dict[str, Any]:
    # HF HuBERT has wav2vec 2.0's layout; these two switches change it
    _check(cfg, path, {"feat_proj_layer_norm": True, "conv_pos_batch_norm": False})
    return _wav2vec2_encoder(cfg, path, normalize)


def _data2vec_encoder(cfg: Dict[str, Any], path: Path, normalize: bool) -> Dict[str, Any]:
    depth, kernel = int(cfg["num_conv_pos_embeddings"]), int(cfg["conv_pos_kernel_size"])
    if kernel < 3:  # ours: kernel max(3, conv_pos // depth), as fairseq
        raise HfCheckpointError(f"{path}: config field conv_pos_kernel_size={kernel} is not supported (< 3)")
    return dict(_common_encoder(cfg, path, normalize), frontend_mode="layer", layer_norm_first=False,
                conv_pos=kernel * depth, pos_conv_depth=depth)


def _wav2vec2_objective(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return dict(final_dim=int(cfg.get("proj_codevector_dim", 256)), latent_dim=int(cfg.get("codevector_dim", 256)),
                latent_groups=int(cfg.get("num_codevector_groups", 2)),
                latent_vars=int(cfg.get("num_codevectors_per_group", 320)),
                num_negatives=int(cfg.get("num_negatives", 100)),
                logit_temp=float(cfg.get("contrastive_logits_temperature", 0.1)),
                diversity_weight=float(cfg.get("diversity_loss_weight", 0.1)))


@dataclass(frozen=True)
class HfModelSpec:
    """How one HF ``model_type`` maps onto ours.

    prefix: the base model's key prefix inside the task models (``Wav2Vec2ForCTC``: ``wav2vec2.``).
    keys: (HF regex, our template) rows, named groups carried over.
    encoder: ``(config.json dict, path, normalize) -> our encoder overrides``.
    objective: the objective it loads as; objective_config: ``config -> its fields``.
    """

    prefix: str
    keys: List[Tuple[str, str]]
    encoder: Callable[[Dict[str, Any], Path, bool], Dict[str, Any]]
    objective: str
    objective_config: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda cfg: {}


#: Supported HF ``model_type`` s.
HF_MODELS: Dict[str, HfModelSpec] = {
    "wav2vec2": HfModelSpec("wav2vec2.", _WAV2VEC2_BODY + _WAV2VEC2_POS + _WAV2VEC2_HEAD, _wav2vec2_encoder,
                            "wav2vec2", _wav2vec2_objective),
    "hubert": HfModelSpec("hubert.", _WAV2VEC2_BODY + _WAV2VEC2_POS, _hubert_encoder, "hubert"),
    "data2vec-audio": HfModelSpec("data2vec_audio.", _WAV2VEC2_BODY + _DATA2VEC_POS, _data2vec_encoder, "hubert"),
}


# --------------------------------------------------------------------------- reading
def _fill(template: str, groups: Dict[str, str]) -> str:
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: groups[m.group(1)], template)


def convert_hf_state_dict(state: Dict[str, Tensor], spec: HfModelSpec, path: PathLike = "") -> Dict[str, Tensor]:
    """HF keys -> ours by ``spec.keys``; the base model's prefix is stripped, task heads
    dropped, any other key an :class:`HfCheckpointError` naming it."""
    out, unknown, dropped = {}, [], []
    for key, value in state.items():
        k = key[len(spec.prefix):] if key.startswith(spec.prefix) else key
        for theirs, ours in spec.keys:
            m = re.fullmatch(theirs, k)
            if m:
                out[_fill(ours, m.groupdict())] = value
                break
        else:
            (dropped if re.fullmatch(_TASK_HEADS, k) else unknown).append(key)
    if unknown:
        raise HfCheckpointError(f"{path}: parameters this loader does not know: {unknown[:8]}")
    if dropped:
        logging.info(f"{path}: task-head parameters dropped: {dropped[:8]}")
    return out


def read_hf_model(path: PathLike) -> Tuple[Dict[str, Tensor], ModelConfig]:
    """(our state dict, ModelConfig) of a Hugging Face model directory, any supported
    ``model_type``: the reader :func:`icefall.models.load_model` uses for ``hf:<dir>``."""
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"Hugging Face model directory not found: {directory}")
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise HfCheckpointError(f"{directory}: no config.json (not a save_pretrained directory)")
    cfg = _read_json(cfg_path)
    model_type = cfg.get("model_type")
    if model_type == "wavlm":
        return read_hf_wavlm(directory)
    if model_type not in HF_MODELS:
        raise HfCheckpointError(f"{cfg_path}: model_type {model_type!r} is not supported; "
                                f"supported: {sorted([*HF_MODELS, 'wavlm'])}")
    spec = HF_MODELS[model_type]
    pre = directory / "preprocessor_config.json"
    normalize = bool(_read_json(pre).get("do_normalize", False)) if pre.is_file() else False
    overrides = spec.encoder(cfg, cfg_path, normalize)
    name = "hubert-large" if overrides["layer_norm_first"] else "hubert-base"
    enc = encoder_config(name, frontend_feature_grad_mult=1.0, **overrides)
    obj = get_objective(spec.objective)
    config = ModelConfig("pretrain", enc, spec.objective, obj.config_cls.from_dict(spec.objective_config(cfg)),
                         source=f"hf:{directory}")
    state = convert_hf_state_dict(read_hf_state_dict(directory), spec, directory)
    if spec.objective == "wav2vec2":
        state["num_updates"] = torch.zeros((), dtype=torch.long)  # its temperature schedule starts
    return state, config
