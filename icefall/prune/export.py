"""Export of a pruned model in a compact file, and the loader that rebuilds the dense model.

The masks are folded into the weights (``MaskedLinear.folded_weight``) and every floating
tensor whose sparse encoding is smaller than its dense bytes is stored as

    {"shape": list of ints, "bitmap": uint8 tensor (numel/8 bytes, np.packbits of weight != 0),
     "values": 1-D tensor of the nonzero entries in row-major order, original dtype}

and everything else dense.  A bitmap costs 1 bit per entry, so at 80% sparsity an fp32 matrix
takes 0.2 * 4 + 1/8 = 0.925 bytes per entry instead of 4 (int32 CSR indices would take 1.6).
The loader restores a state dict with the keys of the *unpruned* model, so the model
is rebuilt the usual way (construct from params, ``load_state_dict``) and gives the same
outputs as the masked model.

A model whose channels were removed (NAS-CP, ``icefall.prune.nas.compact_channels``) has
narrower linears; ``export_compact(model, path, dense_shapes=linear_shapes(before))`` records
them as ``"narrowed": {module name: [out_features, in_features]}`` and ``load_compact`` narrows
exactly those modules of the freshly built model before its strict load (any other shape
mismatch is still an error).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from icefall.checkpoint import atomic_torch_save
from icefall.prune.gates import masked_layers, replace_modules

FORMAT = "icefall-prune-compact-v1"
PathLike = Union[str, os.PathLike]


def folded_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """State dict of ``model`` with binary masks folded into the weights and the mask state
    (thresholds, fixed masks) dropped: the keys of the unpruned model.  ``model`` is not
    modified."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    for name, m in masked_layers(model).items():
        prefix = f"{name}." if name else ""
        sd[prefix + "weight"] = m.folded_weight()
        if m.bias is not None:
            sd[prefix + "bias"] = m.folded_bias()
        for k in m.extra_keys:
            sd.pop(prefix + k, None)
    return sd


def _encode(t: torch.Tensor) -> Union[torch.Tensor, Dict[str, Any]]:
    t = t.detach().cpu()  # the file never depends on the device the model was on
    if not t.is_floating_point() or t.numel() == 0:
        return t
    nz = (t != 0).flatten()
    sparse_bytes = (t.numel() + 7) // 8 + int(nz.sum()) * t.element_size()
    if sparse_bytes >= t.numel() * t.element_size():
        return t
    bitmap = torch.from_numpy(np.packbits(nz.numpy()))
    return {"shape": list(t.shape), "bitmap": bitmap, "values": t.flatten()[nz]}


def _decode(e: Union[torch.Tensor, Dict[str, Any]]) -> torch.Tensor:
    if isinstance(e, torch.Tensor):
        return e
    n = int(np.prod(e["shape"], dtype=np.int64))
    nz = torch.from_numpy(np.unpackbits(e["bitmap"].numpy(), count=n).astype(bool))
    dense = torch.zeros(n, dtype=e["values"].dtype)
    dense[nz] = e["values"]
    return dense.view(e["shape"])


def compact_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Encode each tensor of ``state_dict`` sparsely where that is smaller (see module doc)."""
    return {k: _encode(v) for k, v in state_dict.items()}


def dense_state_dict(compact: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Inverse of ``compact_state_dict``: every entry back to a dense CPU tensor."""
    return {k: _decode(v) for k, v in compact.items()}


def _saved_size(obj: Any, name: str) -> int:
    """Bytes ``torch.save`` writes for ``obj`` under file name ``name`` (the name matters:
    torch.save uses the file stem as the archive's folder name in every record)."""
    with tempfile.TemporaryDirectory() as tmp:
        atomic_torch_save(obj, Path(tmp) / name)  # as export_compact writes
        return os.path.getsize(Path(tmp) / name)


def linear_shapes(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """(out_features, in_features) of every ``nn.Linear`` (masked ones included) by module name."""
    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def export_compact(model: nn.Module, path: PathLike,
                   dense_shapes: Optional[Dict[str, Tuple[int, int]]] = None) -> Dict[str, Any]:
    """Write the compact model to ``path``; returns a report::

        {"path", "compact_bytes" (file size), "dense_bytes" (the uncompressed model's state
         dict saved dense), "ratio" (dense / compact), "sparse_tensors" (names stored sparsely),
         "narrowed" (linears whose channels were removed)}

    ``dense_shapes``: ``linear_shapes`` of the model before channels were removed; the linears
    whose shape now differs are recorded, and ``dense_bytes`` counts them at their old size.
    """
    sd = folded_state_dict(model)
    compact = compact_state_dict(sd)
    narrowed = {} if dense_shapes is None else {
        n: list(s) for n, s in linear_shapes(model).items() if tuple(dense_shapes[n]) != s}
    obj = {"format": FORMAT, "state_dict": compact}
    if narrowed:
        obj["narrowed"] = narrowed
    atomic_torch_save(obj, path)
    compact_bytes = os.path.getsize(path)
    full = dict(sd)
    for name in narrowed:  # the uncompressed model's tensors, for an honest ratio
        out_f, in_f = dense_shapes[name]
        full[name + ".weight"] = torch.zeros(out_f, in_f, dtype=sd[name + ".weight"].dtype)
        if name + ".bias" in full:
            full[name + ".bias"] = torch.zeros(out_f, dtype=sd[name + ".bias"].dtype)
    dense_bytes = _saved_size({"format": FORMAT, "state_dict": full}, Path(path).name)
    return {
        "path": str(path),
        "compact_bytes": compact_bytes,
        "dense_bytes": dense_bytes,
        "ratio": dense_bytes / compact_bytes,
        "sparse_tensors": [k for k, v in compact.items() if isinstance(v, dict)],
        "narrowed": narrowed,
    }


def _read(path: PathLike) -> Dict[str, Any]:
    from icefall.checkpoint import load_file

    obj = load_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    return obj


def load_compact_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a file written by ``export_compact``; returns a dense state dict (CPU)."""
    return dense_state_dict(_read(path)["state_dict"])


def load_compact(path: PathLike, model: nn.Module) -> nn.Module:
    """Load a compact file into ``model``, a freshly built *unpruned* (plain) model of the
    same architecture; returns it.  The linears the file lists as narrowed are replaced by
    linears of the saved shapes first; then the load is strict: every key and shape must match."""
    obj = _read(path)
    narrowed = obj.get("narrowed", {})

    def narrow(name: str, old: nn.Module) -> nn.Linear:
        if not isinstance(old, nn.Linear):
            raise ValueError(f"{path}: narrowed module {name} is a {type(old).__name__} in the model, not a Linear")
        out_f, in_f = narrowed[name]
        return nn.Linear(in_f, out_f, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)

    replace_modules(model, narrowed, narrow)
    model.load_state_dict(dense_state_dict(obj["state_dict"]), strict=True)
    return model
