"""Float32 accuracy of the compiled loop where a formula can cancel: its own tanh near 0, and the
layer-norm cells' products when the rows of a gate block share a large common part."""

import copy

import pytest
import torch

from rnnkit import _compiled as compiled
from rnnkit.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell


def run_steps(cell, x):
    state = cell.initial_state(x.shape[0], x)
    outs = []
    for t in range(x.shape[1]):
        state = cell.recurrent_step(cell.input_projection(x[:, t]), state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell], ids=["gru", "lstm"])
def test_near_zero_as_accurate_as_torch_float32(cls):
    """Small weights and inputs keep every pre-activation near 0, so the outputs are ~1e-5 and
    only relative error shows."""
    assert compiled.available(), compiled.error()
    gen = torch.Generator().manual_seed(0)
    cell = cls(4, 8)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 1e-3)
    x = torch.randn(2, 5, 4, generator=gen) * 1e-2
    out, _ = compiled.run([cell], x, [cell.initial_state(2, x)], None, reverse=[False])
    exact = run_steps(cell.double(), x.double())
    ours = ((out.double() - exact).abs() / exact.abs()).max().item()
    theirs = ((run_steps(cell.float(), x).double() - exact).abs() / exact.abs()).max().item()
    assert ours <= 4 * theirs + 1e-6, (ours, theirs)


@pytest.mark.parametrize("cls", [LayerNormGRUCell, LayerNormLSTMCell], ids=["ln_gru", "ln_lstm"])
def test_layer_norm_cells_with_a_large_common_gate_row(cls):
    """A layer norm removes whatever the rows of a gate block share; the loop multiplies by the
    weights with it taken off (forward and backward), so a common row of scale 1000 costs no
    float32 accuracy. Taken off in forward only, the float32 input gradient was off by 2e-3
    (relative to its largest value); torch's own float32 cells are off by far more here."""
    assert compiled.available(), compiled.error()
    gen = torch.Generator().manual_seed(1)
    B, T, D, H = 3, 6, 11, 17
    cell = cls(D, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        for W in (cell.weight_hh, cell.weight_ih):
            for q in range(cls.gates):
                W[q * H:(q + 1) * H] += 1000 * torch.randn(1, W.shape[1], generator=gen, dtype=torch.float64)
    cell = cell.float().double()  # float32 weights, so both runs start from the same numbers
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    w = torch.randn(B, T, H, generator=gen, dtype=torch.float64)

    def grads(cell, x, run):
        x = x.detach().clone().requires_grad_()
        out = run(cell, x)
        (out * w.to(out.dtype)).sum().backward()
        return [out.detach(), x.grad] + [p.grad for p in cell.parameters()]

    exact = grads(copy.deepcopy(cell), x, run_steps)
    ours = grads(copy.deepcopy(cell).float(), x.float(),
                 lambda c, x: compiled.run([c], x, [c.initial_state(B, x)], None, reverse=[False])[0])
    for name, a, b in zip(["out", "x"] + [n for n, _ in cell.named_parameters()], ours, exact):
        error = ((a.double() - b).abs().max() / b.abs().max()).item()
        assert error < 1e-4, (name, error)
