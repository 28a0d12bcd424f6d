"""Where rnnkit's own messages go: the ``rnnkit`` logger of Python's ``logging``.

The library tells its user about slow one-time work (building the compiled loop, timing it
against torch's kernels) and about a run (a resumed run's state, a non-finite metric) as
INFO or WARNING records of loggers under ``rnnkit``. By default they are printed to stderr,
one line each, as before; a program can silence or redirect them like any library's::

    logging.getLogger("rnnkit").setLevel(logging.WARNING)    # only warnings
    logging.getLogger("rnnkit").handlers.clear()             # nothing printed by rnnkit ...
    logging.getLogger("rnnkit").propagate = True             # ... and the app's handlers get it

The CLI's own output (results, tables, the demo's report) is not logging: it is what a
command prints.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["get_logger"]


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (a test's capture, a
    notebook's redirected stream), not on the one there was at import."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler sets it in __init__; the property decides
        pass


_root = logging.getLogger("rnnkit")
if not _root.handlers:
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    _root.addHandler(_handler)
    _root.setLevel(logging.INFO)
    # A program that configures logging itself would otherwise print each line twice.
    _root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """The logger of one rnnkit module (``get_logger(__name__)``), under ``rnnkit``."""
    return logging.getLogger(name)
