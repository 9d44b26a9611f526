"""NAS-based channel-wise pruning (NAS-CP), the structured baseline of the self-pinching-gates
paper (Xu et al., 2025, Sec. 3.2), for the HuBERT / wav2vec 2.0 Transformer blocks
(``icefall.nn.transformer``).

Channels are pruned in groups, one pair of groups per block:

- attention: channel m of the block is row m of q/k/v_proj (weight and bias) and column m of
  out_proj; channels are ranked by ``|Q_m,:| + |K_m,:| + |V_m,:| + |O_:,m|`` (L2 norms) *within
  each head* and every head keeps the same number, so a compact model is still a plain
  multi-head attention with a smaller head dim (the paper ranks over all channels; per-head
  ranking is what makes the channels removable);
- feed-forward: channel n is row n of fc1 (weight and bias) and column n of fc2, ranked by
  ``|FFN1_n,:| + |FFN2_:,n|`` over all ``ffn_dim`` channels.

Each group has ``K`` candidate channel masks (the paper: 7, pruning the fractions
``PAPER_PRUNE_FRACTIONS`` = 0, 25, 50, 75, 87.5, 90, 92.5 % of the channels, the lowest-ranked
ones), fixed from the magnitudes when the search starts, and ``K`` architecture logits
``log alpha``. While training, the channel mask is the mixture ``sum_i lambda_i M_i`` with
``lambda = softmax((log alpha + G) / T)`` (G Gumbel noise, drawn once per step by
``resample_gumbel`` so all layers of a group share it); in eval mode it is the binary mask of the
most probable candidate. The regulariser is the expected number of kept weights
``sum_groups sum_i lambda_i |M_i|_0`` divided by the number of prunable weights (so it lies in
[0, 1], like ``gate_regularizer``), and ``loss = task + eta * R``.

Architecture parameters: ``K`` per group, i.e. ``2 K`` per block, against the gates' one
threshold per linear layer (6 per block). The paper counts ``K`` per linear layer (7 x 144 = 1008
for HuBERT-large); with shared groups the same search needs ``2 K`` per block (14 x 24 = 336).

The temperature T lives in the attribute ``tau`` of the group owners (q_proj, fc1), so
``GateController`` anneals it like the gates' tau (the paper: both cosine 0.5 -> 0.01).
``compact_channels`` removes the pruned channels for real (smaller q/k/v/out and fc1/fc2) and
gives the masked model's outputs.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icefall.prune.gates import MaskedLinear, masked_layers, replace_modules

# Fractions of the channels each candidate prunes (the paper's 7 candidates).
PAPER_PRUNE_FRACTIONS: Tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.875, 0.9, 0.925)


class ChannelMaskedLinear(MaskedLinear):
    """``nn.Linear`` whose rows (``axis=0``: output channels, bias included) or columns
    (``axis=1``: input channels) are masked by the channel mask of a group.

    The group *owner* holds ``arch_logits`` (K,), the candidate masks ``candidate_masks``
    (K, C) bool, the temperature ``tau`` and the step's Gumbel noise; the other members refer to
    the owner (a plain attribute, not a submodule, so it is saved once).
    """

    extra_keys = ("arch_logits", "candidate_masks")

    @classmethod
    def member(cls, lin: nn.Linear, axis: int, owner: Optional["ChannelMaskedLinear"] = None
               ) -> "ChannelMaskedLinear":
        m = cls._sharing(lin)
        m.axis = axis
        object.__setattr__(m, "owner", owner if owner is not None else m)
        return m

    def init_search(self, candidate_masks: torch.Tensor, tau: float) -> None:
        """Make this layer a group owner with ``candidate_masks`` (K, C) bool."""
        k = candidate_masks.shape[0]
        dev = self.weight.device
        self.arch_logits = nn.Parameter(torch.zeros(k, device=dev, dtype=self.weight.dtype))
        self.register_buffer("candidate_masks", candidate_masks.to(device=dev, dtype=torch.bool))
        self.tau = float(tau)
        self.gumbel: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ group quantities
    def weights_of_candidates(self) -> torch.Tensor:
        """lambda (K,): Gumbel-softmax of the logits at temperature tau in training (noise as
        drawn by ``resample_gumbel``; none drawn: plain softmax), one-hot argmax in eval."""
        o = self.owner
        if not o.training:
            return F.one_hot(o.arch_logits.argmax(), o.arch_logits.numel()).to(o.arch_logits.dtype)
        logits = o.arch_logits if o.gumbel is None else o.arch_logits + o.gumbel
        return torch.softmax(logits / o.tau, dim=0)

    def channel_mask(self) -> torch.Tensor:
        """(C,) the mixture ``sum_i lambda_i M_i`` (binary in eval mode)."""
        o = self.owner
        return self.weights_of_candidates() @ o.candidate_masks.to(o.arch_logits.dtype)

    def mask(self) -> torch.Tensor:
        c = self.channel_mask().to(self.weight.dtype)
        return (c[:, None] if self.axis == 0 else c[None, :]).expand_as(self.weight)

    def binary_mask(self) -> torch.Tensor:
        with torch.no_grad():
            o = self.owner
            c = o.candidate_masks[o.arch_logits.argmax()].to(self.weight.dtype)
            return (c[:, None] if self.axis == 0 else c[None, :]).expand_as(self.weight).clone()

    def masked_bias(self, channel_mask: torch.Tensor) -> Optional[torch.Tensor]:
        if self.bias is None or self.axis != 0:
            return self.bias
        return self.bias * channel_mask.to(self.bias.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channel_mask().to(self.weight.dtype)
        w = self.weight * (c[:, None] if self.axis == 0 else c[None, :])
        return F.linear(x, w, self.masked_bias(c))

    @torch.no_grad()
    def folded_bias(self) -> Optional[torch.Tensor]:
        o = self.owner
        return self.masked_bias(o.candidate_masks[o.arch_logits.argmax()])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis}"


# ---------------------------------------------------------------------- candidates
def keep_counts(channels: int, prune_fractions: Sequence[float]) -> List[int]:
    """Channels kept by each candidate: ``round((1 - p) * channels)``, at least 1."""
    if not prune_fractions:
        raise ValueError("prune_fractions is empty")
    for p in prune_fractions:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"prune fractions must be in [0, 1), got {p}")
    return [max(1, int(round((1.0 - p) * channels))) for p in prune_fractions]


@torch.no_grad()
def candidate_masks(importance: torch.Tensor, prune_fractions: Sequence[float],
                    num_heads: int = 1) -> torch.Tensor:
    """(K, C) bool masks keeping the most important channels; with ``num_heads`` > 1 the C
    channels are ``num_heads`` consecutive blocks and each block keeps the same count of its
    own most important channels.

    importance: (C,) nonnegative scores; ties are broken by position (stable sort).
    """
    c = importance.numel()
    if c % num_heads:
        raise ValueError(f"{c} channels do not split into {num_heads} heads")
    per_head = c // num_heads
    order = torch.argsort(-importance.view(num_heads, per_head), dim=1, stable=True)  # (H, d)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(per_head).expand(num_heads, per_head).contiguous())
    keeps = torch.tensor(keep_counts(per_head, prune_fractions))
    return (rank[None] < keeps[:, None, None]).view(len(keeps), c)


def _blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, block) for every Transformer block of ``model`` (q/k/v/out_proj + fc1/fc2)."""
    from icefall.nn.transformer import TransformerEncoderLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, TransformerEncoderLayer)]


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def add_nas_channels(model: nn.Module, prune_fractions: Sequence[float] = PAPER_PRUNE_FRACTIONS,
                     tau: float = 0.5) -> List[str]:
    """Turn the 6 linear layers of every Transformer block into channel-masked layers with an
    architecture search over ``prune_fractions`` (see the module doc); in place, weights
    shared. Returns the names of the masked layers. Raises if the model has no such block.

    The logits start at 0 (uniform lambda): the search starts from the dense model's
    expected width, not from a preferred candidate.
    """
    blocks = _blocks(model)
    if not blocks:
        raise ValueError("NAS-CP: the model has no Transformer block (icefall.nn.transformer)")
    names: List[str] = []
    for bname, block in blocks:
        att = block.self_attn
        q, k, v, o = att.q_proj, att.k_proj, att.v_proj, att.out_proj
        for lin in (q, k, v, o, block.fc1, block.fc2):
            if type(lin) is not nn.Linear:
                raise ValueError(f"{bname}: already masked ({type(lin).__name__})")
        att_importance = (q.weight.norm(dim=1) + k.weight.norm(dim=1) + v.weight.norm(dim=1)
                          + o.weight.norm(dim=0))
        ffn_importance = block.fc1.weight.norm(dim=1) + block.fc2.weight.norm(dim=0)
        p = _prefix(bname)
        for head, rows, col, importance, heads in (
            ("self_attn.q_proj", ("self_attn.k_proj", "self_attn.v_proj"), "self_attn.out_proj",
             att_importance, att.num_heads),
            ("fc1", (), "fc2", ffn_importance, 1),
        ):
            owner = ChannelMaskedLinear.member(block.get_submodule(head), axis=0)
            owner.init_search(candidate_masks(importance, prune_fractions, heads), tau)
            replace_modules(block, [head], lambda _n, _l: owner)
            replace_modules(block, list(rows),
                            lambda _n, lin: ChannelMaskedLinear.member(lin, 0, owner))
            replace_modules(block, [col], lambda _n, lin: ChannelMaskedLinear.member(lin, 1, owner))
            names += [p + n for n in (head, *rows, col)]
    return names


def nas_owners(model: nn.Module) -> Dict[str, ChannelMaskedLinear]:
    """name -> owner layer (one per channel group)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, ChannelMaskedLinear) and m.owner is m}


def arch_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The architecture logits (K per group), e.g. for their own optimizer group."""
    return [m.arch_logits for m in nas_owners(model).values()]


def resample_gumbel(model: nn.Module, generator: Optional[torch.Generator] = None) -> None:
    """Draw this step's Gumbel noise ``-log(-log U)`` for every group (call once per step)."""
    for o in nas_owners(model).values():
        u = torch.rand(o.arch_logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-10)
        o.gumbel = (-torch.log(-torch.log(u))).to(o.arch_logits)


def _group_members(model: nn.Module) -> Dict[int, List[ChannelMaskedLinear]]:
    groups: Dict[int, List[ChannelMaskedLinear]] = {}
    for m in masked_layers(model).values():
        if isinstance(m, ChannelMaskedLinear):
            groups.setdefault(id(m.owner), []).append(m)
    return groups


def _weights_per_channel(members: List[ChannelMaskedLinear]) -> int:
    """Weights one channel of a group spans: in_features of row members + out of column ones."""
    return sum(m.in_features if m.axis == 0 else m.out_features for m in members)


def expected_kept(model: nn.Module) -> Tuple[torch.Tensor, int]:
    """(expected number of kept weights ``sum_groups sum_i lambda_i |M_i|_0``, differentiable
    w.r.t. the logits; total number of channel-masked weights)."""
    groups = _group_members(model)
    if not groups:
        raise ValueError("The model has no NAS-CP layers; call add_nas_channels first")
    kept = 0.0
    total = 0
    for members in groups.values():
        o = members[0].owner
        per_channel = _weights_per_channel(members)
        sizes = o.candidate_masks.sum(dim=1).to(o.arch_logits.dtype) * per_channel  # (K,)
        kept = kept + o.weights_of_candidates() @ sizes
        total += per_channel * o.candidate_masks.shape[1]
    return kept, total


def nas_regularizer(model: nn.Module) -> torch.Tensor:
    """Expected kept weights / channel-masked weights (0-dim, in [0, 1])."""
    kept, total = expected_kept(model)
    return kept / total


def extra_parameter_counts(model: nn.Module) -> Dict[str, int]:
    """{"nas_arch_params": logits of all groups, "gate_thresholds": what the self-pinching
    gates would add to the same layers (one per layer)}."""
    layers = [m for m in masked_layers(model).values() if isinstance(m, ChannelMaskedLinear)]
    return {"nas_arch_params": sum(p.numel() for p in arch_parameters(model)),
            "gate_thresholds": len(layers)}


# ---------------------------------------------------------------------- compact export
@torch.no_grad()
def compact_channels(model: nn.Module) -> Dict[str, int]:
    """Remove the channels the chosen candidates prune, in place: q/k/v_proj and fc1 lose
    rows, out_proj and fc2 columns; every channel-masked layer becomes a smaller plain
    ``nn.Linear``. The attention keeps its heads and its logit scale, with a smaller head dim.
    Returns {block name: kept attention channels, ... "<block>.ffn": kept ffn channels}.

    The outputs equal those of the masked model in eval mode.
    """
    widths: Dict[str, int] = {}
    for bname, block in _blocks(model):
        att = block.self_attn
        if not isinstance(att.q_proj, ChannelMaskedLinear):
            continue
        for key, head, rows, col in (
            (bname + ".attention", "self_attn.q_proj", ("self_attn.k_proj", "self_attn.v_proj"),
             "self_attn.out_proj"),
            (bname + ".ffn", "fc1", (), "fc2"),
        ):
            owner = block.get_submodule(head)
            keep = owner.candidate_masks[owner.arch_logits.argmax()].nonzero().squeeze(1)
            widths[key] = int(keep.numel())
            for name in (head, *rows):
                replace_modules(block, [name], lambda _n, m: _select(m, keep, axis=0))
            replace_modules(block, [col], lambda _n, m: _select(m, keep, axis=1))
    return widths


def _select(m: ChannelMaskedLinear, keep: torch.Tensor, axis: int) -> nn.Linear:
    w = m.weight.index_select(axis, keep)
    bias = m.bias is not None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias, device=w.device, dtype=w.dtype)
    lin.weight.copy_(w)
    if bias:
        lin.bias.copy_(m.bias.index_select(0, keep) if axis == 0 else m.bias)
    lin.train(m.training)
    return lin


def nas_summary(model: nn.Module) -> Dict[str, float]:
    """Chosen kept fraction of every group (name of the owner -> fraction of channels)."""
    out = {}
    for name, o in nas_owners(model).items():
        c = o.candidate_masks[o.arch_logits.argmax()]
        out[name] = float(c.float().mean())
    return out


__all__ = [
    "PAPER_PRUNE_FRACTIONS", "ChannelMaskedLinear", "add_nas_channels", "arch_parameters",
    "candidate_masks", "compact_channels", "expected_kept", "extra_parameter_counts",
    "keep_counts", "nas_owners", "nas_regularizer", "nas_summary", "resample_gumbel",
]
