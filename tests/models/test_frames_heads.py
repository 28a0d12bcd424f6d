"""Numeric frames (B, T, D) into the tagger (softmax, CRF, sigmoid multi-label) and the seq2seq
encoder (frames -> tokens)."""

import pytest
import torch
import torch.nn.functional as F

from heads_util import overfit, pad_more, rebuild
from rnnkit import checkpoint as ckpt
from rnnkit.models import Seq2Seq, SequenceTagger

D, K = 5, 3


def _frames(seed=0, lengths=(7, 4, 1)):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    B, T = len(lengths), int(lengths.max())
    x = torch.randn(B, T, D, generator=g) * (torch.arange(T) < lengths[:, None])[..., None]
    return x, lengths


def _tagger(output="softmax", **kw):
    torch.manual_seed(0)
    return SequenceTagger(input_size=D, num_tags=K, output=output,
                          encoder={"cell": "gru", "hidden_sizes": [10], "bidirectional": True}, **kw).eval()


def _multi_hot(x, lengths):
    # labels a frame can be told from by its own values: feature k above 0
    y = (x[..., :K] > 0).float()
    return y * (torch.arange(x.shape[1]) < lengths[:, None])[..., None]


def _class_ids(x, lengths):
    y = x[..., :K].argmax(-1)
    return y.masked_fill(torch.arange(x.shape[1]) >= lengths[:, None], -100)


@pytest.mark.parametrize("output", ["softmax", "crf", "sigmoid"])
def test_shapes(output):
    x, lengths = _frames()
    model = _tagger(output)
    assert model(dict(inputs=x, lengths=lengths)).shape == (3, 7, K)
    pred = model.predict(dict(inputs=x, lengths=lengths))
    assert [len(row) for row in pred] == lengths.tolist()
    if output == "sigmoid":
        assert all(isinstance(step, list) and all(0 <= k < K for k in step) for row in pred for step in row)


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_padding_never_changes_a_real_frame(output):
    x, lengths = _frames()
    model = _tagger(output)
    short = model(dict(inputs=x, lengths=lengths))
    long = model(dict(inputs=pad_more(x, 5), lengths=lengths))
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(long[b, :n], short[b, :n])
    # and the junk inside the batch's own padding does not matter either
    junk = x.clone()
    junk[2, 1:] = torch.randn(6, D)
    torch.testing.assert_close(model(dict(inputs=junk, lengths=lengths))[2, :1], short[2, :1])


def test_sigmoid_loss_is_hand_bce_over_real_frames():
    x, lengths = _frames()
    y = _multi_hot(x, lengths)
    y[1, 5:] = torch.tensor([1.0, 0.0, 1.0])  # junk targets past a length are ignored
    model = _tagger("sigmoid")
    with torch.no_grad():
        z = model(dict(inputs=x, lengths=lengths))
    total, count = 0.0, 0
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            for k in range(K):
                p = torch.sigmoid(z[b, t, k])
                total -= float(y[b, t, k] * torch.log(p) + (1 - y[b, t, k]) * torch.log(1 - p))
                count += 1
    loss = model.loss(dict(inputs=x, lengths=lengths, labels=y))
    assert abs(float(loss.detach()) - total / count) < 1e-5
    assert model.loss_count(dict(inputs=x, lengths=lengths, labels=y)) == count


@pytest.mark.parametrize("output", ["softmax", "crf", "sigmoid"])
def test_overfits_tiny_batch(output):
    x, lengths = _frames(1)
    labels = _multi_hot(x, lengths) if output == "sigmoid" else _class_ids(x, lengths)
    if output == "crf":
        labels = labels.clamp(min=0)
    model = _tagger(output)
    batch = dict(inputs=x, lengths=lengths, labels=labels)
    start = float(model.loss(batch).detach())
    assert overfit(model, batch, steps=80) < 0.05 * start
    pred = model.predict(batch)
    if output == "sigmoid":
        gold = [[[k for k in range(K) if labels[b, t, k]] for t in range(n)] for b, n in enumerate(lengths.tolist())]
    else:
        gold = [row[:n] for row, n in zip(labels.tolist(), lengths.tolist())]
    assert pred == gold


def test_save_load_round_trip(tmp_path):
    x, lengths = _frames()
    model = _tagger("sigmoid")
    twin = rebuild(model)
    torch.testing.assert_close(twin(dict(inputs=x, lengths=lengths)), model(dict(inputs=x, lengths=lengths)))
    ckpt.save(tmp_path / "m", model)
    loaded = ckpt.load(tmp_path / "m").model.eval()
    assert loaded.config["input_size"] == D and loaded.config["output"] == "sigmoid"
    torch.testing.assert_close(loaded(dict(inputs=x, lengths=lengths)), model(dict(inputs=x, lengths=lengths)))


def test_errors():
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceTagger(vocab_size=5, input_size=D, num_tags=K)
    with pytest.raises(ValueError, match="char_vocab_size, contextual and bigram_buckets are features of words"):
        SequenceTagger(input_size=D, num_tags=K, char_vocab_size=5)
    with pytest.raises(ValueError, match="output must be one of softmax, crf, sigmoid"):
        SequenceTagger(input_size=D, num_tags=K, output="sigmod")
    SequenceTagger(input_size=D, num_tags=1, output="sigmoid")  # one label: speech / not speech
    model = _tagger("sigmoid")
    x, lengths = _frames()
    with pytest.raises(ValueError, match=r"D = input_size = 5"):
        model(dict(inputs=x[..., :4], lengths=lengths))
    with pytest.raises(ValueError, match=r"multi-hot targets of shape \(B, T, K\) = \(3, 7, 3\)"):
        model.loss(dict(inputs=x, lengths=lengths, labels=_class_ids(x, lengths)))
    with pytest.raises(ValueError, match="must hold 0 or 1"):
        model.loss(dict(inputs=x, lengths=lengths, labels=_multi_hot(x, lengths) * 2))


# ------------------------------------------------------------------------- seq2seq

def _s2s(**kw):
    torch.manual_seed(0)
    return Seq2Seq(source_input_size=D, target_vocab_size=9, embedding_dim=8,
                   encoder={"cell": "gru", "hidden_sizes": [12], "bidirectional": True}, max_target_length=6,
                   **kw).eval()


def _pairs():
    x, lengths = _frames(2, (6, 5, 3))
    # target: BOS, a token per sign of the first feature at the first two frames, EOS
    tokens = (x[:, :2, 0] > 0).long() + 4  # (B, 2) in {4, 5}
    targets = torch.cat([torch.full((3, 1), 2), tokens, torch.full((3, 1), 3)], dim=1)
    return dict(inputs=x, lengths=lengths, targets=targets, target_lengths=torch.full((3,), 4))


@pytest.mark.parametrize("context", ["init", "attention"])
def test_seq2seq_frames_overfit_and_padding(context):
    batch = _pairs()
    model = _s2s(context=context)
    assert model(batch).shape == (3, 3, 9)
    padded = {**batch, "inputs": pad_more(batch["inputs"], 4)}
    torch.testing.assert_close(model(padded), model(batch))
    start = float(model.loss(batch).detach())
    assert overfit(model, batch, steps=80) < 0.05 * start
    assert model.predict(batch) == batch["targets"][:, 1:-1].tolist()
    torch.testing.assert_close(rebuild(model)(batch), model(batch))


def test_seq2seq_frames_errors():
    with pytest.raises(ValueError, match="exactly one of source_vocab_size"):
        Seq2Seq(target_vocab_size=9)
    with pytest.raises(ValueError, match=r"source_input_size \(5\) must equal embedding_dim \(8\)"):
        Seq2Seq(source_input_size=D, target_vocab_size=9, embedding_dim=8, share_weights=True, context="init")
    batch = _pairs()
    with pytest.raises(ValueError, match="D = input_size = 5"):
        _s2s().loss({**batch, "inputs": batch["inputs"][..., :2]})
