"""Each cell equals the equations in its docstring, recomputed here by hand."""

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell

B, D, H = 3, 5, 4


def gates(W, G):
    return W.chunk(G, dim=0)


def lin(x, W, b=None):
    return x @ W.T + (0 if b is None else b)


def ln(y, gain, shift, eps=1e-5):
    mu = y.mean(-1, keepdim=True)
    var = ((y - mu) ** 2).mean(-1, keepdim=True)
    return (y - mu) / torch.sqrt(var + eps) * gain + shift


def randomise(cell):
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    return cell


@pytest.fixture
def x_h():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, D, generator=g), torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_equation(x_h, nonlinearity):
    x, h, _ = x_h
    cell = randomise(RNNCell(D, H, nonlinearity=nonlinearity))
    phi = torch.tanh if nonlinearity == "tanh" else torch.relu
    want = phi(lin(x, cell.weight_ih, cell.bias_ih) + lin(h, cell.weight_hh, cell.bias_hh))
    torch.testing.assert_close(cell(x, h), want)


def test_gru_cell_equation(x_h):
    x, h, _ = x_h
    cell = randomise(GRUCell(D, H))
    Wir, Wiz, Win = gates(cell.weight_ih, 3)
    Whr, Whz, Whn = gates(cell.weight_hh, 3)
    bir, biz, bin_ = gates(cell.bias_ih, 3)
    bhr, bhz, bhn = gates(cell.bias_hh, 3)
    r = torch.sigmoid(lin(x, Wir, bir) + lin(h, Whr, bhr))
    z = torch.sigmoid(lin(x, Wiz, biz) + lin(h, Whz, bhz))
    n = torch.tanh(lin(x, Win, bin_) + r * lin(h, Whn, bhn))
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)


def test_lstm_cell_equation(x_h):
    x, h, c = x_h
    cell = randomise(LSTMCell(D, H))
    Wi, Wf, Wg, Wo = gates(cell.weight_ih, 4)
    Ui, Uf, Ug, Uo = gates(cell.weight_hh, 4)
    bi, bf, bg, bo = (a + b for a, b in zip(gates(cell.bias_ih, 4), gates(cell.bias_hh, 4)))
    i = torch.sigmoid(lin(x, Wi) + lin(h, Ui) + bi)
    f = torch.sigmoid(lin(x, Wf) + lin(h, Uf) + bf)
    g = torch.tanh(lin(x, Wg) + lin(h, Ug) + bg)
    o = torch.sigmoid(lin(x, Wo) + lin(h, Uo) + bo)
    c_new = f * c + i * g
    h_new, c_got = cell(x, (h, c))
    torch.testing.assert_close(c_got, c_new)
    torch.testing.assert_close(h_new, o * torch.tanh(c_new))


def test_layer_norm_gru_cell_equation(x_h):
    x, h, _ = x_h
    cell = randomise(LayerNormGRUCell(D, H))
    a = [ln(lin(x, W), gn, sh) for W, gn, sh in zip(gates(cell.weight_ih, 3), cell.gain_ih, cell.shift_ih)]
    b = [ln(lin(h, W), gn, sh) for W, gn, sh in zip(gates(cell.weight_hh, 3), cell.gain_hh, cell.shift_hh)]
    r = torch.sigmoid(a[0] + b[0])
    z = torch.sigmoid(a[1] + b[1])
    n = torch.tanh(a[2] + r * b[2])
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h)


def test_layer_norm_lstm_cell_equation(x_h):
    x, h, c = x_h
    cell = randomise(LayerNormLSTMCell(D, H))
    a = [ln(lin(x, W), gn, sh) for W, gn, sh in zip(gates(cell.weight_ih, 4), cell.gain_ih, cell.shift_ih)]
    b = [ln(lin(h, W), gn, sh) for W, gn, sh in zip(gates(cell.weight_hh, 4), cell.gain_hh, cell.shift_hh)]
    i, f, g, o = (u + v for u, v in zip(a, b))
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(ln(c_new, cell.gain_c, cell.shift_c))
    h_got, c_got = cell(x, (h, c))
    torch.testing.assert_close(c_got, c_new)
    torch.testing.assert_close(h_got, h_new)


@pytest.mark.parametrize("ours, theirs", [(RNNCell, nn.RNNCell), (GRUCell, nn.GRUCell), (LSTMCell, nn.LSTMCell)])
def test_cells_equal_torch_cells(x_h, ours, theirs):
    x, h, c = x_h
    ref = theirs(D, H)
    cell = ours(D, H)
    cell.load_state_dict(ref.state_dict())  # same parameter names and gate packing
    state = (h, c) if ours is LSTMCell else h
    got, want = cell(x, state), ref(x, state)
    torch.testing.assert_close(got, want)


def test_forget_bias_initialisation():
    cell = LSTMCell(D, H, forget_bias=1.0)
    torch.testing.assert_close(cell.bias_ih[H:2 * H], torch.ones(H))
    torch.testing.assert_close(cell.bias_hh[H:2 * H], torch.zeros(H))
    plain = LSTMCell(D, H, forget_bias=None)
    assert not torch.equal(plain.bias_ih[H:2 * H], torch.ones(H))
    ln_cell = LayerNormLSTMCell(D, H, forget_bias=2.0)
    torch.testing.assert_close(ln_cell.shift_ih[1], torch.full((H,), 2.0))


def test_zero_initial_state_is_default(x_h):
    x, _, _ = x_h
    for cell in (GRUCell(D, H), LSTMCell(D, H), LayerNormGRUCell(D, H)):
        zero = cell.initial_state(B, x)
        got, want = cell(x), cell(x, zero)
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("make", [
    lambda: RNNCell(D, H), lambda: GRUCell(D, H), lambda: LSTMCell(D, H),
    lambda: LayerNormGRUCell(D, H), lambda: LayerNormLSTMCell(D, H)])
def test_cell_gradcheck(make):
    cell = make().double()
    x = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, H, dtype=torch.float64, requires_grad=True)
    if cell.is_lstm:
        c = torch.randn(2, H, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))
    else:
        assert torch.autograd.gradcheck(lambda x, h: cell(x, h), (x, h))


def test_cell_argument_errors():
    with pytest.raises(ValueError, match=r"nonlinearity must be one of tanh, relu; got 'sigmoid'"):
        RNNCell(D, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int; got 0"):
        GRUCell(D, 0)
    with pytest.raises(ValueError, match=r"input_size must be a positive int; got 2.5"):
        rnnkit.GRU(2.5, H)
    with pytest.raises(ValueError, match=r"forget_bias needs bias=True"):
        LSTMCell(D, H, bias=False, forget_bias=1.0)
