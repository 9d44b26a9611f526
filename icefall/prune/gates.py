"""Sparsity-aware self-pinching gates (Xu et al., 2025): one-pass pruning while fine-tuning.

Each selected ``nn.Linear`` gets one learnable threshold ``t`` (init 1e-5). With ``W`` its
weight (out, in) the soft mask is ``M = sigmoid((W^2 - t^2) / tau)`` and the forward pass uses
the binary mask ``1[W^2 >= t^2]`` through a straight-through estimator: the value is the binary
mask, the gradient into ``W`` and ``t`` is that of the soft mask. The training loss is

    loss = task_loss + eta * gate_regularizer(model)

where the regularizer is the soft L0 (sum of soft masks over all gated layers, divided by the
number of gated weights, so it lies in [0, 1]). ``GateController`` switches eta off while the
target overall sparsity is met and cosine-anneals tau.

Typical use::

    names = add_gates(model, TRANSFORMER_PATTERNS)
    ctrl = GateController(target_sparsity=0.7, eta=1.0, total_steps=num_steps)
    for step, batch in enumerate(batches):
        eta = ctrl.update(model, step)
        loss = task_loss(model, batch) + eta * gate_regularizer(model)
        ...
    overall, per_layer = current_sparsity(model)
    remove_gates(model)   # plain nn.Linear layers with the binary masks folded in

Gated layers subclass ``nn.Linear`` and keep the parameter names ``weight`` and ``bias``, so a
state dict of the unpruned model loads into the gated model unchanged (``strict=True``).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, Iterable, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

Patterns = Union[str, Sequence[str]]

# Regular expressions (``re.search`` on the full module name) for the six linear layers of a
# block.  fairseq/HuBERT-style Transformer: q/k/v/out projections of self-attention, fc1/fc2.
TRANSFORMER_PATTERNS: Tuple[str, ...] = (
    r"self_attn\.(q_proj|k_proj|v_proj|out_proj)$",
    r"\.fc[12]$",
)
# icefall Zipformer2 naming: attention weights (query/key) projection, value in/out projections
# of the self-attention modules, and the feed-forward in/out projections.  Only modules that
# are ``nn.Linear`` are ever gated, whatever the pattern matches.
ZIPFORMER_PATTERNS: Tuple[str, ...] = (
    r"self_attn_weights\.in_proj$",
    r"self_attn[12]?\.(in_proj|out_proj)$",
    r"feed_forward[123]?\.(in_proj|out_proj)$",
)


class MaskedLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses ``weight * mask()``; subclasses define the mask.

    Shapes as nn.Linear: input (..., in_features) -> output (..., out_features).
    """

    @classmethod
    def _sharing(cls, lin: nn.Linear) -> "MaskedLinear":
        """An instance that shares ``lin``'s weight and bias Parameters (no copy, no init);
        subclasses add their own state."""
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.in_features, m.out_features = lin.in_features, lin.out_features
        m.weight, m.bias = lin.weight, lin.bias
        m.train(lin.training)
        return m

    def mask(self) -> torch.Tensor:
        """The mask applied in forward, shape (out_features, in_features)."""
        raise NotImplementedError

    def binary_mask(self) -> torch.Tensor:
        """The 0/1 mask without gradient (what inference uses), shape of ``weight``."""
        with torch.no_grad():
            return self.mask().detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask(), self.bias)

    @torch.no_grad()
    def folded_weight(self) -> torch.Tensor:
        """``weight * binary_mask()``: the weight a pruned model ships with."""
        return self.weight * self.binary_mask()

    @torch.no_grad()
    def folded_bias(self):
        """The bias a pruned model ships with (masked only by channel pruning)."""
        return self.bias

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the binary mask folded into the weight."""
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(self.folded_weight())
            if self.bias is not None:
                lin.bias.copy_(self.folded_bias())
        lin.train(self.training)
        return lin

    # State dicts of the unpruned model lack the extra entries of a subclass (threshold, mask):
    # keep the current value instead of reporting them missing, so strict loading works.
    extra_keys: Tuple[str, ...] = ()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        before = set(missing_keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        optional = {prefix + k for k in self.extra_keys}
        missing_keys[:] = [k for k in missing_keys if k in before or k not in optional]


class GatedLinear(MaskedLinear):
    """``nn.Linear`` with a self-pinching gate: one learnable threshold for the whole weight.

    ``tau`` is a plain attribute (not a parameter) set by ``GateController`` / ``set_tau``.
    """

    extra_keys = ("threshold",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 threshold_init: float = 1e-5, tau: float = 0.5, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.threshold = nn.Parameter(
            torch.tensor(float(threshold_init), device=device, dtype=self.weight.dtype)
        )
        self.tau = float(tau)

    @classmethod
    def from_linear(cls, lin: nn.Linear, threshold_init: float = 1e-5, tau: float = 0.5
                    ) -> "GatedLinear":
        """Wrap an existing layer, sharing its weight and bias Parameters (optimizers and
        references to them stay valid)."""
        g = cls._sharing(lin)
        g.threshold = nn.Parameter(
            torch.tensor(float(threshold_init), device=lin.weight.device, dtype=lin.weight.dtype)
        )
        g.tau = float(tau)
        return g

    def gate_input(self) -> torch.Tensor:
        """What the threshold is compared with: W^2 (shape of ``weight``)."""
        return self.weight.square()

    def soft_mask(self) -> torch.Tensor:
        """sigmoid((W^2 - t^2) / tau), shape (out_features, in_features), differentiable."""
        return torch.sigmoid((self.gate_input() - self.threshold.square()) / self.tau)

    def binary_mask(self) -> torch.Tensor:
        with torch.no_grad():
            return (self.gate_input() >= self.threshold.square()).to(self.weight.dtype)

    def mask(self) -> torch.Tensor:
        # Straight-through: value = binary mask exactly (soft - soft.detach() is exactly 0),
        # gradient = gradient of the soft mask.
        soft = self.soft_mask()
        return self.binary_mask() + (soft - soft.detach())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold.item():.3g}, tau={self.tau:.3g}"


class ScaleAwareGatedLinear(GatedLinear):
    """A self-pinching gate whose threshold is relative to the layer's weight scale:
    ``(W / rms(W))^2`` replaces ``W^2`` in the soft and binary masks, i.e. an entry is kept when
    ``|W_ij| >= t * rms(W)``.

    One absolute threshold per layer moves by about one Adam lr per step whatever the layer's
    scale, so a layer whose weights are all small (the Zipformer's out_proj, |W| ~ 1e-3) is
    wiped out as soon as its threshold passes them; relative to the scale, ``t`` means the same
    quantile-like cut in every layer. ``rms(W)`` is taken without gradient (a per-step
    normalisation, not something the regulariser can shrink to cheat); tau then applies to
    normalised squares. For the masks only; ``current_sparsity`` etc. are unchanged.
    """

    def gate_input(self) -> torch.Tensor:
        scale = self.weight.detach().square().mean().clamp_min(torch.finfo(self.weight.dtype).tiny)
        return self.weight.square() / scale


GATE_KINDS = {"absolute": GatedLinear, "rms": ScaleAwareGatedLinear}


def _as_list(patterns: Patterns) -> List[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def select_linears(model: nn.Module, patterns: Patterns) -> List[str]:
    """Names of the ``nn.Linear`` modules whose full name matches any of the regular
    expressions ``patterns`` (``re.search``); an exact name is a valid pattern when anchored,
    e.g. ``r"^encoder\\.layers\\.0\\.fc1$"``.

    Only modules of exact type ``nn.Linear`` qualify: subclasses may be used without calling
    their forward (``nn.MultiheadAttention.out_proj``) or carry state a wrapper would drop,
    and already-masked layers are never masked twice.
    """
    regexes = [re.compile(p) for p in _as_list(patterns)]
    return [
        name
        for name, m in model.named_modules()
        if type(m) is nn.Linear and any(r.search(name) for r in regexes)
    ]


def replace_modules(
    model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]
) -> None:
    """Replace each submodule ``name`` by ``make(name, old_module)`` in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(name, getattr(parent, child)))


def add_gates(model: nn.Module, patterns: Patterns, threshold_init: float = 1e-5,
              tau: float = 0.5, scale: str = "absolute") -> List[str]:
    """Put a self-pinching gate on every ``nn.Linear`` whose name matches ``patterns``.

    ``scale``: ``absolute`` (the paper: ``|W| >= t``) or ``rms`` (``|W| >= t * rms(W)``,
    :class:`ScaleAwareGatedLinear`). Modifies ``model`` in place (weights and biases are shared,
    not copied) and returns the names of the gated layers.  Raises if nothing matches, which is
    almost always a typo.
    """
    if scale not in GATE_KINDS:
        raise ValueError(f"gate scale must be one of {sorted(GATE_KINDS)}, got {scale!r}")
    kind = GATE_KINDS[scale]
    names = select_linears(model, patterns)
    if not names:
        raise ValueError(f"No nn.Linear module matches {patterns!r}")
    replace_modules(model, names, lambda _, lin: kind.from_linear(lin, threshold_init, tau))
    return names


def masked_layers(model: nn.Module) -> Dict[str, MaskedLinear]:
    """name -> layer for every masked layer (gated or fixed-mask) of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLinear)}


def gated_layers(model: nn.Module) -> Dict[str, GatedLinear]:
    """name -> layer for every self-pinching-gated layer of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GatedLinear)}


def gate_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The thresholds, e.g. to give them their own optimizer parameter group."""
    return [m.threshold for m in gated_layers(model).values()]


@torch.no_grad()
def current_sparsity(model: nn.Module) -> Tuple[float, Dict[str, float]]:
    """(overall, {layer name: sparsity}) of the binary masks of all masked layers.

    Sparsity = fraction of weight entries masked out (biases are not pruned); overall is
    weighted by layer size.  Returns (0.0, {}) for a model without masked layers.
    """
    layers = masked_layers(model)
    if not layers:
        return 0.0, {}
    # Exact integer counts, gathered with a single device sync.
    dev = next(iter(layers.values())).weight.device
    kept = torch.stack([m.binary_mask().count_nonzero().to(dev) for m in layers.values()])
    per_layer: Dict[str, float] = {}
    zeros = total = 0
    for (name, m), k in zip(layers.items(), kept.tolist()):
        n = m.weight.numel()
        per_layer[name] = (n - k) / n
        zeros += n - k
        total += n
    return zeros / total, per_layer


def gate_regularizer(model: nn.Module) -> torch.Tensor:
    """Soft L0 of all gates: sum of the soft masks / number of gated weights (a 0-dim tensor
    in [0, 1], differentiable w.r.t. weights and thresholds)."""
    layers = list(gated_layers(model).values())
    if not layers:
        raise ValueError("The model has no gated layers; call add_gates first")
    total = sum(m.weight.numel() for m in layers)
    return sum(m.soft_mask().sum() for m in layers) / total


def set_tau(model: nn.Module, tau: float) -> None:
    """Set the temperature of every gate (and the Gumbel temperature T of NAS-CP groups: every
    masked layer with a ``tau``)."""
    for m in masked_layers(model).values():
        if hasattr(m, "tau"):
            m.tau = float(tau)


class GateController:
    """Schedules eta and tau for one-pass pruning; call ``update`` once per training step.

    - tau is cosine-annealed from ``tau_start`` (step 0) to ``tau_end`` (step ``total_steps``)
      and held there afterwards;
    - eta is 0 while the overall sparsity is >= ``target_sparsity``, else its preset value.
    """

    def __init__(self, target_sparsity: float, eta: float, total_steps: int,
                 tau_start: float = 0.5, tau_end: float = 0.01):
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
        if total_steps <= 0 or tau_start <= 0 or tau_end <= 0:
            raise ValueError("total_steps, tau_start and tau_end must be positive")
        self.target_sparsity = target_sparsity
        self.eta = eta
        self.total_steps = total_steps
        self.tau_start = tau_start
        self.tau_end = tau_end
        self.current_eta = eta
        self.current_tau = tau_start

    def tau_at(self, step: int) -> float:
        frac = min(max(step / self.total_steps, 0.0), 1.0)
        return self.tau_end + 0.5 * (self.tau_start - self.tau_end) * (1 + math.cos(math.pi * frac))

    def update(self, model: nn.Module, step: int, sparsity: float | None = None) -> float:
        """Set tau on the model's gates for ``step`` and return eta for this step.

        ``sparsity`` is the current overall sparsity; computed from ``model`` when None.
        """
        if sparsity is None:
            sparsity = current_sparsity(model)[0]
        self.current_tau = self.tau_at(step)
        set_tau(model, self.current_tau)
        self.current_eta = 0.0 if sparsity >= self.target_sparsity else self.eta
        return self.current_eta

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def remove_gates(model: nn.Module) -> nn.Module:
    """Fold the binary masks into the weights and turn every masked layer (gated or fixed-mask)
    back into a plain ``nn.Linear``, in place; returns ``model`` for chaining.

    The thresholds disappear, so the state dict has exactly the keys of the unpruned model.
    """
    replace_modules(model, list(masked_layers(model)), lambda _, m: m.to_linear())
    return model
