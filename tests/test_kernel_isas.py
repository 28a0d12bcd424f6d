"""The GEMM kernel and the gate kernels of the compiled loop, checked against reference math for every ISA.

The register tile of rnnkit/csrc/gemm.h is explicit SIMD, one version per ISA (AVX-512, AVX2+FMA,
SSE2, NEON, plain C++), chosen when the code is compiled (simd.h), and the per-row gate kernels of
cells.h are loops the compiler vectorises for that ISA: the extension built here only ever runs
one of them. As the package checks every fast path against a reference, this file builds
tests/csrc/gemm_check.cpp once per ISA (torch-free: gemm.h, vmath.h and cells.h only) and runs it:
products over shapes that hit every edge of the kernel (row remainders, partial panels, k-blocks),
both layouts of A and B, with and without accumulation, against a double-precision reference;
vtanh / vsigmoid against libm; and the row kernels (gru_row, lstm_row and their backwards,
ln_stats, layer_norm_row and its backward), float and double, H from 1 to 100, against the
equations in double, the backwards also against central differences of the reference step, with
guards around every output. A wrong tile or gate term gives a wrong value, and the program exits 1.

Targets this CPU cannot run (AVX-512 on Zen 3, NEON without qemu) are compiled only, which still
checks that simd.h picks the expected ISA (the build fails otherwise). The builds (most of this
file's time) all start at once, as many at a time as there are cores; each test waits for its own.
"""

import os
import platform
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rnnkit import _compiled as compiled

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "rnnkit" / "csrc"
SOURCE = ROOT / "tests" / "csrc" / "gemm_check.cpp"

MACHINE = platform.machine().lower()
X86 = MACHINE in ("x86_64", "amd64")
ARM = MACHINE in ("aarch64", "arm64")
CROSS_ARM = "aarch64-linux-gnu-g++"


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, ARM `Features`); None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


FLAGS = cpu_flags()


def has(*features):
    return FLAGS is not None and all(f in FLAGS for f in features)


def native_isa():
    """What simd.h picks with -march=native here; None if the flags cannot be read."""
    if ARM:
        return "neon"
    if not X86:
        return "scalar"
    if FLAGS is None:
        return None
    if has("avx512f"):
        return "avx512"
    if has("avx2", "fma"):
        return "avx2"
    return "sse2"


# id: (compiler, flags, expected ISA, x86 host only, runs here)
TARGETS = {
    "native": ("g++", ["-march=native"], native_isa(), False, True),
    "x86-64-v2": ("g++", ["-march=x86-64-v2"], "sse2", True, True),
    "x86-64-v3": ("g++", ["-march=x86-64-v3"], "avx2", True, has("avx2", "fma")),
    "x86-64-v4": ("g++", ["-march=x86-64-v4"], "avx512", True, has("avx512f")),
    "scalar": ("g++", ["-march=native", "-DRNNKIT_SIMD_SCALAR"], "scalar", False, True),
    "aarch64": (CROSS_ARM, ["-static", "-march=armv8-a"], "neon", False, None),  # None: under qemu
}


# The extension's own optimisation flags (rnnkit/_compiled.py), without its -march and defines:
# what the row kernels are vectorised with is what this file checks.
OPT_FLAGS = [f for f in compiled._flags() if not f.startswith(("-march", "-D"))]


def build_command(compiler, flags, isa, out):
    cmd = [compiler, *OPT_FLAGS, "-std=c++17", "-I", str(CSRC), *flags, str(SOURCE), "-o", str(out),
           f"-fopt-info-vec-optimized={out}.vec"]  # GCC's report of the loops it vectorised
    if isa is not None:
        cmd.insert(-4, f'-DGEMM_CHECK_ISA="{isa}"')
    return cmd


def buildable(target):
    """None if `target` can be built here, else why not."""
    compiler, _, _, x86_only, _ = TARGETS[target]
    if x86_only and not X86:
        return f"-march={target} is for x86-64 hosts, this is {MACHINE}"
    if shutil.which(compiler) is None:
        return f"{compiler} not on PATH"
    return None


@pytest.fixture(scope="module")
def builds(request, tmp_path_factory):
    """target -> (executable, future of its build): every selected target's build, started at once."""
    selected = {item.callspec.params["target"] for item in request.session.items
                if item.originalname in ("test_kernel_matches_reference", "test_row_kernels_are_vectorised")
                and hasattr(item, "callspec")}
    out = tmp_path_factory.mktemp("gemm_check")
    started = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for target in sorted(TARGETS, key=lambda t: TARGETS[t][0] == "g++"):  # the cross build (+ qemu) first
            if target in selected and buildable(target) is None:
                compiler, flags, isa, _, _ = TARGETS[target]
                exe = out / f"gemm_check_{target}"
                cmd = build_command(compiler, flags, isa, exe)
                started[target] = (exe, cmd, pool.submit(subprocess.run, cmd, capture_output=True, text=True,
                                                         timeout=300))
        yield started


def built(target, builds):
    """The executable of `target` once its build is done; skips where it cannot be built here."""
    compiler, flags, _, _, _ = TARGETS[target]
    why = buildable(target)
    if why is not None:
        pytest.skip(why)
    exe, cmd, build = builds[target]
    compile_check(compiler, flags, cmd, build.result())
    return exe


def compile_check(compiler, flags, cmd, done):
    """The outcome of building with `flags`: skip if the compiler does not know a flag, fail on any other error."""
    if done.returncode != 0:
        probe = subprocess.run([compiler, *flags, "-x", "c++", "-fsyntax-only", "-"], input="",
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"{compiler} does not accept {' '.join(flags)}: {probe.stderr.strip()[:200]}")
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernel_matches_reference(target, builds):
    _, _, isa, _, runs = TARGETS[target]
    exe = built(target, builds)
    runner = []
    if runs is None:
        qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
        runs = qemu is not None
        runner = [qemu] if qemu else []

    if not runs:
        return  # built, and simd.h chose `isa` (GEMM_CHECK_ISA): all this machine can check

    done = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    report = "\n".join(lines[:60]) + done.stderr[-2000:]
    assert lines and lines[0].startswith("isa: "), report
    if isa is not None:
        assert lines[0] == f"isa: {isa}", report
    else:  # x86 with unreadable /proc/cpuinfo: any of the x86 tiles
        assert lines[0] in ("isa: avx512", "isa: avx2", "isa: sse2"), report
    assert done.returncode == 0, report


# The row kernels (cells.h) are the one part of the loop left to the auto-vectoriser: plain
# loops over H lanes, marked RNNKIT_IVDEP. Not left to its luck: GCC must report each of them
# vectorised, on every ISA, or this fails.
ROW_KERNELS = ("gru_row", "lstm_row", "gru_row_backward", "lstm_row_backward")


def ivdep_loops():
    """(function, line) of the loop after each RNNKIT_IVDEP in cells.h, for ROW_KERNELS."""
    loops, function, marked = [], None, False
    for number, line in enumerate((CSRC / "cells.h").read_text().splitlines(), start=1):
        m = re.search(r"\bvoid (\w+)\(", line)
        if m:
            function = m.group(1)
        if "RNNKIT_IVDEP" in line and not line.lstrip().startswith("#"):
            marked = True
        elif marked and line.lstrip().startswith("for ("):
            if function in ROW_KERNELS:
                loops.append((function, number))
            marked = False
    return loops


def test_the_row_kernels_are_found():
    assert {f for f, _ in ivdep_loops()} == set(ROW_KERNELS)


@pytest.mark.parametrize("target", list(TARGETS))
def test_row_kernels_are_vectorised(target, builds):
    report = Path(f"{built(target, builds)}.vec").read_text()
    vectorised = {int(m.group(1)) for m in re.finditer(r"cells\.h:(\d+):\d+: optimized: loop vectorized", report)}
    missing = [f"{function} (cells.h:{line})" for function, line in ivdep_loops() if line not in vectorised]
    assert not missing, f"{target}: not vectorised: {', '.join(missing)}"
