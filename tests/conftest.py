"""Every test starts with the compiled path as the process default has it (on, unless
RNNKIT_COMPILED=0): a test that switches it leaves it switched only for itself."""

import pytest

from rnnkit import recurrence


@pytest.fixture(autouse=True)
def _compiled_default():
    before = recurrence._use_compiled
    yield
    recurrence.use_compiled(before)


@pytest.fixture
def pure_paths():
    """The compiled path off: for tests of torch's fused kernels and the Python loop."""
    recurrence.use_compiled(False)
