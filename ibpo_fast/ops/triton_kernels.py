"""Triton kernels of the `triton` backend: token log-probs of an LM head and their gradients, logits never stored.

Shapes: hidden [R, H], weight [V, H], targets [R] in [0, V). Every kernel recomputes the scaled logits
``hidden @ weight.T * inv_temp`` tile by tile with ``_logits_tile`` (f32 accumulation) and keeps them in
registers: ``_logprob_fwd_kernel`` (log-probs, split over the vocabulary), ``_fwd_d_hidden_kernel``
(log-probs and d_hidden in one pass), ``_d_weight_kernel``. The launchers, the launch table (tile sizes) and the
merge of the vocabulary splits are in ``triton_backend.py``.

Numerics: ``tl.dot`` runs in the input dtype (bf16/f16 tensor cores, f32 accumulation); for f32 inputs
``PRECISION`` ("ieee" by default) decides whether tensor cores (tf32) may be used. ``UPCAST`` is set only
under ``TRITON_INTERPRET=1``: the interpreter computes garbage from bf16 arithmetic and ``tl.dot`` (loads and
stores are exact, f32 -> bf16 conversion truncates), so every tile is converted to f32 right after its load.
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


@triton.jit
def _online_logsumexp(z, is_target, running_max, other_sum, other_error):
    """Fold a logits tile z [BLOCK_R, BLOCK_V] (-inf on absent columns) into each row's running max and its sum of
    exp(z - max) over the non-target columns, Kahan-compensated: the tile sums (V / BLOCK_V of them, ~1000 at a
    128k vocabulary) are added one after another, and with a plain f32 running sum the gradients at V = 32000
    were up to 2.1x further from the f64 formula than the torch backend's (tests/test_ops_real_vocab.py), whose
    sum is a cascade. -> (new max, the old state's rescale factor,
    exp(z - new max) with 0 at the targets, sum, its compensation: the exact sum is ``sum - error``)."""
    new_max = tl.maximum(running_max, tl.max(z, axis=1))
    rescale = tl.exp(running_max - new_max)  # 0 on the first tile (running_max = -inf)
    e = tl.where(is_target, 0.0, tl.exp(z - new_max[:, None]))
    old = other_sum * rescale
    term = tl.sum(e, axis=1) - other_error * rescale
    new_sum = old + term
    return new_max, rescale, e, new_sum, (new_sum - old) - term


@triton.jit
def _load_tile(ptr, offsets, mask, UPCAST: tl.constexpr):
    tile = tl.load(ptr + offsets, mask=mask, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _logits_tile(
    hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, rows, cols, R, V, H, inv_temp,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Scaled logits of ``rows`` x ``cols`` as [BLOCK_R, BLOCK_V] f32; -inf on columns >= V, finite on rows >= R."""
    acc = tl.zeros((BLOCK_R, BLOCK_V), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)
        h = _load_tile(
            hidden_ptr, rows[:, None] * stride_hr + ks[None, :] * stride_hh,
            (rows[:, None] < R) & (ks[None, :] < H), UPCAST,
        )
        w = _load_tile(
            weight_ptr, cols[:, None] * stride_wv + ks[None, :] * stride_wh,
            (cols[:, None] < V) & (ks[None, :] < H), UPCAST,
        )
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
    return tl.where(cols[None, :] < V, acc * inv_temp, float("-inf"))


@triton.jit
def _grad_operand(g, dtype, UPCAST: tl.constexpr):
    """The f32 gradient tile as a ``tl.dot`` operand in the input dtype. Under the interpreter it is rounded too
    (toward zero there, to nearest even on the GPU) and then widened again, so the tests see that rounding error."""
    g = g.to(dtype)
    if UPCAST:
        g = g.to(tl.float32)
    return g


# One program: rows [r0, r0 + BLOCK_R) against one split of the vocabulary, columns
# [s * VOCAB_PER_PROGRAM, (s + 1) * VOCAB_PER_PROGRAM) ∩ [0, V): the rows' max, sum of exp(logit - max) and
# target logit over those columns, written to row s of the [S, R] partials (merged in a fixed order by the launcher).
@triton.jit
def _logprob_fwd_kernel(
    part_max_ptr, part_sum_ptr, part_target_ptr,
    hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, targets_ptr,
    R, V, H, inv_temp,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, VOCAB_PER_PROGRAM: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    split = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    targets = tl.load(targets_ptr + rows, mask=row_mask, other=-1)
    running_max = tl.full((BLOCK_R,), float("-inf"), dtype=tl.float32)
    other_sum = tl.zeros((BLOCK_R,), dtype=tl.float32)
    other_error = tl.zeros((BLOCK_R,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_R,), dtype=tl.float32)
    v_start = split * VOCAB_PER_PROGRAM
    for v0 in range(v_start, tl.minimum(v_start + VOCAB_PER_PROGRAM, V), BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        z = _logits_tile(
            hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, rows, cols, R, V, H, inv_temp,
            BLOCK_R, BLOCK_V, BLOCK_H, UPCAST, PRECISION,
        )
        is_target = cols[None, :] == targets[:, None]
        running_max, _, _, other_sum, other_error = _online_logsumexp(
            z, is_target, running_max, other_sum, other_error)
        target_logit += tl.sum(tl.where(is_target, z, 0.0), axis=1)
    in_split = (targets >= v_start) & (targets < v_start + VOCAB_PER_PROGRAM)
    running_sum = (other_sum - other_error) + tl.where(in_split, tl.exp(target_logit - running_max), 0.0)
    out = split * R + rows
    tl.store(part_max_ptr + out, running_max, mask=row_mask)
    tl.store(part_sum_ptr + out, running_sum, mask=row_mask)
    tl.store(part_target_ptr + out, target_logit, mask=row_mask)


@triton.jit
def _onehot_minus_softmax(z, lse, targets, cols):
    """d logp / d z of one logits tile: onehot(target) - exp(z - lse), 0 on absent columns (z = -inf)."""
    return tl.where(cols[None, :] == targets[:, None], 1.0, 0.0) - tl.exp(z - lse[:, None])


# One program: rows [r0, r0 + BLOCK_R) over the whole vocabulary in one pass, both the online log-sum-exp (-> lse,
# logp) and d_hidden = row_scale * (onehot - softmax) @ weight, flash-attention style: d_hidden's own f32 rows hold
# A = sum_v exp(z_v - running max) * weight_v over the non-target columns, rescaled when the running max grows,
# and the end writes row_scale / s * ((s - e_target) * weight_target - A). Keeping the target's term apart, in f32,
# means no bf16-rounded p_target is ever subtracted from 1 (a likely target, p -> 1, would lose every digit of
# 1 - p). The program owns its rows: plain read-rescale-add-write per vocabulary tile, no atomics, a fixed order.
# A block whose rows all have scale 0 (sequences the weighted loss does not select) only computes its log-probs.
@triton.jit
def _fwd_d_hidden_kernel(
    d_hidden_ptr, stride_dr, stride_dh, lse_ptr, logp_ptr,
    hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, targets_ptr, row_scale_ptr,
    R, V, H, inv_temp,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    targets = tl.load(targets_ptr + rows, mask=row_mask, other=-1)
    row_scale = tl.load(row_scale_ptr + rows, mask=row_mask, other=0.0)
    has_grad = tl.max(tl.abs(row_scale), axis=0) > 0
    running_max = tl.full((BLOCK_R,), float("-inf"), dtype=tl.float32)
    other_sum = tl.zeros((BLOCK_R,), dtype=tl.float32)  # sum of exp(z - running_max) over non-target columns
    other_error = tl.zeros((BLOCK_R,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        z = _logits_tile(
            hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, rows, cols, R, V, H, inv_temp,
            BLOCK_R, BLOCK_V, BLOCK_H, UPCAST, PRECISION,
        )
        is_target = cols[None, :] == targets[:, None]
        target_logit += tl.sum(tl.where(is_target, z, 0.0), axis=1)
        running_max, rescale, e, other_sum, other_error = _online_logsumexp(  # e in [0, 1]
            z, is_target, running_max, other_sum, other_error)
        if has_grad:
            e_op = _grad_operand(e, weight_ptr.dtype.element_ty, UPCAST)
            for k0 in range(0, H, BLOCK_H):
                ks = k0 + tl.arange(0, BLOCK_H)
                w = _load_tile(
                    weight_ptr, cols[:, None] * stride_wv + ks[None, :] * stride_wh,
                    (cols[:, None] < V) & (ks[None, :] < H), UPCAST,
                )
                d_ptrs = d_hidden_ptr + rows[:, None] * stride_dr + ks[None, :] * stride_dh
                d_mask = row_mask[:, None] & (ks[None, :] < H)
                acc = tl.load(d_ptrs, mask=d_mask, other=0.0) * rescale[:, None]
                tl.store(d_ptrs, tl.dot(e_op, w, acc, input_precision=PRECISION), mask=d_mask)
            # Triton orders a store and a later load of the same address only within one thread, and the
            # compiler may give them different thread layouts (triton-lang/triton#1615, #10924): a CTA barrier
            # makes this tile's stores visible before the next tile reads them back.
            tl.debug_barrier()
    other_sum -= other_error
    total = other_sum + tl.exp(target_logit - running_max)
    lse = running_max + tl.log(total)
    tl.store(lse_ptr + rows, lse, mask=row_mask)
    tl.store(logp_ptr + rows, target_logit - lse, mask=row_mask)
    if has_grad:
        target_coef = row_scale * (other_sum / total)  # row_scale * (1 - p_target), without cancellation
        other_coef = -row_scale / total
        for k0 in range(0, H, BLOCK_H):
            ks = k0 + tl.arange(0, BLOCK_H)
            d_ptrs = d_hidden_ptr + rows[:, None] * stride_dr + ks[None, :] * stride_dh
            d_mask = row_mask[:, None] & (ks[None, :] < H)
            w_target = tl.load(weight_ptr + targets[:, None] * stride_wv + ks[None, :] * stride_wh, mask=d_mask,
                               other=0.0).to(tl.float32)
            acc = tl.load(d_ptrs, mask=d_mask, other=0.0)
            tl.store(d_ptrs, acc * other_coef[:, None] + w_target * target_coef[:, None], mask=d_mask)


# One program: d_weight[v0 : v0 + BLOCK_V] = G^T @ hidden over all R rows, G = row_scale * (onehot - softmax)
# recomputed tile by tile. The program owns its vocabulary rows: no atomics, a fixed summation order; blocks of
# scale 0 are skipped. For f16 inputs each row block's G is divided by its largest |row_scale| before the cast to
# the dot dtype (no f16 underflow when the weighted loss's coefficients are tiny) and the dot result multiplied
# back; bf16 and f32 have f32's range and take row_scale in G directly, one rounding fewer.
@triton.jit
def _d_weight_kernel(
    d_weight_ptr, stride_dv, stride_dh,
    hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, targets_ptr, lse_ptr, row_scale_ptr,
    R, V, H, inv_temp,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    cols = tl.program_id(0).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    col_mask = cols < V
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        row_mask = rows < R
        row_scale = tl.load(row_scale_ptr + rows, mask=row_mask, other=0.0)
        block_scale = tl.max(tl.abs(row_scale), axis=0)
        if block_scale > 0:
            targets = tl.load(targets_ptr + rows, mask=row_mask, other=-1)
            lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
            z = _logits_tile(
                hidden_ptr, stride_hr, stride_hh, weight_ptr, stride_wv, stride_wh, rows, cols, R, V, H, inv_temp,
                BLOCK_R, BLOCK_V, BLOCK_H, UPCAST, PRECISION,
            )
            is_f16 = weight_ptr.dtype.element_ty == tl.float16
            g = _onehot_minus_softmax(z, lse, targets, cols)
            if is_f16:
                g = g * (row_scale / block_scale)[:, None]
            else:
                g = g * row_scale[:, None]
            g_t = tl.trans(_grad_operand(g, weight_ptr.dtype.element_ty, UPCAST))
            for k0 in range(0, H, BLOCK_H):
                ks = k0 + tl.arange(0, BLOCK_H)
                h = _load_tile(
                    hidden_ptr, rows[:, None] * stride_hr + ks[None, :] * stride_hh,
                    row_mask[:, None] & (ks[None, :] < H), UPCAST,
                )
                d_ptrs = d_weight_ptr + cols[:, None] * stride_dv + ks[None, :] * stride_dh
                d_mask = col_mask[:, None] & (ks[None, :] < H)
                acc = tl.load(d_ptrs, mask=d_mask, other=0.0)
                if is_f16:
                    acc += tl.dot(g_t, h, input_precision=PRECISION) * block_scale
                else:
                    acc = tl.dot(g_t, h, acc, input_precision=PRECISION)
                tl.store(d_ptrs, acc, mask=d_mask)
            # Triton orders a store and a later load of the same address only within one thread, and the
            # compiler may give them different thread layouts (triton-lang/triton#1615, #10924): a CTA barrier
            # makes this block's stores visible before the next row block reads the tile back.
            tl.debug_barrier()


INTERPRETED = isinstance(_logprob_fwd_kernel, InterpretedFunction)
"""True when the kernels were decorated under ``TRITON_INTERPRET=1`` (they then run on CPU tensors)."""
