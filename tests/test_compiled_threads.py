"""The compiled loop on torch's threads: the two directions of a layer run concurrently, and a
single direction uses a second thread when torch has two -- as two halves of the batch, one
per thread, when the batch can be halved; otherwise in forward the second thread projects the
inputs of the next chunk of steps while the first runs the steps of this one, and in backward
it takes half of the rows of each big product (weight gradients, input gradient). The results
must equal the one-thread run to the bit (the weight gradients of halves: to rounding, as
they are summed), and the reference cells to 1e-10."""

import pytest
import torch

from rnnkit import _compiled as compiled
from rnnkit.cells import GRUCell, LayerNormLSTMCell, LSTMCell

from test_compiled import reference


# torch.set_num_threads can be called again and again under the OpenMP backend only (the
# native thread pool fixes its size at first use): the tests that switch it need that.
switches_threads = pytest.mark.skipif(
    "parallel backend: OpenMP" not in torch.__config__.parallel_info(),
    reason="needs torch's OpenMP backend to change the thread count between calls")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@switches_threads
def test_the_two_directions_run_on_two_of_torchs_threads(threads):
    """The backward direction runs on torch's second intra-op thread, concurrently with the
    forward one on the caller's: in the forward pass and again in backward through time. (With
    torch's OpenMP backend this needs the extension built with -fopenmp: without it the
    parallel region in ATen's header is compiled away and both run on the caller's thread.)"""
    assert compiled.available(), compiled.error()
    layer = GRUCell(5, 7)
    x = torch.randn(3, 9, 5, requires_grad=True)
    states = [layer.initial_state(3, x)] * 2
    counts = []
    for n in (1, 2):
        torch.set_num_threads(n)
        before = compiled._ext.jobs_on_workers()
        out, _ = compiled.run([layer, layer], x, states, None, reverse=[False, True])
        out.sum().backward()
        counts.append(compiled._ext.jobs_on_workers() - before)
    assert counts == [0, 2], counts


def one_direction(cls, B, T, D, H, seed):
    """A one-direction float64 problem, every number from one seeded generator: the cell, x
    (requires grad), lengths (the first full), the initial state and the weights of the loss."""
    gen = torch.Generator().manual_seed(seed)
    cell = cls(D, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3 + (1 if p.dim() == 1 else 0))
    x = torch.randn(B, T, D, dtype=torch.float64, generator=gen, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    h = torch.randn(B, H, dtype=torch.float64, generator=gen)
    state = (h, torch.randn(B, H, dtype=torch.float64, generator=gen)) if cell.is_lstm else h
    w = torch.randn(B, T, H, dtype=torch.float64, generator=gen)
    return cell, x, lengths, state, w


def on_one_then_two_threads(cell, x, lengths, state, w, reverse):
    """Output and gradients (x, then the parameters) on one thread, then on two; and per run the
    products split and the jobs run on a thread other than the caller's."""
    results, splits, on_workers = [], [], []
    for n in (1, 2):
        torch.set_num_threads(n)
        before, workers_before = compiled._ext.gemm_splits(), compiled._ext.jobs_on_workers()
        out, _ = compiled.run([cell], x, [state], lengths, reverse=[reverse])
        results.append((out, torch.autograd.grad((out * w).sum(), [x, *cell.parameters()])))
        splits.append(compiled._ext.gemm_splits() - before)
        on_workers.append(compiled._ext.jobs_on_workers() - workers_before)
    return results, splits, on_workers


def assert_reference(cell, x, lengths, state, w, reverse, out, grads, tol):
    want, _ = reference(cell, x, state, lengths, reverse)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    for a, b in zip(grads, torch.autograd.grad((want * w).sum(), [x, *cell.parameters()])):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@switches_threads
@pytest.mark.parametrize("chunk_rows", [256, 13, 40], ids=["3-chunks", "46-chunks", "16-chunks"])
@pytest.mark.parametrize("cls", [GRUCell, LSTMCell], ids=["gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "bw"])
def test_one_direction_on_two_threads_equals_one_thread(cls, reverse, chunk_rows, threads):
    assert compiled.available(), compiled.error()
    # 598 rows (odd: no halves), G*H = 192 or 256, D = 256: 29M multiply-adds or more of
    # projection, enough for the pipeline (2M), and backward's products of 256-row chunks split
    # (2M), leftover rows too
    problem = one_direction(cls, 13, 46, 256, 64, seed=11)
    old_rows = compiled.set_projection_chunk_rows(chunk_rows)
    try:
        results, splits, on_workers = on_one_then_two_threads(*problem, reverse)
    finally:
        compiled.set_projection_chunk_rows(old_rows)
    # On two threads only: forward's projections ran on torch's other thread, ahead of the
    # steps (one job), and backward split dW_hh, dW_ih and dx per chunk of steps where the
    # product is large enough (with 256-row chunks, most of them), each time its second half on
    # torch's other thread
    assert splits[0] == 0 and splits[1] >= (6 if chunk_rows == 256 else 0), splits
    assert on_workers == [0, splits[1] + 1], (on_workers, splits)
    (out1, g1), (out2, g2) = results
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert_reference(*problem, reverse, out2, g2, tol=1e-10)


@switches_threads
@pytest.mark.parametrize("cls", [GRUCell, LSTMCell, LayerNormLSTMCell], ids=["gru", "lstm", "ln_lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fw", "bw"])
def test_one_direction_in_two_batch_halves(cls, reverse, threads):
    """A batch of 16 rows (two halves of 8) runs as two halves on two threads, forward and
    backward, with no split product; outputs and the input gradient equal one thread's to the
    bit (each row's arithmetic is the same), weight gradients to rounding."""
    assert compiled.available(), compiled.error()
    problem = one_direction(cls, 16, 23, 9, 12, seed=5)
    cell, x, lengths, state, _ = problem
    results, splits, on_workers = on_one_then_two_threads(*problem, reverse)
    assert splits == [0, 0] and on_workers == [0, 2], (splits, on_workers)  # a half each pass
    (out1, (dx1, *g1)), (out2, (dx2, *g2)) = results
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    with torch.no_grad():  # inference: halves too, each with its own two rows of state
        before = compiled._ext.jobs_on_workers()
        out3, _ = compiled.run([cell], x, [state], lengths, reverse=[reverse])
        assert compiled._ext.jobs_on_workers() - before == 1
    torch.testing.assert_close(out3, out1, rtol=0, atol=0)
    torch.testing.assert_close(dx2, dx1, rtol=0, atol=0)
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # the layer norms over H = 12 values amplify rounding: ~1e-10 on gradients of ~1
    assert_reference(*problem, reverse, out2, (dx2, *g2), tol=1e-9)


OUT_OF_MEMORY = """
import resource, torch, rnnkit
torch.set_num_threads(2)
layer = rnnkit.Bidirectional(rnnkit.GRU(1, 1))
assert layer.path.forward.name == "compiled"
x = torch.randn(64, 20000, 1, requires_grad=True)
layer(x[:, :10])[0].sum().backward()
size = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
raised = 0
for extra_mb in (60, 120, 200, 300):
    resource.setrlimit(resource.RLIMIT_AS, (size + extra_mb * 2**20, hard))
    try:
        layer(x)[0].sum().backward()
    except (RuntimeError, MemoryError):
        raised += 1
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
print("raised", raised)
"""


def test_out_of_memory_inside_the_loop_is_a_python_error():
    # A failed allocation in a direction's thread used to end the process (std::terminate);
    # it must come back as an exception that training code can catch. Several limits, so
    # that some fail inside the C++ threads and not only in torch's allocator.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 1, done.stdout


def test_concurrent_calls_never_share_scratch(threads):
    """Python threads calling the loop at once (the GIL is released inside) each get their own
    pooled scratch buffers: results equal the same calls made one after the other."""
    import threading

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(5)
    cells = [GRUCell(6, 8), GRUCell(6, 8)]
    inputs = [torch.randn(5, 40, 6, generator=gen) for _ in range(4)]

    def run(x):
        with torch.no_grad():
            states = [c.initial_state(x.shape[0], x) for c in cells]
            return compiled.run(cells, x, states, None, reverse=[False, True])[0]

    want = [run(x) for x in inputs]
    torch.set_num_threads(1)  # the two directions one after the other: the same numbers
    for x, w in zip(inputs, want):
        torch.testing.assert_close(run(x), w, rtol=0, atol=0)
    torch.set_num_threads(2)
    got = [None] * len(inputs)

    def worker(i):
        for _ in range(20):
            got[i] = run(inputs[i])

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    from rnnkit import recurrence

    assert recurrence.release_scratch() > 0  # the pool held the buffers between calls
    assert recurrence.release_scratch() == 0
