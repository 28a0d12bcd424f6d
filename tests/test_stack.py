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


def test_cell_layer_norm_and_recurrent_dropout_reach_the_cells():
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
