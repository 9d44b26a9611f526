"""Hugging Face ``transformers`` checkpoints (a ``save_pretrained`` directory) -> our models.

WavLM: ``transformers.WavLMModel`` (or a ``WavLMFor*`` model: its ``wavlm.`` part) becomes our
:class:`~icefall.ssl.wavlm.WavlmModel` over the wav2vec2 CNN front end and the Transformer with
gated relative position bias. Without ``transformers`` installed: the directory holds
``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, read with ``weights_only``).

    state, config = read_hf_wavlm("wavlm-base-plus/")            # (our state dict, ModelConfig)
    model, config = load_model("hf-wavlm:wavlm-base-plus/")      # the one loader, any entry point

HF's WavLMModel has no pretraining head: ``final_proj`` and ``label_embs_concat`` start afresh
(``num_classes`` 500, as fairseq HuBERT's second iteration). Key mapping: :data:`WAVLM_KEYS`
(docs/interop.md).
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch
from torch import Tensor

from icefall.models import ModelConfig
from icefall.nn.configs import CnnFrontEndConfig, EncoderConfig, TransformerConfig

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
    """The weights of a ``save_pretrained`` directory: ``model.safetensors`` (or its shards'
    index), else ``pytorch_model.bin`` loaded with ``weights_only``."""
    d = Path(directory)
    files = sorted(d.glob("model*.safetensors"))
    if files:
        from safetensors.torch import load_file

        return {k: v for f in files for k, v in load_file(str(f)).items()}
    if (d / "pytorch_model.bin").is_file():
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise HfCheckpointError(f"{d}: no model.safetensors or pytorch_model.bin (not a save_pretrained directory)")


def read_hf_wavlm(directory: PathLike) -> Tuple[Dict[str, Tensor], ModelConfig]:
    """(our WavlmModel state dict, its ModelConfig) of an HF WavLM ``save_pretrained``
    directory: the reader :func:`icefall.models.load_model` uses for ``hf-wavlm:<dir>``."""
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
        config = wavlm_config_from_hf(cfg, do_normalize, source=f"hf-wavlm:{d}")
    except HfCheckpointError as e:
        raise HfCheckpointError(f"{d}: {e}") from e
    return state, config
