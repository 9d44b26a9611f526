"""Import icefall Zipformer2 checkpoints: icefall's ASR recipe and k2SSL's pretraining and
fine-tuning recipes, into our :class:`~icefall.nn.configs.SpeechEncoder` (and
:class:`~icefall.ssl.hubert.HubertModel`).

Three kinds of checkpoint, told apart by their keys:

=================== ============================================ ==================================
kind                written by (k2-fsa/icefall)                  model keys
=================== ============================================ ==================================
``asr``             egs/librispeech/ASR/zipformer/train.py       ``encoder_embed.*`` (fbank
                    (``epoch-N.pt``, ``pretrained.pt``)          Conv2dSubsampling), ``encoder.*``
                                                                 (Zipformer2), ASR heads
``k2ssl``           egs/librispeech/SSL/zipformer/pretrain.py    ``feature_extractor.*`` (wav2vec2
                    (hubert_ce.HubertModel)                      CNN), ``layer_norm``,
                                                                 ``post_extract_proj``, ``encoder.*``,
                                                                 ``mask_emb``, ``final_proj``
``k2ssl-finetuned`` egs/librispeech/SSL/zipformer/finetune.py    the k2ssl keys under ``encoder.``,
                    (model.AsrModel)                             ASR heads
=================== ============================================ ==================================

icefall's ``save_checkpoint`` stores the run's options *flat* in the checkpoint dict next to
``model`` (comma-separated strings such as ``num_encoder_layers="2,2,3,4,3,2"``); we read the
architecture from them.  Options a checkpoint lacks (``pretrained.pt`` holds only ``model``)
take icefall's recipe defaults and are listed in :attr:`IcefallImport.defaulted`; the shapes of
every tensor are then checked against the model built from them, so a wrong guess is an error
that names the keys, never a silent mis-load.

Renames (icefall -> ours):

* ``encoder.encoders.{i}.encoder.layers.*`` (a downsampled stack wraps its layers in
  ``.encoder``) -> ``encoder.encoders.{i}.layers.*``; the stack's ``downsample.bias`` and
  ``out_combiner.bypass_scale`` keep their names;
* ``...layers.{j}.bypass_scale`` (a per-layer parameter icefall creates but never uses) is dropped;
* ``encoder_embed.*`` -> ``frontend.*`` (same Conv2dSubsampling layout);
* k2SSL: ``feature_extractor.conv_layers.{i}.0`` -> ``frontend.feature_extractor.conv_layers.{i}.conv``,
  ``.2`` (group norm) / ``.2.1`` (layer norm) -> ``.norm``; ``layer_norm``/``post_extract_proj`` ->
  ``frontend.``; ``mask_emb`` and ``final_proj`` go to the HubertModel.  k2SSL's head divides
  ``final_proj(x)`` by ``logit_temp``; our linear head does not, so ``final_proj`` is stored
  divided by ``logit_temp`` (identical logits).

ASR heads (``decoder``, ``joiner``, ``simple_am_proj``, ``simple_lm_proj``, ``ctc_output``,
``attention_decoder``) are kept under their icefall names in :attr:`IcefallImport.heads`;
:meth:`IcefallImport.asr_head_state` renames the transducer and CTC heads to our AsrModel's (the
same modules) and :meth:`IcefallImport.asr_options` reads their sizes.  Causal
(streaming) checkpoints are refused (:func:`check_not_causal`).  Anything else is an error
listing the keys.

    imp = load_icefall_checkpoint("exp/epoch-30.pt")
    encoder = imp.build_encoder()        # SpeechEncoder with the weights, eval mode
    model = imp.build_hubert()           # k2SSL: HubertModel with mask_emb and the CE head
    asr = AsrModel(imp.build_encoder(), **imp.asr_options())   # ASR: + imp.asr_head_state()

Command line (writes the converted format that ``load_pretrained_hubert`` reads)::

    python3 -m icefall.ssl.icefall_import exp/epoch-30.pt k2ssl.pt [--avg-model] [--options JSON]
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor, nn

from icefall.checkpoint import load_file
from icefall.nn.configs import SpeechEncoder, build_encoder
from icefall.ssl.fairseq_import import _literal_expr, build_hubert_from_params
from icefall.ssl.hubert import HubertModel

PathLike = Union[str, Path]

# The Zipformer2 options of icefall's egs/librispeech/ASR/zipformer/train.py, which
# egs/librispeech/SSL/zipformer/{pretrain,finetune}.py share.
ZIPFORMER_DEFAULTS: Dict[str, Any] = dict(
    num_encoder_layers="2,2,3,4,3,2",
    downsampling_factor="1,2,4,8,4,2",
    feedforward_dim="512,768,1024,1536,1024,768",
    num_heads="4,4,4,8,4,4",
    encoder_dim="192,256,384,512,384,256",
    query_head_dim="32",
    value_head_dim="12",
    pos_head_dim="4",
    pos_dim=48,
    encoder_unmasked_dim="192,192,256,256,256,192",
    cnn_module_kernel="31,31,15,15,15,31",
)
# ASR train.py: fbank dimension.
ASR_DEFAULTS: Dict[str, Any] = dict(feature_dim=80)
# k2SSL pretrain.py (model) and its data module (do_normalize: the waveform is normalised to
# zero mean and unit variance, F.layer_norm over the utterance).
K2SSL_DEFAULTS: Dict[str, Any] = dict(
    conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    extractor_mode="default",
    feature_grad_mult=1.0,
    dropout_input=0.0,
    do_normalize=True,
    label_rate=50,
    sample_rate=16000,
    mask_prob=0.65,
    mask_length=10,
    logit_temp=0.1,
    pred_masked_weight=1.0,
    pred_nomask_weight=0.0,
    loss_weights=[10.0],
)
_ZIPFORMER_PER_STACK = ("num_encoder_layers", "downsampling_factor", "feedforward_dim", "num_heads",
                        "encoder_dim", "query_head_dim", "value_head_dim", "pos_head_dim",
                        "encoder_unmasked_dim", "cnn_module_kernel")
_HEADS = ("decoder.", "joiner.", "simple_am_proj.", "simple_lm_proj.", "ctc_output.", "attention_decoder.")
_SSL_KEYS = ("mask_emb", "final_proj.weight", "final_proj.bias")
DROPPED = "<dropped>"  # map value of icefall keys we do not load (unused bypass_scale)


class IcefallCheckpointError(ValueError):
    """Not a (supported) icefall Zipformer2 checkpoint; the message names the file and keys."""


@dataclass
class IcefallImport:
    """An icefall checkpoint converted to our names.

    Attributes:
      kind: ``"asr"``, ``"k2ssl"`` or ``"k2ssl-finetuned"``.
      params: ``{"encoder": name, "encoder_overrides": {...}, "hubert_config": {...}}``
        (the form of :func:`icefall.ssl.fairseq_import.build_hubert_from_params`);
        ``build_encoder(params["encoder"], **params["encoder_overrides"])`` is the architecture.
      encoder_state: state dict of the SpeechEncoder (``frontend.*``, ``encoder.*``).
      ssl_state: HubertModel-only tensors (``mask_emb``, ``final_proj.*``), k2SSL kinds.
      heads: ASR heads under their icefall names (not converted).
      key_map: icefall key -> our key (``DROPPED`` for keys not loaded, ``heads:<key>``).
      defaulted: icefall options missing from the checkpoint, taken from icefall's defaults.
      source: the file (or "state dict") for messages.
      blank_id: icefall's ``blank_id`` option (for :meth:`asr_options`).
    """

    kind: str
    params: Dict[str, Any]
    encoder_state: Dict[str, Tensor]
    ssl_state: Dict[str, Tensor] = field(default_factory=dict)
    heads: Dict[str, Tensor] = field(default_factory=dict)
    key_map: Dict[str, str] = field(default_factory=dict)
    defaulted: List[str] = field(default_factory=list)
    source: str = "state dict"
    blank_id: int = 0

    def build_encoder(self) -> SpeechEncoder:
        """The SpeechEncoder of ``params`` with ``encoder_state`` loaded (eval mode)."""
        encoder = build_encoder(self.params["encoder"], **self.params["encoder_overrides"])
        self._load(encoder, self.encoder_state, allow_missing=())
        return encoder.eval()

    def build_hubert(self) -> HubertModel:
        """A HubertModel with the encoder, and for k2SSL checkpoints ``mask_emb`` and the CE
        head (``final_proj``); what the checkpoint lacks (an ASR checkpoint's mask embedding
        and head, a fine-tuned one's head) stays randomly initialised (logged)."""
        model = build_hubert_from_params(self.params)
        self._load(model, {**self.encoder_state, **self.ssl_state},
                   allow_missing=_SSL_KEYS + ("label_embs_concat",))
        return model.eval()

    def asr_head_state(self) -> Dict[str, Tensor]:
        """The transducer and CTC heads under our :class:`~icefall.asr.model.AsrModel` names:
        icefall's ``decoder.*``, ``joiner.*``, ``simple_am_proj.*``, ``simple_lm_proj.*`` keep
        theirs (same modules), ``ctc_output.1.*`` (Sequential(Dropout, Linear, LogSoftmax)) ->
        ``ctc_output.output.*``.  The attention decoder has no counterpart (not returned)."""
        out = {}
        for key, value in self.heads.items():
            if key.startswith("ctc_output.1."):
                out["ctc_output.output." + key[len("ctc_output.1."):]] = value
            elif not key.startswith("attention_decoder."):
                out[key] = value
        return out

    def asr_options(self) -> Dict[str, Any]:
        """AsrModel keyword arguments of the heads, read from their shapes (``blank_id`` from
        the options, 0 by default): vocab_size, decoder_dim, joiner_dim, context_size,
        use_transducer, use_ctc."""
        h = self.heads
        transducer, ctc = "joiner.output_linear.weight" in h, "ctc_output.1.weight" in h
        if not (transducer or ctc):
            raise IcefallCheckpointError(f"{self.source}: no transducer or CTC head in this checkpoint")
        opts: Dict[str, Any] = dict(use_transducer=transducer, use_ctc=ctc, blank_id=self.blank_id)
        opts["vocab_size"] = int(h["joiner.output_linear.weight" if transducer else "ctc_output.1.weight"].shape[0])
        if transducer:
            opts["decoder_dim"] = int(h["decoder.embedding.weight"].shape[1])
            opts["joiner_dim"] = int(h["joiner.output_linear.weight"].shape[1])
            conv = h.get("decoder.conv.weight")
            opts["context_size"] = int(conv.shape[-1]) if conv is not None else 1
        return opts

    def _load(self, module: nn.Module, state: Dict[str, Tensor], allow_missing: Tuple[str, ...]) -> None:
        theirs = {v: k for k, v in self.key_map.items()}
        ours = module.state_dict()
        wrong = [f"{theirs.get(k, k)} {tuple(v.shape)} -> {k} {tuple(ours[k].shape)}"
                 for k, v in state.items() if k in ours and ours[k].shape != v.shape]
        unexpected = [theirs.get(k, k) for k in state if k not in ours]
        # Buffers (e.g. training statistics) that icefall does not have keep their initial values.
        params = {name for name, _ in module.named_parameters()}
        missing = [k for k in ours if k in params and k not in state and k not in allow_missing]
        if wrong or unexpected or missing:
            hint = ""
            if self.defaulted:
                hint = (f"; these options were not in the checkpoint and took icefall's defaults: "
                        f"{self.defaulted} - pass the ones you trained with as params=")
            raise IcefallCheckpointError(
                f"{self.source}: the weights do not fit the model built from the checkpoint's "
                f"options: shape mismatches {wrong[:8]}, keys we have no place for "
                f"{unexpected[:8]}, parameters the checkpoint lacks {missing[:8]}{hint}")
        module.load_state_dict(state, strict=False)
        absent = [k for k in ours if k not in state]
        if absent:
            logging.info(f"{self.source}: {absent} not in the checkpoint: randomly initialised")


# --------------------------------------------------------------------------- options
def _int_tuple(value: Any, name: str) -> Tuple[int, ...]:
    """icefall's per-stack option: ``"2,2,3"``, an int, or a sequence -> tuple of ints."""
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(","))
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise IcefallCheckpointError(f"option {name}={value!r} is not a list of ints") from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def check_not_causal(params: Mapping[str, Any], keys: List[str], source: str) -> None:
    """Refuse causal (streaming) Zipformer2 checkpoints with what loading them would need."""
    causal_keys = [k for k in keys if ".chunkwise_conv" in k or ".causal_conv" in k]
    if not (_truthy(params.get("causal", False)) or causal_keys):
        return
    raise IcefallCheckpointError(
        f"{source}: a causal (streaming) Zipformer2 checkpoint (causal={params.get('causal')!r}, "
        f"chunk_size={params.get('chunk_size')!r}, "
        f"left_context_frames={params.get('left_context_frames')!r}"
        + (f", e.g. {causal_keys[0]}" if causal_keys else "")
        + ") is not supported: our Zipformer2 is full-context only. Loading it would need "
        "icefall's ChunkCausalDepthwiseConv1d in the convolution modules (causal_conv, "
        "chunkwise_conv and chunkwise_conv_scale in place of depthwise_conv), chunked "
        "attention masks with left context, causal padding in the downsampling, and a "
        "streaming forward with cached states for decoding. Train a non-causal model "
        "(--causal 0) to use it here.")


def _options(params: Mapping[str, Any], defaults: Mapping[str, Any],
             defaulted: List[str]) -> Dict[str, Any]:
    out = {}
    for name, default in defaults.items():
        value = params.get(name)
        if value is None:
            defaulted.append(name)
            value = default
        out[name] = value
    return out


def _zipformer_overrides(opts: Dict[str, Any], output_downsampling_factor: int) -> Dict[str, Any]:
    over: Dict[str, Any] = {name: _int_tuple(opts[name], name) for name in _ZIPFORMER_PER_STACK}
    over["pos_dim"] = int(opts["pos_dim"])
    over["output_downsampling_factor"] = output_downsampling_factor
    # trained on with icefall's Balancer limits, the imported model keeps learning as in icefall
    over["balancer_limits"] = "icefall"
    return over


# --------------------------------------------------------------------------- keys
# Zipformer2 keys below its prefix; the first matching pattern wins.
_ZIPFORMER_KEYS: List[Tuple[str, str]] = [
    (r"encoders\.(\d+)\.(?:encoder\.)?layers\.(\d+)\.bypass_scale", DROPPED),
    (r"encoders\.(\d+)\.encoder\.(layers\..+)", r"encoders.\1.\2"),
    (r"encoders\.(\d+)\.(layers\..+|downsample\.bias|out_combiner\.bypass_scale)", r"encoders.\1.\2"),
    (r"downsample_output\.bias", r"downsample_output.bias"),
]
# k2SSL HubertModel keys (conv block i = Sequential(conv, dropout, norm or Sequential(transpose,
# LayerNorm, transpose), GELU)).
_FE = "frontend.feature_extractor.conv_layers"
_K2SSL_KEYS: List[Tuple[str, str]] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", _FE + r".\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)", _FE + r".\1.norm.\2"),
    (r"(layer_norm|post_extract_proj)\.(weight|bias)", r"frontend.\1.\2"),
    (r"(mask_emb|final_proj\.weight|final_proj\.bias)", r"ssl:\1"),
]


def _map(patterns: List[Tuple[str, str]], key: str) -> Optional[str]:
    for pattern, template in patterns:
        m = re.fullmatch(pattern, key)
        if m:
            return template if template == DROPPED else m.expand(template)
    return None


def _map_key(key: str, kind: str) -> Optional[str]:
    """icefall key -> ``encoder:<ours>``, ``ssl:<ours>``, ``heads:<key>``, DROPPED or None."""
    if kind != "k2ssl" and key.startswith(_HEADS):
        return "heads:" + key
    if kind == "asr":
        if key.startswith("encoder_embed."):
            return "encoder:frontend." + key[len("encoder_embed."):]
        rest = key[len("encoder."):] if key.startswith("encoder.") else None
    else:
        root = "encoder." if kind == "k2ssl-finetuned" else ""
        if not key.startswith(root):
            return None
        key = key[len(root):]
        if not key.startswith("encoder."):
            mapped = _map(_K2SSL_KEYS, key)
            return mapped if mapped is None or mapped.startswith("ssl:") else "encoder:" + mapped
        rest = key[len("encoder."):]
    if rest is None:
        return None
    mapped = _map(_ZIPFORMER_KEYS, rest)
    return mapped if mapped in (None, DROPPED) else "encoder:encoder." + mapped


def detect_kind(keys: List[str]) -> Optional[str]:
    """``asr``, ``k2ssl``, ``k2ssl-finetuned`` from the model keys (None: not icefall's)."""
    if any(k.startswith("encoder_embed.") for k in keys):
        return "asr"
    if any(k.startswith("feature_extractor.") for k in keys):
        return "k2ssl"
    if any(k.startswith("encoder.feature_extractor.") for k in keys):
        return "k2ssl-finetuned"
    return None


# --------------------------------------------------------------------------- conversion
def convert_icefall_state_dict(state_dict: Mapping[str, Tensor], params: Optional[Mapping[str, Any]] = None,
                               source: str = "state dict") -> IcefallImport:
    """An icefall model state dict (+ its options) -> :class:`IcefallImport`.

    Args:
      state_dict: ``checkpoint["model"]`` (``module.`` prefixes of DDP are stripped).
      params: icefall's options (``num_encoder_layers="2,2,3,4,3,2"``, ``causal``, ...); the
        missing ones take icefall's defaults.
      source: names the checkpoint in errors.
    Raises IcefallCheckpointError: unknown layout, causal model, unmapped keys.
    """
    params = dict(params or {})
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        keys = list(state_dict)
    kind = detect_kind(keys)
    if kind is None:
        raise IcefallCheckpointError(
            f"{source}: not an icefall Zipformer2 checkpoint: no encoder_embed.* (ASR), "
            f"feature_extractor.* (k2SSL) or encoder.feature_extractor.* (k2SSL fine-tuned) keys; "
            f"first keys {keys[:5]}")
    check_not_causal(params, keys, source)

    enc_state: Dict[str, Tensor] = {}
    ssl_state: Dict[str, Tensor] = {}
    heads: Dict[str, Tensor] = {}
    key_map: Dict[str, str] = {}
    unmapped = []
    for key, value in state_dict.items():
        mapped = _map_key(key, kind)
        if mapped is None:
            unmapped.append(key)
            continue
        if mapped == DROPPED:
            key_map[key] = DROPPED
            continue
        where, ours = mapped.split(":", 1)
        key_map[key] = ours if where != "heads" else mapped
        {"encoder": enc_state, "ssl": ssl_state, "heads": heads}[where][ours] = value
    if unmapped:
        raise IcefallCheckpointError(
            f"{source}: {len(unmapped)} keys of this {kind} checkpoint have no counterpart in our "
            f"model: {unmapped[:12]}")

    defaulted: List[str] = []
    zip_opts = _options(params, ZIPFORMER_DEFAULTS, defaulted)
    # The output downsampling is fixed by the recipe (ASR 2, SSL 1); the weight says which.
    ds_bias = enc_state.get("encoder.downsample_output.bias")
    out_ds = int(ds_bias.numel()) if ds_bias is not None else (2 if kind == "asr" else 1)
    overrides: Dict[str, Any]
    hubert: Dict[str, Any] = {}
    if kind == "asr":
        opts = _options(params, ASR_DEFAULTS, defaulted)
        overrides = dict(frontend="fbank", frontend_in_channels=int(opts["feature_dim"]))
    else:
        opts = _options(params, K2SSL_DEFAULTS, defaulted)
        overrides, hubert = _k2ssl_options(opts, enc_state, ssl_state, source)
    overrides.update(_zipformer_overrides(zip_opts, out_ds))
    if defaulted:
        logging.info(f"{source}: options not in the checkpoint, icefall's defaults used: {defaulted}")
    return IcefallImport(
        kind=kind,
        params={"encoder": "zipformer-ssl-base", "encoder_overrides": overrides, "hubert_config": hubert},
        encoder_state=enc_state, ssl_state=ssl_state, heads=heads, key_map=key_map,
        defaulted=defaulted, source=source, blank_id=int(params.get("blank_id", 0)))


def _k2ssl_options(opts: Dict[str, Any], enc_state: Dict[str, Tensor], ssl_state: Dict[str, Tensor],
                   source: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Front-end overrides and the HubertConfig of a k2SSL model; rescales ``final_proj``."""
    conv_layers = [tuple(int(v) for v in layer) for layer in _literal_expr(str(opts["conv_feature_layers"]))]
    mode = {"default": "group", "layer_norm": "layer"}.get(str(opts["extractor_mode"]))
    if mode is None:
        raise IcefallCheckpointError(f"{source}: unknown extractor_mode {opts['extractor_mode']!r}")
    overrides = dict(
        frontend="cnn",
        frontend_mode=mode,
        # conv_bias is an argparse type=bool option in k2SSL (any string is True): trust the weights
        frontend_conv_bias=f"{_FE}.0.conv.bias" in enc_state,
        frontend_conv_layers=conv_layers,
        frontend_feature_grad_mult=float(opts["feature_grad_mult"]),
        frontend_dropout_input=float(opts["dropout_input"]),
        frontend_normalize=_truthy(opts["do_normalize"]),
    )
    logit_temp = float(opts["logit_temp"])
    loss_weights = opts["loss_weights"]
    hubert: Dict[str, Any] = dict(
        head="linear",
        label_rate=float(opts["label_rate"]),
        frame_rate=float(opts["sample_rate"]) / math.prod(s for _, _, s in conv_layers),
        mask_prob=float(opts["mask_prob"]),
        mask_length=int(opts["mask_length"]),
        min_masks=2,
        logit_temp=logit_temp,
        feature_pen_weight=float(loss_weights[0]) if loss_weights else 0.0,
        pred_masked_weight=float(opts["pred_masked_weight"]),
        pred_nomask_weight=float(opts["pred_nomask_weight"]),
    )
    if "final_proj.weight" in ssl_state:
        hubert["num_classes"] = int(ssl_state["final_proj.weight"].shape[0])
        # k2SSL: logits = final_proj(x) / logit_temp; ours: final_proj(x).
        for name in ("final_proj.weight", "final_proj.bias"):
            if name in ssl_state:
                ssl_state[name] = ssl_state[name] / logit_temp
    return overrides, hubert


def read_icefall_checkpoint(path: PathLike, use_averaged_model: Optional[bool] = False
                            ) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """(model state dict, options) of an icefall checkpoint; the options are the flat
    non-model entries icefall's save_checkpoint writes (or a ``params`` dict, if present).
    ``use_averaged_model``: take ``model_avg`` (icefall keeps one in epoch/batch checkpoints);
    None: take it when the checkpoint has one (``pretrained.pt`` has not)."""
    ckpt = load_file(path)
    if use_averaged_model is None:
        use_averaged_model = isinstance(ckpt, dict) and isinstance(ckpt.get("model_avg"), Mapping)
    name = "model_avg" if use_averaged_model else "model"
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(name), Mapping):
        raise IcefallCheckpointError(f"{path}: no {name!r} state dict in this checkpoint")
    options = {k: v for k, v in ckpt.items() if k not in ("model", "model_avg", "optimizer", "scheduler",
                                                           "grad_scaler", "sampler", "params")}
    if isinstance(ckpt.get("params"), Mapping):
        options.update(ckpt["params"])
    return dict(ckpt[name]), options


def load_icefall_checkpoint(path: PathLike, params: Optional[Mapping[str, Any]] = None,
                            use_averaged_model: Optional[bool] = False) -> IcefallImport:
    """Read and convert an icefall / k2SSL checkpoint (see the module docstring).

    ``params``: options that override (or supply, for ``pretrained.pt``) the checkpoint's, in
    icefall's spelling (``{"encoder_dim": "192,256,384,512,384,256", ...}``).
    """
    state_dict, options = read_icefall_checkpoint(path, use_averaged_model)
    options.update(params or {})
    return convert_icefall_state_dict(state_dict, options, source=str(path))


def read_icefall_model(path: PathLike) -> Tuple[Dict[str, Tensor], Any]:
    """(our HubertModel state dict, its ModelConfig) of an icefall / k2SSL checkpoint: the reader
    :func:`icefall.models.load_model` uses for ``icefall:<path>`` (e.g. ``finetune.py
    --init-ckpt icefall:exp/epoch-30.pt``). The running-average weights are taken when present."""
    from icefall.models import model_config_of

    imp = load_icefall_checkpoint(path, None, use_averaged_model=None)
    params = dict(imp.params, source=f"icefall:{path}")
    return imp.build_hubert().state_dict(), model_config_of({"params": params}, path)


def convert_icefall_checkpoint(src: PathLike, dst: PathLike, params: Optional[Mapping[str, Any]] = None,
                               use_averaged_model: bool = False) -> Dict[str, Any]:
    """Write ``dst`` as ``{"model": HubertModel state dict, "params": {...}}``, the converted
    format :func:`icefall.ssl.fairseq_import.load_pretrained_hubert` reads, from the icefall /
    k2SSL checkpoint ``src``; returns the params.  The ASR heads of ``src`` are not written."""
    from icefall.checkpoint import atomic_torch_save

    imp = load_icefall_checkpoint(src, params, use_averaged_model)
    out = dict(imp.params, source=f"icefall:{src}", icefall_kind=imp.kind)
    atomic_torch_save({"model": imp.build_hubert().state_dict(), "params": out}, dst)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(
        description="Convert an icefall Zipformer2 (ASR) or k2SSL checkpoint to our format",
        epilog="e.g. python3 -m icefall.ssl.icefall_import exp/epoch-30.pt k2ssl.pt --avg-model")
    parser.add_argument("src", help="icefall checkpoint (epoch-N.pt, checkpoint-N.pt, pretrained.pt)")
    parser.add_argument("dst", help="output file")
    parser.add_argument("--avg-model", action="store_true", help="convert model_avg instead of model")
    parser.add_argument("--options", default="{}", help="JSON of icefall options missing from src, "
                        'e.g. \'{"encoder_dim": "192,256,384,512,384,256"}\'')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        out = convert_icefall_checkpoint(args.src, args.dst, json.loads(args.options), args.avg_model)
    except (IcefallCheckpointError, FileNotFoundError, RuntimeError) as e:
        parser.exit(1, f"error: {e}\n")
    logging.info(f"wrote {args.dst}: {out['icefall_kind']} checkpoint, "
                 f"{out['encoder']} with {out['encoder_overrides']}")


if __name__ == "__main__":
    main()
