"""Metrics agree with hand-computed values and with the libraries' conventions."""

import math

import pytest

from rnnkit.training import metrics as m


def test_accuracy_and_macro_f1():
    y, p = [0, 0, 1, 2], [0, 1, 1, 2]
    assert m.accuracy(y, p) == 0.75
    # per class F1: class 0: P=1 R=.5 -> 2/3; class 1: P=.5 R=1 -> 2/3; class 2: 1
    assert m.macro_f1(y, p) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m.macro_f1(y, p, labels=[0, 1, 2, 3]) == pytest.approx((2 / 3 + 2 / 3 + 1) / 4)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        m.accuracy([0, 1], [0])


def test_span_f1_conlleval_vs_strict():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]  # conlleval starts a chunk at I- after O
    assert m.span_f1(gold, pred)["span_f1"] == 1.0
    strict = m.span_f1(gold, pred, scheme="IOB2")
    assert strict["span_precision"] == 1.0 and strict["span_recall"] == 0.5


def test_span_f1_iobes_and_iob1():
    gold = [["S-PER", "O", "B-ORG", "E-ORG"]]
    result = m.span_f1(gold, [["S-PER", "O", "B-ORG", "I-ORG"]], scheme="IOBES")
    assert result["span_precision"] == 1.0 and result["span_recall"] == 0.5
    iob1 = [["I-PER", "I-PER", "B-PER", "O"]]  # IOB1: B- only between two chunks of one type
    assert m.span_f1(iob1, iob1, scheme="IOB1")["span_f1"] == 1.0
    assert m.span_f1(iob1, [["I-PER", "I-PER", "I-PER", "O"]], scheme="IOB1")["span_f1"] == 0.0


def test_span_f1_unknown_scheme():
    with pytest.raises(ValueError, match=r"scheme must be one of conlleval, IOB1, IOB2, IOBES; got 'BIO'"):
        m.span_f1([["O"]], [["O"]], scheme="BIO")


def test_perplexity():
    assert m.perplexity(3 * math.log(5.0), 3) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least one token"):
        m.perplexity(1.0, 0)


def test_bleu_by_sacrebleu():
    import sacrebleu

    hyps, refs = ["the cat sat on the mat", "a dog ran"], ["the cat sat on the mat", "the dog ran away"]
    assert m.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert m.bleu(refs, refs) == pytest.approx(100.0)


def test_regression_metrics():
    y, p = [1.0, 2.0, 4.0], [2.0, 2.0, 2.0]
    assert m.mae(y, p) == pytest.approx(1.0)
    assert m.rmse(y, p) == pytest.approx(math.sqrt(5 / 3))
    assert m.mape(y, p) == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    with pytest.raises(ValueError, match=r"mape is undefined for targets equal to 0; 1 found \(first at index 1\)"):
        m.mape([1.0, 0.0], [1.0, 1.0])


class _Fixed:
    """A stand-in head whose predictions are given."""

    def __init__(self, predictions):
        self.predictions = predictions

    def predict(self, batch):
        return self.predictions


def test_tagging_accumulator_uses_tag_names_and_lengths():
    import torch

    tags = ["O", "B-PER", "I-PER"]
    acc = m.TaggingMetrics(tags)
    batch = {"labels": torch.tensor([[1, 2, 0], [1, -100, -100]]), "lengths": torch.tensor([3, 1])}
    acc.update(_Fixed([[1, 2, 0], [0]]), batch)
    out = acc.compute()
    assert out["accuracy"] == 0.75 and out["span_precision"] == 1.0 and out["span_recall"] == 0.5
    assert m.TaggingMetrics(["O", "NOUN"]).span is False


def test_bleu_accumulator_strips_specials_and_passes_the_tokenizer():
    import sacrebleu
    import torch

    itos = ["<pad>", "<unk>", "<bos>", "<eos>", "le", "chat", "dort", "."]
    acc = m.BleuMetrics(itos, tokenize="none")
    batch = {"targets": torch.tensor([[2, 4, 5, 6, 7, 3, 0]]), "target_lengths": torch.tensor([6])}
    acc.update(_Fixed([[4, 5, 7, 3]]), batch)
    assert acc.hyps == ["le chat ."] and acc.refs == ["le chat dort ."]
    want = sacrebleu.corpus_bleu(["le chat ."], [["le chat dort ."]], tokenize="none").score
    assert acc.compute()["bleu"] == pytest.approx(want)
