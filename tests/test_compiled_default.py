"""The compiled path as a default: on unless turned off, never under graph capture, first-order
gradients only, and a build that tells the user it is happening."""

import os
import subprocess
import sys
import time

import pytest
import torch

import rnnkit
from rnnkit import _compiled as compiled
from rnnkit import recurrence

B, T, D, H = 3, 5, 4, 6


def path_in_fresh_process(env_value):
    env = {k: v for k, v in os.environ.items() if k != "RNNKIT_COMPILED"}
    if env_value is not None:
        env["RNNKIT_COMPILED"] = env_value
    code = "import rnnkit; print(rnnkit.GRU(4, 6).path.name, rnnkit.LSTM(4, 6).path.name)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_on_by_default_and_off_with_the_environment():
    assert compiled.available(), compiled.error()
    assert path_in_fresh_process(None) == ["compiled", "fused"]  # unpadded LSTM: oneDNN
    assert path_in_fresh_process("0") == ["fused", "fused"]


def test_graph_capture_takes_the_torch_paths(monkeypatch):
    layer = rnnkit.Bidirectional(rnnkit.GRU(D, H)).eval()
    x = torch.randn(B, T, D)
    assert layer.path.forward.name == "compiled"
    traced = torch.jit.trace(layer, (x,), check_trace=False)
    graph = str(traced.graph)
    assert "gru" in graph and "PythonOp" not in graph  # torch's kernel, no opaque C++ call
    torch.testing.assert_close(traced(x)[0], layer(x)[0], rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert layer.path.forward.name == "fused"


def test_second_derivatives_raise_instead_of_being_wrong():
    layer = rnnkit.GRU(D, H)
    assert layer.path.name == "compiled"
    x = torch.randn(B, T, D, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()
    recurrence.use_compiled(False)  # the documented way out
    (g,) = torch.autograd.grad(layer(x)[0].square().sum(), x, create_graph=True)
    g.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("seconds, told", [(0.0, False), (1.3, True)], ids=["cached", "building"])
def test_a_slow_build_says_so_on_stderr(capsys, seconds, told):
    def load(**kwargs):
        assert kwargs["name"] == "rnnkit_recurrence"
        time.sleep(seconds)
        return "module"

    assert compiled._build(load) == "module"
    err = capsys.readouterr().err
    assert ("building the compiled recurrence" in err) is told
    assert ("compiled recurrence ready (1 s)" in err) is told
