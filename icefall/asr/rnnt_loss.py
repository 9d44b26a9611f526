"""Pruned RNN-T loss in pure PyTorch, with the API and semantics of ``k2``.

Every public function here has the name, signature and meaning of its ``k2``
counterpart (``k2.rnnt_loss_simple``, ``k2.rnnt_loss_pruned``, ...), so that
:func:`rnnt_backend` can hand out either this module or ``k2`` itself and the
caller does not change.  See ``docs/asr.md`` for how the pieces fit together.

Notation (as in k2): ``B`` batch, ``S`` symbols per sequence, ``T`` frames,
``C`` classes (vocabulary including the termination/blank symbol).  A
``boundary`` is a LongTensor (B, 4) of ``[s_begin, t_begin, s_end, t_end]``;
``None`` means ``[0, 0, S, T]`` for every sequence.

The core is :func:`mutual_information_recursion`, the log-semiring lattice

    p[b, 0, 0] = 0
    p[b, s, t] = logaddexp(p[b, s-1, t'] + px[b, s-1, t'], p[b, s, t-1] + py[b, s, t-1])

with ``t' = t`` for the regular transducer (px of shape (B, S, T+1)) and
``t' = t - 1`` when one symbol also consumes a frame (px of shape (B, S, T)).
Both predecessors of a cell lie one "step" back, with step ``k = s + t``
(regular: anti-diagonals) or ``k = t`` (modified/constrained: columns), so the
lattice is computed one step at a time, each step two vector ops over
(B, S+1) on a step-major copy of px/py.  The gradient is the posterior
occupation of each arc (a torch.autograd.Function, not autograd through the
loop): the local weight exp(alpha[source] + arc - alpha[target]) of every
arc is computed at once, then cell occupations flow back from the end cell
one step at a time with multiply-adds.  Memory is O(B * S * (S + T)).
"""
from __future__ import annotations

import math
import os
import sys
from types import ModuleType
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

_NEG_INF = float("-inf")
_RNNT_TYPES = ("regular", "modified", "constrained")


# --------------------------------------------------------------------------
# The k2 switch
# --------------------------------------------------------------------------
def k2_available() -> bool:
    """True if ``import k2`` works (k2 is an optional accelerator)."""
    try:
        import k2  # noqa: F401
    except Exception:
        return False
    return True


def rnnt_backend(use_k2: Optional[bool] = None) -> ModuleType:
    """Return the module that provides the RNN-T functions.

    Args:
      use_k2: True selects ``k2`` (ImportError if it is not installed), False
        selects this module.  None reads the environment variable
        ``ICEFALL_USE_K2`` (``1/true``: use k2 if it imports, else fall back).
    Returns:
      A module with ``rnnt_loss_smoothed``, ``get_rnnt_prune_ranges``,
      ``do_rnnt_pruning``, ``rnnt_loss_pruned``, ... (identical signatures).
    """
    if use_k2 is None:
        wanted = os.environ.get("ICEFALL_USE_K2", "0").lower() in ("1", "true", "yes")
        use_k2 = wanted and k2_available()
    if use_k2:
        import k2  # raises ImportError with k2's own message if absent

        return k2
    return sys.modules[__name__]


# --------------------------------------------------------------------------
# The recursion
# --------------------------------------------------------------------------
def _shift(x: Tensor, s0: Tensor, t0: Tensor, fill: float = _NEG_INF) -> Tensor:
    """Per-sequence offset: ``y[b, i, j] = x[b, s0[b] + i, t0[b] + j]``, ``fill``
    outside ``x``.  The loop is over the batch only (block copies).

    Args: x (B, S, T); s0, t0 (B,) int64, may be negative.  Returns (B, S, T).
    """
    S, T = x.shape[1], x.shape[2]
    y = torch.full_like(x, fill)
    for b, (s, t) in enumerate(zip(s0.tolist(), t0.tolist())):
        y[b, max(0, -s) : S - max(0, s), max(0, -t) : T - max(0, t)] = x[
            b, max(0, s) : S - max(0, -s), max(0, t) : T - max(0, -t)
        ]
    return y


def _arc_views(buf: Tensor, S: int, T1: int, T: int, c: int) -> Tuple[Tensor, Tensor]:
    """The (B, S, T1) x-arc and (B, S+1, T) y-arc views of a (B, 2, S+1, K)
    step-ordered buffer: row s is shifted by c*s, so that entry k of a row is
    the arc *into* the cell of that row on step k."""
    B, _, R, K = buf.shape
    o = buf.storage_offset()
    x = buf.as_strided((B, S, T1), (2 * R * K, K + c, 1), o + K + 1)  # into (s+1, .)
    y = buf.as_strided((B, R, T), (2 * R * K, K + c, 1), o + R * K + 1)  # into (s, t+1)
    return x, y


def _to_steps(px: Tensor, py: Tensor) -> Tensor:
    """Arc scores by step: ``arcs[k, b, 0, s]`` is px of the x-arc into the
    cell of row s on step k, ``arcs[k, b, 1, s]`` py of its y-arc; -inf where
    there is none.  Returns (K, B, 2, S+1)."""
    B, S, T1 = px.shape
    T = py.shape[2]
    c = 1 if T1 == T + 1 else 0
    K = c * S + T + 1
    buf = px.new_full((B, 2, S + 1, K), _NEG_INF)
    x, y = _arc_views(buf, S, T1, T, c)
    x.copy_(px)
    y.copy_(py)
    # Step-major, so that each step reads one contiguous block (a 2-D
    # transpose is much faster than a strided gather).
    return buf.view(B * 2 * (S + 1), K).t().contiguous().view(K, B, 2, S + 1)


def _from_steps(g: Tensor, S: int, T1: int, T: int) -> Tuple[Tensor, Tensor]:
    """Inverse of :func:`_to_steps`: (K, B, 2, S+1) -> ((B, S, T1), (B, S+1, T))."""
    K, B = g.shape[0], g.shape[1]
    buf = g.view(K, B * 2 * (S + 1)).t().contiguous().view(B, 2, S + 1, K)
    x, y = _arc_views(buf, S, T1, T, 1 if T1 == T + 1 else 0)
    return x.contiguous(), y.contiguous()


def _alpha_steps(arcs: Tensor) -> Tensor:
    """Forward scores by step.

    Args: arcs (K, B, 2, R) from :func:`_to_steps`.
    Returns: a (K, B, R+1) with ``a[k, b, 1 + s]`` the score of (0, 0) ->
      (cell of row s on step k); ``a[:, :, 0]`` = -inf stands for row -1, so
      that both predecessors of a step are one strided view.
    """
    K, B, _, R = arcs.shape
    a = arcs.new_full((K, B, R + 1), _NEG_INF)
    a[0, :, 1] = 0.0
    prev = a.as_strided((K, B, 2, R), (B * (R + 1), R + 1, 1, 1)).unbind(0)
    out = a[:, :, 1:].unbind(0)
    steps = arcs.unbind(0)
    tmp = arcs.new_empty(B, 2, R)
    tmp_x, tmp_y = tmp[:, 0], tmp[:, 1]
    for k in range(1, K):  # one vector step per (anti-)diagonal
        torch.add(prev[k - 1], steps[k], out=tmp)
        torch.logaddexp(tmp_x, tmp_y, out=out[k])
    return a


def _occupation_steps(arcs: Tensor, a: Tensor, end_k: Tensor, end_s: Tensor) -> Tensor:
    """Arc occupations (= d score / d arc) by step, overwriting ``arcs``.

    Each arc's local weight exp(a[source] + arc - a[target]) is computed for
    all cells at once; the occupation of the cells is then propagated back
    from the end cell, step by step, in the probability domain (values in
    [0, 1], only multiply-adds), as k2 does.

    Args: arcs (K, B, 2, R), a (K, B, R+1) from :func:`_alpha_steps`;
      end_k, end_s (B,): step and row of each sequence's end cell.
    Returns: (K, B, 2, R), same layout as arcs.
    """
    K, B, _, R = arcs.shape
    w = arcs
    # A target of -inf (unreachable cell) has -inf sources too: clamping it
    # keeps their weight exp(-inf) = 0 instead of NaN.
    target = a[1:, :, 1:].clamp_min(torch.finfo(a.dtype).min)
    w_x = w[1:, :, 0]
    w_x.add_(a[:-1, :, :R]).sub_(target)
    w_x.copy_(_exp_no_denormals(w_x))
    # The two arcs into a cell share its occupation: as k2 does, the y-arc
    # takes 1 - (x-arc's weight), so that no occupation is lost or created
    # in rounding (two separate exps drift by ~1e-4 over 500 steps in
    # float32). A cell with no y-arc has x weight exp(0) = 1 exactly.
    torch.sub(1.0, w_x, out=w[1:, :, 1])
    w[0] = 0.0
    # occ[k, b, s]: occupation of a cell, seeded with 1 at each end cell.
    occ = arcs.new_zeros(K, B, R)
    occ[end_k, torch.arange(B, device=arcs.device), end_s] = 1.0
    # Views made once (unbind), not per step: indexing costs as much as the math.
    rows, rows_lo, rows_hi = occ.unbind(0), occ[:, :, : R - 1].unbind(0), occ[:, :, 1:].unbind(0)
    w_x, w_y = w[:, :, 0, 1:].unbind(0), w[:, :, 1].unbind(0)
    for k in range(K - 2, -1, -1):
        # flow back through the x-arc to row s+1 and through the y-arc in row s
        torch.addcmul(rows_lo[k], rows_hi[k + 1], w_x[k + 1], out=rows_lo[k])
        rows[k].addcmul_(rows[k + 1], w_y[k + 1])
    return w.mul_(occ.unsqueeze(2))


def _exp_no_denormals(x: Tensor) -> Tensor:
    """exp(x), with results below the smallest normal number flushed to 0.

    Producing denormals makes CPU exp ~15x slower, and occupations that small
    are zero for every purpose here.
    """
    floor = math.log(torch.finfo(x.dtype).tiny)
    return torch.nn.functional.threshold(x, floor, _NEG_INF).exp_()


class _MutualInformation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, px, py, boundary, return_grad):
        B, S, T1 = px.shape
        T = py.shape[2]
        c = 1 if T1 == T + 1 else 0  # cell (s, t) lies on step c*s + t
        s0, t0, s_end, t_end = boundary.unbind(1)
        shifted = bool(boundary[:, :2].any())
        if shifted:  # run the lattice from (s_begin, t_begin) as if from (0, 0)
            px, py = _shift(px, s0, t0), _shift(py, s0, t0)
            s_end, t_end = s_end - s0, t_end - t0
        arcs = _to_steps(px, py)
        a = _alpha_steps(arcs)
        end_k = c * s_end + t_end
        scores = a[end_k, torch.arange(B, device=px.device), 1 + s_end]
        # Like k2, the gradient is computed here whenever it will be needed.
        if not (return_grad or any(ctx.needs_input_grad[:2])):
            return scores, None, None
        px_grad, py_grad = _from_steps(_occupation_steps(arcs, a, end_k, s_end), S, T1, T)
        if shifted:
            px_grad, py_grad = _shift(px_grad, -s0, -t0, 0.0), _shift(py_grad, -s0, -t0, 0.0)
        ctx.save_for_backward(px_grad, py_grad)
        if return_grad:
            ctx.mark_non_differentiable(px_grad, py_grad)
            return scores, px_grad, py_grad
        return scores, None, None

    @staticmethod
    def backward(ctx, score_grad, _unused_px, _unused_py):
        px_grad, py_grad = ctx.saved_tensors
        g = score_grad.view(-1, 1, 1)
        return px_grad * g, py_grad * g, None, None


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor] = None,
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """The log-semiring recursion of k2 (see the module docstring).

    Args:
      px: (B, S, T+1) for the regular recursion, (B, S, T) when an x-step also
        consumes a frame ("modified").
      py: (B, S+1, T), same dtype as px.
      boundary: optional LongTensor (B, 4) ``[s_begin, t_begin, s_end, t_end]``
        with ``0 <= s_begin <= s_end <= S``, ``0 <= t_begin <= t_end <= T``.
      return_grad: also return ``(px_grad, py_grad)``, the gradient of
        ``scores.sum()`` w.r.t. px and py (arc occupation probabilities).
    Returns:
      scores (B,) = p[b, s_end, t_end]; or ``(scores, (px_grad, py_grad))``.
    """
    assert px.ndim == 3 and py.ndim == 3, (px.shape, py.shape)
    B, S, T1 = px.shape
    T = py.shape[2]
    assert T1 in (T, T + 1), (px.shape, py.shape)
    assert py.shape == (B, S + 1, T), (px.shape, py.shape)
    assert px.dtype == py.dtype, (px.dtype, py.dtype)
    if boundary is None:
        boundary = torch.tensor([0, 0, S, T], device=px.device).expand(B, 4)
    else:
        assert boundary.dtype == torch.int64 and boundary.shape == (B, 4), boundary
        boundary = boundary.to(px.device)
    scores, px_grad, py_grad = _MutualInformation.apply(
        px.contiguous(), py.contiguous(), boundary, return_grad
    )
    return (scores, (px_grad, py_grad)) if return_grad else scores


# --------------------------------------------------------------------------
# From transducer outputs to (px, py)
# --------------------------------------------------------------------------
def _check_rnnt_type(rnnt_type: str, S: int, T: int, boundary: Optional[Tensor]) -> None:
    assert rnnt_type in _RNNT_TYPES, rnnt_type
    if rnnt_type != "regular":  # one symbol per frame at most
        if boundary is None:
            assert T >= S, f"{rnnt_type} transducer needs T >= S, got T={T}, S={S}"
        else:
            assert bool((boundary[:, 3] >= boundary[:, 2]).all()), boundary


def _finish_px(
    px: Tensor, py: Tensor, rnnt_type: str, boundary: Optional[Tensor]
) -> Tensor:
    """Turn the symbol log-probs px (B, S, T) into the recursion's px.

    regular: append a -inf frame (no symbol after the last frame) and forbid
    symbols on frame t_end of shorter sequences -> (B, S, T+1).
    constrained: a symbol on frame t is followed by the blank of the next
    context on the same frame -> px + py[:, 1:].  modified: unchanged.
    """
    if rnnt_type == "regular":
        px = torch.cat([px, px.new_full(px.shape[:2] + (1,), _NEG_INF)], dim=2)
        if boundary is not None:
            t_end = boundary[:, 3].view(-1, 1, 1).expand(px.shape[0], px.shape[1], 1)
            px = px.scatter(2, t_end, _NEG_INF)
    elif rnnt_type == "constrained":
        px = px + py[:, 1:, :]
    return px


def _lattice_loss(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor],
    rnnt_type: str,
    delay_penalty: float,
    reduction: Optional[str],
    return_grad: bool = False,
):
    """Shared tail of all losses: delay penalty, recursion, reduction."""
    if delay_penalty > 0.0:  # as k2: zero or negative values add nothing
        # Reward symbols emitted before the middle frame (T_b - 1) / 2 of each
        # sequence and penalise later ones, linearly in the frame index.
        B, _, T1 = px.shape
        T = T1 - 1 if rnnt_type == "regular" else T1
        t_len = boundary[:, 3] if boundary is not None else torch.full((B,), T, device=px.device)
        middle = (t_len.to(px.dtype) - 1) / 2
        frames = torch.arange(T1, device=px.device, dtype=px.dtype)
        px = px + delay_penalty * (middle.view(B, 1, 1) - frames.view(1, 1, T1))
    result = mutual_information_recursion(px, py, boundary=boundary, return_grad=return_grad)
    scores = result[0] if return_grad else result
    if reduction == "none":
        loss = -scores
    elif reduction == "mean":
        loss = -scores.mean()
    elif reduction == "sum":
        loss = -scores.sum()
    else:
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction}")
    return (loss, result[1]) if return_grad else loss


def _simple_parts(
    lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pieces of the additive joiner ``log_softmax(am[t] + lm[s])``, computed
    without materialising (B, T, S+1, C).

    Returns:
      px_am (B, S, T) am score of the next symbol; px_lm (B, S, 1) its lm
      score; py_am (B, 1, T), py_lm (B, S+1, 1) the blank scores; and the
      normaliser (B, S+1, T) = logsumexp_c(am[t, c] + lm[s, c]).
    """
    assert lm.ndim == 3 and am.ndim == 3, (lm.shape, am.shape)
    B, T, C = am.shape
    S = lm.shape[1] - 1
    assert lm.shape == (B, S + 1, C) and symbols.shape == (B, S), (lm.shape, am.shape, symbols.shape)
    am_max = am.amax(dim=2, keepdim=True)  # (B, T, 1)
    lm_max = lm.amax(dim=2, keepdim=True)  # (B, S+1, 1)
    # sum_c exp(am + lm) as a matmul of shifted exponentials (never overflows).
    norm = torch.bmm((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2))
    norm = norm.clamp_min(torch.finfo(norm.dtype).tiny).log() + lm_max + am_max.transpose(1, 2)
    px_am = am.transpose(1, 2).gather(1, symbols.unsqueeze(2).expand(B, S, T))
    px_lm = lm[:, :S].gather(2, symbols.unsqueeze(2))
    py_am = am[:, :, termination_symbol].unsqueeze(1)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)
    return px_am, px_lm, py_am, py_lm, norm


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    rnnt_type: str = "regular",
    boundary: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(px, py) for the "simple" joiner ``logits[b, t, s] = am[b, t] + lm[b, s]``.

    Args:
      lm: (B, S+1, C) decoder ("language model") part of the logits.
      am: (B, T, C) encoder ("acoustic model") part of the logits.
      symbols: (B, S) int64 target symbols.
      termination_symbol: the blank id.
      rnnt_type: "regular", "modified" or "constrained".
      boundary: optional (B, 4), see the module docstring.
    Returns:
      px: (B, S, T+1) if regular else (B, S, T), log-prob of emitting the
        next symbol; py: (B, S+1, T), log-prob of blank.
    """
    B, T, _ = am.shape
    _check_rnnt_type(rnnt_type, lm.shape[1] - 1, T, boundary)
    px_am, px_lm, py_am, py_lm, norm = _simple_parts(lm, am, symbols, termination_symbol)
    S = symbols.shape[1]
    px = px_am + px_lm - norm[:, :S]
    py = py_am + py_lm - norm
    return _finish_px(px, py, rnnt_type, boundary), py


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """Like :func:`get_rnnt_logprobs`, but px/py interpolate (in log space)
    three models: the joint ``am + lm`` (weight ``1 - lm_only_scale -
    am_only_scale``), the decoder alone (``lm_only_scale``) and the encoder
    with a unigram "LM" (``am_only_scale``; the unigram is the average of
    ``softmax(lm)`` over the batch and positions, as in k2).  Shapes as in
    :func:`get_rnnt_logprobs`.
    """
    B, T, C = am.shape
    S = symbols.shape[1]
    _check_rnnt_type(rnnt_type, S, T, boundary)
    px_am, px_lm, py_am, py_lm, norm = _simple_parts(lm, am, symbols, termination_symbol)
    tiny = torch.finfo(lm.dtype).tiny
    lm_logz = lm.logsumexp(dim=2, keepdim=True)  # (B, S+1, 1)
    unigram = (lm - lm_logz).exp().mean(dim=(0, 1)) + tiny  # (C,)
    am_max = am.amax(dim=2, keepdim=True)
    am_logz = ((am - am_max).exp() @ unigram).unsqueeze(2).log() + am_max  # (B, T, 1)
    am_logz = am_logz.transpose(1, 2)  # (B, 1, T)
    log_unigram = unigram.log()

    px = px_am + px_lm - norm[:, :S]
    py = py_am + py_lm - norm
    px_lm_only = px_lm - lm_logz[:, :S]
    py_lm_only = py_lm - lm_logz
    px_am_only = px_am + log_unigram[symbols].unsqueeze(2) - am_logz
    py_am_only = py_am + log_unigram[termination_symbol] - am_logz

    joint_scale = 1.0 - lm_only_scale - am_only_scale
    # A zero weight times a -inf score would give NaN; k2 uses 1e-20 instead.
    lm_only_scale = lm_only_scale or 1e-20
    am_only_scale = am_only_scale or 1e-20
    px = joint_scale * px + lm_only_scale * px_lm_only + am_only_scale * px_am_only
    py = joint_scale * py + lm_only_scale * py_lm_only + am_only_scale * py_am_only
    return _finish_px(px, py, rnnt_type, boundary), py


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """RNN-T loss of the additive joiner ``am[b, t] + lm[b, s]``.

    Args: see :func:`get_rnnt_logprobs`; ``delay_penalty`` adds
      ``delay_penalty * ((T_b - 1) / 2 - t)`` to every symbol emitted on frame
      t; ``reduction`` is "none" (B,), "mean" or "sum"; ``return_grad`` also
      returns the occupations ``(px_grad, py_grad)`` used for pruning.
    Returns:
      loss, or ``(loss, (px_grad, py_grad))`` if return_grad.
    """
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, rnnt_type, boundary)
    return _lattice_loss(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """:func:`rnnt_loss_simple` on the smoothed log-probs of
    :func:`get_rnnt_logprobs_smoothed`."""
    px, py = get_rnnt_logprobs_smoothed(
        lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
    )
    return _lattice_loss(px, py, boundary, rnnt_type, delay_penalty, reduction, return_grad)


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    rnnt_type: str = "regular",
    boundary: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(px, py) from full joiner logits (B, T, S+1, C); shapes as in
    :func:`get_rnnt_logprobs`."""
    assert logits.ndim == 4, logits.shape
    B, T, S1, C = logits.shape
    S = S1 - 1
    assert symbols.shape == (B, S), (symbols.shape, logits.shape)
    _check_rnnt_type(rnnt_type, S, T, boundary)
    norm = logits.logsumexp(dim=3)  # (B, T, S+1)
    px = logits[:, :, :S].gather(3, symbols.view(B, 1, S, 1).expand(B, T, S, 1)).squeeze(3)
    px = (px - norm[:, :, :S]).transpose(1, 2)  # (B, S, T)
    py = (logits[..., termination_symbol] - norm).transpose(1, 2).contiguous()  # (B, S+1, T)
    return _finish_px(px, py, rnnt_type, boundary), py


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
) -> Tensor:
    """The plain RNN-T loss on full joiner logits (B, T, S+1, C)."""
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, rnnt_type, boundary)
    return _lattice_loss(px, py, boundary, rnnt_type, delay_penalty, reduction)


# --------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------
def _limit_growth(s_begin: Tensor, max_step: int) -> Tensor:
    """Smallest change to s_begin (B, T) that makes it start at 0, never
    decrease, and grow by at most ``max_step`` per frame (so no symbol is
    skipped between the windows of consecutive frames)."""
    T = s_begin.shape[1]
    slope = max_step * torch.arange(T, device=s_begin.device)
    # Non-decreasing: lower each value to the minimum of everything after it.
    s_begin = s_begin.flip(1).cummin(1).values.flip(1)
    # Growth <= max_step: raise s[t] to max_{t' >= t} (s[t'] - max_step * (t' - t)).
    s_begin = (s_begin - slope).flip(1).cummax(1).values.flip(1) + slope
    # Start at symbol 0: s[t] <= max_step * t.
    return torch.minimum(s_begin, slope)


def get_rnnt_prune_ranges(
    px_grad: Tensor,
    py_grad: Tensor,
    boundary: Tensor,
    s_range: int,
) -> Tensor:
    """Choose, per frame, the ``s_range`` consecutive symbol positions that
    carry the most occupation in the simple loss (Pruned RNN-T, Kuang et al.
    2022, sec. 3.2).

    Args:
      px_grad: (B, S, T+1) or (B, S, T) occupations of px (``return_grad``).
      py_grad: (B, S+1, T) occupations of py.
      boundary: (B, 4).
      s_range: positions kept per frame (raised to the minimum that still
        admits a path, and capped at S+1).
    Returns:
      ranges: (B, T, s_range) int64, ``ranges[b, t] = s_begin + arange(s_range)``.
    """
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    regular = T1 == T + 1
    assert py_grad.shape == (B, S + 1, T) and boundary.shape == (B, 4)
    s_len, t_len = boundary[:, 2], boundary[:, 3]
    if regular:
        # With T_b frames, a window must advance (S_b - 1) / T_b + 1 per frame.
        needed = int(((s_len - 1).div(t_len.clamp_min(1), rounding_mode="trunc") + 2).max())
        s_range = max(s_range, needed)
    s_range = min(s_range, S + 1)
    assert s_range >= (2 if regular else 1), s_range

    # score[b, s0, t]: blank occupation inside rows s0..s0+R-1 at frame t, minus
    # the flow that enters row s0 from below on that frame (it is lost).
    inside = py_grad.unfold(1, s_range, 1).sum(dim=3)  # (B, S+2-R, T)
    entering = torch.cat([px_grad.new_zeros(B, 1, T), px_grad[:, : S + 1 - s_range, :T]], dim=1)
    s_begin = (inside - entering).argmax(dim=1)  # (B, T)
    # From the last frame on, the window must cover the final symbols.
    last = (s_len - s_range + 1).clamp_min(0).view(B, 1)
    beyond = torch.arange(T, device=s_begin.device).view(1, T) >= (t_len - 1).view(B, 1)
    s_begin = torch.where(beyond, last, s_begin)
    s_begin = _limit_growth(s_begin, s_range - 1 if regular else 1)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=s_begin.device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Pair each frame with its kept decoder positions.

    Args:
      am: (B, T, D) encoder output (usually already projected by the joiner).
      lm: (B, S+1, D) decoder output (likewise).
      ranges: (B, T, R) from :func:`get_rnnt_prune_ranges`.
    Returns:
      am_pruned (B, T, R, D) (an expanded view) and lm_pruned (B, T, R, D).
    """
    B, T, R = ranges.shape
    D = lm.shape[2]
    assert am.shape[:2] == (B, T) and lm.shape[0] == B, (am.shape, lm.shape, ranges.shape)
    lm_pruned = lm.gather(1, ranges.reshape(B, T * R, 1).expand(B, T * R, D))
    return am.unsqueeze(2).expand(B, T, R, am.shape[2]), lm_pruned.view(B, T, R, D)


def _scatter_pruned(
    logits: Tensor,
    log_norm: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor],
    rnnt_type: str,
) -> Tuple[Tensor, Tensor]:
    """(px, py) of the full lattice from the pruned joiner output.

    ``log_norm`` (B, T, R, C) or broadcastable: subtracted from ``logits`` to make
    them log-probs. Positions outside the ranges get -inf.
    """
    assert logits.ndim == 4, logits.shape
    B, T, R, C = logits.shape
    S = symbols.shape[1]
    assert ranges.shape == (B, T, R), (ranges.shape, logits.shape)
    _check_rnnt_type(rnnt_type, S, T, boundary)
    # The symbol after position s; position S has none (its px is dropped).
    next_sym = torch.cat([symbols, symbols.new_full((B, 1), termination_symbol)], dim=1)
    next_sym = next_sym.gather(1, ranges.reshape(B, T * R)).view(B, T, R, 1)
    log_norm = log_norm.expand(B, T, R, C)
    px_kept = (logits.gather(3, next_sym) - log_norm.gather(3, next_sym)).squeeze(3)
    py_kept = logits[..., termination_symbol] - log_norm[..., termination_symbol]
    # Scatter the kept positions into the full lattice (B, T, S+1).
    empty = logits.new_full((B, T, S + 1), _NEG_INF)
    px = empty.scatter(2, ranges, px_kept)[:, :, :S].transpose(1, 2)
    py = empty.scatter(2, ranges, py_kept).transpose(1, 2).contiguous()
    return _finish_px(px, py, rnnt_type, boundary), py


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """(px, py) from pruned joiner logits (B, T, R, C); positions outside the
    ranges get -inf.  Shapes as in :func:`get_rnnt_logprobs`."""
    norm = logits.logsumexp(dim=3, keepdim=True)  # (B, T, R, 1)
    return _scatter_pruned(logits, norm, symbols, ranges, termination_symbol, boundary, rnnt_type)


def get_hat_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
) -> Tuple[Tensor, Tensor]:
    """(px, py) of the Hybrid Autoregressive Transducer (HAT, Variani et al.
    2020) from pruned joiner logits (B, T, R, C), as k2's function of this
    name: the blank probability is sigmoid(blank logit) and a symbol's is
    (1 - sigmoid(blank logit)) * softmax over the non-blank logits.
    Shapes as in :func:`get_rnnt_logprobs_pruned`."""
    blank = logits[..., termination_symbol : termination_symbol + 1]  # (B, T, R, 1)
    non_blank = logits.index_fill(3, torch.tensor([termination_symbol], device=logits.device), _NEG_INF)
    # log p(y) = logit_y - logsumexp(non-blank) + log(1 - sigmoid(b)); log p(blank) = log sigmoid(b)
    log_norm = non_blank.logsumexp(dim=3, keepdim=True) - torch.nn.functional.logsigmoid(-blank)
    is_blank = torch.arange(logits.shape[3], device=logits.device) == termination_symbol
    log_norm = torch.where(is_blank, blank - torch.nn.functional.logsigmoid(blank), log_norm)
    return _scatter_pruned(logits, log_norm, symbols, ranges, termination_symbol, boundary, rnnt_type)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    use_hat_loss: bool = False,
) -> Tensor:
    """RNN-T loss restricted to the paths inside ``ranges``.

    Args:
      logits: (B, T, R, C) joiner output on the pruned pairs.
      symbols: (B, S); ranges: (B, T, R); others as in :func:`rnnt_loss_simple`.
      use_hat_loss: normalise the logits as HAT does (:func:`get_hat_logprobs_pruned`).
    Returns: loss ((B,) if reduction is "none", else a scalar).
    """
    logprobs = get_hat_logprobs_pruned if use_hat_loss else get_rnnt_logprobs_pruned
    px, py = logprobs(logits, symbols, ranges, termination_symbol, boundary, rnnt_type)
    return _lattice_loss(px, py, boundary, rnnt_type, delay_penalty, reduction)
