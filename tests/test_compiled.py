"""The compiled time loop (rnnkit/csrc) against the reference cells (GRU, LSTM and their
layer-norm variants): outputs, final states and gradients, with padding, in both directions, one
or two directions per call, with and without biases and recurrent-dropout masks, float64 (to
1e-10, plus gradcheck) and float32."""

import pytest
import torch

import rnnkit
from rnnkit import _compiled as compiled
from rnnkit import recurrence
from rnnkit.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell

B, T, D = 4, 6, 5
LENGTHS = torch.tensor([6, 2, 4, 1])


@pytest.fixture(scope="module", autouse=True)
def built():
    # CI must build it: a missing compiler is a failure here, not a skip.
    assert compiled.available(), f"the compiled recurrence did not build: {compiled.error()}"


def reference(cell, x, state, lengths, reverse, mask=None):
    """The cell's own step, one sequence at a time over its true length (no recurrence.py)."""
    outs, finals = [], []
    for b in range(x.shape[0]):
        n = int(lengths[b]) if lengths is not None else x.shape[1]
        seq = x[b, :n].flip(0) if reverse else x[b, :n]
        s = tuple(t[b:b + 1] for t in state) if isinstance(state, tuple) else state[b:b + 1]
        m = mask[b:b + 1] if mask is not None else None
        hs = []
        for t in range(n):
            s = cell.recurrent_step(cell.input_projection(seq[t:t + 1]), s, m)
            hs.append(s[0] if isinstance(s, tuple) else s)
        h = torch.cat(hs)
        h = h.flip(0) if reverse else h
        outs.append(torch.cat([h, h.new_zeros(x.shape[1] - n, h.shape[1])]))
        finals.append(s)
    out = torch.stack(outs)
    if isinstance(state, tuple):
        return out, tuple(torch.cat([f[k] for f in finals]) for k in range(2))
    return out, torch.cat(finals)


LAYER_NORM = (LayerNormGRUCell, LayerNormLSTMCell)


def make(cls, H, dtype, bias=True, gen=None):
    with torch.random.fork_rng():
        if gen is not None:  # the initialisation from gen too: the same numbers whatever ran before
            torch.manual_seed(int(torch.randint(2 ** 62, (), generator=gen)))
        if cls in LAYER_NORM:
            cell = cls(D, H).to(dtype)
        else:
            options = {} if bias or cls is GRUCell else {"forget_bias": None}
            cell = cls(D, H, bias=bias, **options).to(dtype)
    with torch.no_grad():  # biases, gains, shifts away from their init: each gradient path is exercised
        for p in cell.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=dtype, generator=gen))
    return cell


def state_for(cell, dtype, gen):
    h = torch.randn(B, cell.hidden_size, dtype=dtype, generator=gen).requires_grad_()
    if cell.is_lstm:
        return (h, torch.randn(B, cell.hidden_size, dtype=dtype, generator=gen).requires_grad_())
    return h


def flat(state):
    return list(state) if isinstance(state, tuple) else [state]


CASES = [pytest.param(GRUCell, True, id="gru"), pytest.param(GRUCell, False, id="gru-nobias"),
         pytest.param(LSTMCell, True, id="lstm"), pytest.param(LSTMCell, False, id="lstm-nobias"),
         pytest.param(LayerNormGRUCell, True, id="ln_gru"), pytest.param(LayerNormLSTMCell, True, id="ln_lstm")]


@pytest.fixture(params=[None, 1, 9], ids=["one-chunk", "chunks-of-1", "chunks-of-3"])
def chunk_rows(request):
    """Forward projects the inputs a chunk of steps at a time: all steps of these small batches
    in one chunk (the default of 256 rows), one step per chunk, or 3 of T = 6 steps (9 rows of
    B = 4 round up to 3 steps), so that both directions and padded rows cross a boundary."""
    if request.param is None:
        yield
        return
    old = compiled.set_projection_chunk_rows(request.param)
    try:
        yield
    finally:
        compiled.set_projection_chunk_rows(old)


@pytest.fixture(params=[None, 1], ids=["", "halves"])
def batch_halves(request):
    """A layer of one direction with an even batch of at least 16 rows runs as two halves of it
    on two threads; with the threshold at 1 row, the batch of 4 here does too (on a machine of
    two threads or more)."""
    if request.param is None:
        yield
        return
    old = compiled.set_batch_half_rows(request.param)
    try:
        yield
    finally:
        compiled.set_batch_half_rows(old)


@pytest.mark.parametrize("cls, bias", CASES)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("directions", [[False], [True], [False, True]], ids=["fw", "bw", "bi"])
@pytest.mark.parametrize("dropout", [False, True], ids=["", "mask"])
def test_equals_reference_cells_float64(cls, bias, lengths, directions, dropout, chunk_rows, batch_halves):
    dtype, gen = torch.float64, torch.Generator().manual_seed(6)
    sizes = [3, 4][:len(directions)]  # the two directions may differ in size
    cells = [make(cls, H, dtype, bias, gen=gen) for H in sizes]
    x = torch.randn(B, T, D, dtype=dtype, generator=gen, requires_grad=True)
    states = [state_for(c, dtype, gen) for c in cells]
    masks = [torch.bernoulli(torch.full((B, c.hidden_size), 0.7, dtype=dtype), generator=gen) / 0.7
             if dropout else None for c in cells]
    out, finals = compiled.run(cells, x, states, lengths, reverse=directions, masks=masks)
    refs = [reference(c, x, s, lengths, r, m) for c, s, r, m in zip(cells, states, directions, masks)]
    want = torch.cat([o for o, _ in refs], -1)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    if lengths is not None:
        assert (out[1, 2:] == 0).all()  # zero at padding, exactly
    for f, (_, w) in zip(finals, refs):
        for a, b in zip(flat(f), flat(w)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # One loss over outputs and every final state (h and c, each its own weight), so every
    # gradient path is used: x, h0, c0 and every parameter, gains and shifts included.
    weights = torch.randn(out.shape, dtype=dtype, generator=gen)
    leaves = [x] + [t for s in states for t in flat(s)] + [p for c in cells for p in c.parameters()]

    def loss(o, fs):
        return (o * weights).sum() + sum((t ** 2).sum() * (k + 1) for k, t in enumerate(t for f in fs for t in flat(f)))

    got = torch.autograd.grad(loss(out, finals), leaves)
    exp = torch.autograd.grad(loss(want, [w for _, w in refs]), leaves)
    for a, b in zip(got, exp):
        # Layer norm over H = 3, 4 values amplifies rounding on gradients of size ~50: relative 1e-11
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-10)


class _Both(torch.nn.Module):
    """Both directions of one compiled call, as a module, so gradcheck can vary its weights."""

    def __init__(self, cells, lengths):
        super().__init__()
        self.cells, self.lengths = torch.nn.ModuleList(cells), lengths

    def forward(self, x, *state):
        it = iter(state)
        states = [(next(it), next(it)) if c.is_lstm else next(it) for c in self.cells]
        out, finals = compiled.run(list(self.cells), x, states, self.lengths, reverse=[False, True])
        return (out, *[t for f in finals for t in flat(f)])


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell], ids=["gru", "lstm"])
def test_gradcheck_bidirectional_padded(cls):
    gen = torch.Generator().manual_seed(1)
    both = _Both([make(cls, 3, torch.float64), make(cls, 2, torch.float64)], torch.tensor([4, 1, 3]))
    x = torch.randn(3, 4, D, dtype=torch.float64, generator=gen, requires_grad=True)
    states = [t for c in both.cells for t in flat(state_for(c, torch.float64, gen))]
    states = [s[:3].detach().requires_grad_() for s in states]
    names = [n for n, _ in both.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in both.parameters()]
    n = 1 + len(states)

    def fn(*inputs):
        return torch.func.functional_call(both, dict(zip(names, inputs[n:])), tuple(inputs[:n]))

    assert torch.autograd.gradcheck(fn, (x, *states, *params), eps=1e-6, atol=1e-6)


ALL_CELLS = pytest.mark.parametrize("cls", [GRUCell, LSTMCell, LayerNormGRUCell, LayerNormLSTMCell],
                                    ids=["gru", "lstm", "ln_gru", "ln_lstm"])


@ALL_CELLS
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_float32_matches_reference(cls, lengths):
    gen = torch.Generator().manual_seed(3)
    cells = [make(cls, 8, torch.float32, gen=gen), make(cls, 8, torch.float32, gen=gen)]
    x = torch.randn(B, T, D, generator=gen, requires_grad=True)
    states = [c.initial_state(B, x) for c in cells]
    out, _ = compiled.run(cells, x, states, lengths, reverse=[False, True])
    want = torch.cat([reference(c, x, s, lengths, r)[0] for c, s, r in zip(cells, states, [False, True])], -1)
    # Layer norm over H = 8 values amplifies float32 rounding: on this data the loop's and
    # torch's float32 LN-LSTM outputs differ by up to 2.2e-5 (each within ~1e-6 of float64 on
    # other data; tests/test_compiled_numerics.py bounds the loop's own tanh/sigmoid). So ten
    # times the plain cells' tolerance for the layer-norm cells; the float64 tests check their
    # math to ~1e-10.
    loose = 10.0 if cls in LAYER_NORM else 1.0
    torch.testing.assert_close(out, want, rtol=1e-5 * loose, atol=1e-6 * loose)
    leaves = [x] + [p for c in cells for p in c.parameters()]
    g1 = torch.autograd.grad(out.square().sum(), leaves)
    g2 = torch.autograd.grad(want.square().sum(), leaves)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4 * loose, atol=1e-5 * loose)


def test_inference_equals_training_forward():
    cells = [make(LSTMCell, 5, torch.float32), make(LSTMCell, 5, torch.float32)]
    x = torch.randn(B, T, D)
    states = [c.initial_state(B, x) for c in cells]
    out, finals = compiled.run(cells, x, states, LENGTHS, reverse=[False, True])
    with torch.no_grad():
        out2, finals2 = compiled.run(cells, x, states, LENGTHS, reverse=[False, True])
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    torch.testing.assert_close(finals[1][1], finals2[1][1], rtol=0, atol=0)


def on_and_off(stack, x):
    """(path name, output, gradients of x and every parameter) of stack(x, lengths=LENGTHS),
    first with the compiled path on, then off (conftest restores the default after the test)."""
    results = []
    for on in (True, False):
        recurrence.set_compiled(on)
        out, _ = stack(x, lengths=LENGTHS)
        grads = torch.autograd.grad(out.square().sum(), [x, *stack.parameters()])
        path = recurrence.choose_path(stack.layers[0].forward_layer.cell, padded=True)  # LENGTHS pads
        results.append((path.name, out, grads))
    return results


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_layers_on_compiled_path_equal_fused_path(kind, merge):
    """Through the public layers: Stack with the compiled path on equals it off (torch's kernel)."""
    torch.manual_seed(0)
    stack = rnnkit.Stack(D, [4, 4], cell=kind, bidirectional=True, merge=merge, recurrent_dropout=0.0)
    x = torch.randn(B, T, D, requires_grad=True)
    (on, out, g), (off, out2, g2) = on_and_off(stack, x)
    assert (on, off) == ("compiled", "fused")
    torch.testing.assert_close(out, out2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_recurrent_dropout_runs_compiled_with_one_mask_per_sequence():
    torch.manual_seed(0)
    layer = rnnkit.GRU(D, 4, recurrent_dropout=0.5)
    x = torch.randn(B, T, D)
    try:
        recurrence.set_compiled(True)
        path = layer.path
        torch.manual_seed(5)
        out, _ = layer(x, lengths=LENGTHS)
    finally:
        recurrence.set_compiled(False)
    assert path.name == "compiled" and "recurrent dropout" in path.reason
    torch.manual_seed(5)  # the loop path draws the same mask from the same seed
    want, _ = layer(x, lengths=LENGTHS)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_unsupported_cells_keep_their_path():
    try:
        recurrence.set_compiled(True)
        lstm = rnnkit.LSTM(D, 4).cell
        assert recurrence.choose_path(lstm).name == "compiled"
        with torch.no_grad():  # at inference, however large (the probe is off in the tests)
            assert recurrence.choose_path(lstm, x=torch.randn(1024, 3, D)).name == "compiled"
        assert recurrence.choose_path(lstm, padded=True).name == "compiled"
        assert recurrence.choose_path(lstm, recurrent_dropout=0.2, training=True).name == "compiled"
        assert rnnkit.LSTM(D, 4, layer_norm=True).path.name == "compiled"  # same rule as the GRU's
        assert rnnkit.GRU(D, 4, layer_norm=True).path.name == "compiled"
        assert rnnkit.RNN(D, 4).path.name == "fused"
    finally:
        recurrence.set_compiled(False)


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell], ids=["gru", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_blocked_gemm_sizes(cls, dtype):
    """Sizes that use every branch of the GEMM kernel: 8-, 4- and 1-row blocks, two-vector,
    one-vector and leftover columns, and more than one 128-deep block of k."""
    gen = torch.Generator().manual_seed(4)
    Bn, Tn, Dn = 13, 23, 20
    cells = [cls(Dn, 16).to(dtype), cls(Dn, 16).to(dtype)]
    x = torch.randn(Bn, Tn, Dn, dtype=dtype, generator=gen, requires_grad=True)
    lengths = torch.randint(1, Tn + 1, (Bn,), generator=gen)
    lengths[0] = Tn
    states = [state_for(c, dtype, gen) for c in cells]
    states = [tuple(t[:1].expand(Bn, -1).detach().requires_grad_() for t in flat(s)) if c.is_lstm
              else s[:1].expand(Bn, -1).detach().requires_grad_() for c, s in zip(cells, states)]
    masks = [torch.bernoulli(torch.full((Bn, 16), 0.8, dtype=dtype), generator=gen) / 0.8, None]
    out, finals = compiled.run(cells, x, states, lengths, reverse=[False, True], masks=masks)
    refs = [reference(c, x, s, lengths, r, m) for c, s, r, m in zip(cells, states, [False, True], masks)]
    want = torch.cat([o for o, _ in refs], -1)
    tol = dict(rtol=0, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, want, **tol)
    leaves = [x] + [p for c in cells for p in c.parameters()]
    w = torch.randn(out.shape, dtype=dtype, generator=gen)
    for a, b in zip(torch.autograd.grad((out * w).sum(), leaves), torch.autograd.grad((want * w).sum(), leaves)):
        torch.testing.assert_close(a, b, **tol)


LN_CELLS = pytest.mark.parametrize("cls", LAYER_NORM, ids=["ln_gru", "ln_lstm"])


@LN_CELLS
def test_layer_norm_cells_gradcheck_bidirectional_padded(cls):
    gen = torch.Generator().manual_seed(7)
    both = _Both([make(cls, 3, torch.float64, gen=gen), make(cls, 2, torch.float64, gen=gen)], torch.tensor([4, 1, 3]))
    x = torch.randn(3, 4, D, dtype=torch.float64, generator=gen, requires_grad=True)
    states = [torch.randn(3, c.hidden_size, dtype=torch.float64, generator=gen, requires_grad=True)
              for c in both.cells for _ in range(2 if c.is_lstm else 1)]
    names = [n for n, _ in both.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in both.parameters()]
    n = 1 + len(states)

    def fn(*inputs):
        return torch.func.functional_call(both, dict(zip(names, inputs[n:])), tuple(inputs[:n]))

    assert torch.autograd.gradcheck(fn, (x, *states, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_layer_norm_stack_on_compiled_path_equals_loop_path(cell):
    """Through the public layers: a bidirectional Stack of layer-norm cells, compiled on vs off
    (float64: in float32, layer norm over H = 4 values puts both paths ~1e-5 apart)."""
    torch.manual_seed(0)
    stack = rnnkit.Stack(D, [4, 4], cell=cell, bidirectional=True, cell_layer_norm=True).double()
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    (on, out, g), (off, out2, g2) = on_and_off(stack, x)
    assert (on, off) == ("compiled", "loop")
    torch.testing.assert_close(out, out2, rtol=0, atol=1e-10)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-10)


def test_pooled_results_are_never_shared_while_alive():
    """Outputs, saved activations and input gradients come from the loop's memory pool and go
    back to it when torch frees them: a later call must not write into a result still alive,
    no two buffers of one call may be the same, and what died is kept for the next call until
    release_scratch."""
    gen = torch.Generator().manual_seed(12)
    cells = [GRUCell(D, 128), GRUCell(D, 128)]
    xs = [torch.randn(8, 64, D, generator=gen, requires_grad=True) for _ in range(3)]
    states = [torch.zeros(8, 128) for _ in cells]

    def run(x):
        out = compiled.run(cells, x, states, None, reverse=[False, True])[0]  # 512 KB
        return out, torch.autograd.grad((out * out).sum(), x)[0]

    want = []
    for x in xs:  # each call on fresh memory
        compiled.release_scratch()
        want.append([t.detach().clone() for t in run(x)])
    compiled.release_scratch()
    got = [run(x) for x in xs for _ in range(2)][1::2]  # the second of each pair reuses the first's
    assert len({out.data_ptr() for out, _ in got}) == 3
    for (out, dx), (w_out, w_dx) in zip(got, want):
        torch.testing.assert_close(out, w_out, rtol=0, atol=0)
        torch.testing.assert_close(dx, w_dx, rtol=0, atol=0)
    compiled.release_scratch()  # the scratch and the first of each pair; the results live on
    del got, out, dx
    assert compiled.release_scratch() >= 3 * 8 * 64 * 256 * 4  # the three outputs at least
    assert compiled.release_scratch() == 0


@pytest.mark.parametrize("cls", [GRUCell, LSTMCell, LayerNormLSTMCell], ids=["gru", "lstm", "ln_lstm"])
def test_saved_activations_pass_through_saved_tensor_hooks(cls):
    """The loop's saved states and activations are saved for backward where saved-tensor hooks
    see them, so that activation checkpointing (recompute_chunk) can drop them after forward.
    Kept on the autograd context instead, every chunk's activations stayed alive, and a BiGRU
    (16, 2000, 64) x 2 training step with recompute_chunk=100 peaked at 397 MB, above its
    236 MB without."""
    gen = torch.Generator().manual_seed(3)
    H, T = 16, 7
    cell = make(cls, H, torch.float32, gen=gen)
    x = torch.randn(B, T, D, generator=gen, requires_grad=True)
    state = state_for(cell, torch.float32, gen)
    packed = []

    def pack(t):
        packed.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = compiled.run([cell], x, [state], None, reverse=[False])
    assert (T, B, H) in packed  # the state after each step (and the LSTM's cell state)
    assert any(len(s) == 3 and s[:2] == (T, B) and s[2] >= 4 * H for s in packed), packed  # the gates
    out.sum().backward()  # and backward reads them back
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pool_after_inference_mode_serves_training():
    """Memory pooled by calls under torch.inference_mode() must serve a later call that records
    autograd: an inference tensor in the pool made a padded training backward raise
    ("Inplace update to inference tensor outside InferenceMode")."""
    try:
        recurrence.set_compiled(True)
        torch.manual_seed(0)
        Bn, Tn, H = 16, 64, 32
        bi = rnnkit.Bidirectional(rnnkit.GRU(2 * H, H))
        x = torch.randn(Bn, Tn, 2 * H)
        lengths = torch.full((Bn,), Tn)
        lengths[3] = 20
        compiled.release_scratch()
        with torch.inference_mode():
            preds = [bi(x, lengths=lengths)[0] for _ in range(6)]
        want = preds[0].clone()
        del preds
        x.requires_grad_()
        out = bi(x, lengths=lengths)[0]
        out.sum().backward()
    finally:
        recurrence.set_compiled(False)
    torch.testing.assert_close(out.detach(), want, rtol=0, atol=0)
    assert x.grad is not None and bool(x.grad.isfinite().all())
    assert (x.grad[3, 20:] == 0).all()  # padding gets no gradient


@pytest.mark.parametrize("setter", ["set_projection_chunk_rows", "set_batch_half_rows"])
def test_row_settings_are_checked(setter):
    set_rows = getattr(compiled, setter)
    with pytest.raises(ValueError, match="rows must be an int >= 1, got 0"):
        set_rows(0)
    old = set_rows(7)
    assert set_rows(old) == 7


def test_pure_paths_when_the_extension_cannot_be_built(monkeypatch):
    monkeypatch.setattr(compiled, "_ext", None)
    monkeypatch.setattr(compiled, "_error", "no C++ compiler")
    try:
        recurrence.set_compiled(True)
        assert rnnkit.GRU(D, 4).path.name == "fused"
        assert rnnkit.GRU(D, 4, layer_norm=True).path.name == "loop"
        assert rnnkit.LSTM(D, 4, layer_norm=True).path.name == "loop"
        out, _ = rnnkit.Bidirectional(rnnkit.LSTM(D, 4))(torch.randn(B, T, D), lengths=LENGTHS)
    finally:
        recurrence.set_compiled(False)
    assert out.shape == (B, T, 8)


@pytest.mark.parametrize("case, grad, B, want", [
    ("bi", True, 4, {("compiled", 2)}),          # training: one C++ call for both directions
    ("bi-large", False, 32, {("compiled", 2)}),  # inference, a large step: one C++ call for both
    ("uni", True, 4, {("compiled", 1)}),         # one direction, small step: the loop
    ("uni-large", False, 256, {("compiled", 1)}),  # large, inference: the loop (no probe, no size rule)
    ("uni-probed-slow", False, 4, {("fused", 1)}),  # where the probe found the loop slower: torch's kernel
    ("bi-probed-slow", True, 4, {("fused", 2)}),    # both directions in one torch call
    ("bi-chunked", True, 4, {("compiled", 1)}),  # recompute_chunk: one direction at a time, each
    ("bi-chunked-large", True, 256, {("compiled", 1)}),  # routed as one direction in training
    ("bi-mixed", False, 32, {("compiled", 1), ("fused", 1)}),  # they disagree (an RNN cell has no
                                                               # C++ loop): each on its own
    ("bi-gru", False, 32, {("compiled", 2)}),
])
def test_reported_paths_are_the_ones_that_run(case, grad, B, want, monkeypatch):
    """The paths recurrence reports for an input are what the forward pass calls: the C++ loop
    or torch's kernel, for both directions at once or one at a time; a layer's ``.path`` (no
    input) agrees, and names the probe's measurement where it sends a layer to torch's kernel."""
    recurrence.set_compiled(True)
    assert compiled.available(), compiled.error()
    calls = []
    real_compiled, real_fused = compiled.run, recurrence._fused

    def spy_compiled(cells, *args, **kwargs):
        calls.append(("compiled", len(cells)))
        return real_compiled(cells, *args, **kwargs)

    def spy_fused(cells, *args, **kwargs):
        calls.append(("fused", len(cells)))
        return real_fused(cells, *args, **kwargs)

    monkeypatch.setattr(compiled, "run", spy_compiled)
    monkeypatch.setattr(recurrence, "_fused", spy_fused)
    if case.endswith("probed-slow"):
        monkeypatch.setattr(recurrence._probe, "ratio", lambda *args: (0.5, "the probe measured 0.50x"))
    D, T = 8, 12
    layer = {
        "bi": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 16)),
        "bi-large": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 128)),
        "uni": lambda: rnnkit.LSTM(D, 16),
        "uni-large": lambda: rnnkit.LSTM(D, 16),
        "uni-probed-slow": lambda: rnnkit.LSTM(D, 16),
        "bi-probed-slow": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 16)),
        "bi-chunked": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 16, recompute_chunk=4)),
        "bi-chunked-large": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 16, recompute_chunk=4)),
        "bi-mixed": lambda: rnnkit.Bidirectional(rnnkit.LSTM(D, 16), backward_layer=rnnkit.RNN(D, 16)),
        "bi-gru": lambda: rnnkit.Bidirectional(rnnkit.GRU(D, 128)),
    }[case]()
    x = torch.randn(B, T, D)
    with torch.set_grad_enabled(grad):
        if case.startswith("uni"):
            given = recurrence.choose_path(layer.cell, x=x)
            paths, together = [given], False
        else:
            fw, bw = layer.forward_layer, layer.backward_layer
            given = recurrence.bidirectional_paths(fw.cell, bw.cell, x=x,
                                                   recompute_chunk=(fw.recompute_chunk, bw.recompute_chunk))
            paths, together = [given.forward, given.backward], given.together
        path = layer.path  # without an input: no batch size to apply the size rules to
        layer(x)
    assert set(calls) == want, calls
    assert {p.name for p in paths} == {kind for kind, _ in want}, given
    assert together == (want == {("compiled", 2)} or want == {("fused", 2)}), given
    reported = [path] if case.startswith("uni") else [path.forward, path.backward]
    assert {p.name for p in reported} == {kind for kind, _ in want}, path
    if case.endswith("probed-slow"):
        assert all("the probe measured 0.50x: torch's kernel is faster here" in p.reason for p in reported), path
