"""trainer.ema: a moving average of the weights, evaluated on dev and kept as best/."""

import pytest
import torch

from rnnkit import checkpoint
from rnnkit.training import TaggingMetrics, Trainer, TrainerConfig
from rnnkit.training.trainer import evaluate_batches

from test_trainer import TAGS, config, tagger, tagging_batches


def _trainer(tmp_path, model, **kw):
    data = tagging_batches()
    return Trainer(model, config(tmp_path, **kw), train=data[:4], dev=data[4:], metrics=TaggingMetrics(TAGS),
                   vocabs={"tags": {"itos": TAGS}})


def test_the_average_follows_every_step_as_the_reference_recursion(tmp_path):
    decay = 0.8
    model = tagger()
    trainer = _trainer(tmp_path, model, ema=decay, epochs=1)
    avg = {n: p.detach().clone() for n, p in model.named_parameters()}
    orig = trainer._backward

    def spy(loss, value):  # the reference: avg = decay * avg + (1 - decay) * weights, per step
        orig(loss, value)
        for n, p in model.named_parameters():
            avg[n] = decay * avg[n] + (1 - decay) * p.detach()
    trainer._backward = spy
    trainer.fit()
    best = checkpoint.load(tmp_path / "run" / "best").model
    for n, p in best.named_parameters():
        torch.testing.assert_close(p, avg[n], msg=n)
    # the model keeps its own weights (last/ too), which differ from the average
    last = checkpoint.load(tmp_path / "run" / "last").model
    for (n, p), q in zip(model.named_parameters(), last.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    assert any(not torch.allclose(p, avg[n]) for n, p in model.named_parameters())
    # and dev was measured on the average
    dev = evaluate_batches(best.eval(), tagging_batches()[4:], TaggingMetrics(TAGS))
    assert trainer.history[-1]["dev"]["loss"] == pytest.approx(dev["loss"], rel=1e-5)


def test_a_resumed_average_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    full = _trainer(tmp_path / "a", tagger(), ema=0.9, epochs=3)
    full.fit()
    first = _trainer(tmp_path / "b", tagger(), ema=0.9, epochs=2)
    first.fit()
    second = _trainer(tmp_path / "b", tagger(), ema=0.9, epochs=3)
    second.fit(resume=True)
    for a, b in zip(full.ema, second.ema):
        torch.testing.assert_close(a, b)
    plain = _trainer(tmp_path / "c", tagger(), epochs=1)
    plain.fit()
    with pytest.raises(ValueError, match="holds no moving average of the weights"):
        _trainer(tmp_path / "c", tagger(), ema=0.9, epochs=2).fit(resume=True)
    # an average of other shapes (a tampered or foreign state) is named, not copied
    load_state = checkpoint.load_state

    def tampered(path):
        state = load_state(path)
        state["ema"]["0"] = torch.zeros(2, 2)
        return state
    monkeypatch.setattr(checkpoint, "load_state", tampered)
    with pytest.raises(ValueError, match=r"moving average of the weights holds tensors of shapes \[\(2, 2\)"):
        _trainer(tmp_path / "b", tagger(), ema=0.9, epochs=4).fit(resume=True)


def test_ema_must_lie_between_0_and_1():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema"):
            TrainerConfig(ema=bad)
