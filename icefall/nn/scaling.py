"""Building blocks shared by the Zipformer encoder and the fbank front end.

Follows the Zipformer paper (Yao et al., ICLR 2024) and icefall's ``scaling.py``:

* :class:`ScheduledFloat` - a float that is a piecewise-linear function of the batch count
  (dropout rates, skip rates, balancer limits).  The training loop sets the batch count
  on every module with :func:`set_batch_count`.
* :class:`BiasNorm` - LayerNorm replacement: ``x / rms(x - b) * exp(gamma)``.
* :func:`swoosh_r`, :func:`swoosh_l` and their modules.
* :class:`Balancer` and :class:`Whiten` - identity in the forward pass; during training they
  add a small correction to the gradient (keep per-channel mean/rms in range; keep the feature
  covariance close to white).  In eval mode, or when no gradient is needed, they do nothing.
* Hidden training state: modules whose training changes plain attributes (Whiten's ``prob``,
  ScheduledFloat's ``batch_count``) have ``training_state()`` / ``load_training_state()``;
  checkpoints store it next to the state dict (``icefall.checkpoint.get_training_state``).
* :func:`scale_grad` (identity forward, gradient multiplied by a constant), :func:`limit_param_value`.
"""
import math
import random
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn


class ScheduledFloat(nn.Module):
    """A float that changes piecewise-linearly with the training batch count.

    ``ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.0)`` is 0.3 at batch 0, 0.1 from
    batch 20000 on, linear in between.  ``float(x)`` gives the value; ``default`` is used in
    eval mode or before the batch count has been set.  It is an ``nn.Module`` only so that
    :func:`set_batch_count` finds it through ``model.modules()``.
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0):
        super().__init__()
        assert len(points) >= 1 and all(len(p) == 2 for p in points), points
        xs = [float(p[0]) for p in points]
        assert xs == sorted(xs), f"x values must be sorted: {xs}"
        self.points = [(float(x), float(y)) for x, y in points]
        self.default = float(default)
        self.batch_count: Optional[float] = None

    def value_at(self, batch_count: float) -> float:
        """The schedule's value at a given batch count (clamped at both ends)."""
        pts = self.points
        if batch_count <= pts[0][0]:
            return pts[0][1]
        if batch_count >= pts[-1][0]:
            return pts[-1][1]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            if batch_count <= x1:
                return y0 + (y1 - y0) * (batch_count - x0) / (x1 - x0)
        raise AssertionError("unreachable")

    def __float__(self) -> float:
        if self.batch_count is None or not self.training:
            return self.default
        return self.value_at(self.batch_count)

    def extra_repr(self) -> str:
        return f"points={self.points}, default={self.default}, batch_count={self.batch_count}"

    # Hidden training state (outside state_dict, so exports and key lists stay as they are);
    # checkpoints collect it with icefall.checkpoint.get_training_state.
    def training_state(self) -> Dict[str, Any]:
        return {"batch_count": self.batch_count}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        self.batch_count = state["batch_count"]


FloatLike = Union[float, ScheduledFloat]


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Tell every :class:`ScheduledFloat` in ``model`` the current training batch count.

    Call it once per batch from the training loop (icefall scales the count by
    ``max_duration * world_size / ref_duration`` so schedules do not depend on batch size).
    """
    for m in model.modules():
        if isinstance(m, ScheduledFloat):
            m.batch_count = float(batch_count)


# ---------------------------------------------------------------------------------------------
# Activations and normalization


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687  (zero at x = 0)."""
    return nn.functional.softplus(x - 1.0) - 0.08 * x - 0.313261687


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035."""
    return nn.functional.softplus(x - 4.0) - 0.08 * x - 0.035


class SwooshR(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class SwooshL(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class BiasNorm(nn.Module):
    """``y = x * exp(log_scale) / sqrt(mean_c((x - bias)^2))`` over the channel dim.

    Unlike LayerNorm it does not subtract the mean from the output and has a single learned
    scalar scale; the bias only enters the rms, so the model cannot defeat the normalization
    by parking a large constant in one channel.  ``log_scale`` is kept in
    ``[log_scale_min, log_scale_max]`` through its gradient while training.
    """

    def __init__(
        self,
        num_channels: int,
        channel_dim: int = -1,
        log_scale: float = 1.0,
        log_scale_min: float = -1.5,
        log_scale_max: float = 1.5,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0.0, std=1.0e-4))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        dim = self.channel_dim % x.ndim
        assert x.shape[dim] == self.num_channels, (x.shape, self.num_channels)
        bias = self.bias.reshape([-1] + [1] * (x.ndim - 1 - dim))
        log_scale = limit_param_value(
            self.log_scale, self.log_scale_min, self.log_scale_max, training=self.training
        )
        scales = ((x - bias) ** 2).mean(dim=dim, keepdim=True).clamp(min=1e-20) ** -0.5
        return x * scales * log_scale.exp()


def ScaledLinear(*args, initial_scale: float = 1.0, **kwargs) -> nn.Linear:
    """An ``nn.Linear`` whose default init is multiplied by ``initial_scale`` (bias uniform
    in +-0.1*initial_scale).  Used for output projections that should start small."""
    lin = nn.Linear(*args, **kwargs)
    with torch.no_grad():
        lin.weight.mul_(initial_scale)
        if lin.bias is not None:
            nn.init.uniform_(lin.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return lin


def convert_num_channels(x: Tensor, num_channels: int) -> Tensor:
    """Truncate or zero-pad the last dim of ``x`` to ``num_channels``."""
    if num_channels <= x.shape[-1]:
        return x[..., :num_channels]
    pad = x.new_zeros(*x.shape[:-1], num_channels - x.shape[-1])
    return torch.cat((x, pad), dim=-1)


# ---------------------------------------------------------------------------------------------
# Gradient-only modules


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.alpha, None


def scale_grad(x: Tensor, alpha: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``alpha`` (e.g. fairseq's
    ``feature_grad_mult``)."""
    if alpha == 1.0 or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, alpha)


class ScaleGrad(nn.Module):
    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return scale_grad(x, self.alpha) if self.training else x


class _LimitParamValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, min: float, max: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = (min, max)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        # Below the minimum, flip gradients that would shrink x further; above the max,
        # flip those that would grow it.  Gradient descent then pushes x back into range.
        flip = ((grad > 0) & (x < lo)) | ((grad < 0) & (x > hi))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(
    x: Tensor, min: float, max: float, prob: float = 0.6, training: bool = True
) -> Tensor:
    """Identity; while training (with probability ``prob``) steers ``x`` back into
    ``[min, max]`` through its gradient."""
    if training and x.requires_grad and random.random() < prob:
        return _LimitParamValue.apply(x, min, max)
    return x


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limits: Tuple[float, ...], channel_dim: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.limits = limits
        ctx.channel_dim = channel_dim
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        (x,) = ctx.saved_tensors
        min_mean, max_mean, min_rms, max_rms, grad_scale = ctx.limits
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            x = x.detach().float().requires_grad_(True)
            dims = [d for d in range(x.ndim) if d != ctx.channel_dim]
            sq = (x**2).mean(dim=dims, keepdim=True)
            mean = x.mean(dim=dims, keepdim=True)
            std = (sq - mean**2).clamp(min=1e-20).sqrt()
            rms = sq.clamp(min=1e-20).sqrt()
            m = mean / std
            # Penalties are zero inside the allowed ranges.
            loss = (m - m.clamp(min_mean, max_mean)).abs() + (
                rms.clamp(min_rms, max_rms) / rms
            ).log().abs()
            (loss_grad,) = torch.autograd.grad(loss.sum(), x)
        loss_grad_rms = (loss_grad**2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1e-20)
        loss_grad = loss_grad * (grad_scale / loss_grad_rms)
        g = x_grad.float()
        # Each element's correction is proportional to |its own gradient|, so the balancer
        # never dominates the real loss.
        return (g + g.abs() * loss_grad).to(x_grad.dtype), None, None


#: How :class:`Balancer` turns a proportion of positive values into a limit on mean/std.
#: "gaussian": the exact value for Gaussian data, sqrt(2) * erfinv(2p - 1) (our default; every
#: result in docs/RESULTS.md was measured with it). "icefall": icefall's scaling.py, which
#: approximates erfinv(2p - 1) by 0.8139535143 * atanh(2p - 1) and omits the sqrt(2); its limits
#: are about 1.5x tighter near p = 0.5 (models imported from icefall train on with it).
BALANCER_LIMITS = ("gaussian", "icefall")


def _proportion_positive_to_mean(p: float, limits: str = "gaussian") -> float:
    q = 2.0 * p - 1.0
    if limits == "icefall":
        # eps keeps p = 0 or 1 finite, as in icefall
        eps = 1.0e-10
        return 0.8139535143 * (math.log(1.0 + q + eps) - math.log(1.0 - q + eps)) / 2.0
    # the clamp keeps p = 0 or 1 finite
    q = min(max(q, -0.999999), 0.999999)
    return math.sqrt(2.0) * torch.special.erfinv(torch.tensor(q)).item()


def set_balancer_limits(module: nn.Module, limits: str) -> None:
    """Use the ``limits`` formula (one of :data:`BALANCER_LIMITS`) in every :class:`Balancer`
    inside ``module``."""
    if limits not in BALANCER_LIMITS:
        raise ValueError(f"balancer_limits={limits!r}: choose from {BALANCER_LIMITS}")
    for m in module.modules():
        if isinstance(m, Balancer):
            m.limits = limits


class Balancer(nn.Module):
    """Keeps each channel's statistics in range by nudging gradients (forward is identity).

    Constraints per channel (over all other dims): proportion of positive values in
    ``[min_positive, max_positive]`` (expressed as limits on mean/std) and mean absolute value
    in ``[min_abs, max_abs]`` (as limits on rms = sqrt(pi/2) * mean-abs for a Gaussian).
    Applied on a random ``prob`` fraction of training steps. ``limits``: how a proportion
    becomes a mean/std limit (:data:`BALANCER_LIMITS`; :func:`set_balancer_limits`).
    """

    def __init__(
        self,
        num_channels: int,
        channel_dim: int,
        min_positive: FloatLike = 0.05,
        max_positive: FloatLike = 0.95,
        min_abs: FloatLike = 0.2,
        max_abs: FloatLike = 100.0,
        grad_scale: FloatLike = 0.04,
        prob: Optional[FloatLike] = None,
        limits: str = "gaussian",
    ):
        super().__init__()
        self.limits = limits
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive, self.max_positive = min_positive, max_positive
        self.min_abs, self.max_abs = min_abs, max_abs
        self.grad_scale = grad_scale
        self.prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4) if prob is None else prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not x.requires_grad or random.random() >= float(self.prob):
            return x
        abs_to_rms = math.sqrt(math.pi / 2)
        limits = (
            _proportion_positive_to_mean(float(self.min_positive), self.limits),
            _proportion_positive_to_mean(float(self.max_positive), self.limits),
            abs_to_rms * float(self.min_abs),
            abs_to_rms * float(self.max_abs),
            float(self.grad_scale),
        )
        assert x.shape[self.channel_dim] == self.num_channels
        return _BalancerFunction.apply(x, limits, self.channel_dim % x.ndim)


def whitening_metric(x: Tensor, num_groups: int) -> Tensor:
    """How far the centered covariance of ``x`` (..., C) is from a multiple of identity.

    Per group of channels with covariance S: ``mean(diag(S @ S)) / mean(diag(S))^2`` averaged
    the same way over groups; 1.0 when all eigenvalues are equal, larger otherwise.
    """
    x = x.reshape(-1, x.shape[-1]).float()
    n, c = x.shape
    x = x.reshape(n, num_groups, c // num_groups).transpose(0, 1)  # (G, N, C/G)
    x = x - x.mean(dim=1, keepdim=True)
    cov = torch.matmul(x.transpose(1, 2), x)  # (G, C/G, C/G)
    mean_diag = torch.diagonal(cov, dim1=1, dim2=2).mean()
    mean_diag_sq = (cov**2).sum() / c  # = mean of diag(cov @ cov), cov symmetric
    return mean_diag_sq / (mean_diag**2 + 1e-20)


class _WhitenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: "Whiten") -> Tensor:
        ctx.save_for_backward(x)
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        (x,) = ctx.saved_tensors
        w = ctx.module
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            xd = x.detach().float().requires_grad_(True)
            metric = whitening_metric(xd, w.num_groups)
            if metric.item() < float(w.whitening_limit):
                w.prob = w.min_prob  # within limit: check less often
                return x_grad, None
            w.prob = w.max_prob
            (penalty_grad,) = torch.autograd.grad(metric, xd)
        scale = float(w.grad_scale) * x_grad.float().norm() / (penalty_grad.norm() + 1e-20)
        return x_grad + (penalty_grad * scale).to(x_grad.dtype), None


class Whiten(nn.Module):
    """Identity forward; when the whitening metric of the input exceeds ``whitening_limit``,
    adds the metric's gradient (scaled to ``grad_scale`` times the norm of the incoming
    gradient) in backprop.  Checked with probability ``prob`` (min while within limit, max
    after a violation)."""

    def __init__(
        self,
        num_groups: int,
        whitening_limit: FloatLike,
        prob: Union[float, Tuple[float, float]],
        grad_scale: FloatLike,
    ):
        super().__init__()
        assert num_groups >= 1 and float(whitening_limit) >= 1 and float(grad_scale) >= 0
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        self.min_prob, self.max_prob = (prob, prob) if isinstance(prob, float) else prob
        self.prob = self.max_prob

    def forward(self, x: Tensor) -> Tensor:
        if (
            not self.training
            or not x.requires_grad
            or float(self.grad_scale) == 0
            or random.random() > self.prob
        ):
            return x
        return _WhitenFunction.apply(x, self)

    # ``prob`` changes inside backward: a resumed run needs it (see ScheduledFloat).
    def training_state(self) -> Dict[str, Any]:
        return {"prob": self.prob}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        self.prob = float(state["prob"])


def whitening_schedule(x: float, ratio: float = 2.0) -> ScheduledFloat:
    """Whitening limit that relaxes from ``x`` to ``ratio * x`` over 20k batches."""
    return ScheduledFloat((0.0, x), (20000.0, ratio * x), default=x)


class Dropout2(nn.Module):
    """Dropout whose rate may be a :class:`ScheduledFloat`; ``shared_dim`` shares the mask
    along one axis (e.g. time), as icefall does in its feed-forward modules."""

    def __init__(self, p: FloatLike, shared_dim: Optional[int] = None):
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def forward(self, x: Tensor) -> Tensor:
        p = float(self.p)
        if not self.training or p == 0.0:
            return x
        if self.shared_dim is None:
            return nn.functional.dropout(x, p=p, training=True)
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        mask = (torch.rand(shape, device=x.device) > p).to(x.dtype) * (1.0 / (1.0 - p))
        return x * mask


def penalize_abs_values_gt(x: Tensor, limit: float, penalty: float) -> Tensor:
    """Identity forward; backprop adds the gradient of ``penalty * relu(|x| - limit)``."""
    if not x.requires_grad:
        return x
    return _PenalizeAbs.apply(x, limit, penalty)


class _PenalizeAbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limit: float, penalty: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.args = (limit, penalty)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        limit, penalty = ctx.args
        extra = (x.abs() > limit).to(grad.dtype) * x.sign().to(grad.dtype) * penalty
        return grad + extra, None, None


__all__: List[str] = [
    "ScheduledFloat",
    "FloatLike",
    "set_batch_count",
    "swoosh_r",
    "swoosh_l",
    "SwooshR",
    "SwooshL",
    "BiasNorm",
    "ScaledLinear",
    "convert_num_channels",
    "scale_grad",
    "ScaleGrad",
    "limit_param_value",
    "Balancer",
    "Whiten",
    "whitening_metric",
    "whitening_schedule",
    "Dropout2",
    "penalize_abs_values_gt",
]
