"""Row-sparse updates for large lookup tables (the hashed bigram table of ``BigramFeatures``).

A step of a character tagger touches a few thousand of a bigram table's 262,144 rows, yet a
dense gradient makes every step zero, clip and Adam-update all of them: on MSRA an epoch took
230 s with it and 127 s with row updates (80 s without bigrams; docs/results.md). While the trainer trains, such tables give sparse
gradients (``nn.Embedding.sparse``), the gradient norm counts their rows, and Adam updates the
rows a step touched -- "lazy" Adam, as ``torch.optim.SparseAdam``: a row's moments and weight
change only at the steps that read it (and weight decay reaches it only then). Every other
parameter takes torch's (fused) Adam step unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sparse_tables", "LazyRowsAdam", "LazyRowsAdamW", "clip_grad_norm"]


def sparse_tables(model: nn.Module) -> list[nn.Embedding]:
    """The embedding tables that the trainer updates by rows: those of ``BigramFeatures``."""
    from ..models._common import BigramFeatures
    return [m.embedding for m in model.modules() if isinstance(m, BigramFeatures)]


class _LazyRows:
    """Mixin for torch's Adam / AdamW: parameters whose gradient is sparse are updated on their
    rows only (the state keys are Adam's, so ``state_dict`` and resuming work as before); the
    others go to the parent's step."""

    decoupled = False

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    self._rows_step(p, p.grad.coalesce(), group)
                    held.append((p, p.grad))
                    p.grad = None  # the parent's (fused) step skips it
        try:
            super().step()
        finally:
            for p, g in held:
                p.grad = g
        return loss

    def _rows_step(self, p: Tensor, grad: Tensor, group: dict) -> None:
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError("row-sparse Adam supports neither amsgrad nor maximize")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        rows, g = grad.indices()[0], grad.values()
        if not g.numel():
            return
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        lr = float(lr)
        w = p.index_select(0, rows)
        if wd and self.decoupled:
            w.mul_(1 - lr * wd)
        elif wd:
            g = g.add(w, alpha=wd)
        m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** step)).sqrt_().add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        p.index_copy_(0, rows, w)


class LazyRowsAdam(_LazyRows, torch.optim.Adam):
    """``torch.optim.Adam`` (fused where it applies) that updates sparse-gradient tables by rows."""


class LazyRowsAdamW(_LazyRows, torch.optim.AdamW):
    """``torch.optim.AdamW`` that updates sparse-gradient tables by rows (decay at touched rows)."""

    decoupled = True


def clip_grad_norm(params, limit: float) -> float:
    """``nn.utils.clip_grad_norm_`` that also takes sparse gradients (coalesced in place): the
    total 2-norm of all gradients, every one scaled by ``limit / norm`` when it is larger."""
    params = [p for p in params if p.grad is not None]
    sparse = [p for p in params if p.grad.is_sparse]
    if not sparse:
        return float(nn.utils.clip_grad_norm_(params, limit))
    for p in sparse:
        p.grad = p.grad.coalesce()
    dense = [p.grad for p in params if not p.grad.is_sparse]
    squares = [float(p.grad.values().float().pow(2).sum()) for p in sparse]
    if dense:
        squares.append(float(nn.utils.get_total_norm(dense)) ** 2)
    norm = math.sqrt(sum(squares))
    if math.isfinite(norm) and norm > limit:
        scale = limit / (norm + 1e-6)  # as clip_grad_norm_
        for p in params:
            p.grad.mul_(scale)
    return norm
