"""Layers against the reference math: padding, both directions, merges, steps, gradients, errors."""

import pytest
import torch

import rnnkit
from rnnkit import recurrence

B, T, D, H = 4, 6, 5, 3
LENGTHS = torch.tensor([6, 2, 4, 1])


def make(kind, **kw):
    layer_norm = kind.startswith("ln_")
    cls = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM,
           "ln_gru": rnnkit.GRU, "ln_lstm": rnnkit.LSTM}[kind]
    return cls(D, H, layer_norm=True, **kw) if layer_norm else cls(D, H, **kw)


ALL_KINDS = ["rnn", "gru", "lstm", "ln_gru", "ln_lstm"]


def reference(cell, x, state=None):
    """The docstring equations, one step at a time, on one unpadded sequence x (T, D)."""
    outs = []
    for t in range(x.shape[0]):
        state = cell(x[t:t + 1], state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.cat(outs), state


def squeeze(state):
    return tuple(s[0] for s in state) if isinstance(state, tuple) else state[0]


def close(a, b):
    if isinstance(a, tuple):
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v)
    else:
        torch.testing.assert_close(a, b)


@pytest.fixture
def x():
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_padded_batch_equals_each_sequence_alone(x, kind, reverse):
    """Both paths (fused for plain cells, loop for layer-norm ones) against the reference."""
    layer, x = make(kind).double(), x.double()  # float64: layer norm magnifies rounding
    out, state = layer(x, lengths=LENGTHS, reverse=reverse)
    for b, n in enumerate(LENGTHS.tolist()):
        seq = x[b, :n].flip(0) if reverse else x[b, :n]
        want_out, want_state = reference(layer.cell, seq)
        torch.testing.assert_close(out[b, :n], want_out.flip(0) if reverse else want_out)
        assert out[b, n:].abs().max() == 0 if n < T else True
        close(tuple(s[b] for s in state) if isinstance(state, tuple) else state[b], squeeze(want_state))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_fused_path_equals_loop_path(x, kind, reverse, lengths, pure_paths):
    layer = make(kind)
    assert layer.path.name == "fused"
    state = layer.cell.initial_state(B, x)
    fused = recurrence.run(layer.cell, x, state, lengths, reverse=reverse)
    loop = recurrence._loop(layer.cell, x, state, lengths, reverse=reverse)
    torch.testing.assert_close(fused[0], loop[0])
    close(fused[1], loop[1])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bidirectional_equals_forward_plus_flipped_backward(x, kind):
    bi, x = rnnkit.Bidirectional(make(kind), merge="none").double(), x.double()
    out, state = bi(x, lengths=LENGTHS)
    assert out.shape == (B, T, 2, H)
    for b, n in enumerate(LENGTHS.tolist()):
        f_out, f_state = reference(bi.forward_layer.cell, x[b, :n])
        b_out, b_state = reference(bi.backward_layer.cell, x[b, :n].flip(0))
        torch.testing.assert_close(out[b, :n, 0], f_out)
        torch.testing.assert_close(out[b, :n, 1], b_out.flip(0))
        assert out[b, n:].abs().sum() == 0
        close(tuple(s[b] for s in state.forward) if bi.is_lstm else state.forward[b], squeeze(f_state))
        close(tuple(s[b] for s in state.backward) if bi.is_lstm else state.backward[b], squeeze(b_state))


@pytest.mark.parametrize("merge, formula", [
    ("concat", lambda f, b: torch.cat([f, b], -1)),
    ("sum", lambda f, b: f + b),
    ("mul", lambda f, b: f * b),
    ("mean", lambda f, b: (f + b) / 2),
])
def test_every_merge_equals_its_formula(x, merge, formula):
    none = rnnkit.Bidirectional(rnnkit.GRU(D, H), merge="none")
    merged = rnnkit.Bidirectional(rnnkit.GRU(D, H), merge=merge)
    merged.load_state_dict(none.state_dict())  # parameters do not depend on merge
    out_none, _ = none(x, lengths=LENGTHS)
    out, _ = merged(x, lengths=LENGTHS)
    torch.testing.assert_close(out, formula(out_none[:, :, 0], out_none[:, :, 1]))
    assert out.shape[-1] == merged.output_size == (2 * H if merge == "concat" else H)


def test_per_direction_sizes_concat(x):
    bi = rnnkit.Bidirectional(rnnkit.LSTM(D, 3), backward_layer=rnnkit.LSTM(D, 5))
    out, state = bi(x, lengths=LENGTHS)
    assert out.shape == (B, T, 8) and bi.output_size == 8
    assert state.forward[0].shape == (B, 3) and state.backward[1].shape == (B, 5)
    f_out, _ = bi.forward_layer(x, lengths=LENGTHS)
    b_out, _ = bi.backward_layer(x, lengths=LENGTHS, reverse=True)
    torch.testing.assert_close(out, torch.cat([f_out, b_out], -1))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_step_by_step_equals_whole_sequence(x, kind):
    # float64: the whole sequence may run on the compiled loop (the probe decides, by timing)
    # while steps run the cell, and in float32 their sums differ in order by up to ~2e-5; this
    # checks what step() means, the compiled loop's float32 parity has its own tests
    layer, x = make(kind).double(), x.double()
    out, final = layer(x)
    state, steps = None, []
    for t in range(T):
        h, state = layer.step(x[:, t], state)
        steps.append(h)
    torch.testing.assert_close(torch.stack(steps, 1), out)
    close(state, final)


def test_initial_state_is_used_and_continues_a_sequence(x):
    """Running T steps equals running the first half, then the second from its final state."""
    for layer in (rnnkit.GRU(D, H), rnnkit.LSTM(D, H), rnnkit.GRU(D, H, layer_norm=True)):
        out, final = layer(x)
        a, mid = layer(x[:, :3])
        b, end = layer(x[:, 3:], mid)
        torch.testing.assert_close(torch.cat([a, b], 1), out)
        close(end, final)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradcheck_float64(kind):
    bi = rnnkit.Bidirectional(make(kind), merge="concat").double()
    x = torch.randn(3, 4, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1])
    assert torch.autograd.gradcheck(lambda x: bi(x, lengths=lengths)[0], (x,))


def test_gradcheck_stack_float64():
    stack = rnnkit.Stack(D, [3, 4], cell="gru", bidirectional=True, residual=True,
                         layer_norm=True).double()
    x = torch.randn(2, 4, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: stack(x, lengths=torch.tensor([4, 2]))[0], (x,))


def test_paths_name_the_reason(pure_paths):
    assert rnnkit.GRU(D, H).path == rnnkit.Path("fused")
    path = rnnkit.LSTM(D, H, layer_norm=True).path
    assert path.name == "loop" and "LayerNormLSTMCell has no fused kernel" in path.reason
    dropped = rnnkit.GRU(D, H, recurrent_dropout=0.3)
    assert dropped.path.name == "loop" and "recurrent dropout" in dropped.path.reason
    assert dropped.eval().path.name == "fused"  # no dropout at inference, so torch's kernel


def test_recurrent_dropout_is_one_mask_per_sequence(x, monkeypatch, pure_paths):
    layer = rnnkit.GRU(D, H, recurrent_dropout=0.5)
    masks = []
    original = layer.cell.recurrent_step

    def spy(xi, state, mask=None):
        masks.append(mask)
        return original(xi, state, mask)

    monkeypatch.setattr(layer.cell, "recurrent_step", spy)
    torch.manual_seed(0)
    layer.train()(x)
    assert len(masks) == T and all(m is masks[0] for m in masks)
    assert set(masks[0].unique().tolist()) <= {0.0, 2.0} and (masks[0] == 0).any()
    masks.clear()
    layer.eval()(x)  # fused path at inference: no Python step at all
    assert masks == []


def test_padding_does_not_change_outputs_with_extra_padding(x):
    """Appending more padding to a batch leaves every real step and final state unchanged."""
    stack = rnnkit.Stack(D, [H, 4], cell="lstm", bidirectional=True, residual=True, layer_norm=True)
    out, states = stack(x, lengths=LENGTHS)
    longer = torch.cat([x, torch.randn(B, 3, D)], 1)
    out2, states2 = stack(longer, lengths=LENGTHS)
    torch.testing.assert_close(out2[:, :T], out)
    assert out2[:, T:].abs().sum() == 0
    close(states2[-1].backward, states[-1].backward)


# ------------------------------------------------------------------------------ errors

def test_constructor_errors():
    with pytest.raises(ValueError, match=r"merge must be one of concat, sum, mul, mean, none; got 'avg'"):
        rnnkit.Bidirectional(rnnkit.GRU(D, H), merge="avg")
    with pytest.raises(ValueError, match=r"cell must be one of rnn, gru, lstm.*; got 'transformer'"):
        rnnkit.Stack(D, [H], cell="transformer")
    with pytest.raises(ValueError, match=r"merge='sum' needs both directions of the same size; got forward 3 "
                                         r"and backward 5, which only merge='concat' allows"):
        rnnkit.Bidirectional(rnnkit.GRU(D, 3), backward_layer=rnnkit.GRU(D, 5), merge="sum")
    with pytest.raises(ValueError, match=r"backward_layer.input_size must equal layer.input_size = 5; got 4"):
        rnnkit.Bidirectional(rnnkit.GRU(D, H), backward_layer=rnnkit.GRU(4, H))
    with pytest.raises(TypeError, match=r"layer must be an rnnkit recurrent layer.*got Linear"):
        rnnkit.Bidirectional(torch.nn.Linear(D, H))
    with pytest.raises(ValueError, match=r"recurrent_dropout must be a float in \[0, 1\); got 1.5"):
        rnnkit.GRU(D, H, recurrent_dropout=1.5)


@pytest.mark.parametrize("layer", [
    rnnkit.GRU(D, H), rnnkit.Bidirectional(rnnkit.LSTM(D, H)), rnnkit.Stack(D, [H, H], bidirectional=True)],
    ids=["GRU", "Bidirectional", "Stack"])
def test_forward_errors(layer, x):
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(B, T, D\), batch first; got shape \(6, 5\)"):
        layer(x[0])
    with pytest.raises(ValueError, match=r"x must have last dimension D = input_size = 5; got shape \(4, 6, 7\)"):
        layer(torch.randn(B, T, 7))
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor; got dtype torch.int64"):
        layer(torch.ones(B, T, D, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lengths must be <= T = 6 \(the time dimension of x\); got max 9"):
        layer(x, lengths=torch.tensor([9, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must be >= 1 \(every sequence needs a step\); got min 0"):
        layer(x, lengths=[6, 0, 1, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(4,\); got \(3,\)"):
        layer(x, lengths=torch.tensor([6, 1, 1]))
    with pytest.raises(TypeError, match=r"lengths must have an integer dtype; got torch.float32"):
        layer(x, lengths=torch.tensor([6.0, 1, 1, 1]))


def test_state_errors(x):
    with pytest.raises(ValueError, match=r"state must have shape \(B, H\) = \(4, 3\); got \(1, 4, 3\)"):
        rnnkit.GRU(D, H)(x, torch.zeros(1, B, H))
    with pytest.raises(TypeError, match=r"state of an LSTM must be a pair \(h, c\) of tensors"):
        rnnkit.LSTM(D, H)(x, torch.zeros(B, H))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) must have shape \(B, H\) = \(4, 3\); got \(4, 2\)"):
        rnnkit.LSTM(D, H)(x, (torch.zeros(B, H), torch.zeros(B, 2)))
    with pytest.raises(ValueError, match=r"state.backward must have shape \(B, H\) = \(4, 3\); got \(3,\)"):
        rnnkit.Bidirectional(rnnkit.GRU(D, H))(x, rnnkit.BiState(torch.zeros(B, H), torch.zeros(H)))
    with pytest.raises(ValueError, match=r"states must be a list with one state per layer \(2\); got 1"):
        rnnkit.Stack(D, [H, H])(x, [None])
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, D\) with D = input_size = 5; got \(4, 6, 5\)"):
        rnnkit.GRU(D, H).step(x)


@pytest.fixture(params=[False, True], ids=["pure", "compiled"])
def compiled_on(request):
    before = recurrence.compiled_enabled()
    recurrence.set_compiled(request.param)
    yield request.param
    recurrence.set_compiled(before)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_padding_content_never_reaches_outputs_or_gradients(x, kind, compiled_on):
    """NaN in the padding: outputs, final states and every gradient equal zero padding's, on
    every path (fused, loop, compiled)."""
    bi = rnnkit.Bidirectional(make(kind))
    valid = (torch.arange(T) < LENGTHS[:, None])[..., None]
    results = []
    for filler in (0.0, float("nan")):
        bi.zero_grad()
        xp = x.masked_fill(~valid, filler).requires_grad_()
        out, state = bi(xp, lengths=LENGTHS)
        out.sum().backward()
        results.append((out, state, xp.grad, [p.grad.clone() for p in bi.parameters()]))
    (out0, state0, gx0, grads0), (out1, state1, gx1, grads1) = results
    torch.testing.assert_close(out1, out0)
    close(state1.backward, state0.backward)
    torch.testing.assert_close(gx1.masked_fill(~valid, 0), gx0.masked_fill(~valid, 0))
    for g0, g1 in zip(grads0, grads1):
        torch.testing.assert_close(g1, g0)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("chunk", [1, 4])
def test_recompute_chunks_equal_one_pass(x, kind, chunk, compiled_on):
    """recompute_chunk (activation checkpointing over time) changes memory, not results:
    outputs, both final states and all gradients equal one pass, with padding, on every path."""
    results = []
    for recompute in (None, chunk):
        torch.manual_seed(5)
        bi = rnnkit.Bidirectional(make(kind, recompute_chunk=recompute)).double().train()
        xp = x.double().requires_grad_()  # float64: chunks sum gradients in another order
        out, state = bi(xp, lengths=LENGTHS)
        leaves = torch.utils._pytree.tree_leaves(state)
        (out.pow(2).sum() + sum(s.sum() for s in leaves)).backward()
        results.append((out, leaves, xp.grad, [p.grad for p in bi.parameters()]))
    (out0, st0, gx0, g0), (out1, st1, gx1, g1) = results
    torch.testing.assert_close(out1, out0)
    for a, b in zip(st1 + [gx1] + g1, st0 + [gx0] + g0):
        torch.testing.assert_close(a, b)


def test_recompute_chunks_keep_the_variational_mask(x):
    """With recurrent dropout, the chunks share the one mask drawn for the sequence."""
    outs = []
    for recompute in (None, 2):
        torch.manual_seed(6)
        layer = rnnkit.GRU(D, H, recurrent_dropout=0.5, recompute_chunk=recompute).train()
        outs.append(layer(x, lengths=LENGTHS)[0])
    torch.testing.assert_close(outs[1], outs[0])


def test_recompute_chunk_errors():
    with pytest.raises(ValueError, match=r"recompute_chunk must be a positive int \(time steps per chunk\) "
                                         r"or None; got 0"):
        rnnkit.LSTM(D, H, recompute_chunk=0)
    with pytest.raises(ValueError, match=r"recompute_chunk is for cell='rnn', 'gru' or 'lstm'.*got cell='mingru'"):
        rnnkit.Stack(D, [H], cell="mingru", recompute_chunk=8)
