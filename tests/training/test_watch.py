"""trainer.watch_test / Trainer(watch=...): more sets evaluated every epoch, logged, never choosing."""

import json

import pytest
import torch

from rnnkit import checkpoint
from rnnkit.config import parse_config
from rnnkit.run import train
from rnnkit.training import TaggingMetrics, Trainer
from rnnkit.training.trainer import evaluate_batches

from test_trainer import TAGS, config, tagger, tagging_batches


def _trainer(tmp_path, watch=None, **kw):
    data = tagging_batches()
    return Trainer(tagger(dropout=0.2), config(tmp_path, **kw), train=data[:3], dev=data[3:5],
                   metrics=TaggingMetrics(TAGS), vocabs={"tags": {"itos": TAGS}}, watch=watch)


def test_a_watched_set_is_evaluated_each_epoch_and_changes_nothing_else(tmp_path):
    held = tagging_batches(seed=7)[:2]
    plain = _trainer(tmp_path / "a", epochs=3)
    plain.fit()
    watched = _trainer(tmp_path / "b", watch={"test": held}, epochs=3)
    watched.fit()
    # training, dev, the choice of best/ are those of the run without it (dropout: the model is
    # back in training mode after the extra evaluation, and no random draw was spent on it)
    assert [r["dev"] for r in watched.history] == [r["dev"] for r in plain.history]
    assert watched.best_epoch == plain.best_epoch
    for p, q in zip(plain.model.parameters(), watched.model.parameters()):
        torch.testing.assert_close(p, q)
    assert all("test" not in r for r in plain.history)
    # each epoch's record holds the set's metrics, measured on that epoch's weights
    log = [json.loads(line) for line in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert [set(r["test"]) for r in log] == [{"loss", "accuracy"}] * 3
    last = checkpoint.load(tmp_path / "b" / "run" / "last").model.eval()
    assert log[-1]["test"] == pytest.approx(evaluate_batches(last, held, TaggingMetrics(TAGS)), rel=1e-5)
    assert log[0]["test"] != log[-1]["test"]


def test_the_watched_set_is_measured_on_the_moving_average_as_dev_is(tmp_path):
    held = tagging_batches(seed=7)[:2]
    trainer = _trainer(tmp_path, watch={"test": held}, epochs=1, ema=0.8)
    trainer.fit()
    best = checkpoint.load(tmp_path / "run" / "best").model.eval()  # the average (one epoch: best)
    assert trainer.history[-1]["test"] == pytest.approx(evaluate_batches(best, held, TaggingMetrics(TAGS)),
                                                        rel=1e-5)


def test_a_watch_label_may_not_overwrite_the_record(tmp_path):
    with pytest.raises(ValueError, match="watch label 'dev' would overwrite"):
        _trainer(tmp_path, watch={"dev": tagging_batches()[:1]})
    with pytest.raises(ValueError, match=r"watch\['test'\] is None"):
        _trainer(tmp_path, watch={"test": None})


def _conll(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in rows) + "\n")
    return str(path)


def _cfg(tmp_path, **data):
    return {"data": {"format": "conll", **data},
            "model": {"type": "SequenceTagger", "options": {"embedding_dim": 8,
                                                           "encoder": {"cell": "gru", "hidden_sizes": [8]}}},
            "trainer": {"epochs": 2, "batch_size": 2, "progress": False, "plots": True, "num_threads": 1,
                        "watch_test": True, "out_dir": str(tmp_path / "run")}}


def test_watch_test_logs_the_test_file_every_epoch_and_needs_one(tmp_path):
    rows = [[("Teddy", "B-PER"), ("Roosevelt", "I-PER"), ("was", "O")], [("Teddy", "O"), ("bears", "O")]] * 3
    train_file = _conll(tmp_path, "train.conll", rows)
    test_file = _conll(tmp_path, "test.conll", rows[:2])
    summary = train(parse_config(_cfg(tmp_path, train=train_file, dev=train_file, test=test_file)))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [("test" in r) for r in log] == [True, True]
    best = [r for r in log if r["epoch"] == summary["best_epoch"]][0]
    assert best["test"] == pytest.approx(summary["test"], rel=1e-5)  # the same weights as best/
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="trainer.watch_test: true evaluates the test set .* has none"):
        parse_config(_cfg(tmp_path, train=train_file, dev=train_file))
