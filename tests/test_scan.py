"""minGRU / minLSTM: the scans equal the documented equations run step by step."""

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.layers import CELLS
from rnnkit.scan import MinGRU, MinLSTM, linear_scan, log_scan

LAYERS = (MinGRU, MinLSTM)
SCANS = ("chunked", "log")


def g(v):
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def reference(layer, x, h=None):
    """The docstring equations, one step at a time, straight from the weights."""
    B, T, _ = x.shape
    H = layer.hidden_size
    h = x.new_zeros(B, H) if h is None else h
    outs = []
    for t in range(T):
        k = F.linear(x[:, t], layer.weight_ih, layer.bias_ih)
        if isinstance(layer, MinGRU):
            z, h_tilde = torch.sigmoid(k[:, :H]), g(k[:, H:])
            h = (1 - z) * h + z * h_tilde
        else:
            f, i, h_tilde = torch.sigmoid(k[:, :H]), torch.sigmoid(k[:, H:2 * H]), g(k[:, 2 * H:])
            h = f / (f + i) * h + i / (f + i) * h_tilde
        outs.append(h)
    return torch.stack(outs, 1), h


def make(cls, D=3, H=4, scan="chunked", seed=0, **kw):
    torch.manual_seed(seed)
    return cls(D, H, scan=scan, **kw).double()


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("T", [1, 7, 30])  # 7 and 30 leave a partial last chunk
@pytest.mark.parametrize("given_state", [False, True])
def test_scan_equals_reference_loop_with_gradients(cls, scan, T, given_state):
    layer = make(cls, scan=scan)
    x = torch.randn(2, T, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True) if given_state else None
    out, final = layer(x, h0)
    ref_out, ref_final = reference(layer, x, h0)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    inputs = [x, layer.weight_ih, layer.bias_ih] + ([h0] if given_state else [])
    grads = torch.autograd.grad((out * w).sum() + final.sum(), inputs)
    ref_grads = torch.autograd.grad((ref_out * w).sum() + ref_final.sum(), inputs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("given_state", [False, True])
def test_step_equals_scan(cls, given_state):
    layer = make(cls)
    x = torch.randn(3, 13, 3, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True) if given_state else None
    out, final = layer(x, h0)
    h, outs = h0, []
    for t in range(13):
        y, h = layer.step(x[:, t], h)
        outs.append(y)
    stepped = torch.stack(outs, 1)
    torch.testing.assert_close(stepped, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, final, rtol=1e-12, atol=1e-12)
    inputs = [layer.weight_ih] + ([h0] if given_state else [])
    for got, want in zip(torch.autograd.grad(stepped.sum(), inputs), torch.autograd.grad(out.sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", LAYERS)
def test_scan_continues_from_its_own_final_state(cls):
    layer = make(cls)
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    out, final = layer(x)
    first, mid = layer(x[:, :9])
    second, end = layer(x[:, 9:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), out)
    torch.testing.assert_close(end, final)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("reverse", [False, True])
def test_padded_sequence_equals_sequence_alone(cls, scan, reverse):
    layer = make(cls, scan=scan)
    lengths = torch.tensor([9, 4, 1])
    x = torch.randn(3, 9, 3, dtype=torch.float64)
    x[1, 4:] = 100.0  # padding that would change everything if it leaked
    x[2, 1:] = -100.0
    x.requires_grad_()
    h0 = torch.randn(3, 4, dtype=torch.float64)
    out, final = layer(x, h0, lengths=lengths, reverse=reverse)
    for b, n in enumerate(lengths.tolist()):
        alone = x[b:b + 1, :n].flip(1) if reverse else x[b:b + 1, :n]
        ref_out, ref_final = reference(layer, alone, h0[b:b + 1])
        if reverse:
            ref_out = ref_out.flip(1)
        torch.testing.assert_close(out[b:b + 1, :n], ref_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(final[b:b + 1], ref_final, rtol=1e-10, atol=1e-10)
        assert (out[b, n:] == 0).all()
    grad_x, = torch.autograd.grad(out.sum() + final.sum(), x)
    assert torch.isfinite(grad_x).all()
    assert grad_x[1, 4:].abs().max() == 0 and grad_x[2, 1:].abs().max() == 0


@pytest.mark.parametrize("cls", LAYERS)
def test_bidirectional_is_forward_plus_flipped_backward(cls):
    torch.manual_seed(1)
    bi = rnnkit.Bidirectional(cls(3, 4), merge="concat").double()
    lengths = torch.tensor([6, 3])
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    out, state = bi(x, lengths=lengths)
    assert out.shape == (2, 6, 8)
    for b, n in enumerate(lengths.tolist()):
        f_out, f_final = reference(bi.forward_layer, x[b:b + 1, :n])
        b_out, b_final = reference(bi.backward_layer, x[b:b + 1, :n].flip(1))
        torch.testing.assert_close(out[b, :n], torch.cat([f_out, b_out.flip(1)], -1)[0])
        torch.testing.assert_close(state.forward[b], f_final[0])
        torch.testing.assert_close(state.backward[b], b_final[0])
    assert out[1, 3:].abs().max() == 0


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_stack_with_scan_cells(cell):
    assert CELLS[cell] in LAYERS
    torch.manual_seed(0)
    stack = rnnkit.Stack(3, [5, 4], cell=cell, bidirectional=True, residual=True, dropout=0.1)
    x = torch.randn(2, 7, 3)
    out, states = stack(x, lengths=[7, 2])
    assert out.shape == (2, 7, 8) and len(states) == 2
    assert states[0].forward.shape == (2, 5) and out[1, 2:].abs().max() == 0
    assert all(p.name == "scan" for layer_paths in stack.paths for p in (layer_paths.forward, layer_paths.backward))
    out.sum().backward()
    assert all(p.grad is not None for p in stack.parameters())
    uni = rnnkit.Stack(3, [5, 4], cell=cell).eval()
    y, states = uni(x)
    ys, s = [], None
    for t in range(7):
        y_t, s = uni.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y)


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("cls", LAYERS)
def test_gradcheck(cls, scan):
    layer = make(cls, D=2, H=2, scan=scan)
    x = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda x, h0: layer(x, h0, lengths=lengths, reverse=reverse), (x, h0))


def test_linear_scan_gradcheck_any_sign():
    a = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_scan, (a, b, h0))
    a_pos = a.detach().abs().requires_grad_()
    b_pos = b.detach().abs().requires_grad_()
    torch.testing.assert_close(log_scan(a_pos.log(), b_pos.log(), h0), linear_scan(a_pos, b_pos, h0))


def test_long_sequence_stays_finite_in_float32():
    torch.manual_seed(0)
    layer = MinGRU(8, 16)
    with torch.no_grad():
        layer.bias_ih[:16] = 8.0  # z near 1: a = 1 - z near 0, the case that breaks naive cumprod division
    x = torch.randn(2, 3000, 8, requires_grad=True)
    out, final = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_minlstm_gates_that_both_underflow_stay_finite():
    layer = MinLSTM(2, 3)
    with torch.no_grad():
        layer.bias_ih[:6] = -200.0  # sigma(k_f) and sigma(k_i) are 0 in float32: f + i would be 0
    x = torch.randn(2, 9, 2, requires_grad=True)
    out, final = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    y, _ = layer.step(x[:, 0].detach())
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("cls", LAYERS)
def test_contract_attributes(cls):
    layer = cls(3, 4, bias=False)
    assert layer.output_size == 4 and layer.is_lstm is False and layer.bias_ih is None
    assert layer.path.name == "scan" and "scan" in str(layer.path)
    before = layer.weight_ih.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight_ih)


def test_errors():
    layer = MinGRU(3, 4)
    with pytest.raises(ValueError, match="3 dimensions"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match="D = input_size = 3"):
        layer(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="lengths must be <= T = 5"):
        layer(torch.randn(2, 5, 3), lengths=[5, 6])
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        layer(torch.randn(2, 5, 3), lengths=[0, 5])
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\)"):
        layer(torch.randn(2, 5, 3), lengths=[5, 5, 5])
    with pytest.raises(ValueError, match=r"state must have shape \(B, H\) = \(2, 4\)"):
        layer(torch.randn(2, 5, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, D\)"):
        layer.step(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="recurrent_dropout must be 0.0"):
        MinLSTM(3, 4, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="scan must be one of chunked, log"):
        MinGRU(3, 4, scan="fast")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        MinGRU(3, 0)
    with pytest.raises(ValueError, match="cell_layer_norm is for cell='gru' or 'lstm'"):
        rnnkit.Stack(3, 4, cell="mingru", cell_layer_norm=True)
    with pytest.raises(ValueError, match="recurrent_dropout must be 0.0"):
        rnnkit.Stack(3, 4, cell="minlstm", recurrent_dropout=0.1)
