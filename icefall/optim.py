"""ScaledAdam optimizer and Eden learning-rate schedule (Yao et al., Zipformer, ICLR 2024).

ScaledAdam, per parameter tensor p with gradient g (scalars: tensors with one element):

* Adam-style direction without first-moment bias correction:
  ``d = -lr * g / (sqrt(v / (1 - beta2^t)) + eps)``, ``v = EMA_beta2(g^2)``;
* for non-scalars the step is multiplied by ``rms(p)`` (clamped below by ``param_min_rms``),
  so every tensor changes by about ``lr`` *relative* to its size;
* the tensor's scale is learned separately: every ``size_update_period`` steps the summed
  ``<p, g>`` of the period drives an Adam-normalised step on log-scale (lr * scalar_lr_scale),
  limited to +-0.1 per update and to keep ``param_min_rms <= rms(p) <= param_max_rms``;
* momentum: ``p += m``, ``m = beta1 * m + (1 - beta1) * step``;
* scalars use ``lr * scalar_lr_scale`` and are clamped to ``[-scalar_max, scalar_max]``;
* gradient clipping (``clipping_scale``): the model gradient norm, measured as
  ``sqrt(sum ||g * rms(p)||^2 + sum_scalars ||g * scalar_lr_scale||^2)``, is clipped to
  ``clipping_scale * median`` of the norms of the last ``clipping_update_period`` steps
  (threshold re-estimated every period and, with a doubled threshold, at steps 10, 20, 40;
  "median" is icefall's order statistic ``sorted[(n // 4) * 2]``). The gradients are scaled in
  place; a non-finite norm zeroes them (the step then only applies momentum);
* parameters without a gradient in a step are stepped with a zero gradient, as icefall's are.

Eden: ``lr = base_lr * ((batch^2 + lr_batches^2) / lr_batches^2)^-0.25
* ((epoch^2 + lr_epochs^2) / lr_epochs^2)^-0.25 * warmup``, warmup rising linearly from
``warmup_start`` to 1 over ``warmup_batches`` batches.

Both have ``state_dict`` / ``load_state_dict``; resuming from them continues bit-for-bit.
"""
import logging
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.optim import Optimizer


class ScaledAdam(Optimizer):
    """See the module docstring.

    Args:
      params: parameters, ``named_parameters()`` pairs, or param-group dicts.
      lr: learning rate (typically 0.02 - 0.045 with Eden; much larger than Adam's).
      clipping_scale: e.g. 2.0; None disables clipping.
      betas: (beta1 momentum, beta2 for the squared-gradient average).
      scalar_lr_scale: lr factor for scalars and for the log-scale of tensors.
      eps, param_min_rms, param_max_rms, scalar_max: as described above.
      size_update_period: steps between updates of the tensor scales.
      clipping_update_period: number of recent gradient norms the median is taken over.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-2,
        clipping_scale: Optional[float] = None,
        betas: Tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ):
        defaults = dict(
            lr=lr,
            clipping_scale=clipping_scale,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
            clipping_update_period=clipping_update_period,
        )
        super().__init__(_strip_names(params), defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if all(p.grad is None for p in group["params"]):
                continue
            # As icefall's: a parameter without a gradient this step (a skipped layer, a frozen
            # encoder) is stepped with a zero gradient, so its momentum keeps moving it.
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            params = group["params"]
            clip = self._clipping_factor(group, params)
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                if clip == 0.0:
                    p.grad.zero_()  # an infinite/NaN norm: inf * 0 would be NaN
                elif clip != 1.0:
                    p.grad.mul_(clip)
                self._update(group, p, self.state[p])
        return loss

    # ----------------------------------------------------------------------------------
    def _update(self, group: Dict[str, Any], p: Tensor, state: Dict[str, Any]) -> None:
        grad = p.grad
        step = state.setdefault("step", 0)
        beta1, beta2 = group["betas"]
        is_scalar = p.numel() == 1
        lr = group["lr"] * (group["scalar_lr_scale"] if is_scalar else 1.0)

        if "exp_avg_sq" not in state:
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float)
            state["delta"] = torch.zeros_like(p, dtype=torch.float)
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2 = 1 - beta2 ** (step + 1)
        # (Skipping the correction once it is ~1 saves a multiply per element.)
        denom = (exp_avg_sq / bias_correction2 if bias_correction2 < 0.99 else exp_avg_sq).sqrt().add_(group["eps"])
        delta = -lr * grad / denom

        if not is_scalar:
            delta = self._scale_step(group, p, state, grad, delta, step)

        stored = state["delta"]
        stored.mul_(beta1).add_(delta, alpha=1 - beta1)
        p.add_(stored.to(p.dtype))
        if is_scalar:
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        state["step"] = step + 1

    def _scale_step(self, group, p: Tensor, state, grad: Tensor, delta: Tensor, step: int) -> Tensor:
        """Scale ``delta`` by rms(p) and, once per size period, add the log-scale update."""
        period = group["size_update_period"]
        if "param_rms" not in state:
            state["param_rms"] = _rms(p).float()
            state["scale_grads"] = torch.zeros(period, dtype=torch.float, device=p.device)
            state["scale_exp_avg_sq"] = torch.zeros((), dtype=torch.float, device=p.device)
        param_rms, scale_grads = state["param_rms"], state["scale_grads"]
        # d loss / d log-scale of p (p = scale * direction) is <p, g>.
        scale_grads[step % period] = (p * grad).sum()
        end_of_period = step % period == period - 1
        if end_of_period:
            param_rms.copy_(_rms(p))

        delta = delta * param_rms.clamp(min=group["param_min_rms"])

        if end_of_period and step > 0:
            beta2_corr = group["betas"][1] ** period  # decay per size update
            exp_sq = state["scale_exp_avg_sq"]
            exp_sq.mul_(beta2_corr).add_((scale_grads**2).mean(), alpha=1 - beta2_corr)
            size_step = (step + 1) // period
            bias_correction2 = 1 - beta2_corr**size_step
            size_lr = group["lr"] * group["scalar_lr_scale"]
            scale_step = -size_lr * bias_correction2**0.5 * scale_grads.sum() / (exp_sq.sqrt() + group["eps"])
            # Too small already: do not change the scale any further.
            scale_step = torch.where(param_rms < group["param_min_rms"], 0.0, scale_step)
            scale_step = scale_step.clamp(min=-0.1, max=0.1)
            scale_step = torch.minimum(scale_step, (group["param_max_rms"] - param_rms) / param_rms)
            delta = delta + p * scale_step
        return delta

    def _clipping_factor(self, group: Dict[str, Any], params: List[Tensor]) -> float:
        """Factor (<= 1) to multiply this step's gradients by; bookkeeping in the state of the
        group's first parameter."""
        clipping_scale = group["clipping_scale"]
        if clipping_scale is None:
            return 1.0
        cs = self.state[group["params"][0]]
        step = cs.setdefault("clip_step", 0)
        cs["clip_step"] = step + 1
        if step == 0:
            return 1.0  # param_rms not known yet
        period = group["clipping_update_period"]
        sumsq = torch.zeros((), device=params[0].device)
        for p in params:
            state = self.state[p]
            if p.numel() == 1:
                sumsq += (p.grad.float() ** 2).sum() * group["scalar_lr_scale"] ** 2
            else:
                rms = state["param_rms"] if "param_rms" in state else _rms(p).float()
                sumsq += ((p.grad.float() * rms) ** 2).sum()
        norm = sumsq.sqrt()
        if "model_norms" not in cs:
            cs["model_norms"] = torch.zeros(period, device=norm.device)
        cs["model_norms"][step % period] = norm

        early = step in (10, 20, 40) and step < period
        if step % period == 0 or early:
            # Norms are recorded from step 1 on, at index step % period.
            recent = cs["model_norms"][1 : step + 1] if early else cs["model_norms"]
            ordered = recent.sort().values
            # icefall's "median": the order statistic at (n // 4) * 2 (the upper median for even n).
            median = ordered[min(len(ordered) - 1, (len(ordered) // 4) * 2)].item()
            if median != median:
                raise RuntimeError("ScaledAdam: too many non-finite gradient norms")
            # Norms change fast early in training: be lenient there.
            cs["model_norm_threshold"] = clipping_scale * median * (2.0 if early else 1.0)
        if "model_norm_threshold" not in cs:
            return 1.0
        factor = min(1.0, cs["model_norm_threshold"] / (norm.item() + 1.0e-20))
        if factor != factor:  # nan gradient norm: drop the step's gradients
            factor = 0.0
        if factor < 0.5:
            logging.warning(f"ScaledAdam: scaling gradients by {factor:.3g} (norm {norm.item():.3e})")
        return factor


def _rms(p: Tensor) -> Tensor:
    return (p.float() ** 2).mean().sqrt()


def _strip_names(params: Iterable[Any]) -> List[Any]:
    """Accept parameters, (name, parameter) pairs, or group dicts with either (``params``, or
    icefall's ``named_params``: a list of (name, parameter) pairs)."""
    params = list(params)
    out = []
    for item in params:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append(item[1])
        elif isinstance(item, dict):
            item = dict(item)
            if "named_params" in item:
                if "params" in item:
                    raise ValueError("A parameter group has both 'params' and 'named_params'")
                item["params"] = item.pop("named_params")
            item["params"] = [q[1] if isinstance(q, tuple) else q for q in item["params"]]
            out.append(item)
        else:
            out.append(item)
    return out


class LRScheduler:
    """Base for schedules that depend on both the batch index and the epoch."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.base_lrs = [group["base_lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.batch = 0
        self._set_lrs()

    def get_lr(self) -> List[float]:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        # base_lrs stay out so that a resumed run may change --base-lr.
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.epoch = state_dict["epoch"]
        self.batch = state_dict["batch"]
        self._set_lrs()

    def get_last_lr(self) -> List[float]:
        return self._last_lr

    def step_batch(self, batch: Optional[int] = None) -> None:
        """Advance (or set to ``batch``, counted from the start of training) the batch index."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: Optional[Union[int, float]] = None) -> None:
        """Advance (or set) the epoch; icefall calls ``step_epoch(epoch - 1)`` at the start of
        each 1-based epoch."""
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self._set_lrs()

    def _set_lrs(self) -> None:
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


class Eden(LRScheduler):
    """Eden schedule (see the module docstring).  Suggested with ScaledAdam: base_lr 0.045,
    lr_batches 5000-7500, lr_epochs 3.5-10.5 (or a data-amount analogue of epochs)."""

    def __init__(
        self,
        optimizer: Optimizer,
        lr_batches: Union[int, float],
        lr_epochs: Union[int, float],
        warmup_batches: Union[int, float] = 500.0,
        warmup_start: float = 0.5,
    ):
        assert 0.0 <= warmup_start <= 1.0, warmup_start
        self.lr_batches = lr_batches
        self.lr_epochs = lr_epochs
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        super().__init__(optimizer)

    def get_lr(self) -> List[float]:
        b, e = self.batch, self.epoch
        factor = ((b**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25 * (
            (e**2 + self.lr_epochs**2) / self.lr_epochs**2
        ) ** -0.25
        if b >= self.warmup_batches:
            warmup = 1.0
        else:
            warmup = self.warmup_start + (1.0 - self.warmup_start) * b / self.warmup_batches
        return [base * factor * warmup for base in self.base_lrs]
