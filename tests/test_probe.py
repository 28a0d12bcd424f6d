"""The probe: where the compiled loop measured slower than torch's kernel on this CPU, layers of
that kind (and size) run on torch's kernel and say why; its verdicts are kept per build and
thread count, and it leaves torch's random state as it found it."""

import json
import re

import pytest
import torch

import rnnkit
from rnnkit import _compiled, _probe, recurrence
from rnnkit.cli import main

pytestmark = pytest.mark.skipif(not _compiled.available(), reason="the compiled recurrence is not built")

ALL_FAST = {k: [2.0, 2.0, 2.0] for k in _probe._KEYS}
SIZES = [[16, 32, 64], [32, 16, 128], [64, 16, 256]]


@pytest.fixture
def probe_on(monkeypatch, tmp_path):
    """The probe on, its record kept in tmp_path, no real timing: ``runs`` counts measurements
    and ``ratios`` is what the next one finds."""
    monkeypatch.setenv("RNNKIT_PROBE", "1")
    monkeypatch.setattr(_probe, "_memo", {})
    monkeypatch.setattr(_probe, "_path", lambda: str(tmp_path / "probe.json"))
    state = {"runs": 0, "ratios": dict(ALL_FAST)}

    def fake_run(sizes=_probe.SIZES, rounds=_probe.ROUNDS):
        state["runs"] += 1
        return {"version": _probe._VERSION, "ratios": {k: list(v) for k, v in state["ratios"].items()},
                "sizes": SIZES, "isa": _compiled.isa(), "threads": torch.get_num_threads(), "when": "now"}

    monkeypatch.setattr(_probe, "run", fake_run)
    state["file"] = tmp_path / "probe.json"
    return state


def test_a_kind_the_loop_loses_goes_to_torch_with_the_measured_ratio(probe_on):
    probe_on["ratios"]["gru/train/bi"] = [0.62, 0.55, 0.5]
    layer = rnnkit.Bidirectional(rnnkit.GRU(8, 16))
    x = torch.randn(4, 6, 8)
    fw, bw, _ = recurrence.bidirectional_paths(layer.forward_layer.cell, layer.backward_layer.cell, x=x,
                                               training=True)
    assert fw.name == bw.name == "fused"
    assert ("bidirectional GRU training: the compiled loop ran at 0.62x at (16, 32, 64), 0.55x at (32, 16, 128), "
            "0.50x at (64, 16, 256) (B, T, H) against torch's kernel on this CPU") in fw.reason
    assert f"probe of this {_compiled.isa()} build" in fw.reason
    # inference and the one-direction layer were measured fast: they stay on the loop
    with torch.no_grad():
        fw, _, _ = recurrence.bidirectional_paths(layer.forward_layer.cell, layer.backward_layer.cell, x=x)
    assert fw.name == "compiled"
    assert recurrence.choose_path(rnnkit.GRU(8, 16).cell, x=x).name == "compiled"
    # and the routed layer computes what the loop computes
    want = layer(x)[0]
    probe_on["ratios"]["gru/train/bi"] = [2.0, 2.0, 2.0]
    _probe._memo.clear()
    probe_on["file"].unlink()
    assert torch.allclose(layer(x)[0], want, atol=1e-5)


def test_lstm_inference_verdict_does_not_touch_training(probe_on):
    probe_on["ratios"]["lstm/infer/uni"] = [0.5, 0.5, 0.5]
    cell = rnnkit.LSTM(8, 16).cell
    x = torch.randn(2, 5, 8)
    assert recurrence.choose_path(cell, x=x).name == "compiled"  # parameters require grad: training
    with torch.no_grad():
        path = recurrence.choose_path(cell, x=x)
    assert path.name == "fused" and "LSTM inference: the compiled loop ran at 0.50x" in path.reason


@pytest.mark.parametrize("ratios, B, D, H, name", [
    ([2.0, 1.5, 0.5], 16, 64, 64, "compiled"),     # at a measured size: its ratio
    ([2.0, 1.5, 0.5], 32, 128, 128, "compiled"),
    ([2.0, 1.5, 0.5], 24, 96, 96, "compiled"),     # between two sizes: the lower ratio, 1.5
    ([2.0, 1.5, 0.5], 48, 192, 192, "fused"),      # between: 0.5
    ([2.0, 1.5, 0.5], 8, 16, 32, "compiled"),      # below the smallest, rising towards it: 2.0
    ([0.5, 1.0, 2.0], 8, 16, 32, "fused"),         # below the smallest, falling: the trend, < 0.5
    ([1.2, 1.1, 1.0], 128, 512, 512, "fused"),     # above the largest, falling: 1.0 -> 0.9
    ([1.0, 1.1, 1.2], 128, 512, 512, "compiled"),  # above, rising: 1.2
])
def test_the_verdict_follows_the_work_per_step(probe_on, ratios, B, D, H, name):
    probe_on["ratios"]["gru/infer/uni"] = ratios
    with torch.no_grad():
        path = recurrence.choose_path(rnnkit.GRU(D, H).cell, x=torch.randn(B, 2, D))
    assert path.name == name, path


def test_judged_ratio_between_and_beyond_the_sizes():
    works = [100, 1000, 10000]
    assert _probe.judged([2.0, 1.5, 0.5], works, 1000) == 1.5
    assert _probe.judged([2.0, 1.5, 0.5], works, 300) == 1.5
    assert _probe.judged([2.0, 1.5, 0.5], works, 3000) == 0.5
    assert _probe.judged([2.0, 1.5, 0.5], works, 10) == 2.0  # rising towards the smallest: kept
    # above the largest and falling by 0.1 per decade: carried on, one decade -> 0.9
    assert _probe.judged([1.2, 1.1, 1.0], works, 100000) == pytest.approx(0.9)
    assert _probe.judged([0.5, 1.0, 2.0], works, 10) == pytest.approx(0.0)


def test_a_layer_path_names_the_ratio_it_was_judged_by(probe_on):
    probe_on["ratios"]["gru/infer/uni"] = [2.0, 1.5, 0.5]
    with torch.no_grad():
        got, why = _probe.ratio(rnnkit.GRU(96, 96).cell, False, False, torch.randn(24, 2, 96))
    assert got == 1.5 and f"taken as 1.50x at this layer's B x H x (D + H) = {24 * 96 * 192:,}" in why
    # the batch unknown (a layer asked for its path): sizes disagree, so the middle one's, and why
    got, why = _probe.ratio(rnnkit.GRU(96, 96).cell, False, False, None)
    assert got == 1.5 and "the path follows each batch's size" in why
    with torch.no_grad():
        path = rnnkit.GRU(96, 96).path
    assert path.name == "compiled" and "the path follows each batch's size" in path.reason
    probe_on["ratios"]["gru/infer/uni"] = [2.0, 1.5, 1.2]  # all agree: the lowest
    _probe._memo.clear()
    probe_on["file"].unlink()
    got, why = _probe.ratio(rnnkit.GRU(96, 96).cell, False, False, None)
    assert got == 1.2 and "follows" not in why


def test_cells_the_probe_does_not_cover_stay_on_the_loop(probe_on):
    probe_on["ratios"] = {k: [0.1, 0.1, 0.1] for k in _probe._KEYS}
    cell = rnnkit.GRU(8, 16, layer_norm=True).cell
    assert recurrence.choose_path(cell, x=torch.randn(2, 3, 8)).name == "compiled"
    assert probe_on["runs"] == 0  # nothing probed for it


def test_verdicts_are_kept_per_build_and_thread_count(probe_on, monkeypatch):
    first = _probe.verdicts()
    assert probe_on["runs"] == 1 and _probe.verdicts() is first
    _probe._memo.clear()
    assert _probe.verdicts()["ratios"] == first["ratios"] and probe_on["runs"] == 1  # read back
    kept = json.loads(probe_on["file"].read_text())
    assert set(kept) == {str(torch.get_num_threads())}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    _probe.verdicts()
    assert probe_on["runs"] == 2 and set(json.loads(probe_on["file"].read_text())) >= {"7"}
    _probe.verdicts(again=True)
    assert probe_on["runs"] == 3


@pytest.mark.parametrize("content", ["not json", '{"2": {"version": 2, "ratios": {"gru/train/uni": -1}}}', "[]",
                                     '{"2": {"version": 2, "ratios": "fast"}}',
                                     # records of earlier probes' formats (one size; two sizes)
                                     json.dumps({"2": {"ratios": {k: 2.0 for k in _probe._KEYS}}}),
                                     json.dumps({"2": {"version": 2, "sizes": SIZES[::2],
                                                       "ratios": {k: [2.0, 2.0] for k in _probe._KEYS}}})])
def test_an_unreadable_or_foreign_record_is_measured_again(probe_on, monkeypatch, content):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    probe_on["file"].write_text(content)
    assert _probe.verdicts()["ratios"] == ALL_FAST and probe_on["runs"] == 1


def test_probe_off_and_its_spellings(monkeypatch):
    for value, on in [("0", False), ("off", False), ("1", True), ("yes", True), ("", True)]:
        monkeypatch.setenv("RNNKIT_PROBE", value)
        assert _probe.enabled() is on
    monkeypatch.setenv("RNNKIT_PROBE", "0")
    assert _probe.ratio(rnnkit.GRU(2, 3).cell, True, True, None) is None
    monkeypatch.setenv("RNNKIT_PROBE", "sometimes")
    with pytest.raises(ValueError, match=r"RNNKIT_PROBE='sometimes': expected 1/true/yes/on"):
        _probe.enabled()


def test_a_real_probe_measures_every_kind_and_keeps_the_random_state():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    record = _probe.run(sizes=((4, 3, 8), (6, 2, 16), (8, 2, 24)), rounds=1)
    assert torch.equal(torch.rand(3), want)
    assert set(record["ratios"]) == set(_probe._KEYS)
    assert all(len(v) == 3 and min(v) > 0 for v in record["ratios"].values())
    assert record["isa"] == _compiled.isa() in ("avx512", "avx2", "neon", "sse2", "scalar")


def test_build_prints_the_probe_and_its_routes(probe_on, capsys):
    probe_on["ratios"]["lstm/train/uni"] = [0.8, 0.75, 0.7]
    probe_on["ratios"]["gru/infer/bi"] = [1.5, 1.2, 0.6]
    assert main(["build"]) == 0
    out = capsys.readouterr().out
    assert f"GEMM kernel {_compiled.isa()}" in out
    assert re.search(r"\n  LSTM training +0\.80x  0\.75x  0\.70x  -> torch's kernel\n", out)
    assert re.search(r"\n  bidirectional GRU inference +1\.50x  1\.20x  0\.60x  -> compiled loop for small layers\n", out)
    assert re.search(r"\n  GRU training +2\.00x  2\.00x  2\.00x  -> compiled loop\n", out)
    assert main(["build", "--probe"]) == 0 and probe_on["runs"] == 2


def test_build_says_when_the_probe_is_off(monkeypatch, capsys):
    monkeypatch.setenv("RNNKIT_PROBE", "0")
    assert main(["build"]) == 0
    assert "probe: off (RNNKIT_PROBE=0)" in capsys.readouterr().out


def test_a_probe_asked_for_under_inference_mode_still_times_training():
    with torch.inference_mode():
        record = _probe.run(sizes=((2, 2, 4), (3, 2, 6), (4, 2, 8)), rounds=1)
    assert all(len(v) == 3 and min(v) > 0 for v in record["ratios"].values())


def test_a_failed_probe_sends_layers_to_torch_and_says_why(probe_on, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(_probe, "run", broken)
    with pytest.warns(RuntimeWarning, match=r"the probe of the compiled recurrence failed \(MemoryError: no room\)"):
        path = recurrence.choose_path(rnnkit.GRU(8, 16).cell, x=torch.randn(2, 3, 8))
    assert path.name == "fused" and "the probe of this" in path.reason and "failed (MemoryError: no room)" in path.reason
    assert not probe_on["file"].exists()  # not kept: the next process probes again
    assert main(["build"]) == 1
    assert "probe: failed (MemoryError: no room)" in capsys.readouterr().err


def test_prepare_runs_the_probe_before_the_first_layer_needs_it(probe_on):
    recurrence.prepare()
    assert probe_on["runs"] == 1
    recurrence.choose_path(rnnkit.GRU(8, 16).cell, x=torch.randn(2, 3, 8))
    assert probe_on["runs"] == 1  # the layer found it done


def test_a_probe_kept_by_another_process_while_this_one_waited_is_read_not_redone(probe_on, monkeypatch):
    # this process found nothing, then waited for the lock while another process probed
    reads = iter([None, {"version": _probe._VERSION, "ratios": {k: [3.0, 3.0, 3.0] for k in _probe._KEYS},
                         "sizes": SIZES, "isa": "avx2", "threads": 2, "when": "then"}])
    monkeypatch.setattr(_probe, "_read", lambda threads: next(reads))
    assert _probe.verdicts()["when"] == "then" and probe_on["runs"] == 0


def test_a_mostly_padded_batch_goes_to_torchs_packed_kernel(probe_on):
    # The loop runs every row to the longest sequence; torch's packed kernel only the real
    # steps. Measured at 1.5x on full batches, the loop is taken as 1.5 x the real share --
    # for a layer whose steps are mostly arithmetic (work at least the probe's middle size).
    probe_on["ratios"]["gru/infer/bi"] = [1.5, 1.5, 1.5]
    layer = rnnkit.Bidirectional(rnnkit.GRU(128, 128)).eval()
    x = torch.randn(32, 10, 128)  # B x H x (D + H) = the middle size's
    sparse = torch.tensor([10] + [1] * 31)  # 41 of 320 steps real: 1.5 x 0.128 < 0.97
    dense = torch.tensor([10] * 30 + [9, 8])  # 317 of 320
    assert recurrence.padding_fill(sparse, 10) == pytest.approx(41 / 320)

    def paths(layer, x, lengths):
        fill = recurrence.padding_fill(lengths, x.shape[1])
        return recurrence.bidirectional_paths(layer.forward_layer.cell, layer.backward_layer.cell,
                                              x=x, padded=True, fill=fill)

    with torch.no_grad():
        fw, bw, together = paths(layer, x, sparse)
        assert fw.name == bw.name == "fused" and together
        assert "13% of this padded batch's steps are real, so about 0.19x" in fw.reason
        assert paths(layer, x, dense).forward.name == "compiled"
        # a small layer's steps are mostly fixed cost: padding does not move it
        small = rnnkit.Bidirectional(rnnkit.GRU(8, 16)).eval()
        assert paths(small, torch.randn(32, 10, 8), sparse).forward.name == "compiled"
        # what each batch runs on gives what the loop gives
        calls = []
        real_run = recurrence._compiled.run
        recurrence._compiled.run = lambda *a, **k: calls.append(1) or real_run(*a, **k)
        try:
            out_sparse = layer(x, lengths=sparse)[0]
            assert not calls
            layer(x, lengths=dense)
            assert calls
        finally:
            recurrence._compiled.run = real_run
        recurrence.set_compiled(False)
        try:
            torch.testing.assert_close(out_sparse, layer(x, lengths=sparse)[0])
        finally:
            recurrence.set_compiled(True)
