"""The GEMM kernel of the compiled loop, checked against reference math for every instruction set.

The register tile of rnnkit/csrc/gemm.h is explicit SIMD, one version per ISA (AVX-512, AVX2+FMA,
SSE2, NEON, plain C++), chosen when the code is compiled (simd.h): the extension built here only
ever runs one of them. As the package checks every fast path against a reference, this file
builds tests/csrc/gemm_check.cpp once per ISA (torch-free: gemm.h and vmath.h only) and runs it:
products over shapes that hit every edge of the kernel (row remainders, partial panels, k-blocks),
both layouts of A and B, with and without accumulation, against a double-precision reference,
and vtanh / vsigmoid against libm. A wrong tile gives a wrong product, and the program exits 1.

Targets this CPU cannot run (AVX-512 on Zen 3, NEON without qemu) are compiled only, which still
checks that simd.h picks the expected ISA (the build fails otherwise).
"""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

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


def compile_check(compiler, flags, isa, out):
    """Build gemm_check for `flags`; skip if the compiler does not know a flag, fail on any other error."""
    cmd = [compiler, "-O2", "-std=c++17", "-I", str(CSRC), *flags, str(SOURCE), "-o", str(out)]
    if isa is not None:
        cmd.insert(-3, f'-DGEMM_CHECK_ISA="{isa}"')
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        probe = subprocess.run([compiler, *flags, "-x", "c++", "-fsyntax-only", "-"], input="",
                               capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"{compiler} does not accept {' '.join(flags)}: {probe.stderr.strip()[:200]}")
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernel_matches_reference(target, tmp_path):
    compiler, flags, isa, x86_only, runs = TARGETS[target]
    if x86_only and not X86:
        pytest.skip(f"-march={target} is for x86-64 hosts, this is {MACHINE}")
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not on PATH")
    runner = []
    if runs is None:
        qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
        runs = qemu is not None
        runner = [qemu] if qemu else []

    exe = tmp_path / f"gemm_check_{target}"
    compile_check(compiler, flags, isa, exe)
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
