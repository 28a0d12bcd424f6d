"""Gradients through time: record_states keeps dL/dh_t of every step; the report maps a backward
direction's steps to positions; the CLI writes the curves for a checkpoint and an untrained twin."""

import json

import pytest
import torch
from torch import nn
import rnnkit
from rnnkit import recurrence
from rnnkit.inspect import gradients_through_time

from tiny_runs import train_teddy_tagger  # tests/tiny_runs.py


class Probe(nn.Module):
    """loss = <w, out[:, position]> over a Bidirectional tanh RNN whose recurrent weights are 0:
    then h_t depends on x_t alone, and dL/dh_t is w's half exactly where out[:, position] reads
    that direction's h at position, and 0 everywhere else."""

    def __init__(self, position: int):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = rnnkit.Bidirectional(rnnkit.RNN(3, 4))
        with torch.no_grad():
            for layer in (self.rnn.forward_layer, self.rnn.backward_layer):
                layer.cell.weight_hh.zero_()
        self.w = torch.randn(8)
        self.position = position

    def loss(self, batch):
        out, _ = self.rnn(batch["x"], lengths=batch["lengths"])
        return (out[:, self.position] * self.w).sum()


def test_record_states_gives_dl_dh_at_each_position_both_directions():
    model = Probe(position=1)
    batch = {"x": torch.randn(3, 5, 3), "lengths": torch.tensor([5, 2, 4])}
    report = gradients_through_time(model, batch)
    (fw, bw) = report["layers"]
    assert (fw["layer"], fw["direction"]) == ("rnn.forward_layer", "forward")
    assert (bw["layer"], bw["direction"]) == ("rnn.backward_layer", "backward")
    assert fw["rows_by_position"] == [3, 3, 2, 2, 1]
    for entry, half in ((fw, model.w[:4]), (bw, model.w[4:])):
        norms = entry["norm_by_position"]
        assert norms[1] == pytest.approx(float(half.norm()), rel=1e-5)  # the position the loss reads
        assert all(n == 0 for i, n in enumerate(norms) if i != 1)  # no recurrence: nothing else


def test_gradients_fade_back_through_time_in_a_tanh_rnn():
    torch.manual_seed(1)
    model = Probe(position=-1)
    with torch.no_grad():  # small recurrent weights: each step back multiplies by a contraction
        for layer in (model.rnn.forward_layer, model.rnn.backward_layer):
            layer.cell.weight_hh.copy_(0.3 * torch.eye(4))
    batch = {"x": torch.randn(2, 12, 3), "lengths": torch.tensor([12, 12])}
    fw = gradients_through_time(model, batch)["layers"][0]["norm_by_position"]
    assert all(a < b for a, b in zip(fw, fw[1:]))  # the loss reads the last step: earlier is smaller
    assert fw[0] < 1e-4 * fw[-1]


def test_recording_leaves_the_model_and_the_paths_as_they_were():
    layer = rnnkit.GRU(3, 4)
    x = torch.randn(2, 5, 3)
    with recurrence.record_states() as runs:
        assert recurrence.choose_path(layer.cell, x=x).name == "loop"
        with torch.no_grad():
            layer(x)
    assert len(runs) == 1 and len(runs[0][3]) == 5
    assert recurrence.choose_path(layer.cell, x=x).name != "loop" or not recurrence.compiled_enabled()


def test_cli_inspect_gradients_writes_curves_for_the_checkpoint_and_an_untrained_twin(tmp_path, capsys):
    from rnnkit.cli import main

    data = train_teddy_tagger(tmp_path, copies=4, epochs=1, options={
        "embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8, 8], "bidirectional": True}})
    assert main(["inspect", "gradients", str(tmp_path / "run" / "best"), str(data), "--out", str(tmp_path / "g")]) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "g" / "gradients.json").read_text())
    assert set(report) == {"trained", "untrained"} and (tmp_path / "g" / "gradients.png").stat().st_size > 1000
    layers = [(e["layer"], e["direction"]) for e in report["trained"]["layers"]]
    assert layers == [("encoder.layers.0.forward_layer", "forward"), ("encoder.layers.0.backward_layer", "backward"),
                      ("encoder.layers.1.forward_layer", "forward"), ("encoder.layers.1.backward_layer", "backward")]
    assert all(len(e["norm_by_position"]) == 5 for e in report["trained"]["layers"])
    assert summary["trained"]["loss"] != summary["untrained"]["loss"]
