"""The compiled path as a default: on unless turned off, never under graph capture, first-order
gradients only, and a build that tells the user it is happening."""

import os
import re
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
    assert path_in_fresh_process(None) == ["compiled", "compiled"]
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


@pytest.mark.parametrize("loss", ["linear", "square"])
def test_second_derivatives_raise_instead_of_being_wrong(loss):
    layer = rnnkit.GRU(D, H)
    assert layer.path.name == "compiled"
    x = torch.randn(B, T, D, requires_grad=True)
    out = layer(x)[0]
    y = out.sum() if loss == "linear" else out.square().sum()  # linear: torch's own check sees nothing
    with pytest.raises(RuntimeError, match=r"first-order gradients only.*set_compiled\(False\)"):
        torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.functional.hessian(lambda v: layer(v)[0].sum(), x)
    recurrence.set_compiled(False)  # the documented way out
    (g,) = torch.autograd.grad(layer(x)[0].square().sum(), x, create_graph=True)
    g.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("seconds, told", [(0.0, False), (2.0, True)], ids=["cached", "building"])
def test_a_slow_build_says_so_on_stderr(capsys, seconds, told):
    def load(**kwargs):
        assert kwargs["name"] == compiled._build_name()
        time.sleep(seconds)
        return "module"

    assert compiled._build(load) == "module"
    err = capsys.readouterr().err
    assert ("building the compiled recurrence" in err) is told
    assert bool(re.search(r"compiled recurrence ready \(\d+ s\)", err)) is told


def test_a_failed_build_does_not_say_ready(capsys):
    def load(**kwargs):
        time.sleep(2.0)  # the notice comes after 1 s; leave a loaded machine time to print it
        raise RuntimeError("Error building extension\nx.cpp:1:1: error: boom\nninja: build stopped")

    with pytest.raises(RuntimeError):
        compiled._build(load)
    err = capsys.readouterr().err
    assert "compiled recurrence failed" in err and "ready" not in err
    assert compiled._reason(RuntimeError("Error building extension\nx.cpp:1:1: error: boom\nninja: build stopped")) \
        == "RuntimeError: x.cpp:1:1: error: boom"


def test_stale_build_lock_is_removed(tmp_path, monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.write_text("")
    compiled._clear_stale_lock("x")
    assert lock.exists()  # fresh: another process may be building
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="removing a build lock left 60 min ago"):
        compiled._clear_stale_lock("x")
    assert not lock.exists()


def test_build_name_follows_source_flags_march_torch_and_environment(monkeypatch, tmp_path):
    name = compiled._build_name()
    assert name.startswith("rnnkit_recurrence_") and name == compiled._build_name()
    seen = {name}

    def differs():
        now = compiled._build_name()
        assert now not in seen
        seen.add(now)

    monkeypatch.setenv("RNNKIT_MARCH", "x86-64-v2")
    differs()
    monkeypatch.setattr(compiled, "_flags", lambda: ["-O3", "-DX"])
    differs()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    differs()
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other-venv" / "torch" / "__init__.py"))
    differs()
    # every header of csrc/ is part of the key, not only the .cpp that includes them
    fake = tmp_path / "csrc"
    fake.mkdir()
    for f in os.listdir(compiled._CSRC):
        (fake / f).write_bytes(open(os.path.join(compiled._CSRC, f), "rb").read())
    monkeypatch.setattr(compiled, "_CSRC", str(fake))
    differs()  # the same source in another checkout: torch's build.ninja there names other paths
    before = compiled._build_name()
    (fake / "gemm.h").write_text((fake / "gemm.h").read_text() + "\n// changed\n")
    assert compiled._build_name() != before


def test_test_counters_are_only_in_the_tests_build(monkeypatch):
    monkeypatch.delenv("RNNKIT_TEST_HOOKS")
    assert "-DRNNKIT_TEST_HOOKS" not in compiled._flags()  # what users build
    monkeypatch.setenv("RNNKIT_TEST_HOOKS", "1")
    assert "-DRNNKIT_TEST_HOOKS" in compiled._flags()  # what tests/conftest.py asks for
    assert hasattr(compiled._ext, "jobs_on_workers") and hasattr(compiled._ext, "gemm_splits")


def test_march_override_is_checked(monkeypatch):
    monkeypatch.setenv("RNNKIT_MARCH", "x86-64-v3")
    assert "-march=x86-64-v3" in compiled._flags()
    monkeypatch.setenv("RNNKIT_MARCH", "native; rm -rf /")
    with pytest.raises(ValueError, match=r"RNNKIT_MARCH='native; rm -rf /': expected a -march value"):
        compiled._flags()


def test_environment_switch_spellings(monkeypatch):
    for value, on in [("0", False), ("off", False), ("False", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv("RNNKIT_COMPILED", value)
        assert recurrence._compiled_from_environment() is on
    monkeypatch.setenv("RNNKIT_COMPILED", "maybe")
    with pytest.raises(ValueError, match=r"RNNKIT_COMPILED='maybe': expected 1/true/yes/on"):
        recurrence._compiled_from_environment()


def test_transforms_autocast_and_other_dtypes_take_the_torch_paths():
    layer = rnnkit.GRU(D, H)
    x = torch.randn(B, T, D)
    want = layer(x)[0]
    # torch.func: per-sample gradients through the layer
    params = dict(layer.named_parameters())

    def loss(p, xi):
        return torch.func.functional_call(layer, p, (xi[None],))[0].sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    assert per_sample["cell.weight_hh"].shape == (B, *layer.cell.weight_hh.shape)
    # CPU autocast hands the layer bfloat16 inputs, and decides the precision of the layer itself
    linear = torch.nn.Linear(D, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(linear(x))[0]
        assert layer.path.name == "fused"
    assert out.dtype == torch.bfloat16
    assert layer.path.name == "compiled"
    # float64 input, float32 weights: the error torch's own path gives, not the C++ loop's
    with pytest.raises(RuntimeError) as ours:
        layer(x.double())
    recurrence.set_compiled(False)
    with pytest.raises(RuntimeError) as pure:
        layer(x.double())
    recurrence.set_compiled(True)
    assert str(ours.value) == str(pure.value)
    torch.testing.assert_close(layer(x)[0], want)


def test_a_compiler_without_openmp_still_builds_the_loop(monkeypatch):
    """If the build with -fopenmp fails, rnnkit builds again without it and says so."""
    built = []

    def fake_build(load):
        built.append(list(compiled._OPENMP))
        if compiled._OPENMP:
            raise RuntimeError("cc1plus: error: unrecognized command-line option '-fopenmp'")
        return "module"

    monkeypatch.setattr(compiled, "_OPENMP", ["-fopenmp"])
    monkeypatch.setattr(compiled, "_build", fake_build)
    with pytest.warns(RuntimeWarning, match="built without -fopenmp .*unrecognized command-line option"):
        assert compiled._build_with_or_without_openmp(None) == "module"
    assert built == [["-fopenmp"], []]
    monkeypatch.setattr(compiled, "_OPENMP", [])  # without OpenMP to begin with: no second try
    monkeypatch.setattr(compiled, "_build", lambda load: (_ for _ in ()).throw(RuntimeError("no compiler")))
    with pytest.raises(RuntimeError, match="no compiler"):
        compiled._build_with_or_without_openmp(None)


def test_only_an_openmp_failure_is_built_again_without_it(monkeypatch):
    calls = []

    def fake_build(load):
        calls.append(list(compiled._OPENMP))
        raise RuntimeError("recurrence.cpp:12:3: error: 'foo' was not declared in this scope")

    monkeypatch.setattr(compiled, "_OPENMP", ["-fopenmp"])
    monkeypatch.setattr(compiled, "_build", fake_build)
    with pytest.raises(RuntimeError, match="was not declared"):
        compiled._build_with_or_without_openmp(None)
    assert calls == [["-fopenmp"]]  # one build: the error was not about OpenMP


def test_no_compiler_is_one_line_without_torchs_banners(monkeypatch, tmp_path, recwarn, capfd):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no c++, no ninja
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled, "_ext", None)
    monkeypatch.setattr(compiled, "_error", None)
    monkeypatch.setattr(compiled, "_ninja_on_path", lambda: None)
    assert compiled._load() is None
    assert compiled.error() == ("RuntimeError: no C++ compiler: c++ = 'c++' is not on PATH (install g++ or "
                                "clang++, or set CXX)")
    messages = [str(w.message) for w in recwarn]
    assert len(messages) == 1 and "could not be built (RuntimeError: no C++ compiler" in messages[0]
    assert capfd.readouterr().err == ""  # no compiler-version banners from torch
