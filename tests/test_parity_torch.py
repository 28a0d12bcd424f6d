"""rnnkit after from_torch computes what torch.nn.RNN/GRU/LSTM compute, and exports back."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import recurrence

B, T, D, H = 4, 7, 5, 6
LENGTHS = torch.tensor([7, 3, 5, 1])
KINDS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@pytest.fixture(autouse=True, params=[True, False], ids=["default", "pure"])
def paths(request):
    """Every parity test twice: with the default paths (the compiled loop where it applies) and
    with the compiled path off (torch's kernels: what runs without a C++ compiler)."""
    recurrence.set_compiled(request.param)


def torch_run(module, x, lengths):
    """torch.nn's own answer: packed when lengths are given, as a torch user would write it."""
    if lengths is None:
        return module(x)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


def torch_final(state, layer, direction, num_directions):
    """Slice torch's (layers*directions, B, H) puzzle into one direction of one layer."""
    k = layer * num_directions + direction
    return (state[0][k], state[1][k]) if isinstance(state, tuple) else state[k]


def assert_state_close(ours, theirs):
    if isinstance(theirs, tuple):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)
    else:
        torch.testing.assert_close(ours, theirs)


@pytest.fixture
def x():
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_one_direction_layer(x, kind, lengths):
    ref = KINDS[kind](D, H, batch_first=True)
    layer = getattr(rnnkit, kind.upper()).from_torch(ref)
    out, state = layer(x, lengths=lengths)
    want_out, want_state = torch_run(ref, x, lengths)
    torch.testing.assert_close(out, want_out)
    assert_state_close(state, torch_final(want_state, 0, 0, 1))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_bidirectional_layer(x, kind, lengths):
    ref = KINDS[kind](D, H, batch_first=True, bidirectional=True)
    bi = rnnkit.Bidirectional.from_torch(ref)
    out, state = bi(x, lengths=lengths)
    want_out, want_state = torch_run(ref, x, lengths)
    torch.testing.assert_close(out, want_out)
    assert_state_close(state.forward, torch_final(want_state, 0, 0, 2))
    assert_state_close(state.backward, torch_final(want_state, 0, 1, 2))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_stack(x, kind, num_layers, bidirectional, lengths):
    ref = KINDS[kind](D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    stack = rnnkit.Stack.from_torch(ref)
    out, states = stack(x, lengths=lengths)
    want_out, want_state = torch_run(ref, x, lengths)
    torch.testing.assert_close(out, want_out)
    dirs = 2 if bidirectional else 1
    for k, state in enumerate(states):
        if bidirectional:
            assert_state_close(state.forward, torch_final(want_state, k, 0, dirs))
            assert_state_close(state.backward, torch_final(want_state, k, 1, dirs))
        else:
            assert_state_close(state, torch_final(want_state, k, 0, dirs))


def test_gradients_match_torch(x):
    ref = nn.GRU(D, H, num_layers=2, bidirectional=True, batch_first=True)
    stack = rnnkit.Stack.from_torch(ref)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, _ = stack(x1, lengths=LENGTHS)
    want, _ = torch_run(ref, x2, LENGTHS)
    out.pow(2).sum().backward()
    want.pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    ours = dict(stack.named_parameters())
    torch.testing.assert_close(ours["layers.1.backward_layer.cell.weight_hh"].grad, ref.weight_hh_l1_reverse.grad)


def test_initial_state_matches_torch(x):
    ref = nn.LSTM(D, H, batch_first=True, bidirectional=True)
    bi = rnnkit.Bidirectional.from_torch(ref)
    h0, c0 = torch.randn(2, B, H), torch.randn(2, B, H)
    out, state = bi(x, rnnkit.BiState((h0[0], c0[0]), (h0[1], c0[1])), lengths=LENGTHS)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    want, (hn, cn) = ref(packed, (h0, c0))
    want, _ = pad_packed_sequence(want, batch_first=True, total_length=T)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(state.backward[1], cn[1])


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_export_round_trip(x, kind):
    stack = rnnkit.Stack(D, [H, H], cell=kind, bidirectional=True, dropout=0.25)
    module = stack.to_torch()
    assert isinstance(module, KINDS[kind]) and module.num_layers == 2 and module.dropout == 0.25
    stack.eval(), module.eval()
    torch.testing.assert_close(stack(x, lengths=LENGTHS)[0], torch_run(module, x, LENGTHS)[0])
    layer = getattr(rnnkit, kind.upper())(D, H)
    torch.testing.assert_close(layer(x)[0], layer.to_torch()(x)[0])
    bi = rnnkit.Bidirectional(getattr(rnnkit, kind.upper())(D, H))
    torch.testing.assert_close(bi(x)[0], bi.to_torch()(x)[0])


def test_relu_rnn_and_no_bias_round_trip(x):
    ref = nn.RNN(D, H, nonlinearity="relu", bias=False, batch_first=True)
    layer = rnnkit.RNN.from_torch(ref)
    assert layer.cell.nonlinearity == "relu" and layer.cell.bias_ih is None
    torch.testing.assert_close(layer(x)[0], ref(x)[0])


def test_interop_errors():
    with pytest.raises(ValueError, match=r"num_layers=1; got num_layers=2 \(use rnnkit.Stack.from_torch\)"):
        rnnkit.GRU.from_torch(nn.GRU(D, H, num_layers=2))
    with pytest.raises(ValueError, match=r"bidirectional=False; got bidirectional=True \(use rnnkit.Bidirectional"):
        rnnkit.GRU.from_torch(nn.GRU(D, H, bidirectional=True))
    with pytest.raises(ValueError, match=r"bidirectional=True; got bidirectional=False \(use rnnkit.GRU.from_torch"):
        rnnkit.Bidirectional.from_torch(nn.GRU(D, H))
    with pytest.raises(TypeError, match=r"GRU.from_torch needs a torch.nn.GRU; got torch.nn.LSTM"):
        rnnkit.GRU.from_torch(nn.LSTM(D, H))
    with pytest.raises(TypeError, match=r"module must be a torch.nn.RNN, GRU or LSTM; got Linear"):
        rnnkit.Stack.from_torch(nn.Linear(D, H))
    with pytest.raises(ValueError, match=r"proj_size=3 has no rnnkit equivalent"):
        rnnkit.Stack.from_torch(nn.LSTM(D, H, proj_size=3))
    with pytest.raises(ValueError, match=r"to_torch needs a Stack that torch.nn can express"):
        rnnkit.Stack(D, [H, H], residual=True).to_torch()
    with pytest.raises(ValueError, match=r"to_torch needs plain RNN/GRU/LSTM cells; LayerNormGRUCell has no "
                                         r"torch.nn equivalent"):
        rnnkit.GRU(D, H, layer_norm=True).to_torch()
    with pytest.raises(ValueError, match=r"to_torch needs plain RNN/GRU/LSTM cells; MinGRU has no"):
        rnnkit.Bidirectional(rnnkit.MinGRU(D, H)).to_torch()
    with pytest.raises(ValueError, match=r"same cell and hidden size in every layer and direction"):
        rnnkit.Bidirectional(rnnkit.GRU(D, H), backward_layer=rnnkit.GRU(D, H + 1)).to_torch()
