"""Autograd around a backend's row ops: the Functions only save, restore and call."""
from __future__ import annotations

import torch


class RowLogprobs(torch.autograd.Function):
    """logp [R] of counted rows; backward recomputes logits tile by tile from the saved log-sum-exp."""

    @staticmethod
    def forward(ctx, hidden_rows, weight, targets, inv_temp, backend):
        logp, lse = backend.forward(hidden_rows, weight, targets, inv_temp)
        ctx.save_for_backward(hidden_rows, weight, targets, lse)
        ctx.inv_temp, ctx.backend = inv_temp, backend
        return logp.float()

    @staticmethod
    def backward(ctx, grad_logp):
        hidden_rows, weight, targets, lse = ctx.saved_tensors
        d_hidden, d_weight = ctx.backend.backward(hidden_rows, weight, targets, lse, grad_logp, ctx.inv_temp)
        return d_hidden.to(hidden_rows.dtype), d_weight.to(weight.dtype), None, None, None


class RowWeightedSum(torch.autograd.Function):
    """sum_r coef[r] * logp[r], with the gradients computed inside the forward (coef is known up front).

    Returns (loss [], logp [R]); logp is a by-product for metrics and carries no gradient.
    """

    @staticmethod
    def forward(ctx, hidden_rows, weight, targets, coef, inv_temp, backend):
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            logp, d_hidden, d_weight = backend.forward_backward(hidden_rows, weight, targets, coef, inv_temp)
            ctx.save_for_backward(d_hidden.to(hidden_rows.dtype), d_weight.to(weight.dtype))
        else:
            logp, _ = backend.forward(hidden_rows, weight, targets, inv_temp)
        loss = (coef.to(logp.dtype) * logp).sum().float()
        ctx.mark_non_differentiable(logp)
        return loss, logp.float()

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp):
        d_hidden, d_weight = ctx.saved_tensors
        if not bool(grad_loss == 1):  # the usual loss.backward() needs no scaling: skip a [V, H] copy
            d_hidden, d_weight = d_hidden * grad_loss.to(d_hidden.dtype), d_weight * grad_loss.to(d_weight.dtype)
        return d_hidden, d_weight, None, None, None, None
