"""rnnkit's own messages go through logging: printed to stderr by default, silenced or
redirected as any library's."""

import logging

from rnnkit import _probe


def fake_run(sizes=_probe.SIZES, rounds=_probe.ROUNDS):
    return {"version": _probe._VERSION, "ratios": {k: [2.0, 2.0, 2.0] for k in _probe._KEYS},
            "sizes": [list(s) for s in sizes], "isa": "x", "threads": 1, "when": "now"}


def test_library_messages_are_log_records_a_program_can_silence_or_redirect(monkeypatch, capsys, caplog):
    monkeypatch.setattr(_probe, "run", fake_run)
    _probe._measure(1)
    assert "rnnkit: timing the compiled recurrence" in capsys.readouterr().err  # default: stderr

    rnnkit_logger = logging.getLogger("rnnkit")
    rnnkit_logger.setLevel(logging.WARNING)  # setLevel, not .level: it clears the loggers' caches
    try:
        _probe._measure(1)
    finally:
        rnnkit_logger.setLevel(logging.INFO)
    assert capsys.readouterr().err == ""  # silenced

    monkeypatch.setattr(rnnkit_logger, "handlers", [])
    monkeypatch.setattr(rnnkit_logger, "propagate", True)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _probe._measure(1)
    assert capsys.readouterr().err == ""
    assert [r.name for r in caplog.records] == ["rnnkit._probe"]  # redirected to the program's handlers
