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
* Random training-time choices (which constraint runs this call, which branch a layer takes) go
  through :func:`random_draw` and :func:`choose`: in eager mode Python's ``random`` decides and
  only the chosen branch runs, exactly as before; while ``torch.compile`` traces, the draw is a
  tensor and the decision travels inside the graph, so training compiles without graph breaks
  (docs/training.md#torchcompile).
"""
import math
import random
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn


class ScheduledFloat(nn.Module):
    """A float that changes piecewise-linearly with the training batch count.

    ``ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.0)`` is 0.3 at batch 0, 0.1 from
    batch 20000 on, linear in between.  ``float(x)`` (or ``x.value()``; modules read it with
    :func:`float_value`, which torch.compile traces) gives the value; ``default`` is used in
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

    def value(self) -> float:
        if self.batch_count is None or not self.training:
            return self.default
        return self.value_at(self.batch_count)

    def __float__(self) -> float:
        return self.value()

    def extra_repr(self) -> str:
        return f"points={self.points}, default={self.default}, batch_count={self.batch_count}"

    # Hidden training state (outside state_dict, so exports and key lists stay as they are);
    # checkpoints collect it with icefall.checkpoint.get_training_state.
    def training_state(self) -> Dict[str, Any]:
        return {"batch_count": self.batch_count}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        self.batch_count = state["batch_count"]


FloatLike = Union[float, ScheduledFloat]


def float_value(x: FloatLike) -> float:
    """The value of a number or a :class:`ScheduledFloat` now. Not ``float(x)`` inside forward:
    torch 2.11's dynamo cannot trace ``float()`` of a module (88 graph breaks in zipformer-tiny's
    compiled training step), while it inlines the method call."""
    return x.value() if isinstance(x, ScheduledFloat) else float(x)


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Tell every :class:`ScheduledFloat` in ``model`` the current training batch count.

    Call it once per batch from the training loop (icefall scales the count by
    ``max_duration * world_size / ref_duration`` so schedules do not depend on batch size).
    """
    for m in model.modules():
        if isinstance(m, ScheduledFloat):
            m.batch_count = float(batch_count)


def random_draw(device: torch.device) -> Union[float, Tensor]:
    """A uniform number in [0, 1) for a training-time random choice.

    Eager: ``random.random()``, the stream every recorded run used, so eager training is bit for
    bit what it was. While torch.compile traces: a 0-d float64 tensor from ``torch.rand``
    (dynamo cannot trace Python's ``random``; each draw used to be a graph break), so that the
    comparison that follows is a tensor decision inside the graph. Same distribution, another
    stream; a compiled run resumes exactly because checkpoints keep torch's RNG state.
    """
    if torch.compiler.is_compiling():
        return torch.rand((), device=device, dtype=torch.float64)
    return random.random()


def choose(decision: Union[bool, Tensor], if_true: Callable[[], Tensor], if_false: Tensor) -> Tensor:
    """``if_true()`` when ``decision`` holds, else ``if_false``.

    A Python bool (eager) runs only the chosen branch; a 0-d bool tensor (compiled, see
    :func:`random_draw`) runs both and selects with ``torch.where``: one graph, the same values.
    """
    if isinstance(decision, Tensor):
        return torch.where(decision, if_true(), if_false)
    return if_true() if decision else if_false


class _FoundInBackward(nn.Module):
    """A module whose gradient correction runs in an opaque custom op (below), which finds the
    module by ``id`` to read its settings and switch its state at backward time. torch.compile
    traces the call of the op, not its Python body (which uses autograd and ``.item()``)."""

    _by_id: "weakref.WeakValueDictionary[int, nn.Module]" = weakref.WeakValueDictionary()

    def __init__(self) -> None:
        super().__init__()
        _FoundInBackward._by_id[id(self)] = self

    def __setstate__(self, state: Dict[str, Any]) -> None:  # copy.deepcopy, unpickling
        super().__setstate__(state)
        _FoundInBackward._by_id[id(self)] = self

    @staticmethod
    def find(key: int) -> nn.Module:
        return _FoundInBackward._by_id[key]


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


def _tensor_or_none(decision: Union[bool, Tensor]) -> Optional[Tensor]:
    """What a gradient Function saves of its decision: the tensor (compiled), or None for an eager
    ``True`` (eager skips the Function when the decision is False)."""
    return decision if isinstance(decision, Tensor) else None


class _LimitParamValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, min: float, max: float, active: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, active)
        ctx.bounds = (min, max)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, active = ctx.saved_tensors
        lo, hi = ctx.bounds
        # Below the minimum, flip gradients that would shrink x further; above the max,
        # flip those that would grow it.  Gradient descent then pushes x back into range.
        flip = ((grad > 0) & (x < lo)) | ((grad < 0) & (x > hi))
        if active is not None:
            flip = flip & active
        return torch.where(flip, -grad, grad), None, None, None


def limit_param_value(
    x: Tensor, min: float, max: float, prob: float = 0.6, training: bool = True
) -> Tensor:
    """Identity; while training (with probability ``prob``) steers ``x`` back into
    ``[min, max]`` through its gradient."""
    if not (training and x.requires_grad):
        return x
    active = random_draw(x.device) < prob
    if active is False:
        return x
    return _LimitParamValue.apply(x, min, max, _tensor_or_none(active))


class _BalancerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, balancer_id: int, active: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, active)
        ctx.balancer_id = balancer_id
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        x, active = ctx.saved_tensors
        return torch.ops.icefall.balancer_grad(x, x_grad, active, ctx.balancer_id), None, None


@torch.library.custom_op("icefall::balancer_grad", mutates_args=())
def _balancer_grad(x: Tensor, x_grad: Tensor, active: Optional[Tensor], balancer_id: int) -> Tensor:
    """The gradient of :class:`Balancer` ``balancer_id`` given the incoming ``x_grad`` (shape of
    ``x``); ``active``: a 0-d bool tensor (compiled; False: ``x_grad`` unchanged) or None."""
    if active is not None and not active.item():
        return x_grad.clone()
    m = _FoundInBackward.find(balancer_id)
    min_mean, max_mean, min_rms, max_rms, grad_scale = m.limits_now()
    dims = [d for d in range(x.ndim) if d != m.channel_dim % x.ndim]

    def penalty(x: Tensor) -> Tensor:
        sq = (x**2).mean(dim=dims, keepdim=True)
        mean = x.mean(dim=dims, keepdim=True)
        std = (sq - mean**2).clamp(min=1e-20).sqrt()
        rms = sq.clamp(min=1e-20).sqrt()
        m = mean / std
        # Penalties are zero inside the allowed ranges.
        loss = (m - m.clamp(min_mean, max_mean)).abs() + (rms.clamp(min_rms, max_rms) / rms).log().abs()
        return loss.sum()

    with torch.autocast(x.device.type, enabled=False):
        # torch.func.grad: plain autograd is switched off inside a custom op
        loss_grad = torch.func.grad(penalty)(x.detach().float())
    loss_grad_rms = (loss_grad**2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1e-20)
    loss_grad = loss_grad * (grad_scale / loss_grad_rms)
    g = x_grad.float()
    # Each element's correction is proportional to |its own gradient|, so the balancer
    # never dominates the real loss.
    return (g + g.abs() * loss_grad).to(x_grad.dtype)


@_balancer_grad.register_fake
def _(x: Tensor, x_grad: Tensor, active: Optional[Tensor], balancer_id: int) -> Tensor:
    return torch.empty_like(x_grad)


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


class Balancer(_FoundInBackward):
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
        if not self.training or not x.requires_grad:
            return x
        active = random_draw(x.device) < float_value(self.prob)
        if active is False:
            return x
        assert x.shape[self.channel_dim] == self.num_channels
        return _BalancerFunction.apply(x, id(self), _tensor_or_none(active))

    def limits_now(self) -> Tuple[float, float, float, float, float]:
        """(min, max) of mean/std, (min, max) of rms, grad_scale at the current batch count
        (read in backward, outside any compiled graph)."""
        abs_to_rms = math.sqrt(math.pi / 2)
        return (
            _proportion_positive_to_mean(float_value(self.min_positive), self.limits),
            _proportion_positive_to_mean(float_value(self.max_positive), self.limits),
            abs_to_rms * float_value(self.min_abs),
            abs_to_rms * float_value(self.max_abs),
            float_value(self.grad_scale),
        )


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
    def forward(ctx, x: Tensor, whiten_id: int, draw: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, draw)
        ctx.whiten_id = whiten_id
        return x.view_as(x)

    @staticmethod
    def backward(ctx, x_grad: Tensor):
        x, draw = ctx.saved_tensors
        return torch.ops.icefall.whiten_grad(x, x_grad, draw, ctx.whiten_id), None, None


@torch.library.custom_op("icefall::whiten_grad", mutates_args=())
def _whiten_grad(x: Tensor, x_grad: Tensor, draw: Optional[Tensor], whiten_id: int) -> Tensor:
    """The gradient of :class:`Whiten` ``whiten_id`` given the incoming ``x_grad`` (shape of ``x``),
    switching its ``prob``. ``draw``: None (eager decided in forward to check) or the 0-d tensor
    drawn in a compiled forward, compared with ``prob`` here (a Python number that the graph
    cannot read without recompiling whenever it switches)."""
    w = _FoundInBackward.find(whiten_id)
    if draw is not None and draw.item() > w.prob:
        return x_grad.clone()
    with torch.autocast(x.device.type, enabled=False):
        xd = x.detach().float()
        metric = whitening_metric(xd, w.num_groups)
        if metric.item() < float_value(w.whitening_limit):
            w.prob = w.min_prob  # within limit: check less often
            return x_grad.clone()
        w.prob = w.max_prob
        # torch.func.grad: plain autograd is switched off inside a custom op
        penalty_grad = torch.func.grad(whitening_metric)(xd, w.num_groups)
    scale = float(w.grad_scale) * x_grad.float().norm() / (penalty_grad.norm() + 1e-20)
    return x_grad + (penalty_grad * scale).to(x_grad.dtype)


@_whiten_grad.register_fake
def _(x: Tensor, x_grad: Tensor, draw: Optional[Tensor], whiten_id: int) -> Tensor:
    return torch.empty_like(x_grad)


class Whiten(_FoundInBackward):
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
        assert num_groups >= 1 and float_value(whitening_limit) >= 1 and float_value(grad_scale) >= 0
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        self.min_prob, self.max_prob = (prob, prob) if isinstance(prob, float) else prob
        self.prob = self.max_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not x.requires_grad or float_value(self.grad_scale) == 0:
            return x
        draw = random_draw(x.device)
        if not isinstance(draw, Tensor):  # eager: decide now, as always
            if draw > self.prob:
                return x
            draw = None
        return _WhitenFunction.apply(x, id(self), draw)

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
        p = float_value(self.p)
        if not self.training or p == 0.0:
            return x
        if self.shared_dim is None:
            return nn.functional.dropout(x, p=p, training=True)
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        mask = (torch.rand(shape, device=x.device) > p).to(x.dtype) * (1.0 / (1.0 - p))
        return x * mask


def penalize_abs_values_gt(
    x: Tensor, limit: float, penalty: float, active: Union[bool, Tensor] = True
) -> Tensor:
    """Identity forward; backprop adds the gradient of ``penalty * relu(|x| - limit)``
    (where ``active`` holds: a bool, or a 0-d bool tensor from a compiled draw)."""
    if not x.requires_grad or active is False:
        return x
    return _PenalizeAbs.apply(x, limit, penalty, _tensor_or_none(active))


class _PenalizeAbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limit: float, penalty: float, active: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, active)
        ctx.args = (limit, penalty)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, active = ctx.saved_tensors
        limit, penalty = ctx.args
        extra = (x.abs() > limit).to(grad.dtype) * x.sign().to(grad.dtype) * penalty
        out = grad + extra
        if active is not None:
            out = torch.where(active, out, grad)
        return out, None, None, None


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
    "random_draw",
    "choose",
    "Balancer",
    "Whiten",
    "whitening_metric",
    "whitening_schedule",
    "Dropout2",
    "penalize_abs_values_gt",
]
