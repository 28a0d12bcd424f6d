import pytest
import torch

from heads_util import overfit, pad_more, rebuild
from rnnkit.models import SequenceTagger

V, CV = 15, 9
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 4, 1])
    B, T = 3, 6
    valid = torch.arange(T) < lengths[:, None]
    inputs = torch.randint(1, V, (B, T), generator=g) * valid
    chars = torch.randint(1, CV, (B, T, 4), generator=g) * valid[..., None]
    chars[..., 3] = 0  # every word shorter than C
    chars[0, 0, 1:] = 0  # a one-character word
    labels = torch.tensor([[1, 2, 0, 3, 4, 0], [0, 0, 1, 0, -100, -100], [3, -100, -100, -100, -100, -100]])
    return {"inputs": inputs, "lengths": lengths, "labels": labels, "chars": chars}


def _model(output="crf", char_encoder="lstm", **kw):
    torch.manual_seed(0)
    return SequenceTagger(vocab_size=V, num_tags=len(TAGS), embedding_dim=8, output=output, tags=TAGS,
                          char_vocab_size=CV, char_encoder=char_encoder, char_hidden_size=6,
                          encoder={"hidden_sizes": [12], "bidirectional": True}, **kw)


@pytest.mark.parametrize("output,char_encoder", [("softmax", "cnn"), ("crf", "lstm")])
def test_overfits_tiny_batch(output, char_encoder):
    model = _model(output, char_encoder, constraints="bio" if output == "crf" else None)
    batch = _batch()
    start = float(model.loss(batch).detach())
    assert overfit(model, batch, steps=100) < 0.02 * start
    gold = [row[:n] for row, n in zip(batch["labels"].tolist(), batch["lengths"].tolist())]
    assert model.predict(batch) == gold


@pytest.mark.parametrize("output,char_encoder", [("softmax", "cnn"), ("crf", "lstm")])
def test_padding_never_changes_output(output, char_encoder):
    model = _model(output, char_encoder).eval()
    batch = _batch()
    chars = batch["chars"]
    longer = dict(batch, inputs=pad_more(batch["inputs"], 2, high=V),
                  chars=torch.cat([pad_more(chars, 2, high=CV), torch.zeros(3, 8, 3, dtype=torch.long)], 2),
                  labels=torch.cat([batch["labels"], torch.full((3, 2), -100)], 1))
    with torch.no_grad():
        ref = model(batch)
        assert torch.allclose(model(longer)[:, :6], ref, atol=1e-5)
        assert torch.allclose(model.loss(longer), model.loss(batch), atol=1e-5)
        zero_padded = dict(longer, labels=longer["labels"].clamp(min=0))  # 0, not -100, past the end
        assert torch.allclose(model.loss(zero_padded), model.loss(batch), atol=1e-5)
    assert model.predict(longer) == model.predict(batch)
    one = {"inputs": batch["inputs"][1:2, :4], "lengths": torch.tensor([4]), "chars": chars[1:2, :4, :3]}
    with torch.no_grad():
        assert torch.allclose(model(one)[0], ref[1, :4], atol=1e-5)


def test_word_only_tagger_and_config_rebuild():
    torch.manual_seed(0)
    model = SequenceTagger(vocab_size=V, num_tags=3).eval()
    batch = _batch()
    batch = {"inputs": batch["inputs"], "lengths": batch["lengths"]}
    preds = model.predict(batch)
    assert [len(p) for p in preds] == [6, 4, 1]
    crf = _model("crf", constraints="bio").eval()
    full = _batch()
    with torch.no_grad():
        assert torch.equal(rebuild(crf)(full), crf(full))
    assert rebuild(crf).predict(full) == crf.predict(full)


def test_bad_input_raises_clear_errors():
    model = _model("crf")
    batch = _batch()
    bad = batch["labels"].clone()
    bad[0, 2] = 5
    with pytest.raises(ValueError, match=r"batch\['labels'\] must hold tag ids in \[0, 4\].*got \[5\]"):
        model.loss(dict(batch, labels=bad))
    bad[0, 2] = -100  # an unlabelled real token: fine for softmax, not for a CRF
    with pytest.raises(ValueError, match="at every real token"):
        model.loss(dict(batch, labels=bad))
    assert torch.isfinite(_model("softmax").loss(dict(batch, labels=bad)))
    with pytest.raises(ValueError, match=r"missing key\(s\) 'chars'"):
        model.predict({"inputs": batch["inputs"], "lengths": batch["lengths"]})
    with pytest.raises(ValueError, match=r"char ids in \[0, 8\]"):
        model.predict(dict(batch, chars=batch["chars"] + CV))
    with pytest.raises(ValueError, match="batch is empty"):
        model.predict({"inputs": torch.zeros(0, 3, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long)})
    with pytest.raises(ValueError, match="longer than max_length = 5"):
        _model(max_length=5).predict(batch)


def test_bad_arguments():
    with pytest.raises(ValueError, match="constraints='bio' needs output='crf'"):
        SequenceTagger(vocab_size=V, num_tags=5, tags=TAGS, constraints="bio")
    with pytest.raises(ValueError, match="output must be one of softmax, crf, sigmoid; got 'hmm'"):
        SequenceTagger(vocab_size=V, num_tags=5, output="hmm")
    with pytest.raises(ValueError, match="tags must be a list of num_tags = 4"):
        SequenceTagger(vocab_size=V, num_tags=4, tags=TAGS)
