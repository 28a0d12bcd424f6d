"""Stack: depth, per-layer sizes and directions, residual, layer norm, dropout."""

import pytest
import torch
from torch import nn

import rnnkit

B, T, D = 3, 5, 4
LENGTHS = torch.tensor([5, 3, 1])


@pytest.fixture
def x():
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(3))


def test_per_layer_sizes_and_directions(x):
    stack = rnnkit.Stack(D, [6, (3, 5), 4], cell="lstm", bidirectional=[True, True, False])
    out, states = stack(x, lengths=LENGTHS)
    assert out.shape == (B, T, 4) and stack.output_size == 4
    assert isinstance(states[0], rnnkit.BiState) and states[1].backward[0].shape == (B, 5)
    assert states[2][0].shape == (B, 4)
    assert [layer.output_size for layer in stack.layers] == [12, 8, 4]


def test_equals_its_layers_run_by_hand(x):
    """Residual (with a projection where widths differ), layer norm and dropout in the documented order."""
    stack = rnnkit.Stack(D, [6, 6, 3], cell="gru", bidirectional=True, merge="sum", residual=True,
                         layer_norm=True, dropout=0.0)
    out, _ = stack(x, lengths=LENGTHS)
    assert isinstance(stack.projections[0], nn.Identity)  # no residual into the first layer
    assert isinstance(stack.projections[1], nn.Identity)  # 6 -> 6
    assert isinstance(stack.projections[2], nn.Linear)    # 6 -> 3
    valid = (torch.arange(T) < LENGTHS[:, None])[..., None].float()
    h = x
    for i, layer in enumerate(stack.layers):
        y, _ = layer(h, lengths=LENGTHS)
        if i > 0:
            y = y + stack.projections[i](h)
        if i < 2:
            y = stack.norms[i](y) * valid
        h = y
    torch.testing.assert_close(out, h)


def test_output_is_zero_at_padding_with_residual_and_norm(x):
    stack = rnnkit.Stack(D, [4, 4, 4], cell="lstm", bidirectional=True, residual=True, layer_norm=True,
                         cell_layer_norm=True)
    with torch.no_grad():  # a trained norm has a shift, which would write into the padding
        for norm in stack.norms[:2]:
            norm.bias.normal_()
    out, _ = stack(x, lengths=LENGTHS)
    assert out[1, 3:].abs().sum() == 0 and out[2, 1:].abs().sum() == 0
    assert out[0].abs().sum() > 0


def test_dropout_between_layers_only_in_training(x):
    stack = rnnkit.Stack(D, [8, 8], dropout=0.5)
    stack.eval()
    a, _ = stack(x)
    b, _ = stack(x)
    torch.testing.assert_close(a, b)
    stack.train()
    torch.manual_seed(0)
    c, _ = stack(x)
    assert not torch.allclose(a, c)
    single = rnnkit.Stack(D, [8], dropout=0.5).train()  # nothing between: no dropout at all
    torch.testing.assert_close(single(x)[0], single.eval()(x)[0])


def test_cell_layer_norm_and_recurrent_dropout_reach_the_cells(pure_paths):
    stack = rnnkit.Stack(D, [4, 4], cell="gru", cell_layer_norm=True, recurrent_dropout=0.2)
    assert all(isinstance(layer.cell, rnnkit.LayerNormGRUCell) for layer in stack.layers)
    assert all(layer.recurrent_dropout == 0.2 for layer in stack.layers)
    assert all(p.name == "loop" for p in stack.paths)


def test_step_equals_forward_for_unidirectional_stack(x):
    stack = rnnkit.Stack(D, [4, 4], cell="lstm", residual=True, layer_norm=True).eval()
    out, final = stack(x)
    states, steps = None, []
    for t in range(T):
        y, states = stack.step(x[:, t], states)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out)
    torch.testing.assert_close(states[1][1], final[1][1])


def test_stack_errors():
    with pytest.raises(ValueError, match=r"a bidirectional Stack cannot run step by step"):
        rnnkit.Stack(D, [4], bidirectional=True).step(torch.randn(B, D))
    with pytest.raises(ValueError, match=r"merge='none' .* allowed only for a single-layer Stack"):
        rnnkit.Stack(D, [4, 4], bidirectional=True, merge="none")
    with pytest.raises(ValueError, match=r"hidden_sizes\[0\] = \(3, 5\) gives two directions' sizes, but layer 0 "
                                         r"is not bidirectional"):
        rnnkit.Stack(D, [(3, 5)])
    with pytest.raises(ValueError, match=r"merge='mean' needs both directions of the same size"):
        rnnkit.Stack(D, [(3, 5)], bidirectional=True, merge="mean")
    with pytest.raises(ValueError, match=r"bidirectional must be a bool or one bool per layer \(2\)"):
        rnnkit.Stack(D, [4, 4], bidirectional=[True])
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got -0.1"):
        rnnkit.Stack(D, [4], dropout=-0.1)
    with pytest.raises(ValueError, match=r"hidden_sizes must name at least one layer"):
        rnnkit.Stack(D, [])
    with pytest.raises(ValueError, match=r"cell_layer_norm is for cell='gru' or 'lstm'; got cell='rnn'"):
        rnnkit.Stack(D, [4], cell="rnn", cell_layer_norm=True)


def test_state_dict_loads_across_merges(x):
    one = rnnkit.Bidirectional(rnnkit.LSTM(D, 4), merge="concat")
    ref, _ = one(x, lengths=LENGTHS)
    for merge in ("sum", "mul", "mean", "none"):
        other = rnnkit.Bidirectional(rnnkit.LSTM(D, 4), merge=merge)
        other.load_state_dict(one.state_dict())  # strict: same names and shapes
        out, _ = other(x, lengths=LENGTHS)
        if merge == "none":
            torch.testing.assert_close(out.flatten(2), ref)  # (B, T, 2, H) -> forward then backward
        else:
            f, b = ref[..., :4], ref[..., 4:]
            assert not torch.allclose(out, f) and not torch.allclose(out, b)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_one_kernel_call_equals_layer_by_layer(x, cell, bidirectional, monkeypatch, pure_paths):
    """A plain stack runs all layers in one torch call; it must equal running them one by one."""
    stack = rnnkit.Stack(D, [4, 4, 4], cell=cell, bidirectional=bidirectional, dropout=0.3).eval()
    calls = []
    run_layers = rnnkit.recurrence.run_layers
    monkeypatch.setattr(rnnkit.recurrence, "run_layers",
                        lambda *a, **k: calls.append(run_layers(*a, **k)) or calls[-1])
    lstm = cell == "lstm"
    g = torch.Generator().manual_seed(4)

    def random_state():
        h = torch.randn(B, 4, generator=g)
        return (h, torch.randn(B, 4, generator=g)) if lstm else h

    initial = [rnnkit.BiState(random_state(), random_state()) if bidirectional else random_state()
               for _ in range(3)]
    out, finals = stack(x, initial, lengths=LENGTHS)
    assert len(calls) == 1 and calls[0] is not None  # the one-call path ran
    h, want = x, []
    for layer, state in zip(stack.layers, initial):
        h, final = layer(h, state, lengths=LENGTHS)
        want.append(final)
    torch.testing.assert_close(out, h)
    for got, ref in zip(finals, want):
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(ref)):
            torch.testing.assert_close(a, b)
    wrong = (torch.zeros(B, 5), torch.zeros(B, 5)) if lstm else torch.zeros(B, 5)
    bad = list(initial)
    bad[1] = rnnkit.BiState(random_state(), wrong) if bidirectional else wrong
    where = r"states\[1\]" + (r"\.backward" if bidirectional else "") + (r"\[0\] \(h\)" if lstm else "")
    with pytest.raises(ValueError, match=where + r" must have shape \(B, H\) = \(3, 4\); got \(3, 5\)"):
        stack(x, bad, lengths=LENGTHS)


def test_layer_by_layer_when_one_call_cannot_express_it(x, monkeypatch):
    calls = []
    monkeypatch.setattr(rnnkit.recurrence, "run_layers", lambda *a, **k: calls.append(1))
    rnnkit.Stack(D, [4, 4], residual=True)(x)
    rnnkit.Stack(D, [4, 4], bidirectional=True, merge="sum")(x)
    rnnkit.Stack(D, [4], bidirectional=True)(x)
    out, states = rnnkit.Stack(D, [4, 4], cell="mingru", bidirectional=True)(x, lengths=LENGTHS)
    assert calls == [] and out.shape == (B, T, 8) and len(states) == 2
