"""Every test starts with the compiled path as the process default has it (on, unless
RNNKIT_COMPILED=0): a test that switches it leaves it switched only for itself.

The probe (rnnkit/_probe.py) is off unless RNNKIT_PROBE is set: the tests check each path
against the reference math wherever it can run, whatever this CPU's timings would route;
tests/test_probe.py checks the probe and its routing."""

import os

os.environ.setdefault("RNNKIT_PROBE", "0")
# The tests' build of the compiled loop has the counters tests/test_compiled_threads.py reads
# (-DRNNKIT_TEST_HOOKS); users' builds do not.
os.environ.setdefault("RNNKIT_TEST_HOOKS", "1")

import pytest  # noqa: E402

from rnnkit import recurrence  # noqa: E402


@pytest.fixture(autouse=True)
def _compiled_default():
    before = recurrence.compiled_enabled()
    yield
    recurrence.set_compiled(before)


@pytest.fixture
def pure_paths():
    """The compiled path off: for tests of torch's fused kernels and the Python loop."""
    recurrence.set_compiled(False)
