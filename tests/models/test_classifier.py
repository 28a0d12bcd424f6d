import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import SequenceClassifier

V, K = 12, 3


def _batch(seed: int = 0, B: int = 4, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 3, 1, 5][:B])
    inputs = torch.randint(1, V, (B, T), generator=g)
    inputs[torch.arange(T) >= lengths[:, None]] = 0
    return {"inputs": inputs, "lengths": lengths, "labels": torch.tensor([0, 1, 2, 1][:B])}


def _model(pooling="last", bidirectional=True, **kw):
    torch.manual_seed(0)
    enc = {"hidden_sizes": [16, 16], "bidirectional": bidirectional, "cell": kw.pop("cell", "gru")}
    return SequenceClassifier(num_classes=K, vocab_size=V, embedding_dim=8, encoder=enc,
                              pooling=pooling, **kw)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_overfits_tiny_batch(pooling):
    model = _model(pooling)
    batch = _batch()
    start = float(model.loss(batch).detach())
    final = overfit(model, batch, steps=80)
    assert final < 0.05 < start
    assert model.predict(batch).tolist() == batch["labels"].tolist()


def test_regression_overfits_numeric_series():
    torch.manual_seed(0)
    model = SequenceClassifier(num_classes=2, input_size=3, task="regression", pooling="mean",
                               encoder={"hidden_sizes": [16], "cell": "lstm"})
    batch = {"inputs": torch.randn(4, 5, 3), "lengths": torch.tensor([5, 4, 2, 1]),
             "labels": torch.randn(4, 2)}
    assert overfit(model, batch, steps=150) < 1e-3
    assert model.predict(batch).shape == (4, 2)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True, [True, False], [False, True]])
def test_padding_never_changes_output(pooling, bidirectional):
    model = _model(pooling, bidirectional, cell="lstm").eval()
    batch = _batch()
    longer = dict(batch, inputs=pad_more(batch["inputs"], 3, high=V))
    with torch.no_grad():
        ref = model(batch)
        assert torch.allclose(model(longer), ref, atol=1e-5)
        for b, n in enumerate(batch["lengths"].tolist()):  # each sequence alone, unpadded
            alone = {"inputs": batch["inputs"][b:b + 1, :n], "lengths": torch.tensor([n])}
            assert torch.allclose(model(alone)[0], ref[b], atol=1e-5)


def test_bidirectional_last_joins_forward_end_and_backward_start():
    model = SequenceClassifier(num_classes=K, vocab_size=V, encoder={"hidden_sizes": [5], "bidirectional": True,
                                                                       "merge": "sum"}).eval()
    batch = _batch()
    with torch.no_grad():
        x = model.input(batch["inputs"])
        out, states = model.encoder(x, lengths=batch["lengths"])
        pooled = model.pool(out, states, batch["lengths"])
        layer = model.encoder.layers[0]
        for b, n in enumerate(batch["lengths"].tolist()):
            f, _ = layer.forward_layer(x[b:b + 1, :n])
            r, _ = layer.backward_layer(x[b:b + 1, :n].flip(1))  # hand-run backward pass
            want = torch.cat([f[0, n - 1], r[0, n - 1]])  # backward after reading position 0
            assert torch.allclose(pooled[b], want, atol=1e-5)


def test_config_rebuilds_same_model():
    model = _model("attention").eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(rebuild(model)(batch), model(batch))


def test_bad_input_raises_clear_errors():
    model = _model()
    batch = _batch()
    with pytest.raises(ValueError, match=r"batch\['labels'\] must hold class ids in \[0, 2\].*max 3"):
        model.loss(dict(batch, labels=torch.tensor([0, 1, 3, 0])))
    with pytest.raises(ValueError, match="batch is empty"):
        model.loss({"inputs": torch.zeros(0, 4, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long),
                    "labels": torch.zeros(0, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"missing key\(s\) 'lengths'"):
        model.predict({"inputs": batch["inputs"]})
    with pytest.raises(ValueError, match=r"token ids in \[0, 11\].*max 12"):
        model.predict(dict(batch, inputs=batch["inputs"].masked_fill(batch["inputs"] == 1, V)))
    with pytest.raises(ValueError, match=r"lengths'\] must be in \[1, T\]"):
        model.predict(dict(batch, lengths=torch.tensor([7, 1, 1, 1])))
    short = _model(max_length=4)
    with pytest.raises(ValueError, match="length 6, longer than max_length = 4"):
        short.predict(batch)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pooling must be one of last, mean, max, attention; got 'sum'"):
        SequenceClassifier(num_classes=2, vocab_size=V, pooling="sum")
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifier(num_classes=2)
    with pytest.raises(ValueError, match="unknown option.*'hidden'"):
        SequenceClassifier(num_classes=2, vocab_size=V, encoder={"hidden": 3})
    with pytest.raises(ValueError, match="merge='none'"):
        SequenceClassifier(num_classes=2, vocab_size=V, encoder={"bidirectional": True, "merge": "none"})


def test_filler_past_the_end_may_be_anything():
    """Out-of-vocabulary ids or NaN past a sequence's end are never read (loop path included)."""
    model = _model("mean", cell="lstm").eval()
    batch = _batch()
    junk = batch["inputs"].masked_fill(batch["inputs"] == 0, V + 7)
    junk[2, 3] = -4
    with torch.no_grad():
        assert torch.allclose(model(dict(batch, inputs=junk)), model(batch), atol=1e-6)
    torch.manual_seed(0)
    values = SequenceClassifier(num_classes=2, input_size=3, pooling="max",
                                encoder={"hidden_sizes": [5], "cell_layer_norm": True})
    x = torch.randn(2, 4, 3)
    batch = {"inputs": x, "lengths": torch.tensor([4, 2]), "labels": torch.tensor([0, 1])}
    nan = dict(batch, inputs=x.clone())
    nan["inputs"][1, 2:] = float("nan")
    assert torch.allclose(values(nan), values(batch))
    values.loss(nan).backward()  # NaN * 0 in the input projection's gradient would poison it
    assert all(torch.isfinite(p.grad).all() for p in values.parameters() if p.grad is not None)
