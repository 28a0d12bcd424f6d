import pytest
import torch

from heads_util import overfit, rebuild
from rnnkit.models import Generator

V, BOS, EOS = 8, 2, 3
# The toy task: class 0 spells 4 4 5, class 1 spells 6 7 6 7.
SEQUENCES = {0: [4, 4, 5], 1: [6, 7, 6, 7]}


def _batch(classes):
    rows = [[BOS, *SEQUENCES[c], EOS] for c in classes]
    T = max(map(len, rows))
    targets = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    return {"condition": torch.tensor(classes), "targets": targets,
            "target_lengths": torch.tensor([len(r) for r in rows])}


def _model(conditioning="init", cell="gru", **kw):
    torch.manual_seed(0)
    return Generator(vocab_size=V, embedding_dim=8, condition_dim=6, conditioning=conditioning,
                     decoder={"hidden_sizes": [16], "cell": cell}, **kw)


@pytest.mark.parametrize("conditioning,cell", [("init", "gru"), ("input", "lstm")])
def test_trained_generator_produces_class_specific_sequences(conditioning, cell):
    model = _model(conditioning, cell, num_classes=2)
    batch = _batch([0, 1, 1, 0])
    before = model.predict({"condition": torch.tensor([0, 1])}, max_length=6)
    assert before != [SEQUENCES[0], SEQUENCES[1]]
    assert overfit(model, batch, steps=100) < 0.02
    assert model.predict({"condition": torch.tensor([0, 1])}) == [SEQUENCES[0], SEQUENCES[1]]
    sampled = model.predict({"condition": torch.tensor([1, 0])}, strategy="sample", temperature=0.5, seed=0)
    assert sampled == [SEQUENCES[1], SEQUENCES[0]]


def test_vector_condition():
    model = _model("init", "lstm", condition_size=3)
    batch = dict(_batch([0, 1]), condition=torch.tensor([[1.0, 0.0, -1.0], [-1.0, 2.0, 0.5]]))
    assert overfit(model, batch, steps=100) < 0.02
    assert model.predict({"condition": batch["condition"]}) == [SEQUENCES[0], SEQUENCES[1]]


def test_padding_never_changes_output_and_config_rebuilds():
    model = _model("input", num_classes=2).eval()
    batch = _batch([0, 1])
    longer = dict(batch, targets=torch.cat([batch["targets"], torch.randint(1, V, (2, 3))], 1))
    with torch.no_grad():
        ref = model(batch)
        real = torch.arange(ref.shape[1]) < (batch["target_lengths"] - 1)[:, None]
        assert torch.allclose(model(longer)[:, :ref.shape[1]][real], ref[real], atol=1e-6)
        assert torch.equal(rebuild(model)(batch), ref)
        one = {k: v[:1, :5] if v.dim() == 2 else v[:1] for k, v in batch.items()}
        assert torch.allclose(model(one)[0], ref[0, :4], atol=1e-6)


def test_bad_input_raises_clear_errors():
    model = _model(num_classes=2)
    with pytest.raises(ValueError, match=r"batch\['condition'\] must hold class ids in \[0, 1\].*max 2"):
        model.predict({"condition": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match=r"missing key\(s\) 'condition'"):
        model.predict({"targets": torch.zeros(1, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="batch is empty"):
        model.predict({"condition": torch.zeros(0, dtype=torch.long)})
    batch = _batch([0, 1])
    with pytest.raises(ValueError, match=r"batch\['targets'\] must hold token ids in \[0, 7\]"):
        model.loss(dict(batch, targets=batch["targets"] * 2))
    vec = _model(condition_size=3)
    with pytest.raises(ValueError, match=r"shape \(B, C\) with C = condition_size = 3"):
        vec.predict({"condition": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="exactly one of num_classes"):
        Generator(vocab_size=V)
    with pytest.raises(ValueError, match=r"decoder\['bidirectional'\] must be False"):
        Generator(vocab_size=V, num_classes=2, decoder={"bidirectional": True})
