"""Load fairseq HuBERT checkpoints (``hubert_base_ls960.pt``, ``hubert_large_ll60k.pt``, and
fine-tuned ones whose HuBERT sits under ``w2v_encoder.w2v_model.``) into our
:class:`~icefall.ssl.hubert.HubertModel`, and wav2vec 2.0 ones (``wav2vec_small.pt``,
``libri960_big.pt``, fine-tuned ``wav2vec_small_960h.pt``; told apart by the config's model
name) into our :class:`~icefall.ssl.wav2vec2.Wav2Vec2Model` through :func:`read_fairseq_model`
(``load_model("fairseq:<path>")``), without fairseq or omegaconf installed.

A fairseq checkpoint is a pickled dict: ``model`` (the state dict) and the configuration, either
``cfg`` (a pickled omegaconf ``DictConfig``, or a plain dict in newer fairseq) or ``args`` (an
argparse Namespace, older fairseq).  The pickle names omegaconf/fairseq classes; we unpickle it
with stand-in classes for them and turn the config into plain dicts.

    model, cfg = load_fairseq_hubert("hubert_base_ls960.pt")      # our model, fairseq cfg dicts
    sd = convert_fairseq_state_dict(fairseq_sd)                    # fairseq keys -> ours
    fairseq_sd = to_fairseq_state_dict(model)                      # ours -> fairseq keys

Our converted-checkpoint format (``egs/librispeech/SSL/hubert/convert_fairseq.py``) is
``{"model": state_dict, "params": {"encoder": name, "encoder_overrides": {...},
"hubert_config": {...}, "model_config": {...}}}``; :func:`icefall.models.load_model` reads it,
and a raw fairseq file (``fairseq:<path>`` or detected) through :func:`read_fairseq_model`, to
the same model and config, so ``finetune.py --init-ckpt`` takes either.
The key mapping is tabulated in docs/fairseq.md.

Checkpoints are pickles, and unpickling may call whatever the file names; ours calls nothing but
inert stand-ins and an allow-list of harmless globals, and refuses any other with an error
that names it (see docs/training.md, "Safe loading").
"""
from __future__ import annotations

import argparse
import ast
import enum
import logging
import math
import pickle
import re
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from icefall.models import ModelConfig, build_model, get_objective, model_config_of
from icefall.nn.configs import encoder_config
from icefall.ssl.hubert import HubertModel

PathLike = Union[str, Path]

FINETUNED_PREFIX = "w2v_encoder.w2v_model."


class FairseqCheckpointError(ValueError):
    """The file is not a (supported) fairseq HuBERT checkpoint; the message names the file."""


# --------------------------------------------------------------------------- unpickling
class _StandIn:
    """Replaces a class from a package we do not import (omegaconf, fairseq).

    Pickle rebuilds objects by calling the class, ``cls.__new__(cls, *args)`` and then
    ``__setstate__(state)``; we record both so that :func:`_to_plain` can read the contents.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "_StandIn":
        obj = object.__new__(cls)
        obj._args = args
        obj._state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self._state = state


_STAND_INS: Dict[Tuple[str, str], type] = {}

# Packages whose classes become stand-ins: fairseq's and omegaconf's configs, meters and enums,
# and the typing annotations (``typing.Any``) omegaconf keeps in its node metadata.
_STAND_IN_PACKAGES = ("omegaconf", "fairseq", "typing")


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """The real globals a fairseq checkpoint may name: what torch's own weights-only loader
    accepts (tensor rebuilders, dtypes, OrderedDict, ...), plain builtin types, argparse
    Namespaces and numpy arrays/scalars (fairseq keeps numpy numbers in its meters). None of
    them runs code chosen by the file."""
    import copyreg

    import numpy as np

    allowed: Dict[Tuple[str, str], Any] = {}
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        for full, obj in _get_allowed_globals().items():
            module, _, name = full.rpartition(".")
            allowed[(module, name)] = obj
    except ImportError:  # older torch: the tensor rebuilders it always needs
        import collections

        from torch import _utils

        allowed.update({("torch._utils", n): getattr(_utils, n) for n in (
            "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")})
        allowed[("collections", "OrderedDict")] = collections.OrderedDict
    for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bool, slice, object):
        allowed[("builtins", t.__name__)] = t
    allowed[("copyreg", "_reconstructor")] = copyreg._reconstructor  # protocol-0/1 objects
    allowed[("argparse", "Namespace")] = argparse.Namespace
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float64(0).__reduce__()[0]
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "_reconstruct")] = reconstruct
        allowed[(core, "scalar")] = scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for dtype_class in {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSU"}:
        allowed[("numpy.dtypes", dtype_class.__name__)] = dtype_class
    return allowed


_ALLOWED: Optional[Dict[Tuple[str, str], Any]] = None


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that is neither a stand-in nor harmless; it is not called."""


class _StandInUnpickler(pickle.Unpickler):
    """Rebuilds fairseq/omegaconf objects as inert stand-ins and refuses every global that is
    not on the allow-list, so loading never calls anything the file chooses (``os.system``,
    ``builtins.eval``, ...).

    Always stand-ins, even when omegaconf is installed: pickles written by omegaconf 2.0
    (the version fairseq pins) do not load in omegaconf >= 2.1, and one code path is tested.
    """

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if module.split(".")[0] in _STAND_IN_PACKAGES:
            key = (module, name)
            if key not in _STAND_INS:
                _STAND_INS[key] = type(name, (_StandIn,), {"__module__": module})
            return _STAND_INS[key]
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafePickleError(
            f"the pickle asks for the global {module}.{name}, which a checkpoint never needs "
            "and which could run code; refused"
        )


def _stand_in_load(file: Any, **kwargs: Any) -> Any:
    return _StandInUnpickler(file, **kwargs).load()


# torch.load wants a module-like object with ``Unpickler``, ``load`` and ``__name__``.
_PICKLE_MODULE = types.ModuleType("icefall_fairseq_pickle")
_PICKLE_MODULE.Unpickler = _StandInUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = _stand_in_load  # type: ignore[attr-defined]


def _to_plain(obj: Any) -> Any:
    """omegaconf containers/nodes (as stand-ins), Namespaces, tuples -> dicts, lists, scalars."""
    if isinstance(obj, _StandIn):
        state = obj._state
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0] or state[1]
        if isinstance(state, dict):
            if "_content" in state:  # DictConfig / ListConfig
                return _to_plain(state["_content"])
            if "_val" in state:  # a value node
                return _to_plain(state["_val"])
            return {k: _to_plain(v) for k, v in state.items() if not k.startswith("_")}
        if len(obj._args) == 1:  # e.g. an enum member rebuilt as Cls(value)
            return _to_plain(obj._args[0])
        return None
    if isinstance(obj, argparse.Namespace):
        return {k: _to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def _resolve(node: Any, root: Dict[str, Any], seen: Tuple[str, ...] = ()) -> Any:
    """Resolve omegaconf interpolations of the form ``${a.b}`` (e.g. fairseq's
    ``label_rate: ${task.label_rate}``) against ``root``; unresolvable or cyclic ones are left
    as strings."""
    if isinstance(node, dict):
        return {k: _resolve(v, root, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, seen) for v in node]
    if isinstance(node, str):
        m = _INTERPOLATION.match(node)
        if m and m.group(1) not in seen:
            target: Any = root
            for part in m.group(1).split("."):
                if not isinstance(target, dict) or part not in target:
                    return node
                target = target[part]
            return _resolve(target, root, seen + (m.group(1),))
    return node


def _plain_cfg(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's config as ``{"model": {...}, "task": {...}, "criterion": {...}, ...}``.

    Old ``args`` Namespaces are flat: the same dict serves as model, task and criterion.
    """
    cfg = _to_plain(ckpt.get("cfg"))
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        args = _to_plain(ckpt.get("args"))
        if not isinstance(args, dict):
            return {}
        cfg = {"model": args, "task": args, "criterion": args}
    # Fine-tuned: the pretraining config is nested in model.w2v_args (a cfg or a Namespace);
    # its interpolations refer to its own root, so resolve it first.
    w2v = cfg["model"].get("w2v_args")
    if isinstance(w2v, dict):
        if not isinstance(w2v.get("model"), dict):
            w2v = {"model": w2v, "task": w2v, "criterion": w2v}
        cfg["model"]["w2v_args"] = _resolve(w2v, w2v)
    return _resolve(cfg, cfg)


def _load_pickle(path: Path) -> Any:
    """torch.load through the restricted unpickler (stand-ins for omegaconf/fairseq classes,
    every other global refused); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    except UnsafePickleError as e:
        from icefall.checkpoint import UnsafeCheckpointError

        raise UnsafeCheckpointError(f"Refusing to load {path}: {e}") from None
    except Exception as e:  # truncated, not a torch file, ...
        raise FairseqCheckpointError(
            f"{path}: cannot read as a torch/fairseq checkpoint ({type(e).__name__}: {e})"
        ) from e


def _fairseq_parts(ckpt: Any, path: Path) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise FairseqCheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    cfg = _plain_cfg(ckpt)
    if not cfg:
        raise FairseqCheckpointError(f"{path}: not a fairseq checkpoint (no 'cfg' or 'args')")
    return cfg, ckpt["model"]


def read_fairseq_checkpoint(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """Read a fairseq checkpoint without fairseq/omegaconf.

    Returns:
      cfg: plain dicts ``{"model": ..., "task": ..., ...}`` (fine-tuned: ``cfg["model"]
        ["w2v_args"]`` holds the pretraining ``{"model", "task", ...}``);
      the full state dict as stored (fine-tuned keys keep their ``w2v_encoder.`` prefix).
    Raises FairseqCheckpointError naming ``path`` for unreadable or foreign files.
    """
    path = Path(path)
    return _fairseq_parts(_load_pickle(path), path)


# --------------------------------------------------------------------------- key mapping
_I = r"(?P<i>\d+)"
_P = r"(?P<p>weight|bias)"
_LAYER = r"(?P<m>self_attn\.[qkv]_proj|self_attn\.out_proj|self_attn_layer_norm|fc1|fc2|final_layer_norm)"
_FE = r"frontend\.feature_extractor\.conv_layers"
_WN = r"encoder\.pos_conv\.conv\.parametrizations\.weight\.original"

# (fairseq key, our key, extractor mode or None) regex templates; the first match wins in each
# direction (our -> fairseq skips the rows of the other extractor mode).
# Conv block i in fairseq is Sequential(conv, dropout, norm, gelu): index 0 = conv, 2 = norm
# (GroupNorm, layer 0 of "default" mode) or 2.1 (Sequential(transpose, LayerNorm, transpose),
# every layer of "layer_norm" mode).  Weight norm: g = original0, v = original1.
_KEY_MAP: List[Tuple[str, str, Optional[str]]] = [
    (rf"feature_extractor\.conv_layers\.{_I}\.0\.{_P}", rf"{_FE}\.{_I}\.conv\.{_P}", None),
    (rf"feature_extractor\.conv_layers\.{_I}\.2\.1\.{_P}", rf"{_FE}\.{_I}\.norm\.{_P}", "layer"),
    (rf"feature_extractor\.conv_layers\.{_I}\.2\.{_P}", rf"{_FE}\.{_I}\.norm\.{_P}", "group"),
    (rf"layer_norm\.{_P}", rf"frontend\.layer_norm\.{_P}", None),
    (rf"post_extract_proj\.{_P}", rf"frontend\.post_extract_proj\.{_P}", None),
    (r"encoder\.pos_conv\.0\.weight_g", _WN + "0", None),
    (r"encoder\.pos_conv\.0\.weight_v", _WN + "1", None),
    (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original(?P<k>[01])", _WN + "(?P<k>[01])", None),
    (r"encoder\.pos_conv\.0\.bias", r"encoder\.pos_conv\.conv\.bias", None),
    (rf"encoder\.layer_norm\.{_P}", rf"encoder\.layer_norm\.{_P}", None),
    (rf"encoder\.layers\.{_I}\.{_LAYER}\.{_P}", rf"encoder\.layers\.{_I}\.{_LAYER}\.{_P}", None),
    (r"mask_emb", r"mask_emb", None),
    (rf"final_proj\.{_P}", rf"final_proj\.{_P}", None),
    (r"label_embs_concat", r"label_embs_concat", None),
]


def _fill(template: str, groups: Dict[str, str]) -> str:
    """Instantiate a key template with the named groups matched on the other side."""
    out = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: groups[m.group(1)], template)
    return out.replace("\\.", ".")


#: wav2vec 2.0's pretraining head (its ``final_proj`` is HuBERT's row): the Gumbel quantizer
#: and the projection of its output.
_WAV2VEC2_HEAD: List[Tuple[str, str, Optional[str]]] = [
    (r"quantizer\.vars", r"quantizer\.vars", None),
    (rf"quantizer\.weight_proj\.{_P}", rf"quantizer\.weight_proj\.{_P}", None),
    (rf"project_q\.{_P}", rf"project_q\.{_P}", None),
]


def _map_key(key: str, src: int, mode: Optional[str] = None,
             table: List[Tuple[str, str, Optional[str]]] = _KEY_MAP) -> Optional[str]:
    """Map ``key`` from side ``src`` (0 = fairseq, 1 = ours) to the other; None if unknown."""
    for row in table:
        if mode is not None and row[2] not in (None, mode):
            continue
        m = re.fullmatch(row[src], key)
        if m:
            return _fill(row[1 - src], m.groupdict())
    return None


def convert_fairseq_state_dict(state_dict: Dict[str, Tensor], prefix: str = "",
                               model_type: str = "hubert") -> Dict[str, Tensor]:
    """fairseq HuBERT (or wav2vec 2.0) state dict -> our HubertModel (Wav2Vec2Model) state dict.

    Args:
      state_dict: fairseq keys (``feature_extractor.conv_layers.0.0.weight``, ...).
      prefix: only keys under it are converted (``"w2v_encoder.w2v_model."`` for fine-tuned
        checkpoints); the others (e.g. the CTC ``w2v_encoder.proj``) are skipped.
      model_type: "hubert" or "wav2vec2" (adds the quantizer and ``project_q``).
    Raises FairseqCheckpointError for unknown keys under ``prefix`` (e.g. ``target_glu``).
    """
    table = _KEY_MAP + (_WAV2VEC2_HEAD if model_type == "wav2vec2" else [])
    out: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        ours = _map_key(key[len(prefix):], 0, table=table)
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if unknown:
        raise FairseqCheckpointError(f"unsupported fairseq {model_type} parameters: {unknown[:8]}")
    return out


def to_fairseq_state_dict(model: HubertModel) -> Dict[str, Tensor]:
    """Our HubertModel (CNN front end + Transformer encoder) -> fairseq HuBERT keys.

    The positional conv is written with weight_norm's ``weight_g``/``weight_v`` names (what
    fairseq's ``nn.utils.weight_norm`` saves)."""
    layer_mode = any(getattr(b, "norm_type", None) == "layer"
                     for b in model.frontend.feature_extractor.conv_layers)
    out = {}
    for key, value in model.state_dict().items():
        theirs = _map_key(key, 1, "layer" if layer_mode else "group")
        if theirs is None:
            raise KeyError(f"no fairseq name for {key}")
        out[theirs] = value
    return out


# --------------------------------------------------------------------------- configs
def _literal_expr(spec: str) -> Any:
    """Evaluate fairseq's ``conv_feature_layers`` string (lists/tuples of numbers joined by
    ``+`` and ``*``) without ``eval``."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported conv_feature_layers expression: {spec!r}")

    return ev(ast.parse(spec, mode="eval"))


def _get(d: Dict[str, Any], key: str, default: Any) -> Any:
    value = d.get(key, default)
    return default if value is None or value == "???" else value


def _encoder_overrides(m: Dict[str, Any], task: Dict[str, Any]) -> Dict[str, Any]:
    """Our encoder overrides from a fairseq HuBERT / wav2vec 2.0 model config (``m``) and its
    task's (waveform normalisation); options we do not implement are NotImplementedError."""
    for key, ok in (("activation_fn", "gelu"), ("layer_type", "transformer"),
                    ("pos_conv_depth", 1), ("conv_pos_batch_norm", False), ("target_glu", False)):
        if _get(m, key, ok) != ok:
            raise NotImplementedError(f"fairseq option {key}={m[key]!r} is not supported")
    conv_layers = [tuple(int(v) for v in layer) for layer in
                   _literal_expr(_get(m, "conv_feature_layers",
                                      "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))]
    return dict(
        embed_dim=int(_get(m, "encoder_embed_dim", 768)),
        ffn_dim=int(_get(m, "encoder_ffn_embed_dim", 3072)),
        num_heads=int(_get(m, "encoder_attention_heads", 12)),
        num_layers=int(_get(m, "encoder_layers", 12)),
        layer_norm_first=bool(_get(m, "layer_norm_first", False)),
        dropout=float(_get(m, "dropout", 0.1)),
        attention_dropout=float(_get(m, "attention_dropout", 0.1)),
        activation_dropout=float(_get(m, "activation_dropout", 0.0)),
        layerdrop=float(_get(m, "encoder_layerdrop", 0.0)),
        conv_pos=int(_get(m, "conv_pos", 128)),
        conv_pos_groups=int(_get(m, "conv_pos_groups", 16)),
        frontend_mode={"default": "group", "layer_norm": "layer"}[_get(m, "extractor_mode", "default")],
        frontend_conv_bias=bool(_get(m, "conv_bias", False)),
        frontend_conv_layers=conv_layers,
        frontend_feature_grad_mult=float(_get(m, "feature_grad_mult", 1.0)),
        frontend_dropout_input=float(_get(m, "dropout_input", 0.0)),
        # fairseq normalizes each waveform in the data pipeline (task.normalize); we do it
        # in the front end.
        frontend_normalize=bool(_get(task, "normalize", False)),
    )


def hubert_params_from_fairseq(cfg: Dict[str, Any], state_dict: Optional[Dict[str, Tensor]] = None,
                               prefix: str = "") -> Dict[str, Any]:
    """Our model description from a fairseq config (as :func:`read_fairseq_checkpoint` gives).

    Returns ``{"encoder": "hubert-base"|"hubert-large", "encoder_overrides": {...},
    "hubert_config": {...}}`` for :func:`build_hubert_from_params`.  ``state_dict`` supplies
    what the config does not hold (the number of label classes).
    """
    if isinstance(cfg["model"].get("w2v_args"), dict):
        cfg = cfg["model"]["w2v_args"]  # fine-tuned: the HuBERT inside was built from this
    elif "w2v_path" in cfg["model"]:
        raise NotImplementedError("fine-tuned checkpoint without w2v_args (the pretraining "
                                  "config); load its pretrained checkpoint instead")
    m, task = cfg["model"], cfg.get("task", {}) or {}
    crit = cfg.get("criterion", {}) or {}
    overrides = _encoder_overrides(m, task)
    embed_dim, conv_layers = overrides["embed_dim"], overrides["frontend_conv_layers"]
    layer_norm_first = overrides["layer_norm_first"]

    final_dim = int(_get(m, "final_dim", 0)) or embed_dim
    sample_rate = float(_get(task, "sample_rate", 16000))
    loss_weights = _get(crit, "loss_weights", None)
    label_rate = _get(m, "label_rate", _get(task, "label_rate", 50.0))
    hubert = dict(
        label_rate=float(label_rate) if not isinstance(label_rate, str) else 50.0,
        frame_rate=sample_rate / math.prod(s for _, _, s in conv_layers),
        mask_prob=float(_get(m, "mask_prob", 0.65)),
        mask_length=int(_get(m, "mask_length", 10)),
        min_masks=2,  # fairseq HuBERT's apply_mask
        head="cosine",
        final_dim=final_dim,
        logit_temp=float(_get(m, "logit_temp", 0.1)),
        feature_pen_weight=float(loss_weights[0]) if loss_weights else 10.0,
        pred_masked_weight=float(_get(crit, "pred_masked_weight", 1.0)),
        pred_nomask_weight=float(_get(crit, "pred_nomask_weight", 0.0)),
    )
    if state_dict is not None:
        labels = state_dict.get(prefix + "label_embs_concat")
        proj = state_dict.get(prefix + "final_proj.weight")
        if proj is not None and proj.shape[0] != final_dim:
            raise NotImplementedError(
                f"final_proj has {proj.shape[0]} outputs for final_dim {final_dim}: "
                "several label sets (untie_final_proj) are not supported")
        if labels is not None:
            hubert["num_classes"] = int(labels.shape[0])
    return {"encoder": "hubert-large" if layer_norm_first else "hubert-base",
            "encoder_overrides": overrides, "hubert_config": hubert}


def build_hubert_from_params(params: Dict[str, Any]) -> HubertModel:
    """A (randomly initialised) HubertModel from ``{"encoder", "encoder_overrides",
    "hubert_config"}`` as :func:`hubert_params_from_fairseq` writes them."""
    return build_model(model_config_of({"params": params}))


# --------------------------------------------------------------------------- loading
_PRETRAINING_HEAD = ("final_proj.weight", "final_proj.bias", "label_embs_concat")
_OUR_PARAMS = ("encoder", "encoder_overrides", "hubert_config")


def fairseq_model_type(cfg: Dict[str, Any]) -> str:
    """"wav2vec2" or "hubert": the pretrained model's ``_name`` (``arch`` in old ``args``), the
    one inside a fine-tuned checkpoint's ``w2v_args``; HuBERT when unnamed."""
    m = cfg["model"]
    if isinstance(m.get("w2v_args"), dict):
        m = m["w2v_args"]["model"]
    name = str(m.get("_name") or m.get("arch") or "hubert")
    return "wav2vec2" if name.startswith("wav2vec2") else "hubert"


def wav2vec2_config_from_fairseq(cfg: Dict[str, Any], source: str = "") -> ModelConfig:
    """Our ``wav2vec2`` ModelConfig from a fairseq wav2vec 2.0 config (pretrained, or the
    ``w2v_args`` of a fine-tuned one); options we do not implement are NotImplementedError."""
    if isinstance(cfg["model"].get("w2v_args"), dict):
        cfg = cfg["model"]["w2v_args"]
    m, task = cfg["model"], cfg.get("task", {}) or {}
    crit = cfg.get("criterion", {}) or {}
    for key, ok in (("quantize_targets", True), ("quantize_input", False), ("codebook_negatives", 0),
                    ("cross_sample_negatives", 0), ("negatives_from_everywhere", False),
                    ("quantizer_depth", 1), ("combine_groups", False)):
        if _get(m, key, ok) != ok:
            raise NotImplementedError(f"fairseq option {key}={m[key]!r} is not supported")
    overrides = _encoder_overrides(m, task)
    temp = _get(m, "latent_temp", (2.0, 0.5, 0.999995))
    temp = _literal_expr(temp) if isinstance(temp, str) else temp
    weights = _get(crit, "loss_weights", None) or [0.1, 10.0]
    values = dict(
        mask_prob=float(_get(m, "mask_prob", 0.65)), mask_length=int(_get(m, "mask_length", 10)),
        final_dim=int(_get(m, "final_dim", 0)) or overrides["embed_dim"],
        logit_temp=float(_get(m, "logit_temp", 0.1)),
        latent_groups=int(_get(m, "latent_groups", 2)), latent_vars=int(_get(m, "latent_vars", 320)),
        latent_dim=int(_get(m, "latent_dim", 0)), latent_temp=tuple(float(t) for t in temp),
        num_negatives=int(_get(m, "num_negatives", 100)),
        diversity_weight=float(weights[0]), feature_pen_weight=float(weights[1]) if len(weights) > 1 else 0.0,
        dropout_features=float(_get(m, "dropout_features", 0.0)),
    )
    enc = encoder_config("hubert-large" if overrides["layer_norm_first"] else "hubert-base", **overrides)
    return ModelConfig("pretrain", enc, "wav2vec2", get_objective("wav2vec2").config_cls.from_dict(values),
                       source=source)


def read_fairseq_model(path: PathLike) -> Tuple[Dict[str, Tensor], ModelConfig]:
    """(our state dict, its ModelConfig) of a fairseq HuBERT or wav2vec 2.0 checkpoint (told
    apart by :func:`fairseq_model_type`): the reader :func:`icefall.models.load_model` uses for
    ``fairseq:<path>`` and detected fairseq files."""
    path = Path(path)
    cfg, sd = read_fairseq_checkpoint(path)
    if fairseq_model_type(cfg) == "wav2vec2":
        prefix = FINETUNED_PREFIX if any(k.startswith(FINETUNED_PREFIX) for k in sd) else ""
        try:
            config = wav2vec2_config_from_fairseq(cfg, source=f"fairseq:{path}")
            state = convert_fairseq_state_dict(sd, prefix, "wav2vec2")
        except (FairseqCheckpointError, NotImplementedError, KeyError, ValueError) as e:
            raise FairseqCheckpointError(f"{path}: {e}") from e
        state["num_updates"] = torch.zeros((), dtype=torch.long)  # the temperature schedule restarts
        return state, config
    params, ours = _from_fairseq(cfg, sd, path)
    return ours, model_config_of({"params": dict(params, source=f"fairseq:{path}")}, path)


def load_fairseq_hubert(path: PathLike) -> Tuple[HubertModel, Dict[str, Any]]:
    """Build our HubertModel from a fairseq HuBERT checkpoint (pretrained or fine-tuned).

    Returns (model in eval mode, cfg) with cfg as :func:`read_fairseq_checkpoint` gives plus
    ``cfg["icefall_params"]`` (the params for :func:`build_hubert_from_params`).  Fine-tuned
    checkpoints lack the pretraining head (``final_proj``, ``label_embs_concat``): it stays
    randomly initialised; their CTC layer (``w2v_encoder.proj``) is not part of HubertModel.
    """
    path = Path(path)
    cfg, sd = read_fairseq_checkpoint(path)
    params, ours = _from_fairseq(cfg, sd, path)
    cfg["icefall_params"] = params
    return _build_and_load(params, ours, path), cfg


def _from_fairseq(cfg: Dict[str, Any], sd: Dict[str, Tensor],
                  path: Path) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """(our params, our state dict) from a fairseq HuBERT config and state dict."""
    if fairseq_model_type(cfg) == "wav2vec2":
        raise FairseqCheckpointError(f"{path}: a wav2vec 2.0 checkpoint, not HuBERT: load it with "
                                     f"icefall.models.load_model('fairseq:{path}')")
    prefix = FINETUNED_PREFIX if any(k.startswith(FINETUNED_PREFIX) for k in sd) else ""
    try:
        return hubert_params_from_fairseq(cfg, sd, prefix), convert_fairseq_state_dict(sd, prefix)
    except (FairseqCheckpointError, NotImplementedError, KeyError, ValueError) as e:
        raise FairseqCheckpointError(f"{path}: {e}") from e


def _build_and_load(params: Dict[str, Any], sd: Dict[str, Tensor], path: Path) -> HubertModel:
    """The model of ``params`` with ``sd`` loaded; only the pretraining head may be absent."""
    model = build_hubert_from_params(params)
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in _PRETRAINING_HEAD]
    if missing or result.unexpected_keys:
        raise FairseqCheckpointError(
            f"{path}: parameters do not match the model built from its config: "
            f"missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}")
    if result.missing_keys:
        logging.info(f"{path}: {result.missing_keys} not in the checkpoint (fine-tuned, or new "
                     "labels): randomly initialised")
    return model.eval()


def convert_fairseq_checkpoint(src: PathLike, dst: PathLike) -> Dict[str, Any]:
    """Write ``dst`` in our format ``{"model": state_dict, "params": {...}}`` from the
    fairseq checkpoint ``src``; returns the params."""
    from icefall.checkpoint import atomic_torch_save, to_plain

    model, cfg = load_fairseq_hubert(src)
    params = dict(cfg["icefall_params"], source=f"fairseq:{src}")
    params["model_config"] = model_config_of({"params": params}, src).to_dict()
    params = to_plain(params)
    atomic_torch_save({"model": model.state_dict(), "params": params}, dst)
    return params


def load_pretrained_hubert(spec: PathLike, num_classes: Optional[int] = None
                           ) -> Tuple[HubertModel, Dict[str, Any]]:
    """A HubertModel from a fairseq checkpoint (optionally written
    ``fairseq:<path>``) or a file written by :func:`convert_fairseq_checkpoint` (or any of our
    checkpoints whose ``params`` hold ``encoder``/``encoder_overrides``/``hubert_config``).

    ``num_classes``: the number of k-means classes of *your* labels; when it differs from the
    checkpoint's, the label embeddings start afresh (``final_proj`` is kept).
    Returns (model in eval mode, params).
    """
    spec = str(spec)
    path = Path(spec[len("fairseq:"):] if spec.startswith("fairseq:") else spec)
    ckpt = _load_pickle(path)
    params = ckpt.get("params") if isinstance(ckpt, dict) else None
    if isinstance(params, dict) and all(k in params for k in _OUR_PARAMS):
        params, sd = dict(params), ckpt["model"]
    elif isinstance(ckpt, dict) and ("cfg" in ckpt or "args" in ckpt):
        params, sd = _from_fairseq(*_fairseq_parts(ckpt, path), path)
    else:
        raise FairseqCheckpointError(
            f"{path}: neither a fairseq checkpoint nor one with params {_OUR_PARAMS}")
    if num_classes is not None and num_classes != params["hubert_config"].get("num_classes"):
        params["hubert_config"] = dict(params["hubert_config"], num_classes=num_classes)
        params.pop("model_config", None)  # described anew by hubert_config
        sd = {k: v for k, v in sd.items() if k != "label_embs_concat"}
    return _build_and_load(params, sd, path), params
