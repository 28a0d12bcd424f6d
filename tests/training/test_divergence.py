"""Divergence: a NaN, infinite or exploding loss (or gradient, or weight) stops training with a
message naming the step, the diverged state is never saved, a non-finite dev value is never
`best`, perplexity overflows to inf, and every JSON the trainer writes is strict JSON."""

import json
import math
import os

import pytest
import torch
from torch import nn

from rnnkit import checkpoint
from rnnkit.training import PerplexityMetrics, Trainer, TrainerConfig, evaluate_batches
from rnnkit.training.callbacks import Callback, JsonlLogger, json_safe
from rnnkit.training.metrics import perplexity
from rnnkit.training.trainer import EXPLODE_FACTOR, TrainingError


def strict_json(text):
    """json.loads accepts NaN and Infinity by default; strict JSON does not."""
    def refuse(token):
        raise AssertionError(f"not valid JSON: {token} in {text!r}")
    return json.loads(text, parse_constant=refuse)


@checkpoint.register  # so that its checkpoints load (rebuilt empty from its config, {})
class ScriptedHead(nn.Module):
    """A head whose training losses (one per step) and dev losses (one per evaluation) are given.

    ``loss`` adds ``w - w.detach()`` (zero, with gradient 1) so that every step moves the weights;
    ``grad_scale`` and ``sqrt`` (d sqrt(x)/dx at 0 is infinite) shape the gradient of a step."""

    def __init__(self, train=(), dev=(), *, grad_scale=None, sqrt_at=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.train_losses, self.dev_losses = list(train), list(dev)
        self.grad_scale, self.sqrt_at = grad_scale or {}, sqrt_at
        self.steps = self.evals = 0
        self.config = {}

    def loss(self, batch):
        zero = self.w - self.w.detach()
        if not self.training:
            value = self.dev_losses[self.evals]
            self.evals += 1
            return value + zero.sum()
        step, self.steps = self.steps, self.steps + 1
        if step == self.sqrt_at:
            return self.train_losses[step] + torch.sqrt(zero).sum()
        return self.train_losses[step] + self.grad_scale.get(step, 1.0) * zero.sum()

    def predict(self, batch):
        return torch.zeros(batch["inputs"].shape[0], dtype=torch.long)


def batches(n):
    return [{"inputs": torch.ones(2, 3, dtype=torch.long), "labels": torch.ones(2, 3, dtype=torch.long)}
            for _ in range(n)]


class Snapshots(Callback):
    """The weights at each epoch's end: what that epoch's checkpoint must hold."""

    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, record):
        self.weights[record["epoch"]] = trainer.model.w.detach().clone()


def run(tmp_path, head, *, dev=True, per_epoch=2, snapshots=None, **kw):
    cfg = dict(epochs=3, progress=False, plots=False, out_dir=str(tmp_path / "run"), num_threads=1,
               optimizer={"name": "adam", "lr": 0.1})
    cfg.update(kw)
    return Trainer(head, TrainerConfig(**cfg), train=batches(per_epoch), dev=batches(1) if dev else None,
                   callbacks=[snapshots] if snapshots else ())


# ------------------------------------------------------------------------- perplexity

def test_perplexity_of_an_overflowing_mean_nll_is_inf():
    assert perplexity(800.0 * 5, 5) == math.inf  # exp(800) overflows a float64
    assert perplexity(math.inf, 5) == math.inf
    assert perplexity(2.0 * 5, 5) == pytest.approx(math.exp(2.0))


def test_evaluating_an_overflowing_lm_writes_null_and_says_so(capsys):
    head = ScriptedHead([], dev=[800.0]).eval()
    out = evaluate_batches(head, batches(1), PerplexityMetrics())
    assert out == {"loss": 800.0, "perplexity": None}
    assert strict_json(json.dumps(out, allow_nan=False)) == out
    assert "perplexity is inf (written as null" in capsys.readouterr().err


# ------------------------------------------------------------------- stopping on divergence

@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_and_leaves_the_last_good_checkpoint(tmp_path, bad):
    snaps = Snapshots()
    head = ScriptedHead([2.0, 1.9, 1.8, bad], dev=[2.0, 1.9])
    with pytest.raises(TrainingError, match=rf"diverged at step 4 \(epoch 2\): loss is {bad}; .*"
                                            r"run[/\\]last still holds epoch 1"):
        run(tmp_path, head, snapshots=snaps).fit()
    last = checkpoint.load(tmp_path / "run" / "last")
    assert last.extra["epoch"] == 1
    assert torch.equal(last.model.w, snaps.weights[1])
    assert not torch.equal(head.w.detach(), snaps.weights[1])  # the model did move on after epoch 1


def test_a_loss_exploding_past_the_bound_stops_training(tmp_path):
    # first loss 3: the bound is 3e6. 2.9e6 is a bad step, not divergence; 6e30 is.
    head = ScriptedHead([3.0, 2.9e6, 2.0, 6e30], dev=[2.0, 1.9])
    with pytest.raises(TrainingError, match=r"at step 4 \(epoch 2\): loss is 6e\+30, over 1e\+06 x "
                                            r"max\(the run's first loss 3, 1\) = 3e\+06"):
        run(tmp_path, head).fit()
    assert checkpoint.load(tmp_path / "run" / "best").extra["epoch"] == 1
    assert checkpoint.load(tmp_path / "run" / "last").extra["epoch"] == 1


def test_the_bound_has_a_floor_of_one_for_a_tiny_first_loss(tmp_path):
    # a first loss of 1e-9 would make 1e-2 "explode" without the floor; the bound is 1e6 instead
    head = ScriptedHead([1e-9, 1e-2, 0.5e6, 2e6], dev=[1.0, 1.0])
    with pytest.raises(TrainingError, match=r"at step 4 \(epoch 2\): loss is 2e\+06"):
        run(tmp_path, head).fit()
    assert EXPLODE_FACTOR == 1e6


def test_a_resumed_run_keeps_the_first_loss_of_the_run(tmp_path):
    run(tmp_path, ScriptedHead([3.0, 2.0], dev=[2.0]), epochs=1).fit()
    # resumed: 5e6 is over 1e6 x 3 (the run's first loss), though not over 1e6 x itself
    with pytest.raises(TrainingError, match=r"at step 3 \(epoch 2\): loss is 5e\+06, over .* first loss 3,"):
        run(tmp_path, ScriptedHead([5e6, 1.0], dev=[1.0]), epochs=2).fit(resume=True)


def test_a_non_finite_gradient_stops_before_the_step(tmp_path):
    head = ScriptedHead([2.0, 1.9, 1.8], dev=[1.0], sqrt_at=2)  # d sqrt(x)/dx at 0: inf
    with pytest.raises(TrainingError, match=r"at step 3 \(epoch 2\): the gradient norm is (inf|nan) "
                                            r"\(loss 1.8\)"):
        run(tmp_path, head).fit()
    assert bool(torch.isfinite(head.w).all())  # the optimizer never took the step


def test_weights_that_overflow_on_the_last_step_are_not_saved(tmp_path):
    # SGD: the epoch's last step moves w by lr * 1e18 = 1e48, past float32's range; its loss was
    # finite, so only a look at the weights before saving can catch it
    snaps = Snapshots()
    head = ScriptedHead([2.0, 1.9, 1.8, 1.7], dev=[1.0, 1.0], grad_scale={3: 1e18})
    with pytest.raises(TrainingError, match=r"weight w holds NaN or infinite values after step 4 \(epoch 2\); "
                                            r"nothing of this epoch was saved"):
        run(tmp_path, head, snapshots=snaps, clip_grad_norm=None,
            optimizer={"name": "sgd", "lr": 1e30, "momentum": 0.0}).fit()
    last = checkpoint.load(tmp_path / "run" / "last")
    assert last.extra["epoch"] == 1 and torch.equal(last.model.w, snaps.weights[1])


# ---------------------------------------------------------------- non-finite dev values

@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_dev_value_never_makes_a_checkpoint_best(tmp_path, bad, capsys):
    trainer = run(tmp_path, ScriptedHead([2.0] * 6, dev=[bad, 5.0, 6.0]))
    trainer.fit()
    assert trainer.best_epoch == 2 and trainer.best_value == 5.0
    assert checkpoint.load(tmp_path / "run" / "best").extra["epoch"] == 2
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    log = [strict_json(line) for line in lines]
    assert log[0]["dev"] == {"loss": None} and "best" not in log[0]
    assert log[1]["best"] is True
    assert "epoch 1: dev loss is not finite; this epoch cannot become best" in capsys.readouterr().err


def test_no_finite_dev_value_in_any_epoch_is_an_error(tmp_path):
    trainer = run(tmp_path, ScriptedHead([2.0] * 4, dev=[math.nan, math.inf]), epochs=2)
    with pytest.raises(TrainingError, match=r"no epoch had a finite dev loss \(epochs 1 to 2: None, None\), "
                                            r"so this run wrote no .*best; .*last still holds epoch 2"):
        trainer.fit()
    assert not (tmp_path / "run" / "best").exists()


def test_early_stopping_reports_when_no_epoch_was_finite(tmp_path):
    trainer = run(tmp_path, ScriptedHead([2.0] * 4, dev=[math.nan, math.nan]), epochs=5, patience=2)
    with pytest.raises(TrainingError, match="no epoch had a finite dev loss"):
        trainer.fit()
    assert trainer.epoch == 2  # early stopping ended it, and formatted its note without a best value
    assert trainer.history[-1]["early_stop"] == "loss has not improved for 2 epochs (no epoch had a finite value)"


def test_jsonl_logger_writes_non_finite_values_as_null(tmp_path):
    path = tmp_path / "log.jsonl"
    JsonlLogger(path).on_epoch_end(None, {"epoch": 1, "train_loss": math.inf, "dev": {"loss": math.nan,
                                                                                 "x": [1.0, -math.inf]}})
    assert strict_json(path.read_text()) == {"epoch": 1, "train_loss": None, "dev": {"loss": None, "x": [1.0, None]}}
    assert json_safe({"a": (1, 2.5)}) == {"a": [1, 2.5]}


# ---------------------------------------------------------------------------- the CLI

CONFIG = """\
name: divergence
data: {{format: conll, train: {train}, dev: {dev}, test: {dev}}}
model:
  type: SequenceTagger
  options: {{embedding_dim: 8, encoder: {{cell: gru, hidden_sizes: [8], bidirectional: true}}}}
trainer: {{epochs: 2, batch_size: 8, optimizer: {{name: adam, lr: 0.02}}, progress: false,
           plots: false, num_threads: 1, out_dir: {out}}}
"""


@pytest.fixture
def files(tmp_path):
    lines = []
    for i in range(30):
        lines += [f"Anna{i % 3}\tB-PER", "saw\tO", "the\tO", "cat\tO", ""]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines[:40]) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt", out=tmp_path / "run"))
    return tmp_path, config


def test_cli_reports_a_diverged_run_in_one_line(files, capsys, monkeypatch):
    from rnnkit.cli import main

    tmp_path, config = files
    args = ["train", str(config), "--set", "trainer.optimizer={name: sgd, lr: 1.0e+30}"]
    monkeypatch.delenv("RNNKIT_TRACEBACK", raising=False)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rnnkit train: error: training diverged at step ")
    assert "Traceback" not in "\n".join(err)
    monkeypatch.setenv("RNNKIT_TRACEBACK", "1")
    with pytest.raises(TrainingError, match="training diverged"):
        main(args + ["--overwrite"])


def test_cli_evaluate_prints_null_for_a_nan_loss(files, capsys):
    from rnnkit.cli import main

    tmp_path, config = files
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    good = checkpoint.load(tmp_path / "run" / "best")
    model = good.model
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    checkpoint.save(tmp_path / "nan", model, vocabs=good.vocabs, extra=good.extra)
    assert main(["evaluate", str(tmp_path / "nan"), str(tmp_path / "dev.txt")]) == 0
    captured = capsys.readouterr()
    printed = strict_json(captured.out.strip().splitlines()[-1])
    assert printed["loss"] is None
    assert "loss is nan (written as null" in captured.err


@pytest.mark.skipif(os.name == "nt", reason="POSIX errors")
def test_cli_names_a_file_it_cannot_open(tmp_path, capsys, monkeypatch):
    from rnnkit.cli import main

    monkeypatch.delenv("RNNKIT_TRACEBACK", raising=False)
    assert main(["train", str(tmp_path)]) == 2  # a directory where the config file should be
    assert capsys.readouterr().err.strip() == f"rnnkit train: error: {tmp_path}: Is a directory"
    import rnnkit.run as pipeline

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.txt"))

    monkeypatch.setattr(pipeline, "evaluate", denied)
    assert main(["evaluate", str(tmp_path), str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"rnnkit evaluate: error: {tmp_path / 'x.txt'}: Permission denied"

    def no_file(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "evaluate", no_file)
    with pytest.raises(OSError, match="No space"):  # no file to name: the traceback stays
        main(["evaluate", str(tmp_path), str(tmp_path / "x.txt")])


@pytest.mark.parametrize("left, named", [("last.old", "last"), ("best", "best"), ("log.jsonl", "log.jsonl")])
def test_a_fresh_run_does_not_overwrite_what_a_killed_run_left(tmp_path, left, named):
    # a save killed between its two renames leaves last.old (which loads): that is still a run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if left == "log.jsonl":
        (run_dir / left).write_text("{}\n")
    else:
        checkpoint.save(run_dir / left, ScriptedHead())
    with pytest.raises(ValueError, match=rf"already holds a run \({named}\); resume it"):
        run(tmp_path, ScriptedHead([1.0] * 6, [1.0] * 3)).fit()
    run(tmp_path, ScriptedHead([1.0] * 6, [1.0] * 3), overwrite=True).fit()  # told to: it may
