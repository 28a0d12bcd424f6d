"""Every head survives rnnkit.checkpoint: weights + ``config`` rebuild the same model."""

import pytest
import torch

from rnnkit.models import (Forecaster, Generator, LanguageModel, Seq2Seq, SequenceClassifier,
                           SequenceTagger, make_windows)

checkpoint = pytest.importorskip("rnnkit.checkpoint")

TOKENS = {"inputs": torch.tensor([[4, 5, 6], [7, 8, 0]]), "lengths": torch.tensor([3, 2])}
PAIRS = dict(TOKENS, targets=torch.tensor([[2, 4, 3], [2, 3, 0]]), target_lengths=torch.tensor([3, 2]))


def _heads():
    torch.manual_seed(0)
    series = make_windows(torch.randn(12, 2), window=4, horizon=2)
    yield SequenceClassifier(num_classes=2, vocab_size=10, pooling="attention",
                             encoder={"bidirectional": True, "hidden_sizes": [4]}), TOKENS
    yield SequenceTagger(vocab_size=10, num_tags=3, output="crf", tags=["O", "B-X", "I-X"], constraints="bio",
                         char_vocab_size=6, encoder={"hidden_sizes": [4]}), dict(TOKENS, chars=torch.ones(2, 3, 2, dtype=torch.long))
    yield LanguageModel(vocab_size=10, tie_weights=True, encoder={"hidden_sizes": [4], "cell": "lstm"}), TOKENS
    yield Seq2Seq(source_vocab_size=10, target_vocab_size=6, encoder={"hidden_sizes": [4], "bidirectional": True},
                  decoder={"hidden_sizes": [5], "cell": "lstm"}), PAIRS
    yield Seq2Seq(source_vocab_size=10, target_vocab_size=10, share_weights=True, context="init",
                  encoder={"hidden_sizes": [4]}), PAIRS
    yield Generator(vocab_size=6, num_classes=2, decoder={"hidden_sizes": [4]}), dict(PAIRS, condition=torch.tensor([0, 1]))
    f = Forecaster(input_size=2, horizon=2, mode="autoregressive", encoder={"hidden_sizes": [4]})
    yield f.fit_scaler(series["inputs"]), series


@pytest.mark.parametrize("index", range(7))
def test_save_load_gives_the_same_outputs(tmp_path, index):
    model, batch = list(_heads())[index]
    model.eval()
    checkpoint.save(tmp_path / "ckpt", model)
    loaded = checkpoint.load(tmp_path / "ckpt").model
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.equal(a, b)
    assert loaded.predict(batch) == model.predict(batch) if isinstance(model.predict(batch), list) else \
        torch.equal(loaded.predict(batch), model.predict(batch))
