"""Training safety tools, as icefall users know them.

- ``--inf-check``: :class:`InfCheck` hooks every module and parameter and logs the *first*
  place a non-finite value appears in a forward or backward pass (a NaN propagates everywhere
  after it, so only its origin is worth a line).
- :func:`scan_pessimistic_batches_for_oom`: before training on CUDA, runs forward and backward
  on the batches most likely to run out of memory (lhotse's ``find_pessimistic_batches``), and
  says which criterion failed and what to change.
- :func:`save_batch`: a copy of a batch that broke training (an exception or a non-finite loss),
  loadable with ``torch.load(weights_only=True)``, for replaying it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from icefall.checkpoint import atomic_torch_save


def _tensors(obj: Any) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _all_finite(tensors: List[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


class InfCheck:
    """Hooks that name the module (or parameter) where a non-finite value first appears.

    Forward: a module whose floating-point inputs are all finite but whose output is not.
    Backward: the first module output whose gradient is not finite (the module that consumes
    that output produced it), and parameters with non-finite gradients. One report per pass;
    ``reports`` keeps them (tests read it). Costs a device sync per module: debugging only.
    """

    def __init__(self, model: nn.Module):
        self.reports: List[str] = []
        self._forward_seen = False
        self._backward_seen = False
        self._handles = [model.register_forward_pre_hook(self._start_pass)]
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_hook(self._forward_hook(name or "<model>")))
        for name, param in model.named_parameters():
            if param.requires_grad:
                self._handles.append(param.register_hook(self._param_hook(name)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _report(self, msg: str) -> None:
        self.reports.append(msg)
        logging.warning(f"inf-check: {msg}")

    def _start_pass(self, module: nn.Module, inputs: Any) -> None:
        self._forward_seen = False
        self._backward_seen = False

    def _forward_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            outs = _tensors(output)
            if not self._forward_seen and _all_finite(_tensors(inputs)) and not _all_finite(outs):
                self._forward_seen = True
                self._report(f"forward: {name} ({type(module).__name__}) gave a non-finite output from finite inputs")
            if torch.is_grad_enabled():
                for i, t in enumerate(outs):
                    if t.requires_grad and t.is_floating_point():
                        t.register_hook(self._output_grad_hook(name, i))

        return hook

    def _output_grad_hook(self, name: str, index: int) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            if not self._backward_seen and not bool(torch.isfinite(grad).all()):
                self._backward_seen = True
                self._report(f"backward: the gradient of output {index} of {name} is not finite "
                             "(produced by the module that consumes it)")

        return hook

    def _param_hook(self, name: str) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            if not bool(torch.isfinite(grad).all()):
                self._report(f"backward: parameter {name} has a non-finite gradient")

        return hook


def _plain(obj: Any) -> Any:
    """The parts of a batch that ``torch.load(weights_only=True)`` can read back."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return repr(obj)


def save_batch(batch: Any, filename: Path) -> Path:
    """Write ``batch`` (tensors, ids, token lists) atomically; logs its path and cut ids."""
    atomic_torch_save(_plain(batch), filename)
    ids = batch.get("cut_ids") if isinstance(batch, dict) else None
    logging.warning(f"Saved the batch to {filename}" + (f" (cuts: {', '.join(map(str, ids))})" if ids else ""))
    return Path(filename)


def scan_pessimistic_batches_for_oom(
    model: nn.Module,
    train_dl: Any,
    compute_loss: Callable[[nn.Module, Any, bool], Tuple[torch.Tensor, Any]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    exp_dir: Path,
    autocast: Callable[[], Any],
) -> Optional[Dict[str, float]]:
    """Forward + backward of the riskiest batches of ``train_dl`` (CUDA only).

    Returns the criteria values scanned, or None when skipped (not CUDA, or a sampler that is not
    a lhotse sampler). On out-of-memory the batch is saved and a RuntimeError names the criterion.
    """
    if device.type != "cuda":
        logging.info("OOM scan of the most pessimistic batches: skipped (not on CUDA)")
        return None
    sampler = getattr(train_dl, "sampler", None)
    dataset = getattr(train_dl, "dataset", None)
    try:
        from lhotse.dataset.sampling.base import CutSampler
        from lhotse.dataset.sampling.utils import find_pessimistic_batches
    except ImportError:  # pragma: no cover - lhotse is a dependency
        return None
    if not isinstance(sampler, CutSampler) or dataset is None:
        logging.info("OOM scan: skipped (the training loader has no lhotse sampler)")
        return None
    from copy import deepcopy

    logging.info("OOM scan: running the most pessimistic batches (largest duration, most cuts, ...)")
    batches, values = find_pessimistic_batches(deepcopy(sampler))
    model.train()
    for criterion, cuts in batches.items():
        batch = dataset[cuts]
        try:
            with autocast():
                loss, _ = compute_loss(model, batch, True)
            loss.backward()
            optimizer.zero_grad(set_to_none=True)
        except RuntimeError as e:
            if "out of memory" not in str(e).lower():
                raise
            path = save_batch(batch, Path(exp_dir) / f"oom-batch-{criterion}.pt")
            raise RuntimeError(
                f"Out of memory on the pessimistic batch '{criterion}' ({values[criterion]:.1f}); "
                f"the batch is in {path}. Lower --max-duration (or shorten cuts), or train with "
                f"--use-fp16/--use-bf16."
            ) from e
        logging.info(f"OOM scan: {criterion} = {values[criterion]:.1f} ok; "
                     f"max memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return values
