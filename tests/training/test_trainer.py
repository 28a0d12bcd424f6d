"""Trainer: logs, plots, checkpoints, schedules, clipping, early stopping, exact resume, TBPTT."""

import json

import pytest
import torch

from rnnkit import checkpoint
from rnnkit.models import LanguageModel, SequenceTagger
from rnnkit.training import TaggingMetrics, Trainer, TrainerConfig, PerplexityMetrics

TAGS = ["O", "A", "B"]


def tagging_batches(n_batches=6, B=4, T=7, V=20, seed=0):
    """Tag = A if the *next* token is even, B if odd, O for the last token: needs right context."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(2, T + 1, (B,), generator=g)
        lengths[0] = T
        inputs = torch.randint(2, V, (B, T), generator=g)
        labels = torch.full((B, T), -100)
        for b, n in enumerate(lengths.tolist()):
            inputs[b, n:] = 0
            for t in range(n):
                labels[b, t] = 0 if t == n - 1 else 1 + int(inputs[b, t + 1]) % 2
        out.append({"inputs": inputs, "lengths": lengths, "labels": labels})
    return out


def tagger(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return SequenceTagger(vocab_size=20, num_tags=3, embedding_dim=8, dropout=dropout,
                          encoder={"cell": "gru", "hidden_sizes": [8], "bidirectional": True})


def config(tmp_path, **kw):
    base = dict(epochs=3, progress=False, plots=False, out_dir=str(tmp_path / "run"),
                optimizer={"name": "adam", "lr": 0.02}, num_threads=1)
    base.update(kw)
    return TrainerConfig(**base)


def make_trainer(tmp_path, model=None, **kw):
    data = tagging_batches()
    return Trainer(model or tagger(), config(tmp_path, **kw), train=data[:4], dev=data[4:],
                   metrics=TaggingMetrics(TAGS), vocabs={"tags": {"itos": TAGS}})


def test_fit_writes_log_plot_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, epochs=4, plots=True)
    history = trainer.fit()
    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] == [r["epoch"] for r in history]
    assert {"train_loss", "lr", "tokens_per_s", "dev"} <= set(log[0])
    assert {"loss", "accuracy"} <= set(log[0]["dev"])
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    best = checkpoint.load(run / "best")
    assert best.extra["epoch"] == trainer.best_epoch
    assert best.extra["dev"]["accuracy"] == max(r["dev"]["accuracy"] for r in log)
    assert best.vocabs == {"tags": {"itos": TAGS}}
    last = checkpoint.load(run / "last")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(last.model.state_dict()[k], v)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    common = dict(scheduler={"name": "step", "step_size": 1, "gamma": 0.7},
                  optimizer={"name": "adamw", "lr": 0.02, "weight_decay": 0.01})
    full = make_trainer(tmp_path / "a", tagger(dropout=0.3), epochs=4, **common)
    full.fit()
    first = make_trainer(tmp_path / "b", tagger(dropout=0.3), epochs=2, **common)
    first.fit()
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    second = make_trainer(tmp_path / "b", tagger(dropout=0.3, seed=9), epochs=4, **common)
    second.fit(resume=True)
    assert [r["train_loss"] for r in second.history] == [r["train_loss"] for r in full.history]
    assert second.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    for k, v in full.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[k], v), k
    lines = (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.parametrize("killed", ["after logging epoch 3", "after saving epoch 2, before logging it"])
def test_a_resumed_run_logs_each_epoch_once(tmp_path, killed):
    first = make_trainer(tmp_path, tagger(), epochs=2)
    first.fit()
    log = tmp_path / "run" / "log.jsonl"
    lines = log.read_text().splitlines()
    if killed == "after logging epoch 3":  # the line of an epoch whose checkpoint never landed
        log.write_text("\n".join(lines + [json.dumps({"epoch": 3, "train_loss": 9.9})]) + "\n")
    else:
        log.write_text(lines[0] + "\n")
    make_trainer(tmp_path, tagger(), epochs=4).fit(resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert 9.9 not in [r["train_loss"] for r in records]


def test_resume_with_another_optimizer_is_refused(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    other = make_trainer(tmp_path, epochs=2, optimizer={"name": "sgd", "lr": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        other.fit(resume=True)


def test_early_stopping_when_the_dev_metric_stalls(tmp_path):
    trainer = make_trainer(tmp_path, epochs=10, patience=2, optimizer={"name": "sgd", "lr": 1e-12})
    history = trainer.fit()
    assert len(history) == 3  # best at epoch 1, then two epochs without gain
    assert "has not improved for 2 epochs" in history[-1]["early_stop"]


class _Clock:
    """A fake clock that moves only when a training step ticks it: seconds per step by epoch."""

    def __init__(self, per_step):
        self.now, self.per_step = 0.0, per_step

    def __call__(self):
        return self.now


def _ticking(tmp_path, minutes, per_step, **kw):
    from rnnkit.training.callbacks import Callback, TimeLimit

    clock = _Clock(per_step)

    class Tick(Callback):
        def on_step(self, trainer, record):
            clock.now += clock.per_step(record["epoch"])

    trainer = make_trainer(tmp_path, **kw)
    trainer.time_limit = TimeLimit(minutes, clock=clock)
    # first, where max_minutes puts it (the log line gets elapsed_seconds); the tick last
    trainer.callbacks = [trainer.time_limit, *trainer.callbacks, Tick()]
    return trainer


def test_time_limit_cuts_the_epoch_in_which_the_budget_runs_out(tmp_path):
    # 4 steps per epoch: 10 s an epoch, the third 25 s; a budget of 60 s
    trainer = _ticking(tmp_path, 1.0, lambda epoch: 6.25 if epoch == 3 else 2.5, epochs=10)
    history = trainer.fit()
    # 10, 20, 45, 55 s; epoch 5 reaches 60 s after 2 of its 4 steps and is cut there
    assert [r["elapsed_seconds"] for r in history] == [10.0, 20.0, 45.0, 55.0, 60.0]
    assert "ran out in epoch 5 after 2 of 4 steps" in history[-1]["time_limit"]
    assert trainer.step == 18 and "dev" in history[-1]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["elapsed_seconds"] == 60.0 and "time_limit" in log[-1]


def test_an_epoch_longer_than_the_whole_budget_is_cut_where_it_runs_out(tmp_path):
    # 10 s a step and a budget of 15 s: the first epoch stops before its third of 4 steps
    trainer = _ticking(tmp_path, 0.25, lambda epoch: 10.0, epochs=5)
    history = trainer.fit()
    assert len(history) == 1 and trainer.step == 2
    assert "ran out in epoch 1 after 2 of 4 steps" in history[0]["time_limit"]
    assert history[0]["elapsed_seconds"] == 20.0 and "dev" in history[0]  # evaluated as any epoch
    assert (tmp_path / "run" / "best").exists()  # and saved


def test_time_limit_from_the_config_and_its_bounds(tmp_path):
    from rnnkit.training.callbacks import TimeLimit

    trainer = make_trainer(tmp_path, epochs=2, max_minutes=30)
    assert trainer.callbacks[0] is trainer.time_limit and isinstance(trainer.time_limit, TimeLimit)
    assert trainer.time_limit.limit == 1800
    history = trainer.fit()
    assert len(history) == 2 and "time_limit" not in history[-1]
    assert 0 <= history[0]["elapsed_seconds"] <= history[1]["elapsed_seconds"]  # rounded to 0.1 s
    with pytest.raises(ValueError, match="max_minutes must be a number > 0; got 0"):
        TimeLimit(0)
    with pytest.raises(Exception, match="max_minutes"):
        config(tmp_path, max_minutes=-1)


@pytest.mark.parametrize("scheduler, expected", [
    ({"name": "step", "step_size": 1, "gamma": 0.5}, [0.05, 0.025, 0.0125]),
    ({"name": "cosine"}, [0.1 * 0.75, 0.1 * 0.25, 0.0]),
])
def test_learning_rate_schedules(tmp_path, scheduler, expected):
    trainer = make_trainer(tmp_path, epochs=3, scheduler=scheduler,
                           optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    trainer.fit()
    # the log records the lr used during each epoch; after the last step it is expected[-1]
    assert [r["lr"] for r in trainer.history] == pytest.approx([0.1, *expected[:2]])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected[-1], abs=1e-12)


def test_plateau_schedule_lowers_lr_when_the_metric_stalls(tmp_path):
    trainer = make_trainer(tmp_path, epochs=4, scheduler={"name": "plateau", "patience": 0, "factor": 0.5},
                           optimizer={"name": "sgd", "lr": 1e-6, "momentum": 0.0})
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-6


def test_gradient_norm_clipping_bounds_the_update(tmp_path):
    model = tagger()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(tmp_path, model, epochs=1, max_steps_per_epoch=1, clip_grad_norm=1e-3,
                           optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0})
    trainer.fit()
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < float(step) <= 1e-3 * (1 + 1e-4)


def test_unknown_monitor_names_the_available_metrics(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, monitor="f2")
    with pytest.raises(ValueError, match=r"trainer.monitor must be one of the dev metrics loss, accuracy; got 'f2'"):
        trainer.fit()


def test_truncated_bptt_carries_the_state_between_windows(tmp_path):
    torch.manual_seed(0)
    lm = LanguageModel(vocab_size=12, embedding_dim=8, encoder={"cell": "lstm", "hidden_sizes": [8]})
    calls = []
    original = lm.loss_and_state

    def spy(batch, state=None):
        calls.append((batch["inputs"].shape[1], state is None))
        return original(batch, state)

    lm.loss_and_state = spy
    ids = torch.arange(2, 12).repeat(4)[:33]
    batch = {"inputs": torch.stack([ids[:32], ids[1:33] * 0 + ids[:32]]), "lengths": torch.tensor([32, 32]),
             "labels": torch.stack([ids[1:33], ids[1:33]])}
    trainer = Trainer(lm, config(tmp_path, epochs=1, bptt=10), train=[batch], dev=[batch],
                      metrics=PerplexityMetrics())
    trainer.fit()
    train_calls = calls[:4]
    assert train_calls == [(10, True), (10, False), (10, False), (2, False)]
    assert trainer.step == 4
    assert trainer.history[0]["dev"]["perplexity"] > 1


def test_bptt_needs_a_head_that_carries_state(tmp_path):
    with pytest.raises(ValueError, match="trainer.bptt needs a head"):
        make_trainer(tmp_path, bptt=5)


def test_a_fresh_run_does_not_replace_an_existing_one(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    log = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(ValueError, match=r"already holds a run .*trainer.overwrite=true"):
        make_trainer(tmp_path, epochs=1).fit()
    assert (tmp_path / "run" / "log.jsonl").read_text() == log
    make_trainer(tmp_path, epochs=1, overwrite=True).fit()


def test_resuming_a_cosine_schedule_with_other_epochs_is_refused(tmp_path):
    make_trainer(tmp_path, epochs=2, scheduler={"name": "cosine"}).fit()
    with pytest.raises(ValueError, match=r"cosine schedule spans trainer.epochs = 2; resuming with epochs = 4"):
        make_trainer(tmp_path, epochs=4, scheduler={"name": "cosine"}).fit(resume=True)


def test_resume_from_a_truncated_trainer_state_is_reported(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    state = tmp_path / "run" / "last" / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(checkpoint.CheckpointError, match=r"trainer_state.safetensors: truncated or overwritten"):
        make_trainer(tmp_path, epochs=2).fit(resume=True)


@pytest.mark.parametrize("optimizer", [
    {"name": "adam", "lr": 0.01, "weight_decay": 0.01},
    {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
])
def test_the_fused_optimizer_takes_the_same_steps_as_torchs_reference_loop(tmp_path, optimizer):
    from rnnkit.training.trainer import build_optimizer

    torch.manual_seed(0)
    fused_model = tagger()
    reference = tagger()
    reference.load_state_dict(fused_model.state_dict())
    cfg = config(tmp_path, optimizer=optimizer)
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults.get("fused") is True
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer["name"]]
    args = {k: v for k, v in optimizer.items() if k != "name"}
    loop = kind(reference.parameters(), foreach=False, **args)
    for batch in tagging_batches()[:4] * 3:
        for model, opt in ((fused_model, fused), (reference, loop)):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    for (name, a), b in zip(fused_model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # and the weights moved: the comparison is not of two untouched models
    untouched = tagger().state_dict()
    assert all(not torch.equal(a, untouched[name]) for name, a in fused_model.state_dict().items())


def test_the_optimizer_falls_back_where_no_fused_kernel_applies():
    from rnnkit.training.trainer import fused_supported

    assert fused_supported([torch.zeros(2, requires_grad=True)])
    assert not fused_supported([torch.zeros(2, dtype=torch.int64)])
    assert not fused_supported([torch.zeros(2).to_sparse()])
    assert not fused_supported([])
