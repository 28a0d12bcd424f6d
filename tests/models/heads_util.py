"""Helpers shared by the task-head tests (imported by file name; tests/models has no package)."""

from __future__ import annotations

import torch


def overfit(model, batch: dict, *, steps: int = 150, lr: float = 0.03) -> float:
    """Train ``model`` on one batch with Adam; return the final loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return float(model.loss(batch))


def pad_more(x: torch.Tensor, extra: int, *, junk: bool = True, high: int = 5) -> torch.Tensor:
    """Append ``extra`` padded steps along dim 1, filled with junk (ids in [1, high) or noise)
    so that a test proves the head ignores what lies past each length, not just zeros."""
    shape = (x.shape[0], extra, *x.shape[2:])
    if not junk:
        fill = x.new_zeros(shape)
    elif x.is_floating_point():
        fill = torch.randn(shape, dtype=x.dtype)
    else:
        fill = torch.randint(1, high, shape, dtype=x.dtype)
    return torch.cat([x, fill], dim=1)


def rebuild(model):
    """A fresh head from ``model.config`` (through JSON) with the same weights."""
    import json

    config = json.loads(json.dumps(model.config))
    twin = type(model)(**config)
    twin.load_state_dict(model.state_dict())
    return twin.eval()
